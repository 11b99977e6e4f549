"""What the HTTP API does, without the web framework: keys, limits, admission, usage, receipts.

:class:`Service` owns the served model (an :class:`~sslsteal_fast.victim.OnnxVictim` used for its
validation, response cache and model runs only), the state folder (:class:`~.state.ServerState`,
locked so that one server owns it), the ledger (:class:`~.ledger.SqliteLedger`) and the batcher
(:class:`~.batcher.Batcher`). :mod:`.app` maps its results and :class:`ServeError` to HTTP.

One request, in order: the key (401) -> the body's size (413) -> its format and shape (400; more
than ``max_rows`` rows: 413) -> a known request id is answered from its receipt, one still in
progress refused (409) -> the images' values (400: wrong dtype, shape, NaN) -> the budget (402: the
rows are reserved now, or refused) -> the key's rate limit (429, with Retry-After; the reservation
is given back) -> the batcher, whose answer comes back once its bill is committed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslsteal_fast.defenses import CoverageDefense, SimilarityDetector, StatefulDefense, make_defense
from sslsteal_fast.serve.batcher import Answer, Batcher, Job, ShuttingDown
from sslsteal_fast.serve.ledger import SqliteLedger
from sslsteal_fast.serve.state import KeyRecord, ServerState, key_id_of
from sslsteal_fast.util.checks import check_int, check_number
from sslsteal_fast.victim import BudgetExceeded, OnnxVictim, wire

__all__ = ["JSON_BODY_LIMIT", "Client", "Limits", "RateLimiter", "ServeError", "Service", "check_limits"]

#: Largest JSON body (bytes): base64 is for small batches; larger ones go raw or .npy.
JSON_BODY_LIMIT = 4 * 2**20
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ServeError(Exception):
    """A refused request: the HTTP status, a message for the client, extra JSON fields and headers."""

    def __init__(
        self, status: int, message: str, *, extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] = {}
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = dict(extra or {})
        self.headers = dict(headers)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may be: ``max_rows`` images, ``max_body`` bytes; ``receipts`` kept per key."""

    max_rows: int = 4096
    max_body: int = 64 * 2**20
    receipts: int = 64

    def __post_init__(self) -> None:
        check_int("--max-rows", self.max_rows, low=1)
        check_int("--max-body-mb", self.max_body, low=1)
        check_int("--receipts", self.receipts, low=0)


class RateLimiter:
    """Per-key token buckets of rows per second.

    A key's bucket holds at most one second of its rate. A request passes while the bucket is not
    empty and then takes all its rows (the bucket may go into debt, so a request larger than a
    second's worth still passes, and the long-run rate stays the key's); otherwise it is told how
    long to wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, client: str, rate: float | None, rows: int) -> float | None:
        """None when the request may go (its rows taken), else the seconds to wait."""
        if rate is None:
            return None
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate)
            if tokens <= 0:
                self._buckets[client] = (tokens, now)
                return -tokens / rate + 1.0 / rate
            self._buckets[client] = (tokens - rows, now)
            return None


@dataclasses.dataclass
class Client:
    """An authenticated client: its key record and its own defense chain."""

    record: KeyRecord
    defenses: tuple[Any, ...]

    @property
    def name(self) -> str:
        return self.record.client


class Service:
    """The encoder API behind ``sslsteal serve``.

    Args:
        model: the ``.onnx`` file to serve.
        state: the state folder (created; refused while another server holds it).
        max_batch, max_wait_ms: the batcher's (:class:`~.batcher.Batcher`).
        limits: per-request limits (:class:`Limits`).
        cache_size: rows the response cache keeps (0: none).
        threads: ONNX Runtime intra-op threads (None: physical cores).
        providers: ONNX Runtime execution providers (None: the default).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        state: str | os.PathLike[str],
        *,
        max_batch: int = 256,
        max_wait_ms: float = 5.0,
        limits: Limits = Limits(),
        cache_size: int = 16384,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        self.limits = limits
        folder = Path(state)
        self.victim = OnnxVictim(
            model,
            batch_size=max_batch,
            cache_size=cache_size,
            intra_op_threads=threads,
            providers=providers,
            spin=False,  # the HTTP layer shares these cores: idle ORT threads sleep instead of spinning
        )
        self._lock_file = _lock_folder(folder)
        try:
            self.state = ServerState(folder)
            self.ledger = SqliteLedger(self.state)
            self.batcher = Batcher(self.victim, self.ledger, max_batch=max_batch, max_wait_ms=max_wait_ms)
        except BaseException:
            self._lock_file.close()
            raise
        self.rates = RateLimiter()
        self._clients: dict[str, Client] = {}
        self._clients_lock = threading.Lock()
        self._inflight: set[tuple[str, str]] = set()
        self._inflight_lock = threading.Lock()

    def close(self) -> None:
        """Finish the admitted requests, then close the state and release the folder."""
        self.batcher.close()
        self.state.close()
        self._lock_file.close()

    # ------------------------------------------------------------------ keys
    def authenticate(self, authorization: str | None, api_key: str | None) -> Client:
        """The client of ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``); 401 otherwise."""
        key = api_key
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            key = value.strip() if scheme.lower() == "bearer" else None
        if not key:
            raise ServeError(
                401, "missing API key: send Authorization: Bearer KEY", headers={"WWW-Authenticate": "Bearer"}
            )
        key_id = key_id_of(key)
        with self._clients_lock:
            cached = self._clients.get(key_id) if key_id else None
        record = cached.record if cached is not None else (self.state.find(key_id) if key_id else None)
        if not ServerState.verify(key, record):
            raise ServeError(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        assert record is not None and key_id is not None
        if cached is not None:
            return cached
        return self._client(key_id, record)

    def _client(self, key_id: str, record: KeyRecord) -> Client:
        with self._clients_lock:
            if key_id not in self._clients:
                defenses = tuple(make_defense(spec, state=self.state.store) for spec in record.defenses)
                self.ledger.know(record.client, record.budget)
                self._clients[key_id] = Client(record, defenses)
            return self._clients[key_id]

    # ------------------------------------------------------------------ read-only endpoints
    def model_info(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: the input shape, output dimension, the model's sha256, the limits."""
        return {
            "input_shape": list(self.victim.input_shape),
            "output_dim": self.victim.output_dim,
            "sha256": self.victim.sha256,
            "dtypes": list(wire.DTYPES),
            "formats": {name: media for name, media in wire.FORMATS.items()},
            "max_rows": self.limits.max_rows,
            "max_body_bytes": self.limits.max_body,
            "max_batch": self.batcher.max_batch,
            "max_wait_ms": self.batcher.max_wait * 1000.0,
        }

    def usage(self, client: Client) -> dict[str, Any]:
        """What ``GET /v1/usage`` answers: the caller's own bill, budget and defense counters (never another's)."""
        name = client.name
        counters = self.state.usage(name)
        return {
            "client": name,
            "budget": client.record.budget,
            "billed": counters["billed"],
            "remaining": self.ledger.remaining(name),
            "in_flight": self.ledger.reserved(name),
            "requests": counters["requests"],
            "forward_passes": counters["forward_passes"],
            "cache_hits": counters["cache_hits"],
            "rate_limit": client.record.rate_limit,
            "defenses": [
                self._defense_counters(spec, d, name)
                for spec, d in zip(client.record.defenses, client.defenses, strict=True)
            ],
        }

    def _defense_counters(self, spec: str, defense: Any, client: str) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": spec, "name": defense.name}
        if isinstance(defense, StatefulDefense):
            out["rows_seen"] = defense.bills.get(client, 0)
        if isinstance(defense, SimilarityDetector):
            rows, flagged = self.state.store.read(
                "SELECT COUNT(*), COALESCE(SUM(flagged), 0) FROM detections WHERE namespace = ? AND client = ?",
                (defense.namespace, client),
            )[0]
            out.update(rows_scored=int(rows), flagged=int(flagged), threshold=defense.config.threshold)
        if isinstance(defense, CoverageDefense):
            out["coverage"] = defense.coverage(client)
        return out

    # ------------------------------------------------------------------ embedding
    def check_size(self, fmt: str, size: int) -> None:
        """413 for a body over the limit of its format."""
        limit = JSON_BODY_LIMIT if fmt == "json" else self.limits.max_body
        limit = min(limit, self.limits.max_body)
        if size > limit:
            raise ServeError(413, f"the body has {size} bytes; the limit for {fmt} bodies is {limit}")

    def embed(
        self, client: Client, body: bytes, content_type: str | None, headers: Mapping[str, str], request_id: str | None
    ) -> Answer | Future[Answer]:
        """Admit one query; the answer now (an empty query, a receipt) or a future that resolves once it is billed."""
        try:
            array = wire.decode(body, content_type, headers)
        except wire.WireError as exc:
            raise ServeError(400, str(exc)) from None
        if array.shape[0] > self.limits.max_rows:
            raise ServeError(413, f"{array.shape[0]} images in one request; the limit is {self.limits.max_rows}")
        if request_id is not None:
            replay = self.receipt(client, request_id, missing=None)
            if replay is not None:
                return replay
        try:
            images = self.victim.prepare(array)
        except (ValueError, TypeError) as exc:
            raise ServeError(400, str(exc)) from None
        n = int(images.shape[0])
        if n == 0:  # free: nothing runs, nothing is billed
            return Answer(np.zeros((0, self.victim.output_dim), np.float32), 0, 0, 0)
        try:
            reservation = self.ledger.reserve(client.name, n)
        except BudgetExceeded as exc:
            raise ServeError(
                402,
                str(exc),
                extra={
                    "client": client.name,
                    "requested": n,
                    "remaining": exc.remaining,
                    "budget": client.record.budget,
                },
                headers={"X-Remaining": str(exc.remaining)},
            ) from None
        wait = self.rates.admit(client.name, client.record.rate_limit, n)
        if wait is not None:
            reservation.release()
            seconds = max(1, math.ceil(wait))
            raise ServeError(
                429,
                f"rate limit of {client.record.rate_limit:g} queries/s exceeded; retry in {wait:.2f} s",
                extra={"retry_after": wait},
                headers={"Retry-After": str(seconds)},
            )
        return self._submit(client, images, reservation, request_id)

    def _submit(self, client: Client, images: np.ndarray, reservation: Any, request_id: str | None) -> Future[Answer]:
        keep = self.limits.receipts
        name = client.name

        def record(conn: Any, served: torch.Tensor, ran: int, hits: int) -> None:
            if request_id is not None and keep:
                ServerState.add_receipt(conn, name, request_id, served.numpy(), ran, keep)
            ServerState.add_usage(conn, name, forward_passes=ran, cache_hits=hits)

        job = Job(name, images, reservation, client.defenses, record)
        if request_id is not None:
            with self._inflight_lock:
                if (name, request_id) in self._inflight:
                    reservation.release()
                    raise ServeError(409, f"request {request_id} is still being answered; ask again shortly")
                self._inflight.add((name, request_id))
            job.future.add_done_callback(lambda _: self._done(name, request_id))
        try:
            return self.batcher.submit(job)
        except BaseException as exc:  # not admitted: give the rows back
            reservation.release()
            if request_id is not None:
                self._done(name, request_id)
            if isinstance(exc, ShuttingDown):
                raise ServeError(503, str(exc)) from None
            raise

    def _done(self, client: str, request_id: str) -> None:
        with self._inflight_lock:
            self._inflight.discard((client, request_id))

    def receipt(self, client: Client, request_id: str, *, missing: int | None = 404) -> Answer | None:
        """A request's billed answer again (``X-Replayed``; not billed twice); 409 while it is still in progress.

        Without a receipt: 404 (``missing``), or None when ``missing`` is None.
        """
        if not _REQUEST_ID.match(request_id):
            raise ServeError(400, "X-Request-Id must be 1 to 128 characters of A-Z a-z 0-9 . _ -")
        with self._inflight_lock:
            if (client.name, request_id) in self._inflight:
                raise ServeError(409, f"request {request_id} is still being answered; ask again shortly")
        found = self.state.receipt(client.name, request_id)
        if found is None:
            if missing is None:
                return None
            raise ServeError(missing, f"no billed request {request_id} (it was never billed; sending it again is safe)")
        answer, passes = found
        return Answer(answer, int(answer.shape[0]), passes, 0, replayed=True)


def _lock_folder(folder: Path) -> Any:
    """Hold ``folder/server.lock`` (an exclusive ``flock``) for as long as the returned file is open."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--state {folder}: is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / "server.lock", "a+")  # noqa: SIM115 - held open for the server's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(f"--state {folder}: another server is using this state folder") from None
    return handle


def check_limits(max_rows: int, max_body_mb: float, receipts: int) -> Limits:
    """:class:`Limits` from the command line's units (MiB)."""
    check_number("--max-body-mb", max_body_mb, low=0.0)
    return Limits(max_rows=max_rows, max_body=max(1, int(max_body_mb * 2**20)), receipts=receipts)
