"""The victim as a real service: ``sslsteal serve``, an HTTP encoder API with keys, budgets, defenses and receipts.

The threat model of Dziedzic et al. (ICML 2022) is an encoder sold behind a paid API. This package
serves an ONNX encoder that way, to many clients at once, each with its own key, budget, rate
limit and defense state; :class:`~sslsteal_fast.victim.HttpVictim` is its client, and every attack
runs against it unchanged.

* :mod:`.state`: the state folder (keys, bills, receipts and the defenses' state in one SQLite file);
* :mod:`.ledger`: the server's ledger, on :mod:`sslsteal_fast.victim.billing`'s rules;
* :mod:`.batcher`: dynamic batching of concurrent requests into one ONNX Runtime batch;
* :mod:`.service`: the API without the web framework (keys, limits, admission, usage, receipts);
* :mod:`.app` / :mod:`.server`: FastAPI on uvicorn (the ``serve`` extra).

**Billing under crashes (bill-then-send).** A request's bill, its defense records and (when it sent
an ``X-Request-Id``) its receipt -- the answer itself -- are written in one SQLite transaction
(WAL, ``synchronous=FULL``), and the answer is released to the HTTP layer only after that
transaction has committed. What a SIGKILL of the server leaves, by when it strikes:

1. *before the commit* (the request is queued, running or being defended): nothing is billed and
   no defense record is kept -- the transaction never committed -- and the client gets a broken
   connection. Its reservation lived in memory only and dies with the process. Asked after the
   restart, the server has no receipt (404): sending the request again is safe, and bills it once.
2. *after the commit, before the client has read the whole answer*: the request is billed and its
   answer is in its receipt. The client got a broken connection; asking ``GET /v1/receipts/{id}``
   after the restart returns that answer, marked ``X-Replayed``, without billing it again. So what
   a client received always equals what it was billed -- for clients that send request ids and
   ask, as :class:`~sslsteal_fast.victim.HttpVictim` does. A client that sends no id cannot ask:
   in this window it is billed for an answer it did not get.
3. *after the answer was sent*: billed and received.

No ordering can do better without a receipt: sending before billing would lose bills (case 2
reversed). A power cut is case 1 or 2 as well (``synchronous=FULL`` makes a commit durable before
it returns). Receipts are kept for the last ``--receipts`` requests of each key.
"""

from __future__ import annotations

from sslsteal_fast.serve.ledger import SqliteLedger
from sslsteal_fast.serve.state import STATE_FILE, KeyRecord, ServerState
from sslsteal_fast.util.extras import require

__all__ = ["STATE_FILE", "KeyRecord", "ServerState", "SqliteLedger", "require_serve_extra"]


def require_serve_extra() -> None:
    """A :class:`~sslsteal_fast.util.extras.MissingExtra` naming ``pip install 'sslsteal_fast[serve]'``
    unless FastAPI, uvicorn and httpx are all importable."""
    for module in ("fastapi", "uvicorn", "httpx"):
        require(module, "serve", "sslsteal serve")
