"""Dynamic batching: concurrent requests gathered into one ONNX Runtime batch, then settled in one commit.

Two threads, a pipeline:

* the **run** thread takes the waiting requests -- as many as fit in ``max_batch`` rows, waiting at
  most ``max_wait_ms`` for more to come, counted from when the model is free and a request waits --
  looks their rows up in the
  response cache, runs every missing row of all of them through the model in one batch (a request
  larger than ``max_batch`` runs alone, in chunks), and checks each request's answer is finite;
* the **settle** thread takes each batch in order -- with every other batch that finished while
  the previous commit was being written -- and, in **one** transaction of the server's state,
  settles every request on the ledger's rules (:meth:`~sslsteal_fast.victim.billing.Ledger.settle`:
  the client's defenses, its receipt, its bill; a request that fails rolls back alone, to its
  savepoint). Only after that transaction has committed are the answers released to the waiting
  handlers. While one batch commits, the next one runs.

A request is admitted (:meth:`Batcher.submit`) only after its rows were reserved on the ledger, so a
batch never holds more than the budgets allow.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from sslsteal_fast.serve.ledger import SqliteLedger
from sslsteal_fast.util.checks import check_int, check_number
from sslsteal_fast.victim import OnnxVictim, Reservation
from sslsteal_fast.victim.defense_api import Defense
from sslsteal_fast.victim.serving import NON_FINITE_ANSWER, CachePlan

__all__ = ["Answer", "Batcher", "Job", "ShuttingDown"]

logger = logging.getLogger(__name__)


class ShuttingDown(RuntimeError):
    """The batcher is closed: the request was not admitted (nothing reserved, nothing billed)."""


@dataclasses.dataclass
class Answer:
    """A settled request: the served answer, what was billed, what the model ran; ``replayed`` for a receipt."""

    served: np.ndarray
    billed: int
    forward_passes: int
    cache_hits: int
    replayed: bool = False


@dataclasses.dataclass
class Job:
    """One admitted request on its way through the batcher."""

    client: str
    images: np.ndarray
    reservation: Reservation
    defenses: Sequence[Defense]
    record: Callable[[Any, torch.Tensor, int, int], None]
    future: Future[Answer] = dataclasses.field(default_factory=Future)
    arrived: float = dataclasses.field(default_factory=time.monotonic)
    plan: CachePlan | None = None
    raw: np.ndarray | None = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return int(self.images.shape[0])


class Batcher:
    """Runs admitted requests through ``victim``'s model in gathered batches and settles them on ``ledger``.

    Args:
        victim: the served model (its ``run``, ``cache`` and ``prepare``); no budget or defenses of its own.
        ledger: the server's ledger (its state's transaction is the batch's commit).
        max_batch: most rows in one model run (a larger request runs alone, in chunks of this size).
        max_wait_ms: longest the model, once free, waits for a batch to fill (a lone request waits this long).
    """

    def __init__(self, victim: OnnxVictim, ledger: SqliteLedger, *, max_batch: int, max_wait_ms: float) -> None:
        self.victim = victim
        self.ledger = ledger
        self.max_batch = check_int("--max-batch", max_batch, low=1)
        self.max_wait = check_number("--max-wait-ms", max_wait_ms, low=0.0) / 1000.0
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._settling: queue.Queue[list[Job] | None] = queue.Queue()
        self._closed = False
        self.batches = 0
        self.batched_rows = 0
        self._threads = [
            threading.Thread(target=self._run_loop, name="sslsteal-serve-run", daemon=True),
            threading.Thread(target=self._settle_loop, name="sslsteal-serve-settle", daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def waiting(self) -> int:
        """Requests admitted and not yet taken into a batch."""
        return len(self._waiting)

    # ------------------------------------------------------------------ admission
    def submit(self, job: Job) -> Future[Answer]:
        """Queue an admitted job (its rows reserved); its future resolves once it is committed (or failed)."""
        with self._cond:
            if self._closed:
                job.reservation.release()
                raise ShuttingDown("the server is shutting down")
            self._waiting.append(job)
            self._cond.notify()
        return job.future

    def close(self) -> None:
        """Finish the queued jobs, then stop both threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    # ------------------------------------------------------------------ the run stage
    def _gather(self) -> list[Job] | None:
        ready = time.monotonic()  # when the model became free for the next batch
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            # The window opens when the model is free and a request waits, whichever comes last: the
            # requests that queued while the model ran do not close it at once, so on a busy machine
            # the handlers get max_wait to admit more before a small batch takes the cores.
            deadline = max(ready, self._waiting[0].arrived) + self.max_wait
            jobs: list[Job] = []
            rows = 0
            while True:
                while self._waiting and (not jobs or rows + self._waiting[0].rows <= self.max_batch):
                    job = self._waiting.popleft()
                    jobs.append(job)
                    rows += job.rows
                full = rows >= self.max_batch or bool(self._waiting)  # the next one does not fit
                left = deadline - time.monotonic()
                if full or left <= 0 or self._closed:
                    return jobs
                self._cond.wait(left)

    def _run_loop(self) -> None:
        while True:
            jobs = self._gather()
            if jobs is None:
                self._settling.put(None)
                return
            try:
                self._run(jobs)
            except Exception as exc:  # a model failure fails every job of the batch
                logger.exception("model run failed")
                for job in jobs:
                    job.error = job.error or exc
            self._settling.put(jobs)

    def _run(self, jobs: list[Job]) -> None:
        cache = self.victim.cache
        for job in jobs:
            job.plan = cache.plan(job.images)
        parts = [job.images if job.plan.runs_all else job.images[job.plan.first] for job in jobs if job.plan.misses]
        fresh = self.victim.run(np.concatenate(parts) if len(parts) > 1 else parts[0]) if parts else None
        self.batches += 1
        self.batched_rows += sum(job.plan.misses for job in jobs)
        start = 0
        for job in jobs:
            mine = fresh[start : start + job.plan.misses] if fresh is not None else np.empty((0, cache.dim), np.float32)
            start += job.plan.misses
            if not np.isfinite(mine).all():
                job.error = ValueError(NON_FINITE_ANSWER)
                continue
            job.raw = cache.fill(job.plan, mine)

    # ------------------------------------------------------------------ the settle stage
    def _settle_loop(self) -> None:
        while True:
            jobs = self._settling.get()
            if jobs is None:
                return
            # Group commit: every batch that finished while the last commit was on disk joins this one,
            # so the commits (a disk flush each) never fall behind the model.
            stop = False
            while not stop:
                try:
                    more = self._settling.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    jobs = jobs + more
            self._settle(jobs)
            if stop:
                return

    def _settle(self, jobs: list[Job]) -> None:
        answers: dict[int, Answer] = {}
        live = [job for job in jobs if job.error is None]
        try:
            if live:
                with self.ledger.transaction():  # one commit for the whole batch
                    for job in live:
                        answer = self._settle_one(job)
                        if answer is not None:
                            answers[id(job)] = answer
        except Exception as exc:  # the commit failed: the bills rolled back with it
            logger.exception("committing a batch failed")
            for job in live:
                job.error = job.error or exc
            answers.clear()
        for job in jobs:
            job.reservation.release()  # a no-op for the settled ones
            if job.error is not None or id(job) not in answers:
                job.future.set_exception(job.error or RuntimeError("the request was not settled"))
            else:
                job.future.set_result(answers[id(job)])

    def _settle_one(self, job: Job) -> Answer | None:
        assert job.raw is not None and job.plan is not None
        ran, hits = job.plan.misses, job.plan.hits
        try:
            served = self.ledger.settle(
                job.reservation,
                job.defenses,
                torch.from_numpy(job.raw),
                torch.from_numpy(job.images),
                record=lambda conn, out: job.record(conn, out, ran, hits),
            )
        except Exception as exc:  # this request alone rolled back (its savepoint); the batch goes on
            job.error = exc
            return None
        return Answer(served.numpy(), job.rows, ran, hits)
