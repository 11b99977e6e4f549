"""The figures of a sweep and of the defense study (matplotlib's Agg canvas; no pyplot, no global state).

A sweep (:func:`~sslsteal_fast.sweep.report.write_outputs`, from the seed aggregates of
:func:`~sslsteal_fast.sweep.report.aggregate`) draws ``probe_vs_queries.png`` and
``fidelity_vs_queries.png`` and, under a similarity detector, ``detection_roc.png``. The defense
study draws ``honest_vs_thief.png``, ``detection_roc.png`` (every detector cell of its sweeps) and
``ownership_pvalues.png``.

Every legend is placed outside the axes (below them, in room the layout leaves), so it never
covers data. The ``figure_*`` builders return the figure (tests inspect it); the ``*_plot``
functions save it atomically as a PNG.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Annotation
from matplotlib.ticker import MaxNLocator, PercentFormatter

from sslsteal_fast.sweep.cell import detections_file
from sslsteal_fast.util.files import atomic_write, load_tensors
from sslsteal_fast.util.stats import mean_ci

__all__ = [
    "DetectionCurve",
    "defense_study_plots",
    "detection_curves",
    "detection_roc_plot",
    "figure_detection_roc",
    "figure_honest_vs_thief",
    "figure_ownership",
    "figure_vs_queries",
    "save_figure",
    "sweep_plots",
]

#: Line colours, one per loss / defense / curve (matplotlib's tab10, cycled).
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DPI = 130
#: Panel size in inches (width, height) of the per-query-set figures.
PANEL = (4.2, 3.2)
#: The smallest p-value drawn (a p of 0 is shown at this floor, labelled as below it).
P_FLOOR = 1e-300


@dataclass(frozen=True)
class DetectionCurve:
    """The per-query detection data of one group of detector cells (the same cell over its seeds).

    ``scores``, ``flags``, ``truth``: every query of every seed (honest user's and thief's), pooled
    for the drawn curve; ``seed_aucs``: each seed's own ROC-AUC (those with both classes).
    """

    label: str
    scores: np.ndarray
    flags: np.ndarray
    truth: np.ndarray
    seed_aucs: tuple[float, ...] = ()

    @property
    def defined(self) -> bool:
        """Whether the queries hold both classes (a query-once thief sends no repeats: no ROC)."""
        return 0 < int(self.truth.sum()) < len(self.truth)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _legend_below(fig: Figure, handles: Sequence[Artist], labels: Sequence[str], *, max_cols: int = 6) -> None:
    """The figure's one legend, under the axes (constrained layout makes room for it).

    As many columns as the figure's width holds for the longest label (at about 0.08 in a character).
    """
    longest = max((len(line) for label in labels for line in label.splitlines()), default=1)
    fits = int(fig.get_figwidth() / (0.6 + 0.08 * longest))
    ncol = max(1, min(max_cols, fits, len(labels)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def _title(fig: Figure, text: str, fontsize: float = 11) -> None:
    """A figure title wrapped to the figure's width."""
    fig.suptitle(_wrap(text, int(fig.get_figwidth() * 72 / (0.6 * fontsize))), fontsize=fontsize)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _panel_grid(query_sets: Sequence[str], defenses: Sequence[str]) -> tuple[int, int, list[tuple[str, str]]]:
    """``(rows, cols, panels)``: a row per defense and a column per query set, or, when one of the
    two has a single value, the panels wrapped into a near-square grid (row-major order)."""
    panels = [(q, d) for d in defenses for q in query_sets]
    if len(query_sets) > 1 and len(defenses) > 1:
        return len(defenses), len(query_sets), panels
    n = len(panels)
    cols = n if n <= 3 else math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols, panels


def _seed_note(groups: Sequence[dict[str, Any]], confidence: float) -> str:
    seeds = sorted({int(g["n_seeds"]) for g in groups})
    if not seeds or seeds[-1] <= 1:
        return "one seed: no interval"
    n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    return f"mean and {confidence:.0%} CI over {n} seeds"


def figure_vs_queries(
    groups: Sequence[dict[str, Any]],
    *,
    metric: str,
    ylabel: str,
    title: str,
    references: Sequence[tuple[str, float, str]] = (),
    query_sets: Sequence[str] | None = None,
    defenses: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    percent: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
    confidence: float = 0.95,
) -> Figure:
    """``metric`` of the stolen copies against the budget (log x), one line per loss.

    ``groups``: seed aggregates (``query_dataset``, ``defense``, ``loss``, ``budget``, ``n_seeds``,
    ``{metric}_mean``, ``{metric}_ci_low``, ``{metric}_ci_high``). One panel per query set, a row
    of panels per defense when there are several; the seed interval is a shaded band where it
    exists, drawn within the metric's possible ``bounds`` (with few seeds a t interval can reach
    past them); ``references`` are ``(label, level, linestyle)`` horizontal lines in every panel.
    """
    query_sets = list(query_sets or _unique(g["query_dataset"] for g in groups))
    defenses = list(defenses or _unique(g["defense"] for g in groups))
    losses = list(losses or _unique(g["loss"] for g in groups))
    budgets = sorted({int(g["budget"]) for g in groups})
    n_rows, n_cols, panels = _panel_grid(query_sets, defenses)
    fig = _figure(0.6 + PANEL[0] * max(n_cols, 2), 1.6 + PANEL[1] * n_rows)
    grid = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False)
    index = {(g["query_dataset"], g["defense"], g["loss"], int(g["budget"])): g for g in groups}
    banded = False
    for k, (qname, defense) in enumerate(panels):
        r, c = divmod(k, n_cols)
        ax = grid[r][c]
        for i, loss in enumerate(losses):
            color = COLORS[i % len(COLORS)]
            pts = [index[key] for b in budgets if (key := (qname, defense, loss, b)) in index]
            pts = [g for g in pts if g[f"{metric}_mean"] is not None]
            if not pts:
                continue
            xs = [int(g["budget"]) for g in pts]
            ax.plot(xs, [g[f"{metric}_mean"] for g in pts], marker="o", markersize=4, color=color, label=loss)
            band = [g for g in pts if g[f"{metric}_ci_low"] is not None]
            if band:
                banded = True
                ax.fill_between(
                    [int(g["budget"]) for g in band],
                    [max(g[f"{metric}_ci_low"], bounds[0]) for g in band],
                    [min(g[f"{metric}_ci_high"], bounds[1]) for g in band],
                    color=color,
                    alpha=0.18,
                    linewidth=0,
                )
        for j, (label, level, style) in enumerate(references):
            ax.axhline(level, color="black" if j == 0 else "0.45", linestyle=style, linewidth=1.1, label=label)
        ax.set_xscale("log")
        ax.set_xlim(budgets[0] / 1.3, budgets[-1] * 1.3)  # a single budget sits in the middle
        ax.margins(y=0.08)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        if percent:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        heading = qname if len(defenses) == 1 else f"{qname}\n{_wrap('defense: ' + defense, 44)}"
        ax.set_title(heading, fontsize=10)
        if c == 0:
            ax.set_ylabel(ylabel)
        if k + n_cols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("queries (budget, log scale)")
            ax.xaxis.set_tick_params(labelbottom=True)
    for k in range(len(panels), n_rows * n_cols):
        grid[k // n_cols][k % n_cols].remove()
    handles: list[Artist] = [
        Line2D([], [], color=COLORS[i % len(COLORS)], marker="o", markersize=4) for i in range(len(losses))
    ]
    labels = list(losses)
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3, linewidth=0))
        labels.append(f"{confidence:.0%} CI over seeds")
    for j, (label, _, style) in enumerate(references):
        handles.append(Line2D([], [], color="black" if j == 0 else "0.45", linestyle=style, linewidth=1.1))
        labels.append(label)
    _legend_below(fig, handles, labels)
    _title(fig, f"{title} ({_seed_note(groups, confidence)})")
    return fig


def sweep_plots(
    groups: Sequence[dict[str, Any]],
    victim_eval: dict[str, Any],
    out: str | Path,
    *,
    name: str,
    query_sets: Sequence[str] | None = None,
    defenses: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> list[Path]:
    """``probe_vs_queries.png`` and ``fidelity_vs_queries.png`` in ``out``; returns their paths."""
    out = Path(out)
    layout = {"query_sets": query_sets, "defenses": defenses, "losses": losses, "confidence": confidence}
    refs = [(f"victim ({victim_eval['victim_top1']:.1%})", float(victim_eval["victim_top1"]), "--")]
    if victim_eval.get("random_init_top1") is not None:
        floor = float(victim_eval["random_init_top1"])
        refs.append((f"untrained encoder ({floor:.1%})", floor, ":"))
    probe = figure_vs_queries(
        groups,
        metric="probe_top1",
        ylabel="linear-probe top-1",
        title=f"{name}: stolen encoders' linear-probe accuracy",
        references=refs,
        **layout,
    )
    fidelity = figure_vs_queries(
        groups,
        metric="fidelity_cosine",
        ylabel="fidelity (mean cosine to the victim)",
        title=f"{name}: fidelity to the victim's representations",
        references=[("victim itself (1)", 1.0, "--")],
        percent=False,
        bounds=(-1.0, 1.0),
        **layout,
    )
    return [save_figure(probe, out / "probe_vs_queries.png"), save_figure(fidelity, out / "fidelity_vs_queries.png")]


def detection_curves(out: str | Path, rows: Sequence[dict[str, Any]]) -> list[DetectionCurve]:
    """The detection data the detector cells among ``rows`` (results rows) kept in ``out``: one curve
    per (query set, defense, strategy, loss, budget) with its seeds pooled.

    The losses of a group whose cells sent the very same queries and got the very same flags (the
    thief's traffic does not depend on its loss) share one curve, labelled with all of them. Cells
    without a file (no detector, or computed by a version that did not keep it) are skipped.
    """
    from sklearn.metrics import roc_auc_score  # sklearn is slow to import: only where a detector ran

    several_queries = len({r["query_dataset"] for r in rows}) > 1
    groups: dict[tuple[Any, ...], list[dict[str, np.ndarray]]] = {}
    for row in rows:
        path = detections_file(out, row["cell_id"])
        if not path.is_file():
            continue
        tensors, _ = load_tensors(path)
        key = (row["query_dataset"], row["defense"], row["strategy"], int(row["budget"]), row["loss"])
        groups.setdefault(key, []).append({k: tensors[k].numpy() for k in ("scores", "flags", "truth")})
    merged: list[dict[str, Any]] = []  # per distinct curve: its axes but the loss, data, losses, seeds
    for (qname, defense, strategy, budget, loss), seeds in groups.items():
        data = (
            np.concatenate([s["scores"] for s in seeds]).astype(np.float64),
            np.concatenate([s["flags"] for s in seeds]).astype(bool),
            np.concatenate([s["truth"] for s in seeds]).astype(bool),
        )
        axes = (qname, defense, strategy, budget)
        same = [
            m
            for m in merged
            if m["axes"] == axes and all(np.array_equal(a, b) for a, b in zip(m["data"], data, strict=True))
        ]
        if same:
            same[0]["losses"].append(loss)
        else:
            merged.append({"axes": axes, "data": data, "losses": [loss], "seeds": seeds})
    curves = []
    for m in merged:
        qname, defense, strategy, budget = m["axes"]
        label = (
            f"{defense}, {strategy} thief"
            + (f" on {qname}" if several_queries else "")
            + f", {'/'.join(m['losses'])} @ {budget}"
            + (f" ({len(m['seeds'])} seeds)" if len(m["seeds"]) > 1 else "")
        )
        aucs = tuple(
            float(roc_auc_score(s["truth"], s["scores"])) for s in m["seeds"] if 0 < s["truth"].sum() < len(s["truth"])
        )
        curves.append(DetectionCurve(label, *m["data"], aucs))
    return curves


def figure_detection_roc(curves: Sequence[DetectionCurve], *, title: str = "Similarity detector") -> Figure:
    """ROC curve of each group's similarity score against ground-truth repeats, AUC in the legend.

    The AUC is the curve's (seeds pooled), with the mean and 95% interval of the seeds' own AUCs
    when there are several. A cross marks the operating point of the detector's own flags (its
    threshold). Groups whose queries hold a single class (a query-once thief sends no repeats) have
    no ROC curve: one legend line counts them.
    """
    from sklearn.metrics import roc_auc_score, roc_curve  # sklearn is slow to import: only when drawing a ROC

    drawn = [c for c in curves if c.defined]
    handles: list[Artist] = [Line2D([], [], color="0.6", linestyle=":", linewidth=1)]
    labels = ["chance"]
    for i, curve in enumerate(drawn):
        auc = float(roc_auc_score(curve.truth, curve.scores))
        text = f"{curve.label}: AUC {auc:.3f}"
        if len(curve.seed_aucs) > 1:
            ci = mean_ci(curve.seed_aucs)
            text += f" (seeds: {ci.mean:.3f} ± {ci.half_width:.3f})"
        hidden = any(_same_scores(curve, other) for other in drawn[:i])
        handles.append(Line2D([], [], color=COLORS[i % len(COLORS)], linewidth=1.6, linestyle="--" if hidden else "-"))
        labels.append(_wrap(text, 70))
    if drawn:
        handles.append(Line2D([], [], marker="X", markersize=8, color="0.5", markeredgecolor="black", linestyle="none"))
        labels.append("the detector's flags (its threshold)")
    undefined = [c for c in curves if not c.defined]
    if undefined:
        handles.append(Line2D([], [], linestyle="none"))
        what = undefined[0].label if len(undefined) == 1 else f"{len(undefined)} groups of cells"
        kind = "no repeated queries" if not any(c.truth.any() for c in undefined) else "a single class of queries"
        labels.append(_wrap(f"{what}: {kind}, no ROC", 70))
    lines = sum(label.count("\n") + 1 for label in labels)
    fig = _figure(6.0, 5.6 + 0.24 * lines)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    for i, curve in enumerate(drawn):
        color = COLORS[i % len(COLORS)]
        fpr, tpr, _ = roc_curve(curve.truth, curve.scores)
        # A curve on top of an earlier one (same scores, other flags: another threshold) is dashed,
        # so that both colours show.
        hidden = any(_same_scores(curve, other) for other in drawn[:i])
        ax.plot(fpr, tpr, color=color, linewidth=1.6, linestyle=(i % 4, (4, 4)) if hidden else "-")
        op_fpr = float(curve.flags[~curve.truth].mean())
        op_tpr = float(curve.flags[curve.truth].mean())
        ax.plot([op_fpr], [op_tpr], marker="X", markersize=8, color=color, markeredgecolor="black", linestyle="none")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false-positive rate (distinct queries flagged)")
    ax.set_ylabel("true-positive rate (repeats flagged)")
    ax.grid(True, alpha=0.3)
    _title(fig, f"{title}: ROC against ground-truth repeats")
    _legend_below(fig, handles, labels, max_cols=1)
    return fig


def _same_scores(a: DetectionCurve, b: DetectionCurve) -> bool:
    return np.array_equal(a.scores, b.scores) and np.array_equal(a.truth, b.truth)


def detection_roc_plot(curves: Sequence[DetectionCurve], path: str | Path, **kwargs: Any) -> Path | None:
    """Save :func:`figure_detection_roc` to ``path``; nothing (None) when no group has a ROC curve."""
    if not any(c.defined for c in curves):
        return None
    return save_figure(figure_detection_roc(curves, **kwargs), path)


def figure_honest_vs_thief(defense_rows: Sequence[dict[str, Any]]) -> Figure:
    """Honest user's accuracy (x) against the thief's stolen copy's (y), one labelled point per defense.

    ``defense_rows``: ``defenses.csv`` rows (``defense``, ``victim``, ``honest_top1``,
    ``stolen_top1``, ``victim_top1``). The diagonal is "the thief does as well as the honest user";
    dashed lines mark each undefended victim's own accuracy. A good defense sits low and right.
    Points that coincide share one label.
    """
    fig = _figure(6.4, 6.4)
    ax = fig.subplots()
    xs = [float(r["honest_top1"]) for r in defense_rows]
    ys = [float(r["stolen_top1"]) for r in defense_rows]
    victims = {str(r["victim"]): float(r["victim_top1"]) for r in defense_rows}
    values = xs + ys + list(victims.values())
    lo, hi = min(values), max(values)
    pad = max(0.04 * (hi - lo), 0.01)
    lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    ax.plot([lo, hi], [lo, hi], color="0.6", linestyle=":", linewidth=1)
    handles: list[Artist] = [Line2D([], [], color="0.6", linestyle=":", linewidth=1)]
    labels = ["y = x: thief as accurate as the honest user"]
    for k, (kind, level) in enumerate(victims.items()):
        style = "--" if k == 0 else "-."
        ax.axhline(level, color="black", linestyle=style, linewidth=0.9)
        ax.axvline(level, color="black", linestyle=style, linewidth=0.9)
        handles.append(Line2D([], [], color="black", linestyle=style, linewidth=0.9))
        labels.append(f"undefended {kind} victim ({level:.1%})")
    markers = {kind: m for kind, m in zip(victims, "os^Dv", strict=False)}
    groups: dict[tuple[float, float], list[int]] = {}
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        groups.setdefault((round(x, 3), round(y, 3)), []).append(i)
    for i, r in enumerate(defense_rows):
        ax.plot(
            xs[i],
            ys[i],
            marker=markers[str(r["victim"])],
            markersize=8,
            color=COLORS[i % len(COLORS)],
            markeredgecolor="black",
            linestyle="none",
        )
    for kind, m in markers.items():
        handles.append(Line2D([], [], marker=m, color="0.7", markeredgecolor="black", linestyle="none"))
        labels.append(f"{kind} victim")
    texts = [
        ax.annotate(
            ", ".join(str(defense_rows[i]["defense"]) for i in members),
            (xs[members[0]], ys[members[0]]),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.3},
        )
        for members in groups.values()
    ]
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("honest user's linear-probe top-1 (through the defense)")
    ax.set_ylabel("thief's stolen copy, linear-probe top-1")
    ax.grid(True, alpha=0.3)
    _title(fig, "What each defense costs the honest user and the thief")
    _legend_below(fig, handles, labels, max_cols=2)
    _place_labels(fig, ax, texts)
    return fig


#: Where a point's label may go, in points from the point: (dx, dy, horizontal alignment).
_LABEL_SPOTS = ((7, 5, "left"), (7, -13, "left"), (-7, 5, "right"), (-7, -13, "right"), (0, 10, "center"))


def _place_labels(fig: Figure, ax: Any, texts: list[Annotation]) -> None:
    """Move each point label to the first spot that overlaps no earlier label, no point and stays in the axes."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw(renderer)  # settle the layout first: positions are read in display coordinates
    inside = ax.get_window_extent(renderer)
    points = [
        ax.transData.transform(xy)
        for line in ax.get_lines()
        if line.get_marker() not in ("None", "", None)
        for xy in line.get_xydata()
    ]
    clearance = max(line.get_markersize() for line in ax.get_lines()) / 2 * fig.dpi / 72 + 2  # marker radius, px
    taken: list[Any] = []
    for text in texts:
        own = ax.transData.transform(text.xy)
        for dx, dy, ha in _LABEL_SPOTS:
            text.set_position((dx, dy))
            text.set_horizontalalignment(ha)
            box = text.get_window_extent(renderer)
            clear = (
                box.x0 >= inside.x0
                and box.x1 <= inside.x1
                and box.y0 >= inside.y0
                and box.y1 <= inside.y1
                and not any(box.overlaps(t) for t in taken)
                and not any(
                    box.padded(clearance).contains(px, py) for px, py in points if not np.allclose((px, py), own)
                )
            )
            if clear:
                break
        taken.append(text.get_window_extent(renderer))


@dataclass(frozen=True)
class _OwnershipGroup:
    """The tests of one method on one suspect: a p-value per seed (None where the test gave none)."""

    suspect: str
    method: str
    p_values: tuple[float | None, ...]
    verdicts: tuple[str, ...]

    @property
    def defined(self) -> list[float]:
        return [p for p in self.p_values if p is not None]


def _p_value(value: Any) -> float | None:
    """A p-value from a row, as computed or as read back from the CSV (``""`` and non-finite: none)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    p = float(value)
    return p if math.isfinite(p) else None


def _ownership_groups(rows: Sequence[dict[str, Any]]) -> list[_OwnershipGroup]:
    """One group per (suspect, method), in the rows' order; its seeds in the rows' order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["suspect"]), str(r["method"])), []).append(r)
    return [
        _OwnershipGroup(
            suspect,
            method,
            tuple(_p_value(r["p_value"]) for r in members),
            tuple(str(r.get("verdict") or "") for r in members),
        )
        for (suspect, method), members in groups.items()
    ]


def _shown_p(p: float, prefix: str = "p") -> str:
    return f"{prefix} < {P_FLOOR:.0e}" if p < P_FLOOR else f"{prefix} = {p:.2g}"


def _minus_log10(p: float) -> float:
    return -math.log10(max(p, P_FLOOR))


def _ownership_label(group: _OwnershipGroup, alpha: float) -> str:
    """``p = 0.003 (stolen)`` for a single test; ``2/3 flagged, median p = 0.004`` over several seeds."""
    ps = group.defined
    if len(group.p_values) == 1:
        shown = _shown_p(ps[0])
        return f"{shown} ({group.verdicts[0]})" if group.verdicts[0] else shown
    flagged = sum(p < alpha for p in ps)
    text = f"{flagged}/{len(group.p_values)} flagged, {_shown_p(float(np.median(ps)), 'median p')}"
    missing = len(group.p_values) - len(ps)
    return text + (f" ({missing} p n/a)" if missing else "")


@dataclass(frozen=True)
class _MarkLabel:
    """A group's label and where its marks lie in x: it goes right of ``end`` or, inside the bar, left of ``start``."""

    text: Annotation
    start: float
    end: float
    gap: float  # points between the marks and the label


def figure_ownership(ownership_rows: Sequence[dict[str, Any]], *, alpha: float = 0.01) -> Figure:
    """-log10(p) of each ownership test per suspect (a band per method), with the ``alpha`` line.

    ``ownership_rows``: ``ownership.csv`` rows (``suspect``, ``method``, ``p_value``, ``verdict``,
    optionally ``seed``), as computed or as read back (strings, ``""`` for no p-value). A single
    test per (suspect, method) is a bar labelled with its p-value and verdict; a test repeated over
    several seeds is a dot per seed (spread across the method's band) over a pale bar to their
    median, labelled ``k/n flagged`` (seeds with p < ``alpha``) and the median p. Past the line is
    a ``stolen`` verdict; a p below :data:`P_FLOOR` is drawn at the floor. The x axis is linear up
    to a few times the line and logarithmic past it, so that a p of 1e-300 (a watermark test whose
    p underflows) does not squash every other test against the line.
    """
    groups = _ownership_groups(ownership_rows)
    suspects = _unique(g.suspect for g in groups)
    methods = _unique(g.method for g in groups)
    seeds = sorted({len(g.p_values) for g in groups})
    several = seeds[-1] > 1
    per_suspect = 0.65 if several else 0.5  # inches, before the methods' share: room for the dots' spread
    fig = _figure(7.4, 1.9 + per_suspect * len(suspects) * max(1, len(methods)) ** 0.5)
    ax = fig.subplots()
    height = 0.8 / max(1, len(methods))
    line = -math.log10(alpha)
    linear = 10.0 ** math.ceil(math.log10(2 * max(line, 1.0)))  # linear up to here, log past it
    top = line
    labels: list[_MarkLabel] = []
    for g in groups:
        j = methods.index(g.method)
        y = suspects.index(g.suspect) + (j - (len(methods) - 1) / 2) * height
        if not g.defined:  # no test ran: a note by the alpha line
            what = "p n/a" if len(g.p_values) == 1 else f"p n/a ({len(g.p_values)} seeds)"
            note = ax.annotate(what, (line, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
            labels.append(_MarkLabel(note, line, line, 4.0))
            continue
        start, end = _draw_ownership_group(ax, g, y, height, COLORS[j % len(COLORS)])
        top = max(top, end)
        text = ax.annotate(
            _ownership_label(g, alpha),
            (end, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},
        )
        labels.append(_MarkLabel(text, start, end, 6.0 if len(g.p_values) > 1 else 3.0))
    ax.axvline(line, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(suspects)), suspects)
    ax.set_ylim(len(suspects) - 0.5, -0.5)  # the first suspect on top
    ax.set_xscale("symlog", linthresh=linear, linscale=1.0)
    # A sliver either side of the marks (in the scale's own units): a dot at p = 1 or at the floor shows whole.
    scale = ax.xaxis.get_transform()
    low, high = scale.transform(np.array([0.0, top]))
    ax.set_xlim(*scale.inverted().transform(np.array([low - 0.02 * (high - low), high + 0.03 * (high - low)])))
    ax.grid(True, axis="x", alpha=0.3)
    n = str(seeds[-1]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    _title(fig, "Ownership tests per suspect" + (f" ({n} seeds each)" if several else ""))
    handles: list[Artist] = [Patch(color=COLORS[j % len(COLORS)]) for j in range(len(methods))]
    names = [m.replace("_", " ") for m in methods]
    if several:
        handles.append(Line2D([], [], marker="o", markersize=5, linestyle="none", color="0.6", markeredgecolor="black"))
        names.append("one seed's test")
        handles.append(Patch(facecolor="0.6", alpha=0.5, edgecolor="0.3"))
        names.append("median over seeds")
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1))
    names.append(f"alpha = {alpha:g} (-log10 = {line:.1f}): past it, 'stolen'")
    _legend_below(fig, handles, names, max_cols=3)
    _place_mark_labels(fig, ax, labels)
    right = ax.get_xlim()[1]
    ax.set_xticks(ticks := _minus_log10_ticks(right, linear), [f"{v:g}" for v in ticks])
    ax.minorticks_off()
    past = f", log scale past {linear:g}" if right > linear else ""
    ax.set_xlabel(f"-log10(p){past}  (larger: stronger evidence of theft)")
    return fig


def _draw_ownership_group(ax: Any, group: _OwnershipGroup, y: float, height: float, color: str) -> tuple[float, float]:
    """A bar for one test; a dot per seed over a pale bar to their median for several. Returns the
    marks' extent in x (where the bar ends for one test, the leftmost and rightmost dots for several)."""
    xs = [_minus_log10(p) for p in group.defined]
    if len(group.p_values) == 1:
        ax.barh(y, xs[0], height=height * 0.9, color=color)
        return xs[0], xs[0]
    median = _minus_log10(float(np.median(group.defined)))
    ax.barh(y, median, height=height * 0.9, color=color, alpha=0.3, linewidth=0)
    ax.plot([median, median], [y - height * 0.45, y + height * 0.45], color=color, linewidth=2)
    spread = np.linspace(-0.28, 0.28, len(xs)) * height if len(xs) > 1 else np.zeros(1)
    ax.plot(xs, y + spread, marker="o", markersize=5, linestyle="none", color=color, markeredgecolor="black", mew=0.6)
    return min(xs), max(xs)


def _minus_log10_ticks(right: float, linear: float) -> list[float]:
    """Ticks of the symlog axis from 0 to ``right``: round steps up to ``linear``, then 1-2-5 per
    decade (only the decades when there are more than two)."""
    top = min(right, linear)
    locator = MaxNLocator(nbins=4 if right > linear else 6, steps=[1, 2, 5, 10])
    ticks = [float(v) for v in locator.tick_values(0, top) if 0 <= v <= top]
    steps = (2, 5, 10) if right <= linear * 100 else (10,)
    decade = linear
    while decade <= right:
        ticks += [m * decade for m in steps if linear < m * decade <= right]
        decade *= 10
    return ticks


def _place_mark_labels(fig: Figure, ax: Any, labels: Sequence[_MarkLabel]) -> None:
    """Each label right of its marks where it fits in the axes, else inside its bar (left of its
    leftmost mark) where there is room, else right of its marks with the x range widened to fit it."""
    if not labels:
        return
    for label in labels:
        label.text.set_in_layout(False)  # they end up inside the axes: the layout need not make room for them
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw(renderer)  # settle the layout first: positions are read in display coordinates
    box = ax.get_window_extent(renderer)
    scale = ax.xaxis.get_transform()  # data -> scaled x (linear or symlog)

    def scaled(v: float) -> float:
        return float(scale.transform(np.array([v]))[0])

    for _ in range(len(labels) + 1):  # a wider range can leave a label inside its bar no room: place all again
        left, right = (scaled(v) for v in ax.get_xlim())
        needed = right
        for label in labels:
            text, px = label.text, label.gap * fig.dpi / 72
            text.xy = (label.end, text.xy[1])
            text.set_position((label.gap, 0))
            text.set_horizontalalignment("left")
            extent = text.get_window_extent(renderer)
            if extent.x1 <= box.x1 - 2:
                continue
            text.xy = (label.start, text.xy[1])
            text.set_position((-label.gap, 0))
            text.set_horizontalalignment("right")
            if text.get_window_extent(renderer).x0 >= box.x0 + 2:
                continue
            text.xy = (label.end, text.xy[1])
            text.set_position((label.gap, 0))
            text.set_horizontalalignment("left")
            room = box.width - 4 - px - extent.width  # pixels left of the label's anchor
            if room > 0:
                needed = max(needed, left + (scaled(label.end) - left) * box.width / room)
        if needed <= right:
            return
        ax.set_xlim(ax.get_xlim()[0], float(scale.inverted().transform(np.array([needed]))[0]))


def defense_study_plots(
    out: str | Path,
    defense_rows: Sequence[dict[str, Any]],
    ownership_rows: Sequence[dict[str, Any]],
    curves: Sequence[DetectionCurve],
    *,
    alpha: float,
) -> list[Path]:
    """``honest_vs_thief.png``, ``detection_roc.png`` (when a detector saw repeats) and ``ownership_pvalues.png``
    in ``out`` (each when it has something to show); returns the paths written."""
    out = Path(out)
    paths = []
    if defense_rows:
        paths.append(save_figure(figure_honest_vs_thief(defense_rows), out / "honest_vs_thief.png"))
    roc = detection_roc_plot(curves, out / "detection_roc.png", title="Similarity detector (defense study)")
    if roc is not None:
        paths.append(roc)
    if ownership_rows:
        paths.append(save_figure(figure_ownership(ownership_rows, alpha=alpha), out / "ownership_pvalues.png"))
    return paths
