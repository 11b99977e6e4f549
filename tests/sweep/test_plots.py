"""Seed aggregates (means and Student-t intervals) and the sweep's and defense study's figures.

The figures are checked on small synthetic tables: each writes a valid PNG, draws seed bands only
where there are several seeds, and keeps every legend outside the axes (display coordinates).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from sslsteal_fast.config import StealConfig
from sslsteal_fast.sweep import load_config, run_sweep, write_outputs
from sslsteal_fast.sweep.cell import detections_file
from sslsteal_fast.sweep.config import GridConfig
from sslsteal_fast.sweep.plots import (
    DetectionCurve,
    defense_study_plots,
    detection_curves,
    detection_roc_plot,
    figure_detection_roc,
    figure_honest_vs_thief,
    figure_ownership,
    figure_vs_queries,
    save_figure,
    sweep_plots,
)
from sslsteal_fast.sweep.report import AGGREGATE_COLUMNS, AGGREGATE_METRICS, aggregate, markdown_table
from sslsteal_fast.testing import CSV_ATOL, STATS_RTOL
from sslsteal_fast.util.files import load_tensors, save_tensors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: t_{0.975, 2} (two-sided 95%, three seeds), from a printed table of Student's t.
T_975_DF2 = 4.302652729749464
VICTIM = {"victim_top1": 0.8, "victim_knn_top1": 0.7, "random_init_top1": 0.2, "random_init_knn_top1": 0.1}


def _row(q: str, defense: str, loss: str, budget: int, seed: int, probe: float, knn: float, fid: float) -> dict:
    return {
        "cell_id": f"{q}-{defense}-{loss}-{budget}-{seed}",
        "query_dataset": q,
        "defense": defense,
        "loss": loss,
        "budget": budget,
        "seed": seed,
        "strategy": "query-once",
        "arch": "small",
        "probe_top1": probe,
        "knn_top1": knn,
        "fidelity_cosine": fid,
    }


def synthetic_rows(
    seeds: int,
    *,
    query_sets: tuple[str, ...] = ("q-in", "q-ood"),
    defenses: tuple[str, ...] = ("none",),
    losses: tuple[str, ...] = ("mse", "info_nce", "soft_nn"),
    budgets: tuple[int, ...] = (10, 100, 1000),
) -> list[dict[str, Any]]:
    """A results table: accuracy grows with the log budget, plus seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for q in query_sets:
        for d in defenses:
            for i, loss in enumerate(losses):
                for b in budgets:
                    for s in range(seeds):
                        base = 0.3 + 0.1 * math.log10(b) - 0.05 * i
                        probe = float(np.clip(base + rng.normal(0, 0.03), 0, 1))
                        knn = float(np.clip(base - 0.05 + rng.normal(0, 0.03), 0, 1))
                        fid = float(np.clip(0.5 + 0.1 * math.log10(b) + rng.normal(0, 0.02), -1, 1))
                        rows.append(_row(q, d, loss, b, s, probe, knn, fid))
    return rows


def assert_legends_outside(fig: Figure) -> None:
    """Every legend lies inside the figure and overlaps no axes' data area, in display coordinates."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw(renderer)
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend"
    page = fig.bbox
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, f"legend {box} runs off the figure {page}"
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, f"legend {box} runs off the figure {page}"
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), f"legend {box} covers axes {ax.get_title()!r}"
    if fig._suptitle is not None:  # the title fits the page too
        title = fig._suptitle.get_window_extent(renderer)
        assert page.x0 - 1 <= title.x0 and title.x1 <= page.x1 + 1, "the figure's title is cut off"


def assert_png(path: Path) -> None:
    assert path.read_bytes().startswith(PNG_MAGIC)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def _bands(fig: Figure) -> int:
    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# ----------------------------------------------------------------------------------- aggregation


def test_aggregate_matches_a_hand_computation() -> None:
    rows = [
        _row("q", "none", "mse", 10, 0, 0.5, 0.4, 0.9),
        _row("q", "none", "mse", 10, 1, 0.6, 0.4, 0.8),
        _row("q", "none", "mse", 10, 2, 0.7, 0.4, 0.7),
        _row("q", "none", "mse", 20, 0, 0.65, 0.55, 0.95),
    ]
    three, one = aggregate(rows, VICTIM)
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # sample sd of (0.5, 0.6, 0.7) and of (0.9, 0.8, 0.7) is 0.1
    assert (three["query_dataset"], three["defense"], three["loss"], three["budget"], three["n_seeds"]) == (
        "q",
        "none",
        "mse",
        10,
        3,
    )
    expected = {
        "probe_top1": (0.6, half),
        "probe_top1_share": (0.6 / 0.8, half / 0.8),
        "probe_top1_gap_share": ((0.6 - 0.2) / 0.6, half / 0.6),
        "knn_top1": (0.4, 0.0),  # three equal values: a zero-width interval
        "knn_top1_share": (0.4 / 0.7, 0.0),
        "knn_top1_gap_share": ((0.4 - 0.1) / 0.6, 0.0),
        "fidelity_cosine": (0.8, half),
    }
    assert set(expected) == set(AGGREGATE_METRICS)
    for metric, (mean, h) in expected.items():
        assert three[f"{metric}_mean"] == pytest.approx(mean, rel=STATS_RTOL), metric
        assert three[f"{metric}_ci_low"] == pytest.approx(mean - h, rel=1e-9, abs=1e-12), metric
        assert three[f"{metric}_ci_high"] == pytest.approx(mean + h, rel=1e-9, abs=1e-12), metric
    assert round(three["probe_top1_ci_high"] - three["probe_top1_mean"], 4) == 0.2484
    # One seed: the mean, and no interval.
    assert one["n_seeds"] == 1 and one["probe_top1_mean"] == 0.65
    assert one["probe_top1_gap_share_mean"] == pytest.approx(0.75)
    assert all(one[f"{m}_ci_low"] is None and one[f"{m}_ci_high"] is None for m in AGGREGATE_METRICS)
    assert set(three) == set(one) == set(AGGREGATE_COLUMNS)


def test_aggregate_without_baselines_or_gap_leaves_shares_empty() -> None:
    rows = [_row("q", "none", "mse", 10, s, 0.5 + s / 10, 0.4, 0.9) for s in range(2)]
    (no_floor,) = aggregate(rows, {"victim_top1": 0.8, "victim_knn_top1": 0.7})
    assert no_floor["probe_top1_share_mean"] == pytest.approx(0.55 / 0.8)
    assert no_floor["probe_top1_gap_share_mean"] is None and no_floor["probe_top1_gap_share_ci_low"] is None
    # A victim no better than the untrained encoder has no gap to share.
    (no_gap,) = aggregate(rows, dict(VICTIM, random_init_top1=0.9))
    assert no_gap["probe_top1_gap_share_mean"] is None and no_gap["knn_top1_gap_share_mean"] is not None
    # Two seeds: t_{0.975,1} = 12.706.
    assert no_floor["probe_top1_ci_high"] - no_floor["probe_top1_mean"] == pytest.approx(
        12.706204736174707 * (0.1 / math.sqrt(2)) / math.sqrt(2), rel=1e-9
    )


def _fake_run(rows: list[dict[str, Any]], seeds: tuple[int, ...]) -> SimpleNamespace:
    grid = GridConfig(
        losses=tuple(dict.fromkeys(r["loss"] for r in rows)),
        budgets=tuple(sorted({r["budget"] for r in rows})),
        query_datasets=tuple(SimpleNamespace(name=q) for q in dict.fromkeys(r["query_dataset"] for r in rows)),  # type: ignore[misc]
        defenses=tuple(dict.fromkeys(r["defense"] for r in rows)),
        seeds=tuple(seeds),
    )
    return SimpleNamespace(
        config=SimpleNamespace(grid=grid, steal=StealConfig(arch="small"), name="t"),
        victim_eval=VICTIM,
        victim=SimpleNamespace(train_size=1000),
    )


def test_table_shows_intervals_gap_shares_and_single_seeds() -> None:
    rows = [
        _row("q", "none", "mse", 10, 0, 0.5, 0.4, 0.9),
        _row("q", "none", "mse", 10, 1, 0.6, 0.4, 0.8),
        _row("q", "none", "mse", 10, 2, 0.7, 0.4, 0.7),
        _row("q", "none", "mse", 20, 0, 0.65, 0.55, 0.95),  # one seed landed: no interval
    ]
    table = markdown_table(_fake_run(rows, (0, 1, 2)), rows)  # type: ignore[arg-type]
    assert "95% confidence interval over 1-3 seeds (Student t)" in table
    assert "| q | mse | 60.0% ± 24.8% | 65.0% (n=1) |" in table  # probe top-1
    assert "| q | mse | 67% ± 41% (75%) | 75% (n=1) (81%) |" in table  # gap share (victim share)
    assert "| q | mse | 40.0% ± 0.0% | 55.0% (n=1) |" in table  # kNN
    assert "| q | mse | 0.800 ± 0.248 | 0.950 (n=1) |" in table  # fidelity
    single = markdown_table(_fake_run(rows[3:], (0,)), rows[3:])  # type: ignore[arg-type]
    assert "one seed each, so no confidence intervals" in single
    assert "| q | mse | 65.0% |" in single and "(n=1)" not in single and "±" not in single


# ---------------------------------------------------------------------------------- sweep figures


@pytest.mark.parametrize("seeds", [1, 3])
def test_vs_queries_figures_write_pngs_with_bands_only_over_several_seeds(seeds: int, tmp_path: Path) -> None:
    groups = aggregate(synthetic_rows(seeds), VICTIM)
    fig = figure_vs_queries(
        groups,
        metric="probe_top1",
        ylabel="linear-probe top-1",
        title="probe",
        references=[("victim", 0.8, "--"), ("untrained", 0.2, ":")],
    )
    assert len(fig.axes) == 2  # a panel per query set
    assert _bands(fig) == (0 if seeds == 1 else 2 * 3)  # one band per (panel, loss)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [10, 100, 1000]
    levels = {line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() in ("--", ":")}
    assert levels == {0.8, 0.2}
    texts = _legend_texts(fig)
    assert {"mse", "info_nce", "soft_nn", "victim", "untrained"} <= set(texts)
    assert ("95% CI over seeds" in texts) == (seeds > 1)
    assert ("one seed: no interval" in fig._suptitle.get_text()) == (seeds == 1)
    assert_legends_outside(fig)

    paths = sweep_plots(groups, VICTIM, tmp_path, name="synthetic")
    assert [p.name for p in paths] == ["probe_vs_queries.png", "fidelity_vs_queries.png"]
    for path in paths:
        assert_png(path)


def test_bands_span_the_seed_interval_within_the_metric_bounds() -> None:
    rows = [_row("q", "none", "mse", b, s, 0.5 + 0.1 * s, 0.4, 0.9 - 0.2 * s) for b in (10, 100) for s in range(3)]
    groups = aggregate(rows, VICTIM)
    probe = figure_vs_queries(groups, metric="probe_top1", ylabel="y", title="t")
    (band,) = probe.axes[0].collections
    ys = band.get_paths()[0].vertices[:, 1]
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert ys.min() == pytest.approx(0.6 - half) and ys.max() == pytest.approx(0.6 + half)
    # Fidelity 0.9, 0.7, 0.5: the interval reaches past 1, the band stops there.
    fid = figure_vs_queries(groups, metric="fidelity_cosine", ylabel="y", title="t", bounds=(-1.0, 1.0))
    ys = fid.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(1.0) and ys.min() == pytest.approx(0.7 - 2 * half)


@pytest.mark.parametrize(
    "query_sets, defenses, panels",
    [(("a", "b"), ("none", "noise:sigma=0.5"), 4), (("a",), ("none", "noise", "detection:threshold=0.6"), 3)],
)
def test_panels_per_query_set_and_defense(
    query_sets: tuple[str, ...], defenses: tuple[str, ...], panels: int, tmp_path: Path
) -> None:
    groups = aggregate(synthetic_rows(2, query_sets=query_sets, defenses=defenses, losses=("mse",)), VICTIM)
    fig = figure_vs_queries(groups, metric="probe_top1", ylabel="y", title="a long title " * 8)
    assert len(fig.axes) == panels
    titles = {ax.get_title() for ax in fig.axes}
    assert all(any(f"defense: {d}" in t for t in titles) for d in defenses)
    assert all(ax.get_xlabel() for ax in fig.axes if not any(o is not ax and _below(o, ax) for o in fig.axes))
    assert_legends_outside(fig)
    assert_png(save_figure(fig, tmp_path / "p.png"))


def _below(other: Any, ax: Any) -> bool:
    a, o = ax.get_position(), other.get_position()
    return o.y1 <= a.y0 and o.x0 < a.x1 and a.x0 < o.x1


def test_the_legend_check_catches_a_legend_on_the_data() -> None:
    # The check above can fail: a legend drawn inside the axes (as matplotlib places it by default).
    fig = figure_vs_queries(aggregate(synthetic_rows(1), VICTIM), metric="probe_top1", ylabel="y", title="t")
    fig.legends.clear()
    fig.axes[0].legend(loc="lower right")
    with pytest.raises(AssertionError, match="covers axes"):
        assert_legends_outside(fig)


# --------------------------------------------------------------------------------- detector ROC


def _curve(label: str, n: int, seed: int, repeats: bool = True) -> DetectionCurve:
    rng = np.random.default_rng(seed)
    truth = np.zeros(n, dtype=bool)
    if repeats:
        truth[n // 2 :] = True
    scores = rng.normal(0, 1, n) + 1.5 * truth
    return DetectionCurve(label, scores, scores > 0.7, truth, (float(roc_auc_score(truth, scores)),) if repeats else ())


def test_roc_figure_reports_each_auc_and_says_when_there_is_none(tmp_path: Path) -> None:
    curves = [_curve("augmented", 400, 0), _curve("augmented, budget 2", 200, 1), _curve("query-once", 100, 2, False)]
    fig = figure_detection_roc(curves)
    texts = " | ".join(_legend_texts(fig))
    for c in curves[:2]:
        assert f"{c.label}: AUC {roc_auc_score(c.truth, c.scores):.3f}" in texts.replace("\n", " ")
    assert "query-once: no repeated queries, no ROC" in texts.replace("\n", " ")
    lines = [line for line in fig.axes[0].get_lines() if line.get_marker() in ("None", "", None)]
    assert len(lines) == 1 + 2  # the chance diagonal and the two curves
    assert_legends_outside(fig)
    assert_png(detection_roc_plot(curves, tmp_path / "roc.png"))  # type: ignore[arg-type]
    # Only cells without repeats: no figure at all.
    assert detection_roc_plot(curves[2:], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_detection_curves_pool_seeds_and_merge_losses_that_sent_the_same_queries(tmp_path: Path) -> None:
    same = _curve("", 60, 0)
    other = _curve("", 60, 1)
    rows = []
    for loss, curve in (("mse", same), ("info_nce", same), ("soft_nn", other)):
        for seed in (0, 1):
            row = _row("q", "detection:threshold=0.7", loss, 30, seed, 0.5, 0.4, 0.9)
            row["strategy"] = "augmented"
            rows.append(row)
            tensors = {
                "scores": torch.from_numpy(curve.scores),
                "flags": torch.from_numpy(curve.flags),
                "truth": torch.from_numpy(curve.truth),
                "thief": torch.ones(60, dtype=torch.bool),
            }
            save_tensors(detections_file(tmp_path, row["cell_id"]), tensors, {})
    rows.append(_row("q", "none", "mse", 30, 0, 0.5, 0.4, 0.9))  # no detector: no file, skipped
    curves = detection_curves(tmp_path, rows)
    assert [c.label for c in curves] == [
        "detection:threshold=0.7, augmented thief, mse/info_nce @ 30 (2 seeds)",
        "detection:threshold=0.7, augmented thief, soft_nn @ 30 (2 seeds)",
    ]
    assert len(curves[0].scores) == 2 * 60 and curves[0].seed_aucs == pytest.approx([same.seed_aucs[0]] * 2)


def test_a_detector_sweep_keeps_its_per_query_scores(write_config: Callable[..., Path], tmp_path: Path) -> None:
    # An augmented thief under the detector: every view after the first epoch repeats an image.
    budget, epochs = 8, 3
    cfg = load_config(
        write_config(
            losses=("mse",),
            budgets=(budget,),
            steal_epochs=epochs,
            strategy="augmented",
            defenses=("detection:threshold=0.6",),
        )
    )
    out = tmp_path / "out"
    written = write_outputs(run_sweep(cfg, out, progress=False, log=lambda _: None))
    assert len(written["rows"]) == 2
    for row in written["rows"]:
        path = detections_file(out, row["cell_id"])
        assert path.is_file()
        data, _ = load_tensors(path)
        thief, truth = data["thief"], data["truth"]
        assert int(thief.sum()) == budget * epochs and int((~thief).sum()) == 100 + 50  # the probe's images
        assert int(truth.sum()) == budget * (epochs - 1) and not bool(truth[~thief].any())
        assert row["detection_roc_auc"] == pytest.approx(roc_auc_score(truth.numpy(), data["scores"].numpy()))
        assert row["thief_flagged"] == pytest.approx(float(data["flags"][thief].float().mean()))
        assert row["honest_flagged"] == pytest.approx(float(data["flags"][~thief].float().mean()))
    assert_png(out / "detection_roc.png")


# ------------------------------------------------------------------------------ defense study


DEFENSE_ROWS = [
    {"defense": "none", "victim": "plain", "honest_top1": 0.60, "stolen_top1": 0.45, "victim_top1": 0.60},
    {"defense": "noise", "victim": "plain", "honest_top1": 0.55, "stolen_top1": 0.40, "victim_top1": 0.60},
    {"defense": "detection", "victim": "plain", "honest_top1": 0.60, "stolen_top1": 0.45, "victim_top1": 0.60},
    {"defense": "coverage", "victim": "plain", "honest_top1": 0.58, "stolen_top1": 0.30, "victim_top1": 0.60},
    {"defense": "watermark", "victim": "watermarked", "honest_top1": 0.57, "stolen_top1": 0.44, "victim_top1": 0.57},
]


def test_honest_vs_thief_labels_every_defense_once_without_overlaps(tmp_path: Path) -> None:
    fig = figure_honest_vs_thief(DEFENSE_ROWS)
    ax = fig.axes[0]
    labels = [t for t in ax.texts]
    # "none" and "detection" coincide: one label names both.
    assert sorted(t.get_text() for t in labels) == ["coverage", "noise", "none, detection", "watermark"]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    axes_box = ax.get_window_extent(renderer)
    assert all(axes_box.x0 <= b.x0 and b.x1 <= axes_box.x1 for b in boxes)
    diagonal = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert diagonal and np.allclose(diagonal[0].get_xdata(), diagonal[0].get_ydata())  # y = x
    assert "undefended plain victim (60.0%)" in _legend_texts(fig)
    assert_legends_outside(fig)
    assert_png(save_figure(fig, tmp_path / "h.png"))


OWNERSHIP_ROWS = [
    {"suspect": "victim", "method": "watermark", "p_value": 0.0, "verdict": "stolen"},
    {"suspect": "victim", "method": "dataset_inference", "p_value": 1e-40, "verdict": "stolen"},
    {"suspect": "stolen-mse-1000", "method": "watermark", "p_value": 0.003, "verdict": "stolen"},
    {"suspect": "stolen-mse-1000", "method": "dataset_inference", "p_value": 0.2, "verdict": "independent"},
    {"suspect": "independent-disjoint-data", "method": "watermark", "p_value": 0.6, "verdict": "independent"},
    {"suspect": "independent-disjoint-data", "method": "dataset_inference", "p_value": 0.9, "verdict": "independent"},
]
P_FLOOR = 1e-300  # the smallest p-value the figure draws

#: Several seeds per (suspect, method): p-values per seed, None where the test gave none.
SEEDED_P = {
    "victim": ([0.0, 0.0, 0.0], [1e-30, 1e-28, 1e-33]),
    "stolen-mse-1000": ([1e-5, 3e-4, 0.02], [0.2, 0.004, 0.5]),
    "stolen-info_nce-1000": ([1e-30, 2e-12, 1e-9], [1e-3, 5e-6, 0.03]),
    "stolen-soft_nn-300": ([0.5, 0.04, 0.001], [None, 0.6, 0.3]),
    "stolen-mse-30": ([0.5, 0.5, 0.3], [0.5, 0.7, 0.9]),
    "independent-disjoint-data": ([0.6, 0.5, 0.8], [0.9, 0.5, 0.45]),
    "independent-random-init": ([None, None, None], [0.5, 0.2, 0.8]),
}


def seeded_ownership_rows(alpha: float = 0.01) -> list[dict[str, Any]]:
    """``ownership.csv`` with a row per seed, as read back from the file (every value a string)."""
    rows = [
        {
            "suspect": suspect,
            "method": method,
            "seed": seed,
            "statistic": 0.5,
            "p_value": "" if p is None else p,
            "verdict": "" if p is None else ("stolen" if p < alpha else "independent"),
            "detail": "",
        }
        for suspect, per_method in SEEDED_P.items()
        for method, ps in zip(("watermark", "dataset_inference"), per_method, strict=True)
        for seed, p in enumerate(ps)
    ]
    return _csv_round_trip(rows)


def _csv_round_trip(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    text.seek(0)
    return list(csv.DictReader(text))


def _dots(ax: Any) -> list[tuple[float, float]]:
    """The per-seed dots (line markers) of the ownership figure, in data coordinates."""
    return [(float(x), float(y)) for line in ax.get_lines() if line.get_marker() == "o" for x, y in line.get_xydata()]


def _assert_labels_clear(fig: Figure) -> None:
    """The figure's texts in the axes lie inside it, overlap no other and cover no dot."""
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw(renderer)
    inside = ax.get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for box, text in zip(boxes, ax.texts, strict=True):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, f"{text.get_text()!r} runs out of the axes"
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, f"{text.get_text()!r} runs out of the axes"
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), "two labels overlap"
    for x, y in _dots(ax):
        px, py = ax.transData.transform((x, y))
        assert not any(box.contains(px, py) for box in boxes), f"a label covers the dot at {x:.3g}"


@pytest.mark.parametrize("as_read", [False, True], ids=["as-computed", "as-read-from-csv"])
@pytest.mark.parametrize("seed_column", [False, True], ids=["no-seed", "one-seed"])
def test_ownership_figure_draws_minus_log10_p_against_alpha(as_read: bool, seed_column: bool, tmp_path: Path) -> None:
    no_test = {"suspect": "independent-disjoint-data", "method": "other", "p_value": None, "verdict": ""}
    rows = [dict(r, seed=0) if seed_column else dict(r) for r in [*OWNERSHIP_ROWS, no_test]]
    if as_read:
        rows = _csv_round_trip(rows)
    fig = figure_ownership(rows, alpha=0.01)
    ax = fig.axes[0]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    expected = sorted(round(-math.log10(max(r["p_value"], P_FLOOR)), 6) for r in OWNERSHIP_ROWS)
    assert widths == expected  # one bar per test, at the floor below it
    assert not _dots(ax) and "seeds" not in fig._suptitle.get_text()  # a single test per group: no dots
    (alpha_line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert alpha_line.get_xdata()[0] == pytest.approx(2.0)
    annotations = {t.get_text() for t in ax.texts}
    assert {"p < 1e-300 (stolen)", "p = 1e-40 (stolen)", "p = 0.2 (independent)", "p n/a"} <= annotations
    assert [t.get_text() for t in ax.get_yticklabels()] == ["victim", "stolen-mse-1000", "independent-disjoint-data"]
    assert ax.get_xlim()[1] > max(widths)  # the labels of the longest bars have room
    assert "seed" not in " ".join(_legend_texts(fig))
    _assert_labels_clear(fig)
    assert_legends_outside(fig)
    assert_png(save_figure(fig, tmp_path / "o.png"))


def test_ownership_figure_over_several_seeds_draws_a_dot_per_seed_and_counts_the_flags(tmp_path: Path) -> None:
    alpha = 0.01
    rows = seeded_ownership_rows(alpha)
    fig = figure_ownership(rows, alpha=alpha)
    ax = fig.axes[0]
    # A dot per seed that has a p-value, at -log10(p) (the floor below it).
    ps = [p for per_method in SEEDED_P.values() for method in per_method for p in method if p is not None]
    dots = _dots(ax)
    assert len(dots) == len(ps) == 38
    assert sorted(round(x, 6) for x, _ in dots) == sorted(round(-math.log10(max(p, P_FLOOR)), 6) for p in ps)
    # Each group's label: seeds with p < alpha out of all its seeds, and the median of its p-values.
    expected = set()
    for per_method in SEEDED_P.values():
        for values in per_method:
            defined = [p for p in values if p is not None]
            if not defined:
                expected.add("p n/a (3 seeds)")
                continue
            median = statistics.median(defined)
            shown = "< 1e-300" if median < P_FLOOR else f"= {median:.2g}"
            missing = len(values) - len(defined)
            expected.add(
                f"{sum(p < alpha for p in defined)}/{len(values)} flagged, median p {shown}"
                + (f" ({missing} p n/a)" if missing else "")
            )
    texts = {t.get_text() for t in ax.texts}
    assert texts == expected
    assert {
        "3/3 flagged, median p < 1e-300",
        "2/3 flagged, median p = 0.0003",
        "0/3 flagged, median p = 0.45 (1 p n/a)",
    } <= texts
    # A pale bar to each group's median; every dot within its method's band, the seeds apart.
    medians = sorted(
        round(-math.log10(max(statistics.median(d), P_FLOOR)), 6)
        for per_method in SEEDED_P.values()
        for values in per_method
        if (d := [p for p in values if p is not None])
    )
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == medians
    height = 0.8 / 2
    for i, suspect in enumerate(SEEDED_P):
        for j, values in enumerate(SEEDED_P[suspect]):
            center = i + (j - 0.5) * height
            ys = [y for _, y in dots if abs(y - center) < height / 2]
            assert len(ys) == sum(p is not None for p in values)
            assert len(set(ys)) == len(ys)  # spread across the band: equal p-values do not hide each other
    assert "3 seeds each" in fig._suptitle.get_text()
    assert {"one seed's test", "median over seeds"} <= set(_legend_texts(fig))
    _assert_labels_clear(fig)
    assert_legends_outside(fig)
    assert_png(save_figure(fig, tmp_path / "seeds.png"))


def test_ownership_figure_shows_the_tests_near_alpha_beside_a_p_at_the_floor() -> None:
    # p = 0 (drawn at 1e-300) next to tests around alpha: those stay apart from the alpha line.
    rows = [
        {"suspect": "victim", "method": "watermark", "p_value": 0.0, "verdict": "stolen"},
        {"suspect": "near", "method": "watermark", "p_value": 0.005, "verdict": "stolen"},
        {"suspect": "far", "method": "watermark", "p_value": 0.5, "verdict": "independent"},
    ]
    fig = figure_ownership(rows, alpha=0.01)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw(renderer)
    width = ax.get_window_extent(renderer).width
    x = {round(p.get_width(), 3): ax.transData.transform((p.get_width(), 0))[0] for p in ax.patches}
    line = ax.transData.transform((2.0, 0))[0]
    assert x[2.301] - line > 0.01 * width and line - x[0.301] > 0.05 * width  # linear: 0.07% and 0.4%
    _assert_labels_clear(fig)


def test_defense_study_plots_write_their_three_files(tmp_path: Path) -> None:
    paths = defense_study_plots(tmp_path, DEFENSE_ROWS, OWNERSHIP_ROWS, [_curve("augmented", 100, 0)], alpha=0.01)
    assert [p.name for p in paths] == ["honest_vs_thief.png", "detection_roc.png", "ownership_pvalues.png"]
    for path in paths:
        assert_png(path)


# --------------------------------------------------------------------------------- end to end


def test_a_two_seed_sweep_writes_aggregates_and_plots(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = load_config(write_config(losses=("mse",), budgets=(8, 16), seeds=(0, 1)))
    out = tmp_path / "out"
    written = write_outputs(run_sweep(cfg, out, progress=False, log=lambda _: None))
    rows, groups = written["rows"], written["aggregate"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aggregate"]["confidence"] == 0.95 and summary["aggregate"]["groups"] == groups
    assert len(groups) == 2 * 2
    victim, floor = summary["victim"]["top1"], summary["victim"]["random_init_top1"]
    for group in groups:
        axes = (group["query_dataset"], group["loss"], group["budget"])
        cells = [r for r in rows if (r["query_dataset"], r["loss"], r["budget"]) == axes]
        assert group["n_seeds"] == len(cells) == 2
        for metric in ("probe_top1", "knn_top1", "fidelity_cosine"):
            x = np.array([float(r[metric]) for r in cells])
            low, high = sps.t.interval(0.95, 1, loc=x.mean(), scale=sps.sem(x)) if x.std() else (x.mean(),) * 2
            assert group[f"{metric}_mean"] == pytest.approx(x.mean(), rel=STATS_RTOL)
            assert group[f"{metric}_ci_low"] == pytest.approx(low, rel=1e-9, abs=1e-12)
            assert group[f"{metric}_ci_high"] == pytest.approx(high, rel=1e-9, abs=1e-12)
        mean = float(np.mean([r["probe_top1"] for r in cells]))
        gap = group["probe_top1_gap_share_mean"]
        assert gap == (pytest.approx((mean - floor) / (victim - floor)) if victim > floor else None)
        assert group["probe_top1_share_mean"] == pytest.approx(mean / victim)
    # aggregate.csv holds the same numbers (rounded to 6 decimals; empty for None).
    with open(out / "aggregate.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(groups) and tuple(table[0]) == AGGREGATE_COLUMNS
    for line, group in zip(table, groups, strict=True):
        for column in AGGREGATE_COLUMNS:
            value = group[column]
            if value is None:
                assert line[column] == ""
            elif isinstance(value, float):
                assert float(line[column]) == pytest.approx(value, abs=CSV_ATOL)
            else:
                assert line[column] == str(value)
    assert "±" in written["table"]
    for name in ("probe_vs_queries.png", "fidelity_vs_queries.png"):
        assert_png(out / name)
    assert not (out / "detection_roc.png").exists()  # no detector in this grid
