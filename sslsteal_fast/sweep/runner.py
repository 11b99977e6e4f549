"""Run a sweep: the victim queried once per query set, cells in a process pool, results in SQLite.

Order of work (everything before the cells is computed once and cached in ``--out``, see
:mod:`.inputs`):

1. **Data**: the probe train/test sets and, per query set, its first ``max(budgets)`` images (first,
   so that a mistake in the data - a probe test set that shares images with its train set, a query
   set smaller than the largest budget - stops the sweep before any victim is trained).
2. **Victim**: resolve the config's victim to an ONNX file (:mod:`.artifacts`).
3. **Answers** (query-once): per query set and defense, the victim answers those images once.
4. **Evaluations**: the victim's own probes, the untrained floor, the honest user per defense.
5. **Cells**: each (loss, budget, query set, seed, defense) steals and probes in a worker
   (:mod:`.cell`): a process of this machine's pool (:mod:`.grid`, ``engine = "local"``) or a Ray
   task (:mod:`.ray_engine`, ``engine = "ray"``). The parent commits one row per finished cell
   (:class:`.store.ResultStore`), so a killed sweep resumes where it stopped.

With ``strategy = "augmented"`` cells cannot share answers (augmented views are random per cell and
epoch): each cell queries its own defended ``OnnxVictim`` and its measured bill and forward passes
are recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslsteal_fast.config import REP_DIMS
from sslsteal_fast.sweep import inputs
from sslsteal_fast.sweep.artifacts import PreparedVictim, prepare_victim
from sslsteal_fast.sweep.cell import CellTask, cached_tensors, defense_key, detections_file
from sslsteal_fast.sweep.config import SweepConfig
from sslsteal_fast.sweep.grid import (
    Cell,
    CellSink,
    WorkerPlan,
    cell_key,
    cell_memory_bytes,
    execute,
    expand_grid,
    plan_device_workers,
)
from sslsteal_fast.sweep.ray_engine import RaySession, cell_resources, ray_session, run_ray_cells
from sslsteal_fast.sweep.store import ResultStore
from sslsteal_fast.util.files import stable_hash
from sslsteal_fast.victim.train import resolve_device

__all__ = ["SweepRun", "answers_group", "run_sweep"]

Log = Callable[[str], None]


@dataclass
class SweepRun:
    """What :func:`run_sweep` did (the report is built from this and the SQLite rows)."""

    config: SweepConfig
    out: Path
    victim: PreparedVictim
    cell_ids: list[str]
    cells: list[Cell]
    victim_eval: dict[str, Any]
    answers: dict[str, dict[str, Any]]
    ran: int
    resumed: int
    failed: list[str]
    workers: int
    threads: int
    timings: dict[str, float] = field(default_factory=dict)
    overlap: dict[str, int] = field(default_factory=dict)
    engine: str = "local"
    engine_info: dict[str, Any] = field(default_factory=dict)


def _cell_bytes(cfg: SweepConfig, query_paths: dict[str, Path]) -> int:
    """The largest cell's estimated GPU memory (its largest budget, at the resolved batch size)."""
    budget = max(cfg.grid.budgets)
    batch = max(min(cfg.cell_steal(loss, budget, 0).resolved().batch_size or 1, budget) for loss in cfg.grid.losses)
    shape = _image_shape(next(iter(query_paths.values())))
    return cell_memory_bytes(cfg.steal.arch, batch, shape, budget, max(REP_DIMS.values()))  # widest answers


def _image_shape(path: Path) -> tuple[int, int, int]:
    images = cached_tensors(path)["images"]
    c, h, w = (int(v) for v in images.shape[1:])
    return c, h, w


def answers_group(query_name: str, defense: str) -> str:
    """The key of one query set's answers under one defense in :attr:`SweepRun.answers`."""
    return f"{query_name}|{defense}"


def run_sweep(cfg: SweepConfig, out: str | Path, *, progress: bool = True, log: Log = print) -> SweepRun:
    """Run (or resume) the sweep ``cfg`` with results in ``out``; returns what was done.

    A failing cell does not stop the others: its traceback is logged, its id is listed in
    ``SweepRun.failed`` and the next run retries it. Committed cells are never rerun.
    """
    with contextlib.ExitStack() as stack:
        # The Ray session comes first: a bad cluster address fails before any data or victim work.
        session = stack.enter_context(ray_session(cfg.run, log=log)) if cfg.run.engine == "ray" else None
        return _run(cfg, Path(out), session, progress=progress, log=log)


def _run(cfg: SweepConfig, out: Path, session: RaySession | None, *, progress: bool, log: Log) -> SweepRun:
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    t = time.perf_counter()
    probe_path, probe_meta = inputs.probe_data(cfg, out)
    query_paths = {q.name: inputs.query_images(q, max(cfg.grid.budgets), out) for q in cfg.grid.query_datasets}
    timings["data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    victim = prepare_victim(cfg.victim, out, progress=progress, log=log)
    timings["victim_prepare_s"] = time.perf_counter() - t
    timings["victim_train_s"] = victim.train_time_s

    cells = expand_grid(cfg)
    ids = [stable_hash(cell_key(cfg, c, victim.sha256)) for c in cells]
    with ResultStore(out / "results.sqlite") as store:
        done = store.done_ids()
        pending = [(i, c) for i, c in zip(ids, cells, strict=True) if i not in done]
        resumed = len(cells) - len(pending)
        if resumed:
            log(f"sweep: resuming, {resumed} of {len(cells)} cells already done")

        t = time.perf_counter()
        center_path = inputs.defense_center(cfg, victim, out, log=log)
        timings["data_s"] += time.perf_counter() - t
        overlap = inputs.overlap_with_victim_train(cfg, victim, query_paths, log=log)
        for name, count in overlap.items():
            if count:
                log(f"sweep: WARNING {count} query images of {name!r} are also victim training images")

        t = time.perf_counter()
        answers: dict[str, dict[str, Any]] = {}
        if cfg.steal.strategy == "query-once":
            for q in cfg.grid.query_datasets:
                for defense in cfg.grid.defenses:
                    answers[answers_group(q.name, defense)] = inputs.victim_answers(
                        cfg, victim, q, defense, query_paths[q.name], center_path, out, progress=progress, log=log
                    )
        timings["query_s"] = time.perf_counter() - t

        t = time.perf_counter()
        eval_path, victim_eval = inputs.victim_eval(cfg, victim, store, probe_path, probe_meta, out, progress, log)
        honest = {
            d: inputs.honest_eval(
                cfg, victim, store, probe_path, probe_meta, d, victim_eval, center_path, out, progress, log
            )
            for d in cfg.grid.defenses
        }
        timings["victim_eval_s"] = time.perf_counter() - t

        if session is None:
            plan = plan_device_workers(
                cfg.run.device,
                cfg.run.workers,
                cfg.run.threads,
                len(pending),
                per_cell_bytes=_cell_bytes(cfg, query_paths) if resolve_device(cfg.run.device).type == "cuda" else 0,
                cells_per_gpu=cfg.run.cells_per_gpu,
            )
        else:  # Ray places the cells; the task options set their threads and device
            res = cell_resources(cfg.run, session.ray.nodes())
            plan = WorkerPlan(min(res.slots, max(1, len(pending))), res.threads, (res.device,))
        workers, threads = plan.workers, plan.threads
        tasks = [
            CellTask(
                cell_id=cid,
                loss=c.loss,
                budget=c.budget,
                query_dataset=c.query.name,
                defense=c.defense,
                seed=c.seed,
                steal=dataclasses.asdict(cfg.cell_steal(c.loss, c.budget, c.seed)),
                queries_path=str(query_paths[c.query.name]),
                answers_path=answers[answers_group(c.query.name, c.defense)]["path"] if answers else None,
                onnx_path=str(victim.onnx),
                victim_sha256=victim.sha256,
                victim_batch_size=cfg.victim.batch_size,
                defense_key=defense_key(victim.sha256, c.defense),
                center_path=None if center_path is None else str(center_path),
                probe_data_path=str(probe_path),
                victim_eval_path=str(eval_path),
                probe=dataclasses.asdict(cfg.probe.config),
                num_classes=int(probe_meta["num_classes"]),
                honest_top1=honest[c.defense][0],
                honest_detections_path=None if honest[c.defense][1] is None else str(honest[c.defense][1]),
                encoder_prefix=str(out / "encoders" / cid) if cfg.run.save_encoders else None,
                progress=progress and workers == 1,
                threads=threads,
                device=plan.devices[0],
                detections_path=str(detections_file(out, cid)),
            )
            for cid, c in pending
        ]
        t = time.perf_counter()
        failed: list[str] = []
        if tasks:
            sink = CellSink(store, len(tasks), progress=progress, log=log)
            try:
                if session is not None:
                    failed = run_ray_cells(session, tasks, sink, cfg.run)
                else:
                    where = ", ".join(f"{plan.devices.count(d)} on {d}" for d in dict.fromkeys(plan.devices))
                    log(
                        f"sweep: {len(tasks)} cells to run on {workers} worker(s) ({where}) x {threads} torch thread(s)"
                    )
                    failed = execute(tasks, sink, workers, threads, devices=plan.devices)
            finally:
                sink.close()
        timings["cells_s"] = time.perf_counter() - t
    timings["sweep_s"] = time.perf_counter() - t_start
    return SweepRun(
        config=cfg,
        out=out,
        victim=victim,
        cell_ids=ids,
        cells=cells,
        victim_eval=victim_eval,
        answers=answers,
        ran=len(tasks) - len(failed),
        resumed=resumed,
        failed=failed,
        workers=workers,
        threads=threads,
        timings=timings,
        overlap=overlap,
        engine=cfg.run.engine,
        engine_info={} if session is None else {"address": session.address, **session.traffic},
    )
