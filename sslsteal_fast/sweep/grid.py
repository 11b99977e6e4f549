"""The grid and the pool: which cells a sweep has, what identifies each, and how they are run.

A cell is one point of the grid (loss, budget, query set, seed, defense); its id is the hash of
everything its result depends on (:func:`cell_key`), which is the SQLite key that makes resuming
exact. :func:`execute` runs cell tasks in this process (one worker) or in a spawn process pool and
hands each finished row to the caller as it lands, so the parent stays the single writer.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import socket
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from sslsteal_fast.models import build_encoder
from sslsteal_fast.sweep.cell import CellTask, init_worker, run_cell, set_worker_device
from sslsteal_fast.sweep.config import DatasetRef, SweepConfig
from sslsteal_fast.sweep.store import ResultStore
from sslsteal_fast.util.progress import progress_bar
from sslsteal_fast.victim.train import resolve_device

__all__ = [
    "RUN_DEPENDENT_COLUMNS",
    "Cell",
    "CellSink",
    "WorkerPlan",
    "available_cores",
    "cell_key",
    "cell_memory_bytes",
    "execute",
    "expand_grid",
    "plan_device_workers",
    "plan_workers",
]

#: What a CUDA worker holds besides its cells' tensors (its CUDA context, cuDNN/cuBLAS workspaces).
CUDA_WORKER_OVERHEAD_BYTES = 1 << 30
#: Float32 activations kept for the backward pass per input value of a batch (a conservative
#: multiple for the package's encoders at the paper's image sizes).
ACTIVATION_FACTOR = 48
#: Share of a GPU's free memory the planner fills (the rest absorbs the estimate's error).
GPU_MEMORY_SHARE = 0.8

Log = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    loss: str
    budget: int
    query: DatasetRef
    seed: int
    defense: str


def expand_grid(cfg: SweepConfig) -> list[Cell]:
    """Every cell of the grid, most expensive first (largest budget), which balances the pool."""
    g = cfg.grid
    cells = [
        Cell(loss, budget, query, seed, defense)
        for query in g.query_datasets
        for defense in g.defenses
        for seed in g.seeds
        for loss in g.losses
        for budget in g.budgets
    ]
    return sorted(cells, key=lambda c: -c.budget)


def cell_key(cfg: SweepConfig, cell: Cell, victim_sha: str) -> dict[str, Any]:
    """Everything that determines a cell's result; its hash is the cell id (the SQLite key)."""
    return {
        "victim": victim_sha,
        "loss": cell.loss,
        "budget": cell.budget,
        "query": cell.query.key(),
        "seed": cell.seed,
        "defense": cell.defense,
        "defense_center": None if cfg.defense_center is None else cfg.defense_center.key(),
        "steal": cfg.steal_key(),
        "probe": cfg.probe.key(),
    }


def available_cores() -> int:
    """CPU cores this process may use (affinity respected)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_workers(requested: int, threads: int | None, pending: int, cores: int | None = None) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` with workers x threads <= cores.

    Workers are capped by the pending cells and the cores; threads default to cores // workers.
    """
    cores = cores or available_cores()
    workers = max(1, min(requested, pending, cores))
    per = max(1, cores // workers)
    return workers, min(threads, per) if threads is not None else per


@dataclass(frozen=True)
class WorkerPlan:
    """How cells run: ``workers`` processes of ``threads`` torch threads, worker i on ``devices[i]``."""

    workers: int
    threads: int
    devices: tuple[str, ...]


def cell_memory_bytes(arch: str, batch_size: int, image_shape: tuple[int, int, int], budget: int, out_dim: int) -> int:
    """An estimate of one cell's GPU memory: the thief's parameters, gradients and Adam state, the
    activations of a batch of two views, and the cell's query images and victim answers."""
    with torch.device("meta"):
        params = sum(p.numel() for p in build_encoder(arch, image_shape[0]).parameters())
    c, h, w = image_shape
    activations = 2 * batch_size * c * h * w * 4 * ACTIVATION_FACTOR
    data = budget * (c * h * w + 4 * out_dim)
    return 16 * params + activations + data


def plan_device_workers(
    device: str,
    requested: int,
    threads: int | None,
    pending: int,
    *,
    per_cell_bytes: int,
    cells_per_gpu: int | None = None,
    cores: int | None = None,
) -> WorkerPlan:
    """Workers and their devices for a sweep on ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    On the CPU: :func:`plan_workers`. With CUDA, ``"cuda"`` uses every visible GPU and ``"cuda:N"``
    that one; each GPU takes ``cells_per_gpu`` workers, else as many cells of ``per_cell_bytes`` (plus
    a worker's CUDA overhead) as fit in :data:`GPU_MEMORY_SHARE` of its free memory (at least one).
    Workers go round-robin over the GPUs, capped by the pending cells and the cores (one core per
    worker at least); ``requested`` (``run.workers``) is the CPU's count and is not used here.
    """
    resolved = resolve_device(device)
    cores = cores or available_cores()
    if resolved.type != "cuda":
        workers, per = plan_workers(requested, threads, pending, cores)
        return WorkerPlan(workers, per, ("cpu",) * workers)
    gpus = [resolved.index] if resolved.index is not None else list(range(torch.cuda.device_count()))
    slots: list[list[str]] = []
    for gpu in gpus:
        if cells_per_gpu is not None:
            fit = cells_per_gpu
        else:
            free, _ = torch.cuda.mem_get_info(gpu)
            fit = max(1, int(free * GPU_MEMORY_SHARE) // (per_cell_bytes + CUDA_WORKER_OVERHEAD_BYTES))
        slots.append([f"cuda:{gpu}"] * fit)
    order = [d for rnd in itertools.zip_longest(*slots) for d in rnd if d is not None]  # round-robin
    workers = max(1, min(len(order), pending, cores))
    per = max(1, cores // workers)
    return WorkerPlan(workers, min(threads, per) if threads is not None else per, tuple(order[:workers]))


#: Row columns that differ between two runs of the same cell (when and where it ran).
RUN_DEPENDENT_COLUMNS = frozenset({"steal_time_s", "probe_time_s", "wall_time_s", "node", "finished_at"})


class CellSink:
    """Where finished cells land, whatever the engine: the sweep's single writer of ``store``.

    :meth:`done` commits a row (one transaction), :meth:`fail` records a failed attempt; both move the
    progress bar. A cell that lands twice (a retried task whose first attempt also finished) keeps
    its first row; if the second disagrees on a result column, that is logged as a determinism bug.
    """

    def __init__(self, store: ResultStore, total: int, *, progress: bool, log: Log) -> None:
        self.store = store
        self.log = log
        self.failed: list[str] = []
        self.duplicates = 0
        self._bar = progress_bar(total=total, desc="sweep cells", unit="cell", disable=not progress)

    def done(self, task: CellTask, row: dict[str, Any]) -> None:
        """Commit ``row``, the result of ``task``."""
        if not self.store.insert_cell(row):
            self.duplicates += 1
            self._compare(row)
        where = f" on {row['node']}" if row.get("node") else ""
        self._bar.set_postfix_str(
            f"{task.loss} {task.query_dataset} b={task.budget}: top1={row['probe_top1']:.3f}{where}"
        )
        self._bar.update()

    def fail(self, task: CellTask, error: str, node: str | None = None) -> None:
        """Record that ``task`` failed with ``error`` (a traceback, or the engine's message)."""
        self.store.record_failure(task.cell_id, error, node)
        self.failed.append(task.cell_id)
        where = f" on {node}" if node else ""
        self.log(
            f"sweep: cell {task.loss}/{task.query_dataset}/budget {task.budget}/seed {task.seed} failed{where}:\n{error}"
        )
        self._bar.update()

    def close(self) -> None:
        self._bar.close()

    def _compare(self, row: dict[str, Any]) -> None:
        first = self.store.cells({row["cell_id"]})[0]
        differ = sorted(k for k, v in row.items() if k not in RUN_DEPENDENT_COLUMNS and first.get(k) != v)
        if differ:
            self.log(
                f"sweep: WARNING cell {row['cell_id']} finished twice with different {', '.join(differ)}; "
                "the first result is kept"
            )


def execute(
    tasks: list[CellTask],
    sink: CellSink,
    workers: int,
    threads: int,
    *,
    devices: tuple[str, ...] | None = None,
) -> list[str]:
    """Run ``tasks`` (in-process when workers == 1, else a spawn process pool) into ``sink``.

    Worker i runs its cells on ``devices[i]`` (None: each task's own ``device``); a worker keeps its
    inputs on its device for all its cells. A cell that raises does not stop the others: its
    traceback is recorded and its id returned.
    """
    failed_before = len(sink.failed)

    def finish(task: CellTask, row: dict[str, Any] | None, error: str | None) -> None:
        if row is not None:
            sink.done(task, row)
        else:
            sink.fail(task, error or "unknown error", socket.gethostname())

    if workers == 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        set_worker_device(devices[0] if devices else None)
        try:
            for task in tasks:
                try:
                    row = run_cell(task)
                except Exception:  # noqa: BLE001 - a failed cell must not stop the others
                    finish(task, None, traceback.format_exc())
                else:
                    finish(task, row, None)
        finally:
            torch.set_num_threads(previous)
            set_worker_device(None)
        return sink.failed[failed_before:]
    ctx = multiprocessing.get_context("spawn")
    # Workers die with this process, even SIGKILLed (init_worker -> die_with_parent). The kernel's
    # parent-death signal follows the thread that started them: here, submit() in this call, which
    # outlives the pool (shut down below), and no worker is started later (no max_tasks_per_child).
    # Each worker takes its device from this queue once, when it starts.
    slots = ctx.Queue()
    for d in devices if devices else (None,) * workers:
        slots.put(d)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(threads, os.getpid(), slots)
    )
    try:
        running: dict[Future[dict[str, Any]], CellTask] = {pool.submit(run_cell, t): t for t in tasks}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                task = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    finish(task, fut.result(), None)
                else:
                    finish(task, None, "".join(traceback.format_exception(exc)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return sink.failed[failed_before:]
