"""Exact billing, shared by every served victim: :class:`Ledger` (reserve, then settle), :class:`BudgetExceeded`.

The rules (an API bills every row it answers, nothing else):

1. **Reserve before running.** A query of N rows reserves N rows of its budget before the model, the
   cache or any defense runs; it is refused with :class:`BudgetExceeded` -- nothing run, nothing
   billed -- when N is more than the budget has left after every bill *and every open reservation*
   (so concurrent queries racing for the last rows can never take the bill past the budget). An empty
   query (N = 0) is free and reserves nothing.
2. **Settle all-or-nothing.** Once the raw answer is known (every row finite), :meth:`Ledger.settle`
   runs the defenses inside their transaction
   (:func:`~sslsteal_fast.victim.defense_api.defense_transaction`) and records the bill of all N rows
   -- cache hits included -- in the same transaction as the defenses' records when the ledger's store
   is theirs (a served API's SQLite state), or right after them (in memory). The answer is handed
   back only then.
3. **Release on failure.** A query that fails anywhere before its bill is recorded -- a bad answer, a
   defense breaking its contract, a failed commit -- releases its reservation: no bill, no defense
   record. A bill recorded inside an enclosing transaction that then rolls back (a server's batch
   commit failing) is taken back with it, and its rows return to the budget.

:class:`MemoryLedger` is :class:`~sslsteal_fast.victim.OnnxVictim`'s (one budget shared by all its
clients, bills in memory); the HTTP server keeps a per-client ledger in SQLite on the same rules
(``sslsteal_fast.serve``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from sslsteal_fast.util.checks import check_client, check_int
from sslsteal_fast.victim.defense_api import Defense, apply_defenses, defense_transaction

__all__ = ["BudgetExceeded", "Ledger", "MemoryLedger", "Reservation"]


class BudgetExceeded(RuntimeError):
    """A query would take the bill past the budget; nothing was served or billed."""

    def __init__(self, requested: int, remaining: int, client: str) -> None:
        super().__init__(
            f"query of {requested} rows by client {client!r} exceeds the budget: {remaining} queries remaining"
        )
        self.requested = requested
        self.remaining = remaining
        self.client = client


class Reservation:
    """Rows of a client's budget held for one query until it is settled or released.

    A context manager: leaving the block releases the reservation unless it was settled (so any
    exception before the bill is recorded leaves no trace).
    """

    def __init__(self, ledger: Ledger, client: str, rows: int) -> None:
        self.ledger = ledger
        self.client = client
        self.rows = rows
        self.open = rows > 0

    def release(self) -> None:
        """Give the rows back (idempotent; a settled reservation has nothing to release)."""
        self.ledger._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Reservation({self.client!r}, rows={self.rows}, open={self.open})"


class Ledger:
    """Bills per client under a budget, on the rules of this module.

    Subclasses say what a budget is (:meth:`limit`, and whether it is per client: ``per_client``)
    and where bills are kept (:meth:`transaction`, :meth:`_persist`, :meth:`_on_rollback`); the rules
    themselves -- reservation, settlement, release -- are only here.
    """

    #: Whether each client has its own budget (True) or all clients share one (False).
    per_client: bool = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._billed: dict[str, int] = {}
        self._reserved: dict[str, int] = {}

    # ------------------------------------------------------------------ what subclasses define
    def limit(self, client: str) -> int | None:
        """The budget ``client`` draws on (rows), or None for unlimited."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        """The store's transaction a bill is recorded in (with the defenses' records when they share it)."""
        return nullcontext()

    def _persist(self, conn: Any, client: str, rows: int) -> None:
        """Record a bill of ``rows`` in the open :meth:`transaction` (nothing to do in memory)."""

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        """Call ``undo`` if the open :meth:`transaction` (or one enclosing it) is rolled back."""

    # ------------------------------------------------------------------ accounting
    def billed(self, client: str) -> int:
        """Rows billed to ``client`` (0 if it never queried)."""
        with self._lock:
            return self._billed.get(client, 0)

    @property
    def bills(self) -> dict[str, int]:
        """Rows billed per client (a copy)."""
        with self._lock:
            return dict(self._billed)

    @property
    def total(self) -> int:
        """Rows billed over all clients."""
        with self._lock:
            return sum(self._billed.values())

    def reserved(self, client: str) -> int:
        """Rows ``client`` holds in open reservations."""
        with self._lock:
            return self._reserved.get(client, 0)

    def _used(self, client: str) -> int:
        """Billed + reserved rows counted against ``client``'s budget."""
        if self.per_client:
            return self._billed.get(client, 0) + self._reserved.get(client, 0)
        return sum(self._billed.values()) + sum(self._reserved.values())

    def remaining(self, client: str = "default") -> int | None:
        """Rows ``client`` may still reserve (None when unlimited); never negative."""
        with self._lock:
            limit = self.limit(client)
            return None if limit is None else max(0, limit - self._used(client))

    # ------------------------------------------------------------------ the rules
    def reserve(self, client: str, rows: int) -> Reservation:
        """Hold ``rows`` of ``client``'s budget for one query (rule 1).

        Raises:
            BudgetExceeded: more rows than the budget has left after bills and open reservations.
        """
        check_client(client)
        check_int("rows", rows, low=0)
        with self._lock:
            remaining = self.remaining(client)
            if remaining is not None and rows > remaining:
                raise BudgetExceeded(rows, remaining, client)
            if rows:
                self._reserved[client] = self._reserved.get(client, 0) + rows
        return Reservation(self, client, rows)

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if not reservation.open:
                return
            reservation.open = False
            left = self._reserved.get(reservation.client, 0) - reservation.rows
            if left > 0:
                self._reserved[reservation.client] = left
            else:
                self._reserved.pop(reservation.client, None)

    def _bill(self, reservation: Reservation) -> None:
        """Turn the open reservation into a bill."""
        client, rows = reservation.client, reservation.rows
        with self._lock:
            self._release(reservation)
            self._billed[client] = self._billed.get(client, 0) + rows

    def _unbill(self, reservation: Reservation) -> None:
        """Take back a bill whose transaction was rolled back: its rows return to the budget."""
        client, rows = reservation.client, reservation.rows
        with self._lock:
            left = self._billed.get(client, 0) - rows
            if left > 0:
                self._billed[client] = left
            else:
                self._billed.pop(client, None)

    def settle(
        self,
        reservation: Reservation,
        defenses: Sequence[Defense],
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        *,
        record: Callable[[Any, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Defend a query's raw answer and bill it, all or nothing (rules 2 and 3); returns the served answer.

        Args:
            reservation: the query's open :class:`Reservation`.
            defenses: the defenses to apply, in order, inside their transaction.
            outputs: float32 (N, D) raw answers (finite); inputs: the (N, C, H, W) images the model saw.
            record: called as ``record(conn, served)`` inside the ledger's transaction, after the
                defenses and before the bill (e.g. to keep a receipt of the answer with the bill).

        Raises:
            whatever a defense or ``record`` raises, or a failed commit; the reservation is then
            released and nothing is billed or recorded.
        """
        if not reservation.open:
            raise RuntimeError(f"{reservation!r} is not open: it was settled or released already")
        try:
            with self.transaction() as conn:
                # The defenses' records join this transaction: they commit with the bill, or not at all.
                with defense_transaction(defenses):
                    served = apply_defenses(defenses, outputs, inputs, reservation.client)
                if record is not None:
                    record(conn, served)
                self._persist(conn, reservation.client, reservation.rows)
                self._bill(reservation)
                # An enclosing transaction (a batch's commit) may still roll back: the bill goes with it.
                self._on_rollback(lambda: self._unbill(reservation))
        except BaseException:
            reservation.release()
            raise
        return served


class MemoryLedger(Ledger):
    """:class:`~sslsteal_fast.victim.OnnxVictim`'s ledger: one budget for all clients, bills in memory.

    Args:
        budget: the most rows that may be billed in total (over every client), or None for unlimited.
    """

    per_client = False

    def __init__(self, budget: int | None = None) -> None:
        super().__init__()
        if budget is not None:
            check_int("budget", budget, low=0)
        self.budget = budget

    def limit(self, client: str) -> int | None:
        return self.budget
