"""Defenses measured as the paper argues: what each one costs the honest user and the thief; ownership tests.

* :func:`run_defense_study`: for each row (a victim ONNX file + a defense spec + the thief's
  strategy) a fresh :class:`~sslsteal_fast.victim.OnnxVictim` is served with that defense; the
  **honest user** (client ``honest``) queries its own labelled train and test images once and trains
  a linear probe on the defended answers (``legit_top1``); the **thief** (client ``thief``) steals
  through the same API (:func:`~sslsteal_fast.attacks.steal`) and the stolen encoder is probed on
  the same task (``stolen_top1``). Billed queries per side and, for a detector, precision / recall /
  F1 / ROC-AUC against ground truth (a row is positive when it is an augmented repeat of an image
  the client already sent, i.e. the thief's views after its first epoch) go to ``defenses.csv``.
* :func:`run_ownership_study`: watermark and dataset-inference verdicts for each suspect encoder ->
  ``ownership.csv``.
* :func:`run_defense_demo`: all of it on built-in data (``sslsteal demo --defenses``); the
  victims and independent encoders it trains are cached in the user cache.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsteal_fast.attacks import StealConfig, query_victim, steal
from sslsteal_fast.data import ImageDataset, load_dataset
from sslsteal_fast.defenses.dataset_inference import dataset_inference
from sslsteal_fast.defenses.detection import SimilarityDetector, detection_metrics
from sslsteal_fast.defenses.factory import make_defense
from sslsteal_fast.defenses.watermark import (
    WatermarkConfig,
    WatermarkHead,
    load_head,
    train_watermarked_victim,
    verify_watermark,
)
from sslsteal_fast.models import load_checkpoint
from sslsteal_fast.probes import extract_features, linear_probe

__all__ = [
    "DefenseRowSpec",
    "DemoConfig",
    "run_defense_study",
    "run_ownership_study",
    "run_defense_demo",
    "DEFENSE_COLUMNS",
    "OWNERSHIP_COLUMNS",
]

DEFENSE_COLUMNS = (
    "defense",
    "spec",
    "victim",
    "thief_strategy",
    "legit_top1",
    "stolen_top1",
    "victim_top1",
    "billed_legit",
    "billed_thief",
    "flagged_legit",
    "flagged_thief",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "steal_seconds",
)
OWNERSHIP_COLUMNS = ("suspect", "method", "statistic", "p_value", "verdict", "detail")


@dataclass(frozen=True)
class DefenseRowSpec:
    """One row of the defense table: ``name`` (e.g. ``noise``), the served ``victim`` ONNX file, the
    defense ``spec`` (:func:`make_defense`) and the thief's ``strategy`` (``query-once``/``augmented``)."""

    name: str
    victim: Path
    spec: str = "none"
    strategy: str = "query-once"


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


def _probe(train_x: torch.Tensor, train: ImageDataset, test_x: torch.Tensor, test: ImageDataset, epochs: int) -> float:
    return float(linear_probe(train_x, train.labels, test_x, test.labels, train.num_classes, epochs=epochs).top1)


def run_defense_study(
    rows: Sequence[DefenseRowSpec],
    *,
    thief_queries: ImageDataset,
    legit_train: ImageDataset,
    legit_test: ImageDataset,
    steal_config: StealConfig,
    center: torch.Tensor | None = None,
    probe_epochs: int = 50,
    out_csv: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, nn.Module]]:
    """Measure every row (see the module docstring); returns ``(csv rows, stolen encoders by row name)``.

    ``center`` (the mean representation of the owner's data) is given to detectors and coverage
    defenses. ``victim_top1`` is the probe on undefended answers of the row's victim.
    """
    from sslsteal_fast.victim import OnnxVictim

    results: list[dict[str, Any]] = []
    stolen: dict[str, nn.Module] = {}
    clean_top1: dict[Path, float] = {}
    for spec in rows:
        start = time.perf_counter()
        if spec.victim not in clean_top1:
            plain = OnnxVictim(spec.victim)
            clean_top1[spec.victim] = _probe(
                query_victim(plain, legit_train.images),
                legit_train,
                query_victim(plain, legit_test.images),
                legit_test,
                probe_epochs,
            )
        defense = make_defense(spec.spec, center=center)
        victim = OnnxVictim(spec.victim, defenses=[defense], cache_size=0)
        legit_top1 = _probe(
            query_victim(victim, legit_train.images, client="honest"),
            legit_train,
            query_victim(victim, legit_test.images, client="honest"),
            legit_test,
            probe_epochs,
        )
        # An augmented-query thief sends SimCLR views of its images every epoch (the traffic the
        # detector is built for); a query-once thief keeps its configured local augmentation.
        augment = True if spec.strategy == "augmented" else steal_config.augment
        cfg = dataclasses.replace(steal_config, strategy=spec.strategy, client="thief", augment=augment)
        result = steal(victim, thief_queries, cfg, progress=progress)
        stolen[spec.name] = result.stolen
        stolen_top1 = _probe(
            extract_features(result.stolen, legit_train.images),
            legit_train,
            extract_features(result.stolen, legit_test.images),
            legit_test,
            probe_epochs,
        )
        row: dict[str, Any] = {
            "defense": spec.name,
            "spec": spec.spec,
            "victim": spec.victim.name,
            "thief_strategy": spec.strategy,
            "legit_top1": round(legit_top1, 4),
            "stolen_top1": round(stolen_top1, 4),
            "victim_top1": round(clean_top1[spec.victim], 4),
            "billed_legit": victim.billed("honest"),
            "billed_thief": victim.billed("thief"),
            "flagged_legit": math.nan,
            "flagged_thief": math.nan,
            "precision": math.nan,
            "recall": math.nan,
            "f1": math.nan,
            "roc_auc": math.nan,
            "steal_seconds": round(result.wall_time_s, 1),
        }
        if isinstance(defense, SimilarityDetector):
            s_h, f_h = defense.history("honest")
            s_t, f_t = defense.history("thief")
            budget = cfg.budget
            truth_t = torch.arange(len(s_t)) >= budget  # augmented views after the first epoch repeat an image
            m = detection_metrics(list(s_h) + list(s_t), list(f_h) + list(f_t), [False] * len(s_h) + truth_t.tolist())
            row.update(
                flagged_legit=round(float(f_h.mean()), 4),
                flagged_thief=round(float(f_t.mean()), 4),
                precision=m.precision,
                recall=m.recall,
                f1=m.f1,
                roc_auc=m.roc_auc,
            )
        results.append(row)
        log(
            f"[defenses] {spec.name:<22} legit {legit_top1:.3f}  stolen {stolen_top1:.3f}  "
            f"({time.perf_counter() - start:.0f} s)"
        )
    if out_csv is not None:
        _write_csv(out_csv, DEFENSE_COLUMNS, results)
    return results, stolen


def run_ownership_study(
    suspects: dict[str, Any],
    *,
    head: WatermarkHead | None,
    watermark_images: torch.Tensor | None,
    private_fit: torch.Tensor,
    private_heldout: torch.Tensor,
    unseen: torch.Tensor,
    alpha: float = 0.01,
    n_components: int = 8,
    out_csv: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Watermark (when ``head`` is given) and dataset-inference verdicts for each suspect -> CSV rows."""
    rows: list[dict[str, Any]] = []
    for name, suspect in suspects.items():
        if head is not None and watermark_images is not None:
            wm = verify_watermark(head, suspect, watermark_images, alpha=alpha)
            rows.append(
                {
                    "suspect": name,
                    "method": "watermark",
                    "statistic": round(wm.accuracy, 4),
                    "p_value": wm.p_value,
                    "verdict": wm.verdict,
                    "detail": f"{wm.correct}/{wm.n} correct",
                }
            )
        di = dataset_inference(suspect, private_fit, private_heldout, unseen, n_components=n_components, alpha=alpha)
        rows.append(
            {
                "suspect": name,
                "method": "dataset_inference",
                "statistic": round(di.statistic, 4),
                "p_value": di.p_value,
                "verdict": di.verdict,
                "detail": f"mean log-lik private {di.ll_private:.2f} vs unseen {di.ll_unseen:.2f}",
            }
        )
        log(
            f"[ownership] {name:<26} "
            + "  ".join(f"{r['method']}: {r['verdict']} (p={r['p_value']:.2g})" for r in rows if r["suspect"] == name)
        )
    if out_csv is not None:
        _write_csv(out_csv, OWNERSHIP_COLUMNS, rows)
    return rows


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of :func:`run_defense_demo` (all data built in: ``shapes``; watermark images ``digits``)."""

    image_size: int = 16
    victim_count: int = 3000
    victim_epochs: int = 30
    victim_lr: float = 3e-3  # the main demo's SimCLR recipe (sweep/configs/demo.toml)
    victim_temperature: float = 0.5
    victim_crop_min_scale: float = 1.0
    budget: int = 1000
    steal_epochs: int = 30
    steal_batch_size: int = 64
    steal_augment: bool = False  # query-once thief: no local crops at 16 px (as in the main demo)
    steal_loss: str = "info_nce"
    extra_stolen_loss: str = "mse"
    legit_train: int = 400
    legit_test: int = 400
    probe_epochs: int = 50
    noise_sigma_ratio: float = 1.0  # noise sigma = ratio * mean per-coordinate std of the representations
    coverage_lam: float = 1.0
    detection_threshold: float = 0.6
    wm_dataset: str = "digits"
    wm_weight: float = 1.0
    di_fit: int = 700
    di_eval: int = 400
    seed: int = 0

    @staticmethod
    def quick() -> DemoConfig:
        """Toy sizes (about a minute): numbers too small to mean anything."""
        return DemoConfig(
            image_size=16,
            victim_count=400,
            victim_epochs=1,
            budget=150,
            steal_epochs=2,
            legit_train=150,
            legit_test=150,
            probe_epochs=20,
            di_fit=200,
            di_eval=100,
        )


def _cached_victims(cfg: DemoConfig, progress: bool, log: Callable[[str], None]) -> dict[str, Path]:
    """Train (or reuse) the plain victim, the watermarked victim and the independent encoder; export ONNX."""
    from sslsteal_fast.sweep.artifacts import cache_root
    from sslsteal_fast.sweep.config import stable_hash
    from sslsteal_fast.victim import export_onnx
    from sslsteal_fast.victim.train import VictimTrainConfig, train_victim

    folder = cache_root() / "defense-demo" / stable_hash({"v": 1, **dataclasses.asdict(cfg)})[:16]
    base = dict(
        dataset="shapes",
        arch="small",
        epochs=cfg.victim_epochs,
        lr=cfg.victim_lr,
        temperature=cfg.victim_temperature,
        crop_min_scale=cfg.victim_crop_min_scale,
        image_size=cfg.image_size,
        count=cfg.victim_count,
        seed=cfg.seed,
        device="auto",
        progress=progress,
    )
    out: dict[str, Path] = {}
    plans: dict[str, tuple[VictimTrainConfig, bool]] = {
        "plain": (VictimTrainConfig(out=str(folder / "plain"), data_seed=0, **base), False),
        "watermark": (VictimTrainConfig(out=str(folder / "watermark"), data_seed=0, **base), True),
        "independent": (
            VictimTrainConfig(out=str(folder / "independent"), data_seed=4, **{**base, "seed": cfg.seed + 1}),
            False,
        ),
    }
    for name, (vcfg, wm) in plans.items():
        onnx = folder / f"{name}.onnx"
        out[name] = folder / name
        if onnx.is_file():
            continue
        log(f"[defenses] training the {name} encoder ({cfg.victim_epochs} epochs on {cfg.victim_count} images)")
        if wm:
            train_watermarked_victim(vcfg, WatermarkConfig(dataset=cfg.wm_dataset, weight=cfg.wm_weight))
        else:
            train_victim(vcfg)
        model, _ = load_checkpoint(folder / name)
        export_onnx(model, onnx, (3, cfg.image_size, cfg.image_size), source_checkpoint=str(folder / name))
    return out


def run_defense_demo(
    out_dir: str | Path, quick: bool = False, progress: bool = True, config: DemoConfig | None = None
) -> dict[str, Any]:
    """Everything on built-in data: ``defenses.csv``, ``ownership.csv`` and ``defenses_summary.json`` in ``out_dir``.

    Rows: none, noise, detection (query-once thief), detection-augmented (a thief that sends
    augmented views every epoch, the traffic the detector targets), coverage (all on the plain
    victim) and watermark (the watermarked victim, no perturbation). Ownership suspects: the
    watermarked victim, two stolen copies of it, the plain victim (SimCLR on the same private images
    without the watermark or victim access) and an encoder trained on disjoint images.
    """
    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log = print
    prefixes = _cached_victims(cfg, progress, log)
    size = cfg.image_size
    private = load_dataset("shapes", "train", size=size, count=cfg.victim_count, seed=0)
    thief = load_dataset("shapes", "train", size=size, count=cfg.budget, seed=1)
    legit_train = load_dataset("shapes", "train", size=size, count=cfg.legit_train, seed=2)
    legit_test = load_dataset("shapes", "test", size=size, count=cfg.legit_test, seed=0)
    unseen = load_dataset("shapes", "test", size=size, count=cfg.di_eval, seed=3)

    plain_model, _ = load_checkpoint(prefixes["plain"])
    reps = extract_features(plain_model, private.images[: min(1000, len(private))])
    center = reps.mean(0)
    sigma = cfg.noise_sigma_ratio * float(reps.std(0).mean())
    plain_onnx, wm_onnx = prefixes["plain"].with_suffix(".onnx"), prefixes["watermark"].with_suffix(".onnx")
    rows = [
        DefenseRowSpec("none", plain_onnx, "none"),
        DefenseRowSpec("noise", plain_onnx, f"noise:sigma={sigma:.4g}"),
        DefenseRowSpec("detection", plain_onnx, f"detection:threshold={cfg.detection_threshold}"),
        DefenseRowSpec(
            "detection-augmented", plain_onnx, f"detection:threshold={cfg.detection_threshold}", "augmented"
        ),
        DefenseRowSpec("coverage", plain_onnx, f"coverage:lam={cfg.coverage_lam}"),
        DefenseRowSpec("watermark", wm_onnx, "none"),
    ]
    steal_cfg = StealConfig(
        loss=cfg.steal_loss,
        budget=cfg.budget,
        epochs=cfg.steal_epochs,
        batch_size=cfg.steal_batch_size,
        augment=cfg.steal_augment,
        seed=cfg.seed,
    )
    defense_rows, stolen = run_defense_study(
        rows,
        thief_queries=thief,
        legit_train=legit_train,
        legit_test=legit_test,
        steal_config=steal_cfg,
        center=center,
        probe_epochs=cfg.probe_epochs,
        out_csv=out / "defenses.csv",
        progress=progress,
        log=log,
    )

    from sslsteal_fast.victim import OnnxVictim

    extra_budget = max(2, cfg.budget // 2)
    extra = steal(
        OnnxVictim(wm_onnx),
        thief,
        dataclasses.replace(steal_cfg, loss=cfg.extra_stolen_loss, budget=extra_budget),
        progress=progress,
    )
    wm_model, _ = load_checkpoint(prefixes["watermark"])
    indep_model, _ = load_checkpoint(prefixes["independent"])
    head, _ = load_head(prefixes["watermark"])
    wm_images = load_dataset(cfg.wm_dataset, "test", size=size).images
    suspects: dict[str, Any] = {
        "victim": wm_model,
        f"stolen-{cfg.steal_loss}-{cfg.budget}": stolen["watermark"],
        f"stolen-{cfg.extra_stolen_loss}-{extra_budget}": extra.stolen,
        "independent-same-data": plain_model,
        "independent-disjoint-data": indep_model,
    }
    n_fit = min(cfg.di_fit, len(private) - cfg.di_eval)
    ownership_rows = run_ownership_study(
        suspects,
        head=head,
        watermark_images=wm_images,
        private_fit=private.images[:n_fit],
        private_heldout=private.images[n_fit : n_fit + cfg.di_eval],
        unseen=unseen.images,
        out_csv=out / "ownership.csv",
        log=log,
    )
    summary = {
        "config": dataclasses.asdict(cfg),
        "quick": quick,
        "seconds": round(time.perf_counter() - start, 1),
        "cache": str(prefixes["plain"].parent),
        "defenses": defense_rows,
        "ownership": ownership_rows,
    }
    (out / "defenses_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log(f"[defenses] wrote {out}/defenses.csv, ownership.csv, defenses_summary.json in {summary['seconds']} s")
    return summary
