"""Run a sweep: the victim queried once per query set, cells in a process pool, results in SQLite.

Order of work (everything before the cells is computed once and cached in ``--out``):

1. **Victim**: resolve the config's victim to an ONNX file (see :mod:`.artifacts`).
2. **Data**: the probe train/test sets and, per query set, its first ``max(budgets)`` images.
3. **Answers** (query-once): per query set and defense, the victim (an ``OnnxVictim``) answers those
   images once, through ``attacks.query_victim``; a cell with budget b trains on the first b answers
   (nested budgets). So the victim's forward passes equal the unique queries, not the sum of budgets
   over cells. A cell is still *billed* its budget: what that attack would have paid alone.
4. **Victim probe**: the victim's own linear / kNN accuracy and its test features (for fidelity).
5. **Cells**: each (loss, budget, query set, seed, defense) steals and probes in a worker process;
   the parent commits one row per finished cell (:class:`.store.ResultStore`), so a killed sweep
   resumes where it stopped.

With ``strategy = "augmented"`` cells cannot share answers (augmented views are random per cell and
epoch): each cell queries its own ``OnnxVictim`` and its measured bill and forward passes are recorded.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sslsteal_fast.sweep.artifacts import PreparedVictim, load_tensors, prepare_victim, save_tensors
from sslsteal_fast.sweep.config import DatasetRef, SweepConfig, stable_hash
from sslsteal_fast.sweep.store import ResultStore

__all__ = ["Cell", "CellTask", "SweepRun", "expand_grid", "run_sweep", "run_cell", "available_cores", "plan_workers"]

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
        "steal": dataclasses.asdict(cfg.steal),
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


@dataclass
class CellTask:
    """What a worker needs to run one cell: plain values and file paths (cheap to pickle)."""

    cell_id: str
    loss: str
    budget: int
    query_dataset: str
    defense: str
    seed: int
    steal: dict[str, Any]
    queries_path: str
    answers_path: str | None
    onnx_path: str
    victim_batch_size: int
    probe_data_path: str
    victim_eval_path: str
    probe: dict[str, Any]
    encoder_prefix: str | None
    progress: bool
    threads: int
    legit_top1: float | None = None


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


# --------------------------------------------------------------------------------------- the parent


def run_sweep(cfg: SweepConfig, out: str | Path, *, progress: bool = True, log: Log = print) -> SweepRun:
    """Run (or resume) the sweep ``cfg`` with results in ``out``; returns what was done.

    A failing cell does not stop the others: its traceback is logged, its id is listed in
    ``SweepRun.failed`` and the next run retries it. Committed cells are never rerun.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    t = time.perf_counter()
    victim = prepare_victim(cfg.victim, out, progress=progress, log=log)
    timings["victim_prepare_s"] = time.perf_counter() - t
    timings["victim_train_s"] = victim.train_time_s

    cells = expand_grid(cfg)
    ids = [stable_hash(cell_key(cfg, c, victim.sha256)) for c in cells]
    store = ResultStore(out / "results.sqlite")
    try:
        done = store.done_ids()
        pending = [(i, c) for i, c in zip(ids, cells, strict=True) if i not in done]
        resumed = len(cells) - len(pending)
        if resumed:
            log(f"sweep: resuming, {resumed} of {len(cells)} cells already done")

        t = time.perf_counter()
        probe_path, probe_meta = _probe_data(cfg, out)
        query_paths = {q.name: _query_images(q, max(cfg.grid.budgets), out) for q in cfg.grid.query_datasets}
        timings["data_s"] = time.perf_counter() - t
        overlap = _overlap_with_victim_train(cfg, query_paths)
        for name, count in overlap.items():
            if count:
                log(f"sweep: WARNING {count} query images of {name!r} are also victim training images")

        t = time.perf_counter()
        answers: dict[str, dict[str, Any]] = {}
        if cfg.steal.strategy == "query-once":
            for q in cfg.grid.query_datasets:
                for defense in cfg.grid.defenses:
                    answers[_group(q.name, defense)] = _victim_answers(
                        cfg, victim, q, defense, query_paths[q.name], out, progress=progress, log=log
                    )
        timings["query_s"] = time.perf_counter() - t

        t = time.perf_counter()
        eval_path, victim_eval = _victim_eval(cfg, victim, store, probe_path, probe_meta, out, progress, log)
        legit = {
            d: _legit_eval(cfg, victim, store, probe_path, probe_meta, d, victim_eval, progress, log)
            for d in cfg.grid.defenses
        }
        timings["victim_eval_s"] = time.perf_counter() - t

        workers, threads = plan_workers(cfg.run.workers, cfg.run.threads, len(pending))
        tasks = [
            CellTask(
                cell_id=cid,
                loss=c.loss,
                budget=c.budget,
                query_dataset=c.query.name,
                defense=c.defense,
                seed=c.seed,
                steal=dataclasses.asdict(cfg.steal),
                queries_path=str(query_paths[c.query.name]),
                answers_path=answers[_group(c.query.name, c.defense)]["path"] if answers else None,
                onnx_path=str(victim.onnx),
                victim_batch_size=cfg.victim.batch_size,
                probe_data_path=str(probe_path),
                victim_eval_path=str(eval_path),
                probe={
                    "epochs": cfg.probe.epochs,
                    "lr": cfg.probe.lr,
                    "knn_k": cfg.probe.knn_k,
                    "knn_temperature": cfg.probe.knn_temperature,
                    "batch_size": cfg.probe.batch_size,
                    "num_classes": int(probe_meta["num_classes"]),
                },
                encoder_prefix=str(out / "encoders" / cid) if cfg.run.save_encoders else None,
                progress=progress and workers == 1,
                threads=threads,
                legit_top1=legit[c.defense],
            )
            for cid, c in pending
        ]
        t = time.perf_counter()
        failed: list[str] = []
        if tasks:
            log(f"sweep: {len(tasks)} cells to run on {workers} worker(s) x {threads} torch thread(s)")
            failed = _execute(tasks, store, workers, threads, progress=progress, log=log)
        timings["cells_s"] = time.perf_counter() - t
    finally:
        store.close()
    timings["sweep_s"] = time.perf_counter() - t_start
    run = SweepRun(
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
    )
    return run


def _group(query_name: str, defense: str) -> str:
    return f"{query_name}|{defense}"


def _execute(
    tasks: list[CellTask], store: ResultStore, workers: int, threads: int, *, progress: bool, log: Log
) -> list[str]:
    """Run tasks (in-process when workers == 1, else a spawn process pool); commit each row as it lands."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="sweep cells", unit="cell", disable=not progress)
    failed: list[str] = []

    def finish(task: CellTask, row: dict[str, Any] | None, error: str | None) -> None:
        if row is not None:
            store.insert_cell(row)
            bar.set_postfix_str(f"{task.loss} {task.query_dataset} b={task.budget}: top1={row['probe_top1']:.3f}")
        else:
            failed.append(task.cell_id)
            log(f"sweep: cell {task.loss}/{task.query_dataset}/budget {task.budget}/seed {task.seed} failed:\n{error}")
        bar.update()

    try:
        if workers == 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
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
            return failed
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
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
        return failed
    finally:
        bar.close()


# ------------------------------------------------------------------------------- cached inputs


def _probe_data(cfg: SweepConfig, out: Path) -> tuple[Path, dict[str, Any]]:
    key = stable_hash({"train": cfg.probe.train.key(), "test": cfg.probe.test.key()})
    path = out / "data" / f"probe-{key}.safetensors"
    if path.is_file():
        _, meta = load_tensors(path)
        return path, meta
    train, test = cfg.probe.train.load(), cfg.probe.test.load()
    if train.num_classes != test.num_classes:
        raise ValueError(
            f"probe.train ({train.num_classes} classes) and probe.test ({test.num_classes} classes) must have the "
            "same classes"
        )
    for where, ds in (("probe.train", train), ("probe.test", test)):
        if bool((ds.labels < 0).any()):
            raise ValueError(f"{where}: dataset {ds.name!r} has unlabeled rows; probes need labels")
    meta = {"num_classes": train.num_classes, "train_size": len(train), "test_size": len(test)}
    tensors = {
        "train_images": train.images,
        "train_labels": train.labels,
        "test_images": test.images,
        "test_labels": test.labels,
    }
    save_tensors(path, tensors, meta)
    return path, meta


def _query_images(q: DatasetRef, count: int, out: Path) -> Path:
    key = stable_hash({"query": q.key(), "count": count})
    path = out / "data" / f"queries-{_safe(q.name)}-{key}.safetensors"
    if path.is_file():
        return path
    ds = q.load()
    if len(ds) < count:
        raise ValueError(
            f"grid.query_datasets: {q.name!r} has {len(ds)} images but the largest budget is {count}; give it "
            "more images (e.g. a larger 'count' in its [datasets] table) or lower grid.budgets"
        )
    save_tensors(path, {"images": ds.images[:count], "labels": ds.labels[:count]}, {"name": q.name, "count": count})
    return path


def _overlap_with_victim_train(cfg: SweepConfig, query_paths: dict[str, Path]) -> dict[str, int]:
    """Query images that are byte-identical to a victim training image (only when the sweep trains the victim)."""
    import hashlib

    if cfg.victim.train is None:
        return {}
    train = cfg.victim.train.dataset_ref().load()
    seen = {hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest() for img in train.images}
    overlap = {}
    for name, path in query_paths.items():
        images = load_tensors(path)[0]["images"]
        overlap[name] = sum(hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest() in seen for img in images)
    return overlap


def _defenses(name: str) -> tuple[Any, ...]:
    """The victim-side defense objects for a ``grid.defenses`` entry.

    Reusing answer prefixes for nested budgets stays exact under every defense: stateless ones
    (noise, quantize, topk) depend only on (client, input), and stateful ones (detection, coverage)
    are causal -- the answer to query i depends only on queries 0..i -- so the first N answers of one
    pass are exactly what a thief with budget N, sending the same queries in the same order, receives.
    """
    if name == "none":
        return ()
    from sslsteal_fast.defenses import make_defense

    return (make_defense(name),)


def _victim_answers(
    cfg: SweepConfig,
    victim: PreparedVictim,
    q: DatasetRef,
    defense: str,
    queries_path: Path,
    out: Path,
    *,
    progress: bool,
    log: Log,
) -> dict[str, Any]:
    """The victim's answers to a query set's images, queried once and cached in ``out/answers``.

    A file with at least the needed rows is reused as is (no forward passes); a shorter one (the
    largest budget grew) is extended by querying only the missing rows. The metadata keeps the
    cumulative billed queries and forward passes spent on this file.
    """
    from sslsteal_fast.attacks import query_victim
    from sslsteal_fast.victim import OnnxVictim

    count = max(cfg.grid.budgets)
    key = stable_hash({"victim": victim.sha256, "query": q.key(), "defense": defense})
    path = out / "answers" / f"{_safe(q.name)}-{_safe(defense)}-{key}.safetensors"
    answers = torch.zeros(0)
    meta: dict[str, Any] = {"forward_passes": 0, "billed_queries": 0}
    if path.is_file():
        tensors, meta = load_tensors(path)
        answers = tensors["answers"]
    have = int(answers.shape[0])
    new_passes = 0
    if have < count:
        images = load_tensors(queries_path)[0]["images"]
        api = OnnxVictim(
            victim.onnx, budget=count - have, batch_size=cfg.victim.batch_size, defenses=_defenses(defense)
        )
        _check_images(api.input_shape, images, q.name)
        log(f"sweep: querying the victim with {count - have} images of {q.name!r} (defense {defense})")
        fresh = query_victim(api, images[have:count], batch_size=cfg.victim.batch_size, progress=progress)
        answers = fresh if have == 0 else torch.cat([answers, fresh])
        new_passes = api.forward_passes
        meta = {
            "query_dataset": q.name,
            "defense": defense,
            "victim_sha256": victim.sha256,
            "rows": count,
            "forward_passes": int(meta["forward_passes"]) + api.forward_passes,
            "billed_queries": int(meta["billed_queries"]) + api.queries_used,
        }
        save_tensors(path, {"answers": answers}, meta)
    return {
        "path": str(path),
        "query_dataset": q.name,
        "defense": defense,
        "rows": count,
        "forward_passes": int(meta["forward_passes"]),
        "billed_queries": int(meta["billed_queries"]),
        "forward_passes_this_run": new_passes,
        "output_dim": int(answers.shape[1]),
    }


def _check_images(input_shape: tuple[int | None, ...], images: torch.Tensor, name: str) -> None:
    c, h, w = input_shape
    _, ic, ih, iw = images.shape
    if (c is not None and c != ic) or (h is not None and h != ih) or (w is not None and w != iw):
        raise ValueError(
            f"query set {name!r} has images of shape {(ic, ih, iw)} but the victim takes {input_shape}; set the "
            "dataset's size/channels options to match"
        )


def _victim_eval(
    cfg: SweepConfig,
    victim: PreparedVictim,
    store: ResultStore,
    probe_path: Path,
    probe_meta: dict[str, Any],
    out: Path,
    progress: bool,
    log: Log,
) -> tuple[Path, dict[str, Any]]:
    """The victim's linear / kNN probe accuracy and test features, computed once per sweep.

    Also the same probes on an untrained encoder of the thief's architecture (the floor a stolen
    copy must beat: random convolutional features are far from useless on simple images).

    The metrics are stored in SQLite (``kv``) and the features in ``out/victim``; the victim is
    evaluated through its own unbilled ``OnnxVictim`` (the owner's forward passes, reported apart).
    """
    from sslsteal_fast.probes import knn_probe
    from sslsteal_fast.victim import OnnxVictim

    key = stable_hash({"victim": victim.sha256, "probe": cfg.probe.key(), "baseline_arch": cfg.steal.arch})
    path = out / "victim" / f"eval-{key}.safetensors"
    stored = store.get(f"victim_eval:{key}")
    if stored is not None and path.is_file():
        return path, stored
    log("sweep: probing the victim")
    data, _ = load_tensors(probe_path)
    api = OnnxVictim(victim.onnx, batch_size=cfg.victim.batch_size)
    t = time.perf_counter()
    p = cfg.probe
    num_classes = int(probe_meta["num_classes"])
    train_x, test_x, lin = _probe_through(api, cfg, data, num_classes, client="default", progress=progress)
    knn = knn_probe(
        train_x,
        data["train_labels"],
        test_x,
        data["test_labels"],
        num_classes,
        k=p.knn_k,
        temperature=p.knn_temperature,
    )
    baseline = _random_init_baseline(cfg, data, num_classes)
    metrics = {
        **baseline,
        "victim_top1": float(lin.top1),
        "victim_top5": float(lin.top5),
        "victim_knn_top1": float(knn.top1),
        "victim_eval_forward_passes": int(api.forward_passes),
        "victim_eval_s": time.perf_counter() - t,
        "num_classes": num_classes,
        "probe_train_size": int(probe_meta["train_size"]),
        "probe_test_size": int(probe_meta["test_size"]),
    }
    save_tensors(path, {"test_features": test_x, "test_predictions": lin.predictions.to(torch.int64)}, metrics)
    store.put(f"victim_eval:{key}", metrics)
    return path, metrics


def _legit_eval(
    cfg: SweepConfig,
    victim: PreparedVictim,
    store: ResultStore,
    probe_path: Path,
    probe_meta: dict[str, Any],
    defense: str,
    victim_eval: dict[str, Any],
    progress: bool,
    log: Log,
) -> float:
    """The honest user's downstream accuracy under ``defense``: a linear probe trained and tested on the
    defended answers to their own labelled images (client ``"honest"``), next to which each cell's thief
    accuracy is reported. Without a defense it is the victim's own probe accuracy."""
    if defense == "none":
        return float(victim_eval["victim_top1"])
    from sslsteal_fast.victim import OnnxVictim

    key = f"legit_eval:{stable_hash({'victim': victim.sha256, 'probe': cfg.probe.key(), 'defense': defense})}"
    stored = store.get(key)
    if stored is not None:
        return float(stored["legit_top1"])
    log(f"sweep: honest user's accuracy under defense {defense!r}")
    data, _ = load_tensors(probe_path)
    api = OnnxVictim(victim.onnx, batch_size=cfg.victim.batch_size, defenses=_defenses(defense))
    num_classes = int(probe_meta["num_classes"])
    _, _, lin = _probe_through(api, cfg, data, num_classes, client="honest", progress=progress)
    store.put(key, {"legit_top1": float(lin.top1), "billed": int(api.queries_used)})
    return float(lin.top1)


def _probe_through(
    api: Any, cfg: SweepConfig, data: dict[str, torch.Tensor], num_classes: int, *, client: str, progress: bool
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Query the probe's train and test images through ``api`` as ``client`` and fit the linear probe on
    the answers; returns (train features, test features, probe result)."""
    from sslsteal_fast.attacks import query_victim
    from sslsteal_fast.probes import linear_probe

    bs = cfg.victim.batch_size
    train_x = query_victim(api, data["train_images"], batch_size=bs, client=client, progress=progress)
    test_x = query_victim(api, data["test_images"], batch_size=bs, client=client, progress=progress)
    lin = linear_probe(
        train_x,
        data["train_labels"],
        test_x,
        data["test_labels"],
        num_classes,
        **_linear_kwargs(cfg.probe.epochs, cfg.probe.lr, 0),
    )
    return train_x, test_x, lin


def _random_init_baseline(cfg: SweepConfig, data: dict[str, torch.Tensor], num_classes: int) -> dict[str, float]:
    """Probe accuracy of an untrained encoder of the thief's architecture: the floor a theft must beat."""
    from sslsteal_fast.models import build_encoder
    from sslsteal_fast.probes import extract_features, knn_probe, linear_probe

    p = cfg.probe
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = build_encoder(cfg.steal.arch, int(data["train_images"].shape[1]))
    train_x = extract_features(encoder, data["train_images"], batch_size=p.batch_size)
    test_x = extract_features(encoder, data["test_images"], batch_size=p.batch_size)
    train_y, test_y = data["train_labels"], data["test_labels"]
    lin = linear_probe(train_x, train_y, test_x, test_y, num_classes, **_linear_kwargs(p.epochs, p.lr, 0))
    knn = knn_probe(train_x, train_y, test_x, test_y, num_classes, k=p.knn_k, temperature=p.knn_temperature)
    return {"random_init_top1": float(lin.top1), "random_init_knn_top1": float(knn.top1)}


def _linear_kwargs(epochs: int, lr: float | None, seed: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"epochs": epochs, "seed": seed}
    if lr is not None:
        kwargs["lr"] = lr
    return kwargs


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# --------------------------------------------------------------------------------------- a worker

_FILES: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}


def _tensors(path: str) -> dict[str, torch.Tensor]:
    """Load a sweep file once per process (keyed by path, size and mtime: files are replaced, never edited)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILES:
        for old in [k for k in _FILES if k[0] == path]:
            del _FILES[old]
        _FILES[key] = load_tensors(Path(path))[0]
    return _FILES[key]


def _init_worker(threads: int) -> None:
    """Pool initializer: this worker's share of the cores."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


class CachedAnswers:
    """A :class:`~sslsteal_fast.attacks.Victim` stand-in for cells that reuse cached answers.

    It has the victim's shape but refuses queries: a query-once cell must train on the sweep's
    cached answers, so a query here would be an accounting bug.
    """

    def __init__(self, input_shape: tuple[int, int, int], output_dim: int) -> None:
        self.input_shape = input_shape
        self.output_dim = output_dim
        self.queries_used = 0
        self.forward_passes = 0

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor:
        raise RuntimeError("a sweep cell tried to query the victim although its answers were cached")


def run_cell(task: CellTask) -> dict[str, Any]:
    """Steal and probe one cell; returns its results row (see :data:`.store.CELL_COLUMNS`)."""
    from sslsteal_fast.attacks import StealConfig, steal
    from sslsteal_fast.probes import extract_features, fidelity, knn_probe, linear_probe

    start = time.perf_counter()
    queries = _tensors(task.queries_path)["images"]
    s = task.steal
    cfg = StealConfig(
        loss=task.loss,
        arch=s["arch"],
        budget=task.budget,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        temperature=s["temperature"],
        strategy=s["strategy"],
        augment=s["augment"],
        seed=task.seed,
    )
    if task.answers_path is not None:
        answers = _tensors(task.answers_path)["answers"]
        c, h, w = (int(v) for v in queries.shape[1:])
        victim: Any = CachedAnswers((c, h, w), int(answers.shape[1]))
        result = steal(victim, queries, cfg, targets=answers[: task.budget], progress=task.progress)
        billed, passes = task.budget, 0
    else:
        from sslsteal_fast.victim import OnnxVictim

        victim = OnnxVictim(task.onnx_path, batch_size=task.victim_batch_size, intra_op_threads=task.threads)
        result = steal(victim, queries, cfg, progress=task.progress)
        billed, passes = result.billed_queries, result.victim_forward_passes
    steal_time = time.perf_counter() - start

    t = time.perf_counter()
    data = _tensors(task.probe_data_path)
    veval = _tensors(task.victim_eval_path)
    p = task.probe
    num_classes = int(p["num_classes"])
    train_x = extract_features(result.stolen, data["train_images"], batch_size=p["batch_size"])
    test_x = extract_features(result.stolen, data["test_images"], batch_size=p["batch_size"])
    lin = linear_probe(
        train_x,
        data["train_labels"],
        test_x,
        data["test_labels"],
        num_classes,
        **_linear_kwargs(p["epochs"], p["lr"], task.seed),
    )
    knn = knn_probe(
        train_x,
        data["train_labels"],
        test_x,
        data["test_labels"],
        num_classes,
        k=p["knn_k"],
        temperature=p["knn_temperature"],
    )
    fid = fidelity(test_x, veval["test_features"], lin.predictions, veval["test_predictions"])
    probe_time = time.perf_counter() - t

    if task.encoder_prefix is not None:
        from sslsteal_fast.models import save_checkpoint

        save_checkpoint(task.encoder_prefix, result.stolen.encoder, {"cell_id": task.cell_id, "config": result.config})
    final = result.history[-1] if result.history else None
    return {
        "cell_id": task.cell_id,
        "loss": task.loss,
        "budget": task.budget,
        "query_dataset": task.query_dataset,
        "defense": task.defense,
        "seed": task.seed,
        "arch": s["arch"],
        "epochs": s["epochs"],
        "strategy": s["strategy"],
        "probe_top1": float(lin.top1),
        "probe_top5": float(lin.top5),
        "knn_top1": float(knn.top1),
        "legit_top1": task.legit_top1,
        "fidelity_cosine": _num(fid.cosine),
        "fidelity_l2": _num(fid.l2),
        "fidelity_agreement": _num(fid.agreement),
        "billed_queries": int(billed),
        "cell_forward_passes": int(passes),
        "steal_time_s": steal_time,
        "probe_time_s": probe_time,
        "wall_time_s": time.perf_counter() - start,
        "final_loss": None if final is None or not math.isfinite(final) else float(final),
        "config_json": stable_json(result.config),
    }


def _num(x: float | None) -> float | None:
    return None if x is None else float(x)


def stable_json(obj: Any) -> str:
    """Compact, key-sorted JSON (for the config column)."""
    import json

    return json.dumps(obj, sort_keys=True, default=str)
