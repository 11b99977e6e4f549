"""The server's ledger: :class:`~sslsteal_fast.victim.billing.Ledger`'s rules, one budget per client, bills in SQLite.

Bills are written to ``usage`` in the transaction of the server's state (:class:`~.state.ServerState`),
the one the defenses' records and the receipt join, so they commit together. The budget check runs
on counters held in memory (loaded from the database when a client is first seen; one server owns a
state folder), so admitting a request never waits for the disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sslsteal_fast.serve.state import ServerState
from sslsteal_fast.victim.billing import Ledger

__all__ = ["SqliteLedger"]


class SqliteLedger(Ledger):
    """Per-client budgets (from the keys) and durable bills in a :class:`~.state.ServerState`."""

    per_client = True

    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self.state = state
        self._budgets: dict[str, int | None] = {}
        self._known = threading.Lock()

    def know(self, client: str, budget: int | None) -> None:
        """Load ``client``'s committed bill and set its budget (once per client; later calls do nothing)."""
        with self._known:
            if client in self._budgets:
                return
            billed = self.state.usage(client)["billed"]
            with self._lock:
                self._budgets[client] = budget
                if billed:
                    self._billed[client] = billed

    def limit(self, client: str) -> int | None:
        if client not in self._budgets:
            raise KeyError(f"no budget is known for client {client!r}")
        return self._budgets[client]

    def transaction(self) -> AbstractContextManager[Any]:
        return self.state.store.transaction()

    def _persist(self, conn: Any, client: str, rows: int) -> None:
        self.state.add_usage(conn, client, billed=rows, requests=1)

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        self.state.store.on_rollback(undo)
