"""A victim served over HTTP (``sslsteal serve``): :class:`HttpVictim`, the :class:`~sslsteal_fast.victim.Victim`
protocol spoken to a remote encoder API.

Every attack that takes a victim takes an ``HttpVictim(url, key)`` unchanged: ``query`` sends the
images (the compact raw format of :mod:`~sslsteal_fast.victim.wire`), gets the representations
back, and counts what the server says it billed (``queries_used``) and ran (``forward_passes``).
The key decides whom the server bills: ``query``'s ``client`` argument is checked and otherwise
ignored, as :class:`~sslsteal_fast.victim.LocalVictim` does.

Failures and retries. Connections are pooled (one ``httpx.Client``). A request that never reached
the server (the connection was refused or could not be opened) is retried with exponential back-off
-- a server that is restarting is waited for. A request whose billing outcome is unknown (the
connection broke or timed out after the request was sent) is **never sent again blindly**: every
request carries a fresh ``X-Request-Id``, and the victim asks the server
(``GET /v1/receipts/{id}``) what became of it: a billed request's answer comes back from its receipt
(not billed twice); one the server never billed is sent again; one still in progress is asked about
again after a pause. A rate-limited request (429) is sent again after ``Retry-After`` seconds (it
was refused, so nothing was billed); a request refused for the budget (402) raises
:class:`~sslsteal_fast.victim.BudgetExceeded`, a malformed or oversized one (400, 413) ``ValueError``,
a refused key (401) ``PermissionError``.

A query larger than the server's per-request limit is sent as several requests, after checking that
the remaining budget covers all of it (so a query that cannot be paid for in full sends nothing;
another client of the same key spending the budget meanwhile can still make a later request fail).

Needs the ``serve`` extra (``pip install 'sslsteal_fast[serve]'``, for httpx).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # the serve extra: pip install 'sslsteal_fast[serve]' (require_httpx says so when it is missing)
    import httpx
except ImportError:  # the rest of the package works without it
    httpx = None  # type: ignore[assignment]

from sslsteal_fast.util.checks import check_client, check_int, check_number
from sslsteal_fast.util.extras import require
from sslsteal_fast.victim import wire
from sslsteal_fast.victim.billing import BudgetExceeded

__all__ = ["HttpVictim", "read_key", "require_httpx"]

#: Header names of the API (also the server's).
REQUEST_ID = "X-Request-Id"
BILLED = "X-Billed"
REMAINING = "X-Remaining"
FORWARD_PASSES = "X-Forward-Passes"
REPLAYED = "X-Replayed"


def require_httpx() -> Any:
    """The ``httpx`` module; a :class:`~sslsteal_fast.util.extras.MissingExtra` naming the extra when it is missing."""
    return require("httpx", "serve", "HttpVictim")


def read_key(path: str | os.PathLike[str]) -> str:
    """The API key in a key file (its first line, stripped), e.g. what ``sslsteal keys add`` printed.

    Raises:
        FileNotFoundError: no such file. ValueError: the file holds no key (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no key file at {p}")
    lines = p.read_text(errors="replace").strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"{p}: not a key file (expected the key on its first line)")
    return key


class HttpVictim:
    """An encoder API at ``url`` queried with ``key``: the :class:`~sslsteal_fast.victim.Victim` protocol over HTTP.

    Args:
        url: the server's base URL (``http://127.0.0.1:8000``), as ``sslsteal serve`` prints it.
        key: the API key (``sslsteal keys add``); :func:`read_key` reads a key file.
        timeout: seconds to wait for one answer (large batches of a large model take a while).
        retries: times a request that did not reach the server (or a question about one) is tried
            again before giving up; the wait doubles from ``backoff`` up to 5 s each time.
        backoff: seconds of the first wait.
        max_rows: most rows per request (default: the server's limit, ``GET /v1/model``).

    Attributes:
        input_shape, output_dim, sha256: the served model's, from ``GET /v1/model``.
        queries_used: rows the server billed for this object's requests (what it reported).
        forward_passes: rows the server's model ran for them (cache hits excluded).

    Raises:
        ImportError: httpx is not installed (the ``serve`` extra).
        PermissionError: the server refuses the key. ConnectionError: no server answers at ``url``.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 300.0,
        retries: int = 8,
        backoff: float = 0.25,
        max_rows: int | None = None,
    ) -> None:
        client_lib = require_httpx()
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"HttpVictim: url must start with http:// or https://, got {url!r}")
        if not isinstance(key, str) or not key or any(c.isspace() for c in key):
            raise ValueError("HttpVictim: key must be a non-empty string without spaces")
        self.url = url.rstrip("/")
        self.retries = check_int("HttpVictim: retries", retries, low=0)
        self.backoff = check_number("HttpVictim: backoff", backoff, low=0.0)
        timeout = check_number("HttpVictim: timeout", timeout, low=0.0)
        self._http = client_lib.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=client_lib.Timeout(timeout, connect=min(10.0, timeout)),
            limits=client_lib.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._lock = threading.Lock()
        self.queries_used = 0
        self.forward_passes = 0
        self.replayed = 0
        info = self._get("/v1/model")
        c, h, w = info["input_shape"]
        self.input_shape: tuple[int | None, int | None, int | None] = (c, h, w)
        self.output_dim: int = int(info["output_dim"])
        self.sha256: str = str(info["sha256"])
        self.max_rows = (
            int(info["max_rows"]) if max_rows is None else check_int("HttpVictim: max_rows", max_rows, low=1)
        )

    def __repr__(self) -> str:
        return (
            f"HttpVictim({self.url!r}, input_shape={self.input_shape}, output_dim={self.output_dim}, "
            f"queries_used={self.queries_used})"
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> HttpVictim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ account
    def usage(self) -> dict[str, Any]:
        """The key's usage as the server reports it (``GET /v1/usage``): billed, budget, remaining, defenses."""
        return self._get("/v1/usage")

    @property
    def remaining(self) -> int | None:
        """Rows the key may still be billed (None when unlimited), asked of the server now."""
        value = self.usage()["remaining"]
        return None if value is None else int(value)

    # ------------------------------------------------------------------ querying
    def query(self, x: torch.Tensor | np.ndarray, client: str = "default") -> torch.Tensor:
        """Images (N, C, H, W), uint8 or float32 in [0, 1] -> float32 (N, D) on the CPU; the server bills N rows.

        ``client`` is checked and otherwise ignored: the key decides whom the server bills.

        Raises:
            BudgetExceeded: the key's remaining budget cannot pay for all N rows (nothing sent or billed).
            ValueError: the server refused the images (wrong shape or dtype, NaN, too large).
            PermissionError: the key is refused. ConnectionError: the server stayed unreachable.
        """
        check_client(client)
        device = x.device if isinstance(x, torch.Tensor) else None
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        if not isinstance(array, np.ndarray) or np.ma.isMaskedArray(array):
            raise TypeError(f"query must be a torch.Tensor or numpy.ndarray (not masked), got {type(x)}")
        if array.dtype not in (np.float32, np.uint8):
            raise ValueError(f"query dtype must be float32 or uint8, got {array.dtype}")
        n = int(array.shape[0]) if array.ndim else 0
        if n > self.max_rows:
            remaining = self.remaining
            if remaining is not None and n > remaining:
                raise BudgetExceeded(n, remaining, client)
        parts = [self._embed(array[i : i + self.max_rows]) for i in range(0, n, self.max_rows)] or [self._embed(array)]
        out = torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])
        return out if device is None else out.to(device)

    def _embed(self, array: np.ndarray) -> np.ndarray:
        """One ``POST /v1/embed`` (a fresh request id), settled exactly once whatever the connection does."""
        body, headers = wire.encode(array, "raw")
        headers[REQUEST_ID] = request_id = uuid.uuid4().hex
        attempt = 0
        while True:
            try:
                response = self._http.post("/v1/embed", content=body, headers=headers)
            except httpx.ConnectError:  # never reached the server: nothing can have been billed
                attempt = self._wait(attempt, "could not connect to")
                continue
            except httpx.TransportError:  # sent, but the answer was lost: ask before sending again
                settled = self._ask(request_id)
                if settled is None:
                    continue
                return settled
            if response.status_code == 429:  # refused, so not billed: send again when allowed
                time.sleep(_retry_after(response))
                continue
            if response.status_code == 503:  # the server is shutting down or starting: not billed
                attempt = self._wait(attempt, "is unavailable:")
                continue
            return self._answer(response)

    def _ask(self, request_id: str) -> np.ndarray | None:
        """What became of a sent request: its answer (billed once, from its receipt), or None (never billed)."""
        attempt = 0
        while True:
            try:
                response = self._http.get(f"/v1/receipts/{request_id}")
            except httpx.TransportError:
                attempt = self._wait(attempt, "lost the answer to a request and cannot reach")
                continue
            if response.status_code == 404:
                return None
            if response.status_code in (409, 503):  # still being answered, or the server is restarting
                attempt = self._wait(attempt, "is still answering a request at")
                continue
            return self._answer(response)

    def _wait(self, attempt: int, what: str) -> int:
        if attempt >= self.retries:
            raise ConnectionError(f"HttpVictim: {what} {self.url} after {attempt + 1} tries")
        time.sleep(min(5.0, self.backoff * 2**attempt))
        return attempt + 1

    def _answer(self, response: Any) -> np.ndarray:
        """A successful response's array, with its bill counted; an error response raised as the protocol says."""
        _raise_for(response)
        array = wire.decode(response.content, response.headers.get("content-type"), response.headers)
        with self._lock:
            self.queries_used += int(response.headers.get(BILLED, 0))
            self.forward_passes += int(response.headers.get(FORWARD_PASSES, 0))
            self.replayed += int(response.headers.get(REPLAYED, "0") == "1")
        return np.array(array, dtype=np.float32)

    def _get(self, path: str) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response = self._http.get(path)
            except httpx.TransportError:
                attempt = self._wait(attempt, "could not reach")
                continue
            _raise_for(response)
            return dict(response.json())


def _retry_after(response: Any) -> float:
    try:
        return max(0.0, min(60.0, float(response.headers.get("retry-after", 1))))
    except ValueError:
        return 1.0


def _message(response: Any) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


def _raise_for(response: Any) -> None:
    """Raise what the Victim protocol raises for an error response (nothing for 2xx)."""
    status = response.status_code
    if status < 400:
        return
    message = _message(response)
    if status == 402:
        doc = response.json()
        raise BudgetExceeded(int(doc.get("requested", 0)), int(doc.get("remaining", 0)), str(doc.get("client", "?")))
    if status == 401:
        raise PermissionError(f"the server refused the key: {message}")
    if status in (400, 413, 422):
        raise ValueError(f"the server refused the query ({status}): {message}")
    raise RuntimeError(f"the server failed ({status}): {message}")
