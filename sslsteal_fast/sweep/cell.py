"""The worker side of a sweep: one cell steals, probes and returns its results row.

A :class:`CellTask` carries only plain values and file paths (cheap to pickle into a spawn worker);
the worker loads the sweep's cached inputs once per process (:func:`cached_tensors`). A query-once
cell trains on the sweep's cached victim answers and never queries (its stand-in victim,
:class:`CachedAnswers`, refuses to); an augmented-query cell serves its own defended ``OnnxVictim``
and its measured bill and forward passes are recorded.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslsteal_fast.attacks import StealConfig, steal
from sslsteal_fast.config import ProbeConfig
from sslsteal_fast.defenses import SimilarityDetector, detection_metrics, make_defense
from sslsteal_fast.probes import extract_features, fidelity, probe_features
from sslsteal_fast.sweep.store import DETECTION_COLUMNS
from sslsteal_fast.util.files import load_tensors, save_tensors
from sslsteal_fast.victim import OnnxVictim

__all__ = [
    "CachedAnswers",
    "CellTask",
    "cached_tensors",
    "defense_key",
    "detections_file",
    "die_with_parent",
    "init_worker",
    "run_cell",
    "stable_json",
]

#: ``prctl`` option: the signal the kernel sends this process when its parent exits (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: Seconds between two looks of the parent watchdog.
_WATCH_INTERVAL_S = 0.5


@dataclass
class CellTask:
    """What a worker needs to run one cell: plain values and file paths.

    ``steal``: the cell's StealConfig as a dict; ``probe``: the ProbeConfig as a dict;
    ``answers_path``: the cached victim answers (query-once), None for augmented cells, which
    query ``onnx_path`` themselves through ``defense`` (built with ``defense_key`` and the centre
    in ``center_path``); ``honest``: the honest user's probe accuracy and, under a detector, the
    file with their detection scores. ``detections_path``: where a detector cell writes both
    clients' per-query scores, flags and ground truth (:func:`detections_file`), None: nowhere.
    """

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
    victim_sha256: str
    victim_batch_size: int
    defense_key: str
    center_path: str | None
    probe_data_path: str
    victim_eval_path: str
    probe: dict[str, Any]
    num_classes: int
    honest_top1: float | None
    honest_detections_path: str | None
    encoder_prefix: str | None
    progress: bool
    threads: int
    device: str = "cpu"
    detections_path: str | None = None


_FILES: dict[tuple[str, int, int, str], dict[str, torch.Tensor]] = {}
#: The device this worker runs its cells on (set once by :func:`init_worker`); None: each task's own.
_WORKER_DEVICE: str | None = None


def cached_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a sweep file once per process and device (keyed by path, size and mtime: files are replaced,
    never edited). On a GPU the tensors move there once, and every later cell of the worker reuses them."""
    path = str(path)
    device = str(torch.device(device))
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, device)
    if key not in _FILES:
        for old in [k for k in _FILES if k[0] == path and k[1:3] != key[1:3]]:
            del _FILES[old]
        if device == "cpu":
            _FILES[key] = load_tensors(path)[0]
        else:
            _FILES[key] = {k: v.to(device) for k, v in cached_tensors(path).items()}
    return _FILES[key]


def set_worker_device(device: str | None) -> None:
    """The device this process runs cells on from now on (None: each task's ``device``)."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = device


def init_worker(threads: int, parent: int | None = None, devices: Any = None) -> None:
    """Pool initializer: this worker's share of the cores, its device (one taken from the ``devices``
    queue), and its death with ``parent`` (the sweep's pid)."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if devices is not None:
        set_worker_device(devices.get())
    if parent is not None:
        die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """End this process as soon as ``parent`` (the pid that started it) is gone, however it died.

    A pool worker outlives a parent killed by SIGKILL (or the OOM killer): it is re-parented and
    waits forever for work, holding its memory. On Linux the kernel is asked to SIGKILL this process
    when its parent exits (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon thread also checks
    every half second that the parent is still ``parent`` and exits if not. The check also runs
    once now, for a parent that died before this was called. A worker has nothing to save: the
    parent is the only writer of results.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl to call: the watchdog alone
            pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="sslsteal-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCH_INTERVAL_S)
    os._exit(1)


def defense_key(victim_sha: str, defense: str) -> str:
    """The secret (hex, 32 bytes) of a sweep's defense: a function of the victim and the spec.

    A served API would keep a random secret; a sweep derives it, so that its keyed noise, junk and
    remapping are the same in every cell, every resumed run and every repetition of the experiment.
    """
    return hashlib.blake2b(f"sslsteal_fast sweep|{victim_sha}|{defense}".encode(), digest_size=32).hexdigest()


def detections_file(out: str | Path, cell_id: str) -> Path:
    """Where a detector cell of the sweep in ``out`` keeps its per-query detection data.

    A safetensors file with one entry per query, the honest user's first: ``scores`` (the
    detector's similarity score), ``flags``, ``truth`` (the query repeats an image already sent)
    and ``thief`` (sent by the thief), from which the cell's detection columns were computed.
    """
    return Path(out) / "detections" / f"{cell_id}.safetensors"


def build_defenses(defense: str, key_hex: str, center_path: str | None) -> tuple[Any, ...]:
    """The victim-side defense objects of a ``grid.defenses`` entry (none for ``"none"``)."""
    if defense == "none":
        return ()
    center = cached_tensors(center_path)["center"] if center_path is not None else None
    return (make_defense(defense, key=bytes.fromhex(key_hex), center=center),)


class CachedAnswers:
    """A :class:`~sslsteal_fast.victim.Victim` stand-in for cells that reuse cached answers.

    It has the victim's shape but refuses queries: a query-once cell must train on the sweep's
    cached answers, so a query here would be an accounting bug.
    """

    def __init__(self, input_shape: tuple[int, int, int], output_dim: int, sha256: str | None = None) -> None:
        self.input_shape = input_shape
        self.output_dim = output_dim
        self.sha256 = sha256  # the served victim's, so a saved stolen encoder names what it was stolen from
        self.remaining = None  # nothing is billed here: the answers were paid for when they were cached
        self.queries_used = 0
        self.forward_passes = 0

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor:
        raise RuntimeError("a sweep cell tried to query the victim although its answers were cached")


def run_cell(task: CellTask) -> dict[str, Any]:
    """Steal and probe one cell; returns its results row (see :data:`.store.CELL_COLUMNS`)."""
    start = time.perf_counter()
    device = _WORKER_DEVICE or task.device
    queries = cached_tensors(task.queries_path, device)["images"]
    cfg = StealConfig(**{**task.steal, "device": device})
    detections: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # thief scores, flags, truth
    if task.answers_path is not None:
        cached = cached_tensors(task.answers_path, device)
        answers = cached["answers"]
        c, h, w = (int(v) for v in queries.shape[1:])
        result = steal(
            CachedAnswers((c, h, w), int(answers.shape[1]), task.victim_sha256),
            queries,
            cfg,
            targets=answers[: task.budget],
            progress=task.progress,
        )
        billed, passes = task.budget, 0
        if "scores" in cached:  # the answers went through a detector: this cell's thief sent the first rows
            rows = slice(0, task.budget)
            detections = (
                cached["scores"][rows].cpu(),
                cached["flags"][rows].cpu(),
                torch.zeros(task.budget, dtype=torch.bool),
            )
    else:
        defenses = build_defenses(task.defense, task.defense_key, task.center_path)
        victim = OnnxVictim(
            task.onnx_path, batch_size=task.victim_batch_size, defenses=defenses, intra_op_threads=task.threads
        )
        result = steal(victim, queries, cfg, progress=task.progress)
        billed, passes = result.billed_queries, result.victim_forward_passes
        if defenses and isinstance(defenses[0], SimilarityDetector):
            scores, flags = defenses[0].history(cfg.client)
            # Every view after the first epoch is an augmented repeat of an image already sent.
            truth = torch.arange(len(scores)) >= task.budget
            detections = (torch.from_numpy(scores), torch.from_numpy(flags), truth)
    steal_time = time.perf_counter() - start

    t = time.perf_counter()
    data = cached_tensors(task.probe_data_path)
    veval = cached_tensors(task.victim_eval_path)
    probe = ProbeConfig(**task.probe)
    train_x = extract_features(result.stolen, data["train_images"], batch_size=probe.batch_size)
    test_x = extract_features(result.stolen, data["test_images"], batch_size=probe.batch_size)
    scores = probe_features(
        train_x,
        data["train_labels"],
        test_x,
        data["test_labels"],
        task.num_classes,
        dataclasses.replace(probe, seed=task.seed),
    )
    fid = fidelity(test_x, veval["test_features"], scores.linear.predictions, veval["test_predictions"])
    probe_time = time.perf_counter() - t

    detection_data = _detection_data(task.honest_detections_path, detections)
    if detection_data is not None and task.detections_path is not None:
        save_tensors(task.detections_path, detection_data, {"cell_id": task.cell_id})
    if task.encoder_prefix is not None:
        result.save(task.encoder_prefix, {"cell_id": task.cell_id})  # head included; provenance under "steal"
    final = result.history[-1] if result.history else None
    return {
        "cell_id": task.cell_id,
        "loss": task.loss,
        "budget": task.budget,
        "query_dataset": task.query_dataset,
        "defense": task.defense,
        "seed": task.seed,
        "arch": cfg.arch,
        "epochs": cfg.epochs,
        "strategy": cfg.strategy,
        "probe_top1": float(scores.linear.top1),
        "probe_top5": float(scores.linear.top5),
        "knn_top1": float(scores.knn.top1),
        "honest_top1": task.honest_top1,
        "fidelity_cosine": _num(fid.cosine),
        "fidelity_l2": _num(fid.l2),
        "fidelity_agreement": _num(fid.agreement),
        "billed_queries": int(billed),
        "cell_forward_passes": int(passes),
        **_detection_columns(detection_data),
        "steal_time_s": steal_time,
        "probe_time_s": probe_time,
        "wall_time_s": time.perf_counter() - start,
        "final_loss": None if final is None or not math.isfinite(final) else float(final),
        "node": socket.gethostname(),
        "config_json": stable_json(result.config),
    }


def _detection_data(
    honest_path: str | None, thief: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
) -> dict[str, torch.Tensor] | None:
    """Both clients' scores, flags and ground truth, the honest user's queries first (None without a detector).

    Positives are the thief's augmented repeats; the honest user's distinct queries and a query-once
    thief's are negatives.
    """
    if thief is None or honest_path is None:
        return None
    honest = cached_tensors(honest_path)
    h_scores, h_flags = honest["scores"], honest["flags"]
    t_scores, t_flags, t_truth = thief
    return {
        "scores": torch.cat([h_scores.double(), t_scores.double()]),
        "flags": torch.cat([h_flags, t_flags]),
        "truth": torch.cat([torch.zeros(len(h_flags), dtype=torch.bool), t_truth]),
        "thief": torch.cat([torch.zeros(len(h_flags), dtype=torch.bool), torch.ones(len(t_flags), dtype=torch.bool)]),
    }


def _detection_columns(data: dict[str, torch.Tensor] | None) -> dict[str, float | None]:
    """Flag rates of both clients and the detector's quality against ground truth (None without a detector).

    Precision is the share of flags that hit a real repeat.
    """
    columns: dict[str, float | None] = dict.fromkeys(DETECTION_COLUMNS)
    if data is None:
        return columns
    thief, flags = data["thief"], data["flags"]
    m = detection_metrics(data["scores"].numpy(), flags.numpy(), data["truth"].numpy())
    columns.update(
        honest_flagged=float(flags[~thief].float().mean()),
        thief_flagged=float(flags[thief].float().mean()),
        detection_precision=_num(m.precision),
        detection_recall=_num(m.recall),
        detection_f1=_num(m.f1),
        detection_roc_auc=_num(m.roc_auc),
    )
    return columns


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def stable_json(obj: Any) -> str:
    """Compact, key-sorted JSON (for the config column)."""
    return json.dumps(obj, sort_keys=True, default=str)
