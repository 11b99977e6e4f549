"""The server's state under ``--state DIR``: keys, bills, receipts and the defenses' state, in one SQLite file.

``DIR/server.sqlite`` is a :class:`~sslsteal_fast.defenses.DefenseState` (the defenses' per-client
history, secrets, buckets and banks) with three more tables, so that one query's bill, its defense
records and its receipt commit in **one** transaction::

    keys(key_id, client, key_hash, budget, defenses, rate_limit, created)
    usage(client, billed, requests, forward_passes, cache_hits)
    receipts(seq, client, request_id, rows, dim, forward_passes, data, created)

Keys. A key is ``ssk_<key id>_<secret>`` (the id: 8 random bytes, hex; the secret: 32 random bytes,
URL-safe base64), made by :meth:`ServerState.add_key` from ``secrets`` and shown once. Only its
SHA-256 is stored (a key carries 256 random bits, so a fast hash is as good as a slow one: there is
nothing to guess); a presented key is found by its id and checked with :func:`hmac.compare_digest`
(constant time), a dummy comparison standing in when the id is unknown. Keys never enter a log or
an error message.

Receipts. A billed request that carried an ``X-Request-Id`` keeps its answer in ``receipts`` (the
most recent ``keep`` per client), committed with its bill: a client whose connection broke asks
for it by id instead of paying again (:mod:`sslsteal_fast.serve.service`).

The database runs in WAL mode with ``synchronous=FULL``: a committed bill survives a SIGKILL of the
server and a power cut. ``sslsteal keys add`` may write to it while a server runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sslsteal_fast.defenses import DefenseState, parse_spec
from sslsteal_fast.util.checks import check_client, check_int, check_number

__all__ = ["STATE_FILE", "KeyRecord", "ServerState", "key_id_of"]

STATE_FILE = "server.sqlite"
_PREFIX = "ssk"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, client TEXT NOT NULL UNIQUE, "
    "key_hash BLOB NOT NULL, budget INTEGER, defenses TEXT NOT NULL, rate_limit REAL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS usage (client TEXT PRIMARY KEY, billed INTEGER NOT NULL DEFAULT 0, "
    "requests INTEGER NOT NULL DEFAULT 0, forward_passes INTEGER NOT NULL DEFAULT 0, "
    "cache_hits INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS receipts (seq INTEGER PRIMARY KEY AUTOINCREMENT, client TEXT NOT NULL, "
    "request_id TEXT NOT NULL, rows INTEGER NOT NULL, dim INTEGER NOT NULL, forward_passes INTEGER NOT NULL, "
    "data BLOB NOT NULL, "
    "created REAL NOT NULL, UNIQUE (client, request_id))",
)
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    """One client's key as stored (never the key itself)."""

    key_id: str
    client: str
    key_hash: bytes
    budget: int | None
    defenses: tuple[str, ...]
    rate_limit: float | None
    created: float


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def key_id_of(key: str) -> str | None:
    """The id part of a well-formed key (``ssk_<id>_<secret>``), else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 16 or not parts[2]:
        return None
    return parts[1]


class ServerState:
    """The state folder of a server: ``DIR/server.sqlite`` (created with its folder).

    Raises:
        ValueError: the folder holds a file that is not such a database (the message names it).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--state {self.folder}: is a file, not a folder")
        self.path = self.folder / STATE_FILE
        self.store = DefenseState(self.path, synchronous="FULL")
        try:
            with self.store.transaction() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a server state database ({exc})") from None

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> ServerState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ keys
    def add_key(
        self,
        client: str,
        budget: int | None,
        defenses: Sequence[str] = (),
        rate_limit: float | None = None,
    ) -> str:
        """Create ``client``'s key and return it (the only time it exists outside the client's hands).

        Raises:
            ValueError: a bad client name, budget, defense spec or rate; a client that has a key.
        """
        check_client(client)
        if budget is not None:
            check_int("--budget", budget, low=0)
        if rate_limit is not None:
            check_number("--rate-limit", rate_limit, low=0.0)
            if rate_limit <= 0:
                raise ValueError(f"--rate-limit must be positive (queries per second), got {rate_limit!r}")
        specs = tuple(str(s) for s in defenses)
        for spec in specs:
            parse_spec(spec)
        key_id = secrets.token_hex(8)
        key = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM keys WHERE client = ?", (client,)).fetchone():
                raise ValueError(f"client {client!r} already has a key in {self.path}")
            conn.execute(
                "INSERT INTO keys (key_id, client, key_hash, budget, defenses, rate_limit, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, client, _hash(key), budget, json.dumps(list(specs)), rate_limit, time.time()),
            )
        return key

    def _record(self, row: tuple[Any, ...]) -> KeyRecord:
        key_id, client, key_hash, budget, defenses, rate, created = row
        return KeyRecord(key_id, client, bytes(key_hash), budget, tuple(json.loads(defenses)), rate, created)

    def find(self, key_id: str) -> KeyRecord | None:
        """The key record with this id, if any."""
        rows = self.store.read("SELECT * FROM keys WHERE key_id = ?", (key_id,))
        return self._record(rows[0]) if rows else None

    def records(self) -> list[KeyRecord]:
        """Every key record, oldest first."""
        return [self._record(r) for r in self.store.read("SELECT * FROM keys ORDER BY created")]

    @staticmethod
    def verify(key: str, record: KeyRecord | None) -> bool:
        """Whether ``key`` is ``record``'s, compared in constant time (a dummy comparison without a record)."""
        ok = hmac.compare_digest(_hash(key), record.key_hash if record is not None else _DUMMY_HASH)
        return ok and record is not None

    # ------------------------------------------------------------------ usage
    def usage(self, client: str) -> dict[str, int]:
        """``client``'s committed counters: billed, requests, forward_passes, cache_hits (0 when none)."""
        rows = self.store.read(
            "SELECT billed, requests, forward_passes, cache_hits FROM usage WHERE client = ?", (client,)
        )
        values = rows[0] if rows else (0, 0, 0, 0)
        return dict(zip(("billed", "requests", "forward_passes", "cache_hits"), map(int, values), strict=True))

    def billed(self) -> dict[str, int]:
        """Committed bills of every client."""
        return {c: int(b) for c, b in self.store.read("SELECT client, billed FROM usage")}

    @staticmethod
    def add_usage(conn: sqlite3.Connection, client: str, **counts: int) -> None:
        """Add to ``client``'s counters inside an open transaction."""
        names = sorted(counts)
        conn.execute(
            f"INSERT INTO usage (client, {', '.join(names)}) VALUES (?{', ?' * len(names)}) "
            f"ON CONFLICT (client) DO UPDATE SET {', '.join(f'{n} = {n} + excluded.{n}' for n in names)}",
            (client, *(int(counts[n]) for n in names)),
        )

    # ------------------------------------------------------------------ receipts
    @staticmethod
    def add_receipt(
        conn: sqlite3.Connection, client: str, request_id: str, answer: np.ndarray, forward_passes: int, keep: int
    ) -> None:
        """Keep ``answer`` (float32 (N, D)) as the receipt of ``request_id``, and only ``keep`` receipts per client.

        Raises sqlite3.IntegrityError when the client already has a receipt of that id.
        """
        block = np.ascontiguousarray(answer, dtype=np.float32)
        conn.execute(
            "INSERT INTO receipts (client, request_id, rows, dim, forward_passes, data, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                client,
                request_id,
                int(block.shape[0]),
                int(block.shape[1]),
                forward_passes,
                block.tobytes(),
                time.time(),
            ),
        )
        conn.execute(
            "DELETE FROM receipts WHERE client = ? AND seq NOT IN "
            "(SELECT seq FROM receipts WHERE client = ? ORDER BY seq DESC LIMIT ?)",
            (client, client, int(keep)),
        )

    def receipt(self, client: str, request_id: str) -> tuple[np.ndarray, int] | None:
        """``(answer, forward passes)`` billed to ``client`` for ``request_id``, or None when there is no such receipt."""
        rows = self.store.read(
            "SELECT rows, dim, forward_passes, data FROM receipts WHERE client = ? AND request_id = ?",
            (client, request_id),
        )
        if not rows:
            return None
        n, dim, passes, data = rows[0]
        return np.frombuffer(data, dtype=np.float32).reshape(n, dim), int(passes)
