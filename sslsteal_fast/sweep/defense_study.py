"""The defense study (``sslsteal demo --defenses``): what each defense costs the honest user and the thief,
and whether the ownership tests tell stolen copies from independent encoders.

The study is four sweeps over the sweep's own grid, so the pipeline is orchestrated in one place
(:func:`~sslsteal_fast.sweep.run_sweep`): every defense is a value of ``grid.defenses``, the honest
user's accuracy on defended answers is each cell's ``honest_top1`` and a detector's flag rates and
precision / recall / F1 / ROC-AUC are cell columns.

1. ``plain``: a SimCLR victim, a query-once thief, defenses none / output noise / similarity
   detection / B4B-style coverage;
2. ``augmented``: the same victim and detector against a thief that sends augmented views every
   epoch (the traffic the detector is built for: every view after the first epoch is a repeat);
3. ``watermark``: a victim trained with the rotation watermark (a hook of the same SimCLR loop), no
   perturbation, stolen by two losses at two budgets (the stolen encoders are kept);
4. ``memorising``: a victim fit to a few private images (:meth:`DefenseStudyConfig.memorising_victim`),
   stolen by the same two losses, for dataset inference where there is membership to infer.

Then the ownership tests (:mod:`sslsteal_fast.ownership`) judge the watermarked victim, its stolen
copies, the plain victim (same private data, no watermark, no access to the victim) and an encoder
trained on disjoint images. Victims come from the shared victim cache. Outputs in ``out_dir``:
``defenses.csv``, ``defenses_mean.csv``, ``ownership.csv``, ``ownership_power.csv``,
``ownership_memorising.csv``, ``ownership_memorising_power.csv``, ``defenses_summary.json``, their plots (:mod:`.plots`:
``honest_vs_thief.png``, ``detection_roc.png``, ``ownership_pvalues.png``) and each sweep's own
outputs under ``defense-study/<sweep>/``.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.data import SimCLRAugment, load_dataset
from sslsteal_fast.models import load_checkpoint
from sslsteal_fast.ownership import (
    WatermarkHead,
    alignment_inference,
    dataset_inference,
    load_head,
    verify_watermark,
)
from sslsteal_fast.sweep import plots
from sslsteal_fast.sweep.config import parse_config
from sslsteal_fast.sweep.report import collect_rows, write_csv, write_outputs
from sslsteal_fast.sweep.runner import SweepRun, run_sweep
from sslsteal_fast.util.checks import ArgumentTypeError, check_int, check_number, check_positive_int
from sslsteal_fast.util.files import write_json
from sslsteal_fast.util.seeding import derive_seed
from sslsteal_fast.util.stats import mean_ci
from sslsteal_fast.victim import OnnxVictim, Victim, query_victim, trained_victim, training_views

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
    "seed",
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
OWNERSHIP_COLUMNS = ("suspect", "method", "seed", "statistic", "p_value", "verdict", "detail")
MEAN_COLUMNS = (
    "defense",
    "victim",
    "thief_strategy",
    "n_seeds",
    "honest_top1",
    "honest_ci_low",
    "honest_ci_high",
    "stolen_top1",
    "stolen_ci_low",
    "stolen_ci_high",
    "victim_top1",
    "honest_cost",
    "thief_cost",
)
POWER_COLUMNS = ("suspect", "method", "n", "flagged", "power", "median_p", "max_p")

Log = Callable[[str], None]


@dataclass(frozen=True)
class DefenseStudyConfig:
    """Sizes of :func:`run_defense_study` (all data built in: ``shapes``; watermark images ``digits``).

    The victims use the main demo's SimCLR recipe (``sweep/configs/demo.toml``) on ``victim_count``
    images; the thief and the honest user are the demo's too. ``noise_sigma_ratio``: the noise's
    sigma as a multiple of the representation's mean per-coordinate standard deviation.
    """

    image_size: int = 16
    victim_count: int = 5000
    victim_epochs: int = 100
    victim_batch_size: int = 256
    victim_lr: float = 3e-3
    victim_temperature: float = 0.2
    victim_crop_min_scale: float = 1.0
    victim_rotation: float = 180.0
    victim_translate: float = 0.1
    victim_min_zoom: float = 0.8
    victim_grayscale_p: float = 0.8
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
    di_fit: int = 2000
    di_eval: int = 2000
    mem_count: int = 256
    mem_epochs: int = 1000
    mem_di_fit: int = 64
    mem_views: int = 8
    alpha: float = 0.01
    seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    workers: int = 2
    engine: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        for name in ("victim_count", "steal_epochs", "honest_train", "honest_test", "di_fit", "di_eval", "workers"):
            check_positive_int(f"DefenseStudyConfig.{name}", getattr(self, name))
        check_int("DefenseStudyConfig.budget", self.budget, low=2)
        check_number("DefenseStudyConfig.noise_sigma_ratio", self.noise_sigma_ratio, low=0.0)
        if self.victim_count < self.di_fit + self.di_eval:
            raise ValueError(
                f"DefenseStudyConfig: victim_count ({self.victim_count}) must be at least di_fit ({self.di_fit}) + "
                f"di_eval ({self.di_eval}): dataset inference draws both from the private training images"
            )
        check_int("DefenseStudyConfig.mem_count", self.mem_count, low=4)
        check_positive_int("DefenseStudyConfig.mem_epochs", self.mem_epochs)
        check_int("DefenseStudyConfig.mem_views", self.mem_views, low=2)
        if not 2 <= self.mem_di_fit <= self.mem_count - 2:
            raise ValueError(
                f"DefenseStudyConfig.mem_di_fit ({self.mem_di_fit}) must leave at least 2 of mem_count "
                f"({self.mem_count}) images to score"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"DefenseStudyConfig.seeds: expected distinct seeds, got {self.seeds!r}")

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
            mem_count=64,
            mem_epochs=2,
            mem_di_fit=16,
            mem_views=2,
            seeds=(0,),
        )

    def memorising_victim(self, *, progress: bool = True) -> VictimTrainConfig:
        """A victim that fits its training set: ``mem_count`` images, ``mem_epochs`` epochs, the paper's
        views without the pose step (the ownership study's dataset-inference check of the owner's own model)."""
        return dataclasses.replace(
            self.victim(progress=progress),
            count=self.mem_count,
            epochs=self.mem_epochs,
            rotation=0.0,
            translate=0.0,
            min_zoom=1.0,
            grayscale_p=0.2,
        )

    def victim(self, *, seed: int | None = None, data_seed: int = 0, progress: bool = True) -> VictimTrainConfig:
        """The SimCLR run of a study encoder (the plain and watermarked victims; others vary the seeds)."""
        return VictimTrainConfig(
            dataset="shapes",
            arch="small",
            epochs=self.victim_epochs,
            batch_size=self.victim_batch_size,
            lr=self.victim_lr,
            temperature=self.victim_temperature,
            crop_min_scale=self.victim_crop_min_scale,
            rotation=self.victim_rotation,
            translate=self.victim_translate,
            min_zoom=self.victim_min_zoom,
            grayscale_p=self.victim_grayscale_p,
            image_size=self.image_size,
            count=self.victim_count,
            seed=self.seed if seed is None else seed,
            data_seed=data_seed,
            device="auto",
            progress=progress,
        )


def _sweep_raw(
    cfg: DefenseStudyConfig,
    name: str,
    defenses: list[str],
    *,
    strategy: str,
    watermark: bool,
    victim: VictimTrainConfig | None = None,
) -> dict[str, Any]:
    """The TOML mapping of one of the study's sweeps (``victim``: another victim than the study's own)."""
    size = cfg.image_size
    chosen = victim if victim is not None else cfg.victim()
    victim_train = {k: v for k, v in dataclasses.asdict(chosen).items() if k not in ("out", "device", "progress")}
    if watermark:
        victim_train["watermark"] = {"dataset": cfg.wm_dataset, "weight": cfg.wm_weight}
    keep = watermark or victim is not None  # sweeps whose stolen copies the ownership tests judge
    losses = [cfg.steal_loss, cfg.extra_stolen_loss] if keep else [cfg.steal_loss]
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
                "count": chosen.count,
                "size": size,
                "slice": [0, min(1000, chosen.count or cfg.victim_count)],
            },
        },
        "victim": {"train": victim_train},
        "probe": {"train": "honest-train", "test": "honest-test", "epochs": cfg.probe_epochs},
        "grid": {
            "losses": losses,
            "budgets": budgets,
            "query_datasets": ["thief"],
            "seeds": list(cfg.seeds),
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
        "run": {
            "workers": cfg.workers,
            "save_encoders": keep,
            "engine": cfg.engine,
            **({} if cfg.address is None else {"address": cfg.address}),
        },
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
    mean_rows = defense_means(defense_rows)
    write_csv(out / "defenses_mean.csv", MEAN_COLUMNS, mean_rows)

    wm_run = runs["watermark"]
    assert wm_run.victim.checkpoint is not None
    wm_model, _ = load_checkpoint(wm_run.victim.checkpoint)
    independent = trained_victim(cfg.victim(seed=cfg.seed + 1, data_seed=4, progress=progress), log=log)
    suspects: dict[str, nn.Module | Victim | list[nn.Module | Victim]] = {"victim": wm_model}
    suspects.update(_stolen_copies(wm_run, cfg.seeds))
    suspects["independent-same-data"] = load_checkpoint(plain.prefix)[0]
    suspects["independent-disjoint-data"] = load_checkpoint(independent.prefix)[0]
    head, _ = load_head(wm_run.victim.checkpoint)
    ownership_rows = run_ownership_study(
        suspects,
        head=head,
        watermark_images=load_dataset(cfg.wm_dataset, "test", size=cfg.image_size).images,
        private=private.images,
        unseen=load_dataset("shapes", "test", size=cfg.image_size, count=cfg.di_eval * 2, seed=3).images,
        n_fit=cfg.di_fit,
        n_eval=cfg.di_eval,
        seeds=cfg.seeds,
        alpha=cfg.alpha,
        augment=training_views(cfg.victim()),
        out_csv=out / "ownership.csv",
        power_csv=out / "ownership_power.csv",
        log=log,
    )
    memorising_rows = _memorising_study(
        cfg, out, plain_model=suspects["independent-same-data"], progress=progress, log=log
    )
    summary = {
        "config": dataclasses.asdict(cfg),
        "noise_sigma": sigma,
        "seconds": round(time.perf_counter() - start, 1),
        "victims": {"plain": str(plain.prefix), "watermark": str(wm_run.victim.checkpoint)},
        "sweeps": {name: str(run.out) for name, run in runs.items()},
        "defenses": defense_rows,
        "defenses_mean": mean_rows,
        "ownership": ownership_rows,
        "ownership_power": ownership_power(ownership_rows, cfg.alpha),
        "ownership_memorising": memorising_rows,
        "ownership_memorising_power": ownership_power(memorising_rows, cfg.alpha),
    }
    curves = [c for run in runs.values() for c in plots.detection_curves(run.out, collect_rows(run))]
    plots.defense_study_plots(out, mean_rows, ownership_rows, curves, alpha=cfg.alpha)
    write_json(out / "defenses_summary.json", summary)
    log(f"[defenses] wrote {out}/defenses.csv, ownership.csv, defenses_summary.json in {summary['seconds']} s")
    return summary


def _stolen_copies(run: SweepRun, seeds: Sequence[int]) -> dict[str, list[nn.Module]]:
    """``stolen-LOSS-BUDGET`` -> the copies a sweep saved, one per seed in ``seeds`` order (seed i of the
    ownership study judges the copy stolen with thief seed i)."""
    copies: dict[str, dict[int, nn.Module]] = {}
    for row in collect_rows(run):
        stolen, _ = load_checkpoint(run.out / "encoders" / row["cell_id"])
        copies.setdefault(f"stolen-{row['loss']}-{row['budget']}", {})[int(row["seed"])] = stolen
    return {name: [by_seed[seed] for seed in seeds] for name, by_seed in copies.items()}


def _memorising_study(
    cfg: DefenseStudyConfig, out: Path, *, plain_model: Any, progress: bool, log: Log
) -> list[dict[str, Any]]:
    """Dataset inference against a victim that fits its training set, its stolen copies and an independent encoder.

    The demo's victims generalise to unseen ``shapes`` draws as well as to their training draws, so
    no membership statistic separates them (RESULTS.md). This victim (:meth:`DefenseStudyConfig.memorising_victim`)
    sees each of its few images thousands of times as views: the setting dataset inference is built
    for. Writes ``ownership_memorising.csv``, ``ownership_memorising_power.csv`` and their plot.
    """
    mem_cfg = cfg.memorising_victim(progress=progress)
    log(f"[ownership] sweep 'memorising': a victim fit to {cfg.mem_count} images for {cfg.mem_epochs} epochs")
    raw = _sweep_raw(cfg, "memorising", ["none"], strategy="query-once", watermark=False, victim=mem_cfg)
    run = run_sweep(parse_config(raw), out / "defense-study" / "memorising", progress=progress, log=log)
    write_outputs(run)
    if run.failed:
        raise RuntimeError(f"defense study: {len(run.failed)} cells of sweep 'memorising' failed (see above)")
    assert run.victim.checkpoint is not None
    suspects: dict[str, nn.Module | Victim | list[nn.Module | Victim]] = {
        "victim": load_checkpoint(run.victim.checkpoint)[0]
    }
    suspects.update(_stolen_copies(run, cfg.seeds))
    suspects["independent-disjoint-data"] = plain_model  # the demo victim: other images, same distribution
    private = load_dataset("shapes", "train", size=cfg.image_size, count=cfg.mem_count, seed=0).images
    n_eval = cfg.mem_count - cfg.mem_di_fit
    rows = run_ownership_study(
        suspects,
        head=None,
        watermark_images=None,
        private=private,
        unseen=load_dataset("shapes", "test", size=cfg.image_size, count=2 * n_eval, seed=5).images,
        n_fit=cfg.mem_di_fit,
        n_eval=n_eval,
        seeds=cfg.seeds,
        alpha=cfg.alpha,
        augment=training_views(mem_cfg),
        views=cfg.mem_views,
        out_csv=out / "ownership_memorising.csv",
        power_csv=out / "ownership_memorising_power.csv",
        log=log,
    )
    plots.save_figure(plots.figure_ownership(rows, alpha=cfg.alpha), out / "ownership_memorising_pvalues.png")
    return rows


def defense_means(rows: Sequence[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per defense (and victim, thief strategy): the mean over seeds of the honest user's and the thief's
    accuracy with ``confidence`` t intervals (empty with one seed), and what the defense cost each: the
    undefended victim's accuracy minus theirs, in accuracy points (fractions)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["defense"], r["victim"], r["thief_strategy"]), []).append(r)
    out = []
    for (defense, victim, strategy), members in groups.items():
        honest = mean_ci([float(r["honest_top1"]) for r in members], confidence)
        stolen = mean_ci([float(r["stolen_top1"]) for r in members], confidence)
        victim_top1 = statistics.fmean(float(r["victim_top1"]) for r in members)
        undefended = [m for m in rows if m["defense"] == "none" and m["victim"] == victim]
        thief_ref = statistics.fmean(float(m["stolen_top1"]) for m in undefended) if undefended else None
        out.append(
            {
                "defense": defense,
                "victim": victim,
                "thief_strategy": strategy,
                "n_seeds": len(members),
                "honest_top1": round(honest.mean, 4),
                "honest_ci_low": _round(honest.low),
                "honest_ci_high": _round(honest.high),
                "stolen_top1": round(stolen.mean, 4),
                "stolen_ci_low": _round(stolen.low),
                "stolen_ci_high": _round(stolen.high),
                "victim_top1": round(victim_top1, 4),
                "honest_cost": round(victim_top1 - honest.mean, 4),
                "thief_cost": round(thief_ref - stolen.mean, 4) if thief_ref is not None else None,
            }
        )
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


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
                    "seed": int(cell["seed"]),
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
    suspects: dict[str, nn.Module | Victim | Sequence[nn.Module | Victim]],
    *,
    head: WatermarkHead | None,
    watermark_images: torch.Tensor | None,
    private: torch.Tensor,
    unseen: torch.Tensor,
    n_fit: int,
    n_eval: int,
    seeds: Sequence[int] = (0,),
    alpha: float = 0.01,
    n_components: int = 8,
    augment: SimCLRAugment | None = None,
    views: int = 4,
    out_csv: Path | None = None,
    power_csv: Path | None = None,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Watermark (when ``head`` is given) and dataset-inference verdicts per suspect and seed -> CSV rows.

    ``suspects``: name -> an encoder, or one encoder per seed (e.g. the copies stolen with each thief
    seed; seed i judges the i-th). ``private``: the owner's private training images; ``unseen``: a pool
    of images of the same distribution nobody trained on. At each seed, dataset inference draws its
    own disjoint ``n_fit`` (mixture) and ``n_eval`` (scored) private images and ``n_eval`` unseen ones,
    and seeds the mixture with it, so the fraction of seeds at which a suspect is flagged is the test's
    power against it (written to ``power_csv``, see :func:`ownership_power`). With ``augment`` (the
    victim's training views) the same images also go through :func:`~sslsteal_fast.ownership.alignment_inference`
    (method ``dataset_inference_alignment``, ``views`` views per image).
    """
    check_positive_int("run_ownership_study: n_eval", n_eval)
    check_int("run_ownership_study: n_fit", n_fit, low=2)
    if n_fit + n_eval > len(private) or n_eval > len(unseen):
        raise ValueError(
            f"run_ownership_study: {n_fit} + {n_eval} private images needed (have {len(private)}) and {n_eval} "
            f"unseen ones (have {len(unseen)})"
        )
    rows: list[dict[str, Any]] = []
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(derive_seed(int(seed), "dataset-inference"))
        order = torch.randperm(len(private), generator=g)
        fit, held = private[order[:n_fit]], private[order[n_fit : n_fit + n_eval]]
        new = unseen[torch.randperm(len(unseen), generator=g)[:n_eval]]
        for name, given in suspects.items():
            suspect = given[i % len(given)] if isinstance(given, (list, tuple)) else given
            mine: list[dict[str, Any]] = []
            if head is not None and watermark_images is not None:
                wm = verify_watermark(head, suspect, watermark_images, alpha=alpha)
                mine.append(
                    {
                        "method": "watermark",
                        "statistic": round(wm.accuracy, 4),
                        "p_value": wm.p_value,
                        "verdict": wm.verdict,
                        "detail": f"{wm.correct}/{wm.n} correct",
                    }
                )
            di = dataset_inference(suspect, fit, held, new, n_components=n_components, alpha=alpha, seed=int(seed))
            mine.append(
                {
                    "method": "dataset_inference",
                    "statistic": round(di.statistic, 4),
                    "p_value": di.p_value,
                    "verdict": di.verdict,
                    "detail": f"mean log-lik private {di.ll_private:.2f} vs unseen {di.ll_unseen:.2f}",
                }
            )
            if augment is not None:
                al = alignment_inference(suspect, held, new, augment, views=views, alpha=alpha, seed=int(seed))
                mine.append(
                    {
                        "method": "dataset_inference_alignment",
                        "statistic": round(al.statistic, 4),
                        "p_value": al.p_value,
                        "verdict": al.verdict,
                        "detail": f"mean view alignment private {al.ll_private:.4f} vs unseen {al.ll_unseen:.4f}",
                    }
                )
            rows += [{"suspect": name, "seed": int(seed), **r} for r in mine]
            log(
                f"[ownership] seed {seed} {name:<26} "
                + "  ".join(f"{r['method']}: {r['verdict']} (p={r['p_value']:.2g})" for r in mine)
            )
    if out_csv is not None:
        write_csv(out_csv, OWNERSHIP_COLUMNS, rows)
    if power_csv is not None:
        write_csv(power_csv, POWER_COLUMNS, ownership_power(rows, alpha))
    return rows


def ownership_power(rows: Sequence[dict[str, Any]], alpha: float = 0.01) -> list[dict[str, Any]]:
    """Per (suspect, method): seeds ``n``, seeds ``flagged`` (p < alpha), ``power`` = flagged / n, median and max p."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((str(r["suspect"]), str(r["method"])), []).append(float(r["p_value"]))
    out = []
    for (suspect, method), ps in groups.items():
        flagged = sum(p < alpha for p in ps)
        out.append(
            {
                "suspect": suspect,
                "method": method,
                "n": len(ps),
                "flagged": flagged,
                "power": round(flagged / len(ps), 4),
                "median_p": statistics.median(ps),
                "max_p": max(ps),
            }
        )
    return out
