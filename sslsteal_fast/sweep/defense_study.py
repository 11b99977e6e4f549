"""The defense study (``sslsteal demo --defenses``): what each defense costs the honest user and the thief,
and whether the ownership tests tell stolen copies from independent encoders.

The study is three sweeps over the sweep's own grid, so the pipeline is orchestrated in one place
(:func:`~sslsteal_fast.sweep.run_sweep`): every defense is a value of ``grid.defenses``, the honest
user's accuracy on defended answers is each cell's ``honest_top1`` and a detector's flag rates and
precision / recall / F1 / ROC-AUC are cell columns.

1. ``plain``: a SimCLR victim, a query-once thief, defenses none / output noise / similarity
   detection / B4B-style coverage;
2. ``augmented``: the same victim and detector against a thief that sends augmented views every
   epoch (the traffic the detector is built for: every view after the first epoch is a repeat);
3. ``watermark``: a victim trained with the rotation watermark (a hook of the same SimCLR loop), no
   perturbation, stolen by two losses at two budgets (the stolen encoders are kept).

Then the ownership tests (:mod:`sslsteal_fast.ownership`) judge the watermarked victim, its stolen
copies, the plain victim (same private data, no watermark, no access to the victim) and an encoder
trained on disjoint images. Victims come from the shared victim cache. Outputs in ``out_dir``:
``defenses.csv``, ``ownership.csv``, ``defenses_summary.json``, their plots (:mod:`.plots`:
``honest_vs_thief.png``, ``detection_roc.png``, ``ownership_pvalues.png``) and each sweep's own
outputs under ``defense-study/<sweep>/``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.data import load_dataset
from sslsteal_fast.models import load_checkpoint
from sslsteal_fast.ownership import WatermarkHead, dataset_inference, load_head, verify_watermark
from sslsteal_fast.sweep import plots
from sslsteal_fast.sweep.config import parse_config
from sslsteal_fast.sweep.report import collect_rows, write_csv, write_outputs
from sslsteal_fast.sweep.runner import SweepRun, run_sweep
from sslsteal_fast.util.checks import ArgumentTypeError, check_int, check_number, check_positive_int
from sslsteal_fast.util.files import write_json
from sslsteal_fast.victim import OnnxVictim, Victim, query_victim, trained_victim

__all__ = [
    "DEFENSE_COLUMNS",
    "OWNERSHIP_COLUMNS",
    "DefenseStudyConfig",
    "run_defense_study",
    "run_ownership_study",
]

DEFENSE_COLUMNS = (
    "defense",
    "spec",
    "victim",
    "thief_strategy",
    "honest_top1",
    "stolen_top1",
    "victim_top1",
    "billed_honest",
    "billed_thief",
    "flagged_honest",
    "flagged_thief",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "steal_seconds",
)
OWNERSHIP_COLUMNS = ("suspect", "method", "statistic", "p_value", "verdict", "detail")

Log = Callable[[str], None]


@dataclass(frozen=True)
class DefenseStudyConfig:
    """Sizes of :func:`run_defense_study` (all data built in: ``shapes``; watermark images ``digits``).

    The victims use the main demo's SimCLR recipe (``sweep/configs/demo.toml``) on ``victim_count``
    images; the thief and the honest user are the demo's too. ``noise_sigma_ratio``: the noise's
    sigma as a multiple of the representation's mean per-coordinate standard deviation.
    """

    image_size: int = 16
    victim_count: int = 3000
    victim_epochs: int = 30
    victim_lr: float = 3e-3
    victim_temperature: float = 0.5
    victim_crop_min_scale: float = 1.0
    budget: int = 1000
    steal_epochs: int = 30
    steal_batch_size: int = 64
    steal_augment: bool = False  # query-once thief: no local crops at 16 px (as in the main demo)
    steal_loss: str = "info_nce"
    extra_stolen_loss: str = "mse"
    honest_train: int = 400
    honest_test: int = 400
    probe_epochs: int = 50
    noise_sigma_ratio: float = 1.0
    coverage_lam: float = 1.0
    detection_threshold: float = 0.6
    wm_dataset: str = "digits"
    wm_weight: float = 1.0
    di_fit: int = 700
    di_eval: int = 400
    alpha: float = 0.01
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        for name in ("victim_count", "steal_epochs", "honest_train", "honest_test", "di_fit", "di_eval", "workers"):
            check_positive_int(f"DefenseStudyConfig.{name}", getattr(self, name))
        check_int("DefenseStudyConfig.budget", self.budget, low=2)
        check_number("DefenseStudyConfig.noise_sigma_ratio", self.noise_sigma_ratio, low=0.0)
        if self.victim_count < self.di_eval + 2:
            raise ValueError(
                f"DefenseStudyConfig: victim_count ({self.victim_count}) must exceed di_eval ({self.di_eval}) + 1"
            )

    @staticmethod
    def quick() -> DefenseStudyConfig:
        """Toy sizes (about a minute): numbers too small to mean anything."""
        return DefenseStudyConfig(
            victim_count=400,
            victim_epochs=1,
            budget=150,
            steal_epochs=2,
            honest_train=150,
            honest_test=150,
            probe_epochs=20,
            di_fit=200,
            di_eval=100,
        )

    def victim(self, *, seed: int | None = None, data_seed: int = 0, progress: bool = True) -> VictimTrainConfig:
        """The SimCLR run of a study encoder (the plain and watermarked victims; others vary the seeds)."""
        return VictimTrainConfig(
            dataset="shapes",
            arch="small",
            epochs=self.victim_epochs,
            lr=self.victim_lr,
            temperature=self.victim_temperature,
            crop_min_scale=self.victim_crop_min_scale,
            image_size=self.image_size,
            count=self.victim_count,
            seed=self.seed if seed is None else seed,
            data_seed=data_seed,
            device="auto",
            progress=progress,
        )


def _sweep_raw(
    cfg: DefenseStudyConfig, name: str, defenses: list[str], *, strategy: str, watermark: bool
) -> dict[str, Any]:
    """The TOML mapping of one of the study's sweeps."""
    size = cfg.image_size
    victim_train = {k: v for k, v in dataclasses.asdict(cfg.victim()).items() if k not in ("out", "device", "progress")}
    if watermark:
        victim_train["watermark"] = {"dataset": cfg.wm_dataset, "weight": cfg.wm_weight}
    losses = [cfg.steal_loss, cfg.extra_stolen_loss] if watermark else [cfg.steal_loss]
    budgets = sorted({max(2, cfg.budget // 2), cfg.budget}) if watermark else [cfg.budget]
    return {
        "name": f"defense-study-{name}",
        "datasets": {
            "thief": {"spec": "shapes", "seed": 1, "count": cfg.budget, "size": size},
            "honest-train": {"spec": "shapes", "seed": 2, "count": cfg.honest_train, "size": size},
            "honest-test": {"spec": "shapes", "split": "test", "count": cfg.honest_test, "size": size},
            # The owner's own data: the first images of the victim's private training set.
            "private": {
                "spec": "shapes",
                "seed": 0,
                "count": cfg.victim_count,
                "size": size,
                "slice": [0, min(1000, cfg.victim_count)],
            },
        },
        "victim": {"train": victim_train},
        "probe": {"train": "honest-train", "test": "honest-test", "epochs": cfg.probe_epochs},
        "grid": {
            "losses": losses,
            "budgets": budgets,
            "query_datasets": ["thief"],
            "seeds": [cfg.seed],
            "defenses": defenses,
        },
        "steal": {
            "epochs": cfg.steal_epochs,
            "batch_size": cfg.steal_batch_size,
            # An augmented-query thief sends SimCLR views of its images every epoch (the traffic the
            # detector is built for); a query-once thief keeps the configured local augmentation.
            "augment": True if strategy == "augmented" else cfg.steal_augment,
            "strategy": strategy,
        },
        "defenses": {"center": "private"},
        "run": {"workers": cfg.workers, "save_encoders": watermark},
    }


def run_defense_study(
    out_dir: str | Path,
    config: DefenseStudyConfig | None = None,
    *,
    quick: bool = False,
    progress: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Everything on built-in data (see the module docstring); returns what ``defenses_summary.json`` holds."""
    cfg = config or (DefenseStudyConfig.quick() if quick else DefenseStudyConfig())
    if not isinstance(cfg, DefenseStudyConfig):
        raise ArgumentTypeError(f"run_defense_study: config must be a DefenseStudyConfig, got {type(cfg).__name__}")
    out = Path(out_dir)
    start = time.perf_counter()

    # The owner calibrates the noise on its own data: sigma = ratio x the mean per-coordinate std.
    plain = trained_victim(cfg.victim(progress=progress), log=log)
    private = load_dataset("shapes", "train", size=cfg.image_size, count=cfg.victim_count, seed=0)
    owner = query_victim(OnnxVictim(plain.onnx), private.images[: min(1000, len(private))])
    sigma = cfg.noise_sigma_ratio * float(owner.std(0).mean())
    detection = f"detection:threshold={cfg.detection_threshold}"
    plans = {
        "plain": (["none", f"noise:sigma={sigma:.4g}", detection, f"coverage:lam={cfg.coverage_lam}"], "query-once"),
        "augmented": ([detection], "augmented"),
        "watermark": (["none"], "query-once"),
    }
    runs: dict[str, SweepRun] = {}
    for name, (defenses, strategy) in plans.items():
        log(f"[defenses] sweep {name!r}: defenses {', '.join(defenses)}; {strategy} thief")
        raw = _sweep_raw(cfg, name, defenses, strategy=strategy, watermark=name == "watermark")
        runs[name] = run_sweep(parse_config(raw), out / "defense-study" / name, progress=progress, log=log)
        write_outputs(runs[name])
        if runs[name].failed:
            raise RuntimeError(f"defense study: {len(runs[name].failed)} cells of sweep {name!r} failed (see above)")

    defense_rows = _defense_rows(cfg, runs)
    for row in defense_rows:
        log(f"[defenses] {row['defense']:<22} honest {row['honest_top1']:.3f}  stolen {row['stolen_top1']:.3f}")
    write_csv(out / "defenses.csv", DEFENSE_COLUMNS, defense_rows)

    wm_run = runs["watermark"]
    assert wm_run.victim.checkpoint is not None
    wm_model, _ = load_checkpoint(wm_run.victim.checkpoint)
    independent = trained_victim(cfg.victim(seed=cfg.seed + 1, data_seed=4, progress=progress), log=log)
    suspects: dict[str, nn.Module | Victim] = {"victim": wm_model}
    for row in collect_rows(wm_run):
        stolen, _ = load_checkpoint(wm_run.out / "encoders" / row["cell_id"])
        suspects[f"stolen-{row['loss']}-{row['budget']}"] = stolen
    suspects["independent-same-data"] = load_checkpoint(plain.prefix)[0]
    suspects["independent-disjoint-data"] = load_checkpoint(independent.prefix)[0]
    n_fit = min(cfg.di_fit, len(private) - cfg.di_eval)
    head, _ = load_head(wm_run.victim.checkpoint)
    ownership_rows = run_ownership_study(
        suspects,
        head=head,
        watermark_images=load_dataset(cfg.wm_dataset, "test", size=cfg.image_size).images,
        private_fit=private.images[:n_fit],
        private_heldout=private.images[n_fit : n_fit + cfg.di_eval],
        unseen=load_dataset("shapes", "test", size=cfg.image_size, count=cfg.di_eval, seed=3).images,
        alpha=cfg.alpha,
        out_csv=out / "ownership.csv",
        log=log,
    )
    summary = {
        "config": dataclasses.asdict(cfg),
        "noise_sigma": sigma,
        "seconds": round(time.perf_counter() - start, 1),
        "victims": {"plain": str(plain.prefix), "watermark": str(wm_run.victim.checkpoint)},
        "sweeps": {name: str(run.out) for name, run in runs.items()},
        "defenses": defense_rows,
        "ownership": ownership_rows,
    }
    curves = [c for run in runs.values() for c in plots.detection_curves(run.out, collect_rows(run))]
    plots.defense_study_plots(out, defense_rows, ownership_rows, curves, alpha=cfg.alpha)
    write_json(out / "defenses_summary.json", summary)
    log(f"[defenses] wrote {out}/defenses.csv, ownership.csv, defenses_summary.json in {summary['seconds']} s")
    return summary


def _defense_rows(cfg: DefenseStudyConfig, runs: dict[str, SweepRun]) -> list[dict[str, Any]]:
    """One row per defense, from the sweeps' cells (the main thief: ``steal_loss`` at ``budget``)."""
    rows = []
    for name, run in runs.items():
        order = {spec: i for i, spec in enumerate(run.config.grid.defenses)}  # the study's order, not sorted
        cells = sorted(collect_rows(run), key=lambda c: order[c["defense"]])
        for cell in cells:
            if cell["loss"] != cfg.steal_loss or cell["budget"] != cfg.budget:
                continue
            label = {"watermark": "watermark", "augmented": "detection-augmented"}.get(name, cell["defense"])
            rows.append(
                {
                    "defense": label.split(":")[0],
                    "spec": cell["defense"],
                    "victim": "watermarked" if name == "watermark" else "plain",
                    "thief_strategy": cell["strategy"],
                    "honest_top1": round(float(cell["honest_top1"]), 4),
                    "stolen_top1": round(float(cell["probe_top1"]), 4),
                    "victim_top1": round(float(cell["victim_top1"]), 4),
                    "billed_honest": int(run.victim_eval["probe_train_size"] + run.victim_eval["probe_test_size"]),
                    "billed_thief": int(cell["billed_queries"]),
                    "flagged_honest": cell["honest_flagged"],
                    "flagged_thief": cell["thief_flagged"],
                    "precision": cell["detection_precision"],
                    "recall": cell["detection_recall"],
                    "f1": cell["detection_f1"],
                    "roc_auc": cell["detection_roc_auc"],
                    "steal_seconds": round(float(cell["steal_time_s"]), 1),
                }
            )
    return rows


def run_ownership_study(
    suspects: dict[str, nn.Module | Victim],
    *,
    head: WatermarkHead | None,
    watermark_images: torch.Tensor | None,
    private_fit: torch.Tensor,
    private_heldout: torch.Tensor,
    unseen: torch.Tensor,
    alpha: float = 0.01,
    n_components: int = 8,
    out_csv: Path | None = None,
    log: Log = print,
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
        write_csv(out_csv, OWNERSHIP_COLUMNS, rows)
    return rows
