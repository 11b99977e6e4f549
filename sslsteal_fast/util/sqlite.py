"""SQLite as the package's stores use it: WAL journal, explicit transactions, one writer lock.

:func:`connect` opens a database in autocommit mode (``isolation_level=None``), so nothing is
committed implicitly; every write goes through :func:`transaction`, which makes it all-or-nothing.
In WAL mode a committed transaction survives a SIGKILL of the writer (``synchronous=FULL`` also
survives power loss; ``NORMAL`` only process crashes, and is faster). Several processes may open
one database at once: a busy database is waited for (``timeout``), also while switching a new file
to WAL, which SQLite does not retry by itself.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

__all__ = ["connect", "transaction"]


def connect(
    path: str | os.PathLike[str], *, synchronous: str = "FULL", shared: bool = False, timeout: float = 30.0
) -> sqlite3.Connection:
    """Open (creating its folder) the database at ``path``, or an in-memory one for ``":memory:"``.

    ``shared``: the connection may be used from several threads (the caller serialises writes,
    e.g. with the lock it passes to :func:`transaction`).
    """
    memory = str(path) == ":memory:"
    if not memory:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=timeout, check_same_thread=not shared)
    if not memory:
        _enable_wal(conn, timeout)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    # Switching the journal mode does not call the busy handler: retry while another process holds
    # the new file's lock (it is switching it too, or creating the schema), up to ``timeout``.
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def transaction(conn: sqlite3.Connection, lock: threading.RLock | None = None) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if the body raises (under ``lock`` if given)."""
    with lock if lock is not None else nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
