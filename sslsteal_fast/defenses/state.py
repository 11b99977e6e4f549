"""Per-client defense state in SQLite: bills, detection history, coverage buckets, query banks, secrets.

A defense that keeps per-client state writes it through a :class:`DefenseState`; constructing the
same defense again with the same state path (e.g. after a server restart) reloads it, so accounting
and detection history are not lost. Several defenses may share one database: every row carries the
defense's ``namespace``.

Transactions. Every write happens inside :meth:`DefenseState.transaction` (``BEGIN IMMEDIATE`` on a
WAL database): a query's records are all there or none of them is, even if the process is killed in
the middle. Transactions nest: a defense call opens one, and a victim opens one around all its
defenses sharing the store, so their records (and bills) for one query commit together, only once
the answer is served. What a defense keeps in memory is undone with the store
(:meth:`DefenseState.on_rollback`).

Sharing. Several stores - in threads or in processes - may open one file: a transaction holds the
database's write lock (others wait, up to the busy timeout), and the defenses re-read what other
stores have committed at the start of each transaction, so every query is scored against, and
billed with, everything committed before it.

Tables::

    secrets(name, value)                                   keys for keyed hashing / per-client transforms
    bills(namespace, client, queries)                      rows seen per client
    detections(namespace, client, seq, score, flagged)     one row per query row, in arrival order
    buckets(namespace, client, bucket)                     occupied LSH buckets (coverage)
    bank(namespace, client, start, rows, dim, data)        float32 feature blocks of the query bank
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from sslsteal_fast.util.sqlite import connect, transaction

__all__ = ["DefenseState", "open_state", "secret_for"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bills (
    namespace TEXT NOT NULL, client TEXT NOT NULL, queries INTEGER NOT NULL,
    PRIMARY KEY (namespace, client));
CREATE TABLE IF NOT EXISTS detections (
    namespace TEXT NOT NULL, client TEXT NOT NULL, seq INTEGER NOT NULL, score REAL NOT NULL,
    flagged INTEGER NOT NULL, PRIMARY KEY (namespace, client, seq));
CREATE TABLE IF NOT EXISTS buckets (
    namespace TEXT NOT NULL, client TEXT NOT NULL, bucket INTEGER NOT NULL,
    PRIMARY KEY (namespace, client, bucket));
CREATE TABLE IF NOT EXISTS bank (
    namespace TEXT NOT NULL, client TEXT NOT NULL, start INTEGER NOT NULL, rows INTEGER NOT NULL,
    dim INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (namespace, client, start));
"""


class DefenseState:
    """A SQLite store of per-client defense state.

    Args:
        path: the database file (created with its folder), or ``":memory:"`` for a throw-away store.
        timeout: seconds to wait for another connection's transaction on the same file.
        synchronous: SQLite's ``synchronous`` setting: ``NORMAL`` (a commit survives a crash of the
            process) or ``FULL`` (a power cut too; what an API's bills use).

    Raises:
        ValueError: ``path`` exists but is not a SQLite database (the message names it).
    """

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, timeout: float = 60.0, synchronous: str = "NORMAL"
    ) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._undo: list[list[Callable[[], None]]] = []  # one list per open (nested) transaction
        try:
            self._conn = connect(self.path, synchronous=synchronous, shared=True, timeout=timeout)
            self._conn.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            raise ValueError(f"{self.path}: cannot open the defense state database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a defense state database ({exc})") from None

    def __repr__(self) -> str:
        return f"DefenseState({self.path!r})"

    def close(self) -> None:
        """Close the connection (further use raises)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> DefenseState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- transactions
    @property
    def lock(self) -> threading.RLock:
        """The store's lock, held through every transaction (hold it to read defense memory consistently)."""
        return self._lock

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing: the writes (and :meth:`on_rollback` undos) inside commit together or not at all.

        The outermost transaction is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (it holds the database's write
        lock, so other connections to the file wait); a nested one is a savepoint that joins it. The
        store's lock is held throughout, so threads sharing the store take turns.
        """
        with self._lock:
            depth = len(self._undo)
            self._undo.append([])
            try:
                if depth == 0:
                    with transaction(self._conn) as conn:
                        yield conn
                else:
                    with self._savepoint(depth) as conn:
                        yield conn
            except BaseException:
                for undo in reversed(self._undo.pop()):
                    undo()
                if depth == 0 and self._conn.in_transaction:  # the COMMIT itself failed
                    self._conn.execute("ROLLBACK")
                raise
            done = self._undo.pop()
            if self._undo:
                self._undo[-1].extend(done)  # the enclosing transaction may still roll back

    @contextmanager
    def _savepoint(self, depth: int) -> Iterator[sqlite3.Connection]:
        name = f"nested_{depth}"
        self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        self._conn.execute(f"RELEASE {name}")

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """The rows of one read-only statement, under the store's lock (what other tables in the file need)."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Call ``undo`` if the open transaction is rolled back (to revert what a defense keeps in memory)."""
        with self._lock:
            if not self._undo:
                raise RuntimeError("DefenseState.on_rollback: no transaction is open")
            self._undo[-1].append(undo)

    @staticmethod
    def _add_bill(conn: sqlite3.Connection, namespace: str, client: str, queries: int) -> None:
        conn.execute(
            "INSERT INTO bills (namespace, client, queries) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, client) DO UPDATE SET queries = queries + excluded.queries",
            (namespace, client, int(queries)),
        )

    # -------------------------------------------------------------------------------- secrets
    def secret(self, name: str, nbytes: int = 32) -> bytes:
        """The secret called ``name``, created from ``os.urandom`` on first use and kept forever.

        Stores opening one file at the same time agree on it: the first to commit one wins.
        """
        with self._lock:
            row = self._conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            if row is None:
                with self.transaction() as conn:
                    conn.execute(
                        "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, os.urandom(nbytes))
                    )
                    row = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            return bytes(row[0])

    # ---------------------------------------------------------------------------------- bills
    def add_bill(self, namespace: str, client: str, queries: int) -> None:
        """Add ``queries`` rows to ``client``'s bill."""
        with self.transaction() as conn:
            self._add_bill(conn, namespace, client, queries)

    def bills(self, namespace: str) -> dict[str, int]:
        """Rows billed per client."""
        with self._lock:
            rows = self._conn.execute("SELECT client, queries FROM bills WHERE namespace = ?", (namespace,))
            return {c: int(q) for c, q in rows.fetchall()}

    # ----------------------------------------------------------------------------- detections
    def record_detections(
        self, namespace: str, client: str, start: int, scores: np.ndarray, flags: np.ndarray, queries: int
    ) -> None:
        """Append per-row scores and flags (rows ``start, start+1, ...``) and bill ``queries`` rows, atomically."""
        rows = [
            (namespace, client, start + i, float(s), int(f)) for i, (s, f) in enumerate(zip(scores, flags, strict=True))
        ]
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO detections (namespace, client, seq, score, flagged) VALUES (?, ?, ?, ?, ?)", rows
            )
            self._add_bill(conn, namespace, client, queries)

    def detections(self, namespace: str, client: str) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float64 (n,), flags bool (n,))`` of ``client`` in arrival order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT score, flagged FROM detections WHERE namespace = ? AND client = ? ORDER BY seq",
                (namespace, client),
            ).fetchall()
        scores = np.array([r[0] for r in rows], dtype=np.float64)
        return scores, np.array([bool(r[1]) for r in rows], dtype=bool)

    # -------------------------------------------------------------------------------- buckets
    def add_buckets(self, namespace: str, client: str, buckets: Iterable[int], queries: int) -> None:
        """Mark ``buckets`` occupied for ``client`` and bill ``queries`` rows, atomically."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO buckets (namespace, client, bucket) VALUES (?, ?, ?)",
                [(namespace, client, int(b)) for b in buckets],
            )
            self._add_bill(conn, namespace, client, queries)

    def buckets(self, namespace: str) -> dict[str, set[int]]:
        """Occupied buckets per client."""
        out: dict[str, set[int]] = {}
        with self._lock:
            for client, bucket in self._conn.execute(
                "SELECT client, bucket FROM buckets WHERE namespace = ?", (namespace,)
            ).fetchall():
                out.setdefault(client, set()).add(int(bucket))
        return out

    def client_buckets(self, namespace: str, client: str) -> set[int]:
        """Occupied buckets of one client."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT bucket FROM buckets WHERE namespace = ? AND client = ?", (namespace, client)
            ).fetchall()
        return {int(r[0]) for r in rows}

    def bucket_count(self, namespace: str, client: str) -> int:
        """Number of occupied buckets of one client."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM buckets WHERE namespace = ? AND client = ?", (namespace, client)
            ).fetchone()
        return int(row[0])

    # ----------------------------------------------------------------------------------- bank
    def append_bank(self, namespace: str, client: str, start: int, rows: np.ndarray) -> None:
        """Store a float32 (n, dim) block of ``client``'s query bank starting at row ``start``."""
        block = np.ascontiguousarray(rows, dtype=np.float32)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO bank (namespace, client, start, rows, dim, data) VALUES (?, ?, ?, ?, ?, ?)",
                (namespace, client, int(start), int(block.shape[0]), int(block.shape[1]), block.tobytes()),
            )

    def bank_clients(self, namespace: str) -> list[str]:
        """Clients with a stored bank."""
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT client FROM bank WHERE namespace = ?", (namespace,))
            return [r[0] for r in rows.fetchall()]

    def bank_rows(self, namespace: str, client: str) -> int:
        """Rows in ``client``'s stored bank."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COALESCE(SUM(rows), 0) FROM bank WHERE namespace = ? AND client = ?", (namespace, client)
            ).fetchone()
        return int(row[0])

    def bank_blocks(self, namespace: str, client: str, start: int = 0) -> Iterator[np.ndarray]:
        """``client``'s bank blocks in order (float32 (n, dim) each), from the one starting at row ``start``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT start, rows, dim, data FROM bank WHERE namespace = ? AND client = ? AND start >= ? "
                "ORDER BY start",
                (namespace, client, int(start)),
            ).fetchall()
        expected = int(start)
        for first, n, dim, data in rows:
            if first != expected:
                raise ValueError(
                    f"{self.path}: the bank of client {client!r} ({namespace}) has a gap or an overlap at row {expected}"
                )
            expected += n
            yield np.frombuffer(data, dtype=np.float32).reshape(n, dim)


def open_state(state: DefenseState | str | os.PathLike[str] | None) -> DefenseState:
    """``state`` itself, a store opened at that path, or a fresh in-memory store for None."""
    if isinstance(state, DefenseState):
        return state
    return DefenseState(":memory:" if state is None else state)


def secret_for(key: bytes | None, state: DefenseState | str | os.PathLike[str] | None, name: str) -> bytes:
    """``key`` itself, else the secret ``name`` of ``state`` (created on first use; a fresh random
    secret in a throw-away store when ``state`` is None)."""
    return key if key is not None else open_state(state).secret(name)
