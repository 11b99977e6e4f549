"""What a sweep computes once, before its cells, and caches in ``--out``: data, victim answers, evaluations.

* **Data**: the probe's train/test images and, per query set, its first ``max(budgets)`` images.
* **Answers** (query-once): per query set and defense, the victim (an ``OnnxVictim``, or an
  ``HttpVictim`` for a ``victim.url`` API) answers those images once, through
  :func:`~sslsteal_fast.victim.query_victim`, billed to the thief; a cell with budget b trains on
  the first b answers (nested budgets). So the victim's forward passes equal the
  unique queries, not the sum of budgets over cells. A cell is still *billed* its budget: what that
  attack would have paid alone. Under a detector the per-row scores and flags are kept too.
  Prototype cells share theirs the same way: per query set, defense and number of views, the victim
  answers each image's seeded views (:func:`~sslsteal_fast.attacks.views.seeded_views`, a function of
  the image's row alone) once, and the file keeps the per-image means; each cell is billed
  ``budget * views``.
* **Evaluations**: the victim's own probe accuracy and test features (for fidelity), the untrained
  encoder of the thief's architecture (the floor a theft must beat), and the honest user's accuracy
  on defended answers: all through the one probe pipeline
  (:func:`~sslsteal_fast.probes.probe_features`).

Every file is written atomically and named by a content hash of what determines it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sslsteal_fast.attacks.prototype import prototypes
from sslsteal_fast.attacks.views import view_augment
from sslsteal_fast.config import HONEST_CLIENT, THIEF_CLIENT
from sslsteal_fast.data import image_digests, images_sha256
from sslsteal_fast.defenses import SimilarityDetector, StatefulDefense
from sslsteal_fast.probes import ProbeScores, check_disjoint, extract_features, probe_features, untrained_encoder
from sslsteal_fast.sweep.artifacts import PreparedVictim
from sslsteal_fast.sweep.cell import OWNER_HEAD, build_defenses, cached_tensors, defense_key
from sslsteal_fast.sweep.config import DatasetRef, SweepConfig
from sslsteal_fast.sweep.store import ResultStore
from sslsteal_fast.util.files import load_tensors, safe_filename, save_tensors, stable_hash
from sslsteal_fast.victim import Victim, query_victim

__all__ = [
    "defense_center",
    "honest_eval",
    "overlap_with_victim_train",
    "probe_data",
    "query_images",
    "victim_answers",
    "victim_eval",
]

Log = Callable[[str], None]
#: Header entry of the JSON metadata in the sweep's safetensors files.
HEADER = "sweep"


def probe_data(cfg: SweepConfig, out: Path) -> tuple[Path, dict[str, Any]]:
    """The probe task's images and labels in one file; returns ``(path, {num_classes, train_size, test_size})``.

    Train and test sets that share an image are refused (:func:`~sslsteal_fast.probes.check_disjoint`),
    whether they are loaded now or were cached by an earlier run.
    """
    key = stable_hash({"train": cfg.probe.train.key(), "test": cfg.probe.test.key()})
    path = out / "data" / f"probe-{key}.safetensors"
    names = {
        "train_name": f"probe.train {cfg.probe.train.describe()}",
        "test_name": f"probe.test {cfg.probe.test.describe()}",
    }
    if path.is_file():
        tensors, meta = load_tensors(path, header=HEADER)
        check_disjoint(tensors["train_images"], tensors["test_images"], **names)
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
    check_disjoint(train, test, **names)
    meta = {"num_classes": train.num_classes, "train_size": len(train), "test_size": len(test)}
    tensors = {
        "train_images": train.images,
        "train_labels": train.labels,
        "test_images": test.images,
        "test_labels": test.labels,
    }
    save_tensors(path, tensors, meta, header=HEADER)
    return path, meta


def query_images(q: DatasetRef, count: int, out: Path) -> Path:
    """The first ``count`` images of a query set, in one file."""
    key = stable_hash({"query": q.key(), "count": count})
    path = out / "data" / f"queries-{safe_filename(q.name)}-{key}.safetensors"
    if path.is_file():
        return path
    ds = q.load()
    if len(ds) < count:
        raise ValueError(
            f"grid.query_datasets: {q.name!r} has {len(ds)} images but the largest budget is {count}; give it "
            "more images (e.g. a larger 'count' in its [datasets] table) or lower grid.budgets"
        )
    meta = {"name": q.name, "count": count}
    save_tensors(path, {"images": ds.images[:count], "labels": ds.labels[:count]}, meta, header=HEADER)
    return path


def overlap_with_victim_train(
    cfg: SweepConfig, victim: PreparedVictim, query_paths: dict[str, Path], *, log: Log
) -> dict[str, int]:
    """Per query set, its images that are byte-identical to one of the victim's training images.

    The training images are the sweep's own ``[victim.train]`` run's, or those a checkpoint (or a
    cached victim) records in its metadata (:meth:`PreparedVictim.train_data`). Empty when they are
    unknown, or when the recorded images cannot be loaded as they were (their hash differs): then
    the reason is logged.
    """
    recorded = victim.train_data()
    if recorded is None:
        ref = cfg.victim.train_data()
        if ref is None:
            return {}
        recorded = (ref, None)
    ref, sha = recorded
    try:
        images = ref.load().images
    except (FileNotFoundError, ValueError) as exc:
        log(f"sweep: cannot check queries against the victim's training images ({exc})")
        return {}
    if sha is not None and images_sha256(images) != sha:
        log(
            f"sweep: cannot check queries against the victim's training images: {ref.spec} (split {ref.split!r}) "
            "no longer holds the images it was trained on"
        )
        return {}
    seen = set(image_digests(images))
    return {
        name: sum(d in seen for d in image_digests(cached_tensors(path)["images"]))
        for name, path in query_paths.items()
    }


def defense_center(cfg: SweepConfig, victim: PreparedVictim, out: Path, *, log: Log) -> Path | None:
    """The victim's mean (undefended) answer on ``[defenses] center``, the owner's reference point."""
    if cfg.defense_center is None:
        return None
    key = stable_hash({"victim": victim.sha256, "center": cfg.defense_center.key()})
    path = out / "victim" / f"center-{key}.safetensors"
    if not path.is_file():
        log(f"sweep: the defenses' centre: the victim's mean answer on {cfg.defense_center.name!r}")
        api = victim.api(batch_size=cfg.victim.batch_size)
        answers = query_victim(api, cfg.defense_center.load().images, batch_size=cfg.victim.batch_size)
        save_tensors(path, {"center": answers.mean(0)}, {"rows": int(answers.shape[0])}, header=HEADER)
    return path


def victim_answers(
    cfg: SweepConfig,
    victim: PreparedVictim,
    q: DatasetRef,
    defense: str,
    queries_path: Path,
    center_path: Path | None,
    out: Path,
    *,
    progress: bool,
    log: Log,
    views: int | None = None,
) -> dict[str, Any]:
    """The victim's answers to a query set's images, queried once (billed to the thief) and cached.

    ``views``: the prototype attack's answers instead - per image, the mean of the victim's answers to
    its ``views`` seeded views (every view billed), with ``[steal]``'s augmentation.

    A file with at least the needed rows is reused as is (no forward passes); a shorter one (the
    largest budget grew) is extended by querying only the missing rows - except under a stateful
    defense (:class:`~sslsteal_fast.defenses.StatefulDefense`: a detector, the coverage defense),
    whose answer to a row depends on every row the client sent before it: there the whole file is
    queried again through a fresh defense, as a fresh sweep would (a defense's answers to the first
    rows never depend on later ones, so the cells already computed from them stay valid; this is
    checked). The metadata keeps the cumulative billed queries and forward passes spent on this
    file. Under a :class:`~sslsteal_fast.defenses.SimilarityDetector` the per-row ``scores`` and
    ``flags`` are kept.
    """
    count = max(cfg.grid.budgets)
    center = None if cfg.defense_center is None else cfg.defense_center.key()
    identity: dict[str, Any] = {"victim": victim.sha256, "query": q.key(), "defense": defense, "center": center}
    if views is not None:
        identity.update(views=views, augment_strength=cfg.steal.augment_strength, crop=cfg.steal.crop_min_scale)
    key = stable_hash(identity)
    label = safe_filename(defense) + ("" if views is None else f"-views{views}")
    path = out / "answers" / f"{safe_filename(q.name)}-{label}-{key}.safetensors"
    tensors: dict[str, torch.Tensor] = {"answers": torch.zeros(0)}
    meta: dict[str, Any] = {"forward_passes": 0, "billed_queries": 0}
    if path.is_file():
        tensors, meta = load_tensors(path, header=HEADER)
    have = int(tensors["answers"].shape[0])
    new_passes = 0
    if have < count:
        images = cached_tensors(queries_path)["images"]
        defenses = build_defenses(defense, defense_key(victim.sha256, defense), _str(center_path))
        start = 0 if any(isinstance(d, StatefulDefense) for d in defenses) else have
        per_image = 1 if views is None else views
        api = victim.api(budget=(count - start) * per_image, batch_size=cfg.victim.batch_size, defenses=defenses)
        _check_images(api.input_shape, images, q.name)
        what = "images" if views is None else f"images x {views} views"
        log(f"sweep: querying the victim with {count - start} {what} of {q.name!r} (defense {defense})")
        if views is None:
            fresh = query_victim(
                api, images[start:count], batch_size=cfg.victim.batch_size, client=THIEF_CLIENT, progress=progress
            )
        else:
            fresh = _prototypes(cfg, api, images, start, count, views)
        new = {"answers": fresh}
        if defenses and isinstance(defenses[0], SimilarityDetector):
            scores, flags = defenses[0].history(THIEF_CLIENT)
            new.update(scores=torch.from_numpy(scores), flags=torch.from_numpy(flags))
        if start == 0 and have:
            _check_same_prefix(tensors, new, have, path)
        tensors = new if start == 0 else {k: torch.cat([tensors[k], v]) for k, v in new.items()}
        new_passes = api.forward_passes
        meta = {
            "query_dataset": q.name,
            "defense": defense,
            "victim_sha256": victim.sha256,
            "rows": count,
            "forward_passes": int(meta["forward_passes"]) + api.forward_passes,
            "billed_queries": int(meta["billed_queries"]) + api.queries_used,
        }
        save_tensors(path, tensors, meta, header=HEADER)
    return {
        "path": str(path),
        "query_dataset": q.name,
        "defense": defense,
        "rows": count,
        "forward_passes": int(meta["forward_passes"]),
        "billed_queries": int(meta["billed_queries"]),
        "forward_passes_this_run": new_passes,
        "output_dim": int(tensors["answers"].shape[1]),
        "views": views,
    }


def _prototypes(cfg: SweepConfig, api: Victim, images: torch.Tensor, start: int, stop: int, views: int) -> torch.Tensor:
    """Rows ``[start, stop)``'s prototypes: each image's mean answer over its ``views`` seeded views."""
    augment = view_augment(cfg.steal, int(images.shape[-1]))
    step = max(1, cfg.victim.batch_size // views)

    def query(x: torch.Tensor) -> torch.Tensor:
        return api.query(x, client=THIEF_CLIENT)

    chunks = [
        prototypes(query, images[i : min(i + step, stop)], torch.arange(i, min(i + step, stop)), views, augment)[0]
        for i in range(start, stop, step)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, int(api.output_dim))


def _check_same_prefix(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor], rows: int, path: Path) -> None:
    """The re-queried file's first ``rows`` must be the old file's: cells computed from those stand.

    Per-query entries (a detector's scores and flags) have one row per query sent: ``views`` per
    image for prototype answers.
    """
    for name, tensor in new.items():
        sent = rows * (tensor.shape[0] // max(1, new["answers"].shape[0]))
        if name not in old or not torch.equal(old[name], tensor[:sent]):
            raise RuntimeError(
                f"{path}: querying again through a fresh defense changed the answers to the first {rows} rows "
                f"({name}); the cells computed from them would no longer hold: delete this file and results.sqlite"
            )


def _check_images(input_shape: tuple[int | None, ...], images: torch.Tensor, name: str) -> None:
    c, h, w = input_shape
    _, ic, ih, iw = images.shape
    if (c is not None and c != ic) or (h is not None and h != ih) or (w is not None and w != iw):
        raise ValueError(
            f"query set {name!r} has images of shape {(ic, ih, iw)} but the victim takes {input_shape}; set the "
            "dataset's size/channels options to match"
        )


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _probe_through(
    api: Victim, cfg: SweepConfig, data: dict[str, torch.Tensor], num_classes: int, *, client: str, progress: bool
) -> tuple[torch.Tensor, ProbeScores]:
    """Query the probe's images through ``api`` as ``client`` and probe the answers -> (test features, scores)."""
    bs = cfg.victim.batch_size
    train_x = query_victim(api, data["train_images"], batch_size=bs, client=client, progress=progress)
    test_x = query_victim(api, data["test_images"], batch_size=bs, client=client, progress=progress)
    scores = probe_features(train_x, data["train_labels"], test_x, data["test_labels"], num_classes, cfg.probe.config)
    return test_x, scores


def victim_eval(
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

    Also the same probes on an untrained encoder of each thief architecture (the floor a stolen
    copy must beat: random convolutional features are far from useless on simple images): the
    ``random_init_*`` metrics are ``[steal]``'s architecture's (or the first of ``grid.thief_archs``),
    ``floors`` has every architecture's. And the owner's downstream classifier, the label-only API's
    head: the victim's linear probe, fitted on ``[probe] train`` (``owner_head_*`` tensors).

    The metrics are stored in SQLite (``kv``) and the features in ``out/victim``; the victim is
    evaluated through its own unbilled ``OnnxVictim`` (the owner's forward passes, reported apart); a
    ``victim.url`` API has no such back door, so its evaluation is queried, and billed, through the key.
    """
    archs = list(cfg.grid.thief_archs or (cfg.steal.arch,))
    baseline: Any = cfg.steal.arch if cfg.grid.thief_archs is None else archs
    key = stable_hash({"victim": victim.sha256, "probe": cfg.probe.key(), "baseline_arch": baseline})
    path = out / "victim" / f"eval-{key}.safetensors"
    stored = store.get(f"victim_eval:{key}")
    if stored is not None and "floors" in stored and path.is_file() and _has_head(path):
        return path, stored
    log("sweep: probing the victim")
    data = cached_tensors(probe_path)
    api = victim.api(batch_size=cfg.victim.batch_size)
    t = time.perf_counter()
    num_classes = int(probe_meta["num_classes"])
    test_x, scores = _probe_through(api, cfg, data, num_classes, client="default", progress=progress)
    floors = {}
    for arch in archs:
        floor = _random_init(cfg, arch, data, num_classes)
        floors[arch] = {"random_init_top1": float(floor.linear.top1), "random_init_knn_top1": float(floor.knn.top1)}
    metrics = {
        **floors[archs[0]],
        "floors": floors,
        "victim_top1": float(scores.linear.top1),
        "victim_top5": float(scores.linear.top5),
        "victim_knn_top1": float(scores.knn.top1),
        "victim_eval_forward_passes": int(api.forward_passes),
        "victim_eval_s": time.perf_counter() - t,
        "num_classes": num_classes,
        "probe_train_size": int(probe_meta["train_size"]),
        "probe_test_size": int(probe_meta["test_size"]),
    }
    assert scores.linear.head is not None
    tensors = {
        "test_features": test_x,
        "test_predictions": scores.linear.predictions.to(torch.int64),
        **scores.linear.head.as_tensors(OWNER_HEAD),
    }
    save_tensors(path, tensors, metrics, header=HEADER)
    store.put(f"victim_eval:{key}", metrics)
    return path, metrics


def _has_head(path: Path) -> bool:
    """Whether a victim-eval file holds the owner's classifier (files written before it do not)."""
    return f"{OWNER_HEAD}weight" in cached_tensors(path)


def _random_init(cfg: SweepConfig, arch: str, data: dict[str, torch.Tensor], num_classes: int) -> ProbeScores:
    """Probes of an untrained encoder of the thief's architecture: the floor a theft must beat."""
    encoder = untrained_encoder(arch, int(data["train_images"].shape[1]))  # not any victim's init
    bs = cfg.probe.config.batch_size
    train_x = extract_features(encoder, data["train_images"], batch_size=bs)
    test_x = extract_features(encoder, data["test_images"], batch_size=bs)
    return probe_features(train_x, data["train_labels"], test_x, data["test_labels"], num_classes, cfg.probe.config)


def honest_eval(
    cfg: SweepConfig,
    victim: PreparedVictim,
    store: ResultStore,
    probe_path: Path,
    probe_meta: dict[str, Any],
    defense: str,
    victim_eval_metrics: dict[str, Any],
    center_path: Path | None,
    out: Path,
    progress: bool,
    log: Log,
) -> tuple[float, Path | None]:
    """The honest user's downstream accuracy under ``defense``, and their detection scores' file.

    The honest user (client ``"honest"``) queries their own labelled images once and probes the
    defended answers; each cell's thief accuracy is reported next to it. Without a defense it is the
    victim's own probe accuracy. Under a detector, the per-row scores and flags of those queries are
    written to a file (returned; None otherwise) for the cells' detection metrics.
    """
    if defense == "none":
        return float(victim_eval_metrics["victim_top1"]), None
    center = None if cfg.defense_center is None else cfg.defense_center.key()
    key = stable_hash({"victim": victim.sha256, "probe": cfg.probe.key(), "defense": defense, "center": center})
    path = out / "victim" / f"honest-{key}.safetensors"
    stored = store.get(f"honest_eval:{key}")
    if stored is not None and (not stored["detector"] or path.is_file()):
        return float(stored["honest_top1"]), path if stored["detector"] else None
    log(f"sweep: honest user's accuracy under defense {defense!r}")
    data = cached_tensors(probe_path)
    defenses = build_defenses(defense, defense_key(victim.sha256, defense), _str(center_path))
    api = victim.api(batch_size=cfg.victim.batch_size, defenses=defenses)
    num_classes = int(probe_meta["num_classes"])
    _, scores = _probe_through(api, cfg, data, num_classes, client=HONEST_CLIENT, progress=progress)
    detector = bool(defenses) and isinstance(defenses[0], SimilarityDetector)
    if detector:
        s, f = defenses[0].history(HONEST_CLIENT)
        save_tensors(path, {"scores": torch.from_numpy(s), "flags": torch.from_numpy(f)}, {}, header=HEADER)
    top1 = float(scores.linear.top1)
    store.put(f"honest_eval:{key}", {"honest_top1": top1, "billed": int(api.queries_used), "detector": detector})
    return top1, path if detector else None
