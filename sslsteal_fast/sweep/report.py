"""A finished sweep's outputs: ``results.csv``, ``aggregate.csv``, ``summary.json``, ``table.md`` and the plots.

Rows come from SQLite (only the cells of the current grid), so a resumed sweep reports every cell,
whether it ran now or earlier.

Forward-pass shares: with nested budgets one set of victim answers serves many cells, so no cell
"caused" a given forward pass alone. Each cell's ``victim_forward_passes_share`` is its Shapley
value in this cost-sharing game, which is the airport game (Littlechild & Owen, 1973): the rows
``(b_{j-1}, b_j]`` between consecutive budgets are split equally among the cells whose budget
reaches ``b_j``. Shares are non-negative, grow with the budget, and sum to the true forward passes.

Seeds: every aggregated number (``aggregate.csv``, ``table.md``, ``summary.json``'s ``aggregate``,
the plots' bands) is a mean over a group's seeds with its 95% Student-t interval
(:mod:`sslsteal_fast.util.stats`). Accuracies are also given as a share of the victim's and of the
untrained-to-victim gap, ``(stolen - untrained) / (victim - untrained)``: what the theft recovered
of what the victim adds over an untrained encoder of the thief's architecture.
"""

from __future__ import annotations

import csv
import math
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from sslsteal_fast._version import __version__
from sslsteal_fast.sweep import plots
from sslsteal_fast.sweep.runner import SweepRun, answers_group
from sslsteal_fast.sweep.store import CELL_COLUMNS, DETECTION_COLUMNS, ResultStore
from sslsteal_fast.util.files import atomic_write, write_json, write_text
from sslsteal_fast.util.stats import gap_share, mean_ci

__all__ = [
    "AGGREGATE_COLUMNS",
    "AGGREGATE_METRICS",
    "CSV_COLUMNS",
    "aggregate",
    "collect_rows",
    "forward_pass_shares",
    "markdown_table",
    "seed_metrics",
    "summarize",
    "write_outputs",
]

# results.csv columns, in order: the cell's axes, its metrics, the victim, cost and time.
CSV_COLUMNS = (
    "cell_id",
    "query_dataset",
    "defense",
    "loss",
    "budget",
    "seed",
    "arch",
    "epochs",
    "strategy",
    "probe_top1",
    "probe_top5",
    "knn_top1",
    "honest_top1",
    "fidelity_cosine",
    "fidelity_l2",
    "fidelity_agreement",
    "victim_top1",
    "victim_knn_top1",
    "relative_top1",
    "victim_train_size",
    "budget_fraction",
    "billed_queries",
    "victim_forward_passes_share",
    *DETECTION_COLUMNS,
    "steal_time_s",
    "probe_time_s",
    "wall_time_s",
    "final_loss",
    "node",
)

#: Metrics aggregated over seeds: the stolen copy's accuracies, each also as a share of the victim's
#: and of the untrained-to-victim gap (the honest measure of what was stolen), and fidelity.
AGGREGATE_METRICS = (
    "probe_top1",
    "probe_top1_share",
    "probe_top1_gap_share",
    "knn_top1",
    "knn_top1_share",
    "knn_top1_gap_share",
    "fidelity_cosine",
)
#: The confidence of every interval the reports show.
CONFIDENCE = 0.95
#: aggregate.csv columns: the group's axes, its number of seeds, then mean and interval per metric.
AGGREGATE_COLUMNS = (
    "query_dataset",
    "defense",
    "loss",
    "budget",
    "n_seeds",
    *(f"{m}_{part}" for m in AGGREGATE_METRICS for part in ("mean", "ci_low", "ci_high")),
)
#: (metric, the victim's value of it, the untrained encoder's) in ``victim_eval``.
_BASELINES = (
    ("probe_top1", "victim_top1", "random_init_top1"),
    ("knn_top1", "victim_knn_top1", "random_init_knn_top1"),
)


def forward_pass_shares(budgets: list[int], forward_passes: int) -> list[float]:
    """Airport-game Shapley shares of ``forward_passes`` among cells with these nested budgets.

    ``budgets[i]`` is cell i's budget (rows ``[0, budget)`` of one shared answer cache). Returns one
    share per cell, summing to ``forward_passes`` (scaled from ``max(budgets)`` rows when the
    victim ran fewer or more rows, e.g. duplicate images or an extended cache).
    """
    if not budgets:
        return []
    shares = [0.0] * len(budgets)
    previous = 0
    for level in sorted(set(budgets)):
        users = [i for i, b in enumerate(budgets) if b >= level]
        for i in users:
            shares[i] += (level - previous) / len(users)
        previous = level
    scale = forward_passes / max(budgets)
    return [s * scale for s in shares]


def collect_rows(run: SweepRun) -> list[dict[str, Any]]:
    """One dict per committed cell of this grid, with the CSV columns (sorted by axes)."""
    with ResultStore(run.out / "results.sqlite") as store:
        rows = store.cells(set(run.cell_ids))
    v = run.victim_eval
    train_size = run.victim.train_size
    query_once = run.config.steal.strategy == "query-once"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["query_dataset"], row["defense"])].append(row)
    # Shares are over the whole grid (pending cells included), so they do not move as cells land.
    grid_budgets: dict[tuple[str, str], list[int]] = defaultdict(list)
    grid_index: dict[str, int] = {}
    for cid, cell in zip(run.cell_ids, run.cells, strict=True):
        key = (cell.query.name, cell.defense)
        grid_index[cid] = len(grid_budgets[key])
        grid_budgets[key].append(cell.budget)
    out = []
    for (qname, defense), members in groups.items():
        if query_once:
            passes = run.answers[answers_group(qname, defense)]["forward_passes"]
            shares = forward_pass_shares(grid_budgets[(qname, defense)], passes)
        for row in members:
            r = {k: row.get(k) for k in CSV_COLUMNS if k in row}
            r["victim_top1"] = v["victim_top1"]
            r["victim_knn_top1"] = v["victim_knn_top1"]
            r["relative_top1"] = row["probe_top1"] / v["victim_top1"] if v["victim_top1"] else None
            r["victim_train_size"] = train_size
            r["budget_fraction"] = row["budget"] / train_size if train_size else None
            r["victim_forward_passes_share"] = (
                shares[grid_index[row["cell_id"]]] if query_once else float(row["cell_forward_passes"])
            )
            out.append(r)
    order = {name: i for i, name in enumerate(q.name for q in run.config.grid.query_datasets)}
    losses = {name: i for i, name in enumerate(run.config.grid.losses)}
    out.sort(key=lambda r: (order[r["query_dataset"]], r["defense"], losses[r["loss"]], r["budget"], r["seed"]))
    return out


def summarize(run: SweepRun, rows: list[dict[str, Any]], timings: dict[str, float]) -> dict[str, Any]:
    """The ``summary.json`` mapping: victim cost totals, victim accuracy, config, timings."""
    query_once = run.config.steal.strategy == "query-once"
    if query_once:
        passes = sum(a["forward_passes"] for a in run.answers.values())
        unique = sum(a["rows"] for a in run.answers.values())
        passes_now = sum(a["forward_passes_this_run"] for a in run.answers.values())
    else:  # every cell queried its own victim: nothing is shared
        passes = sum(int(r["victim_forward_passes_share"]) for r in rows)
        unique = passes
        passes_now = None
    v = run.victim_eval
    return {
        "name": run.config.name,
        "strategy": run.config.steal.strategy,
        "victim_forward_passes": passes,
        "unique_queries": unique,
        "billed_queries_total": sum(int(r["billed_queries"]) for r in rows),
        "victim_forward_passes_this_run": passes_now,
        "query_sets": [
            {
                "query_dataset": a["query_dataset"],
                "defense": a["defense"],
                "rows": a["rows"],
                "victim_forward_passes": a["forward_passes"],
                "billed_queries": a["billed_queries"],
                "forward_passes_this_run": a["forward_passes_this_run"],
                "overlap_with_victim_train": run.overlap.get(a["query_dataset"]),
            }
            for a in run.answers.values()
        ],
        "victim": {
            "onnx": str(run.victim.onnx),
            "sha256": run.victim.sha256,
            "source": run.victim.source,
            "train_size": run.victim.train_size,
            "top1": v["victim_top1"],
            "top5": v["victim_top5"],
            "knn_top1": v["victim_knn_top1"],
            "random_init_top1": v.get("random_init_top1"),
            "random_init_knn_top1": v.get("random_init_knn_top1"),
            "eval_forward_passes": v["victim_eval_forward_passes"],
            "probe_train_size": v["probe_train_size"],
            "probe_test_size": v["probe_test_size"],
        },
        "cells": {
            "total": len(run.cell_ids),
            "done": len(rows),
            "ran_this_run": run.ran,
            "resumed": run.resumed,
            "failed": len(run.failed),
        },
        "engine": {"name": run.engine, **run.engine_info},
        "nodes": sorted({r["node"] for r in rows if r.get("node")}),
        "workers": run.workers,
        "threads_per_worker": run.threads,
        "timings_s": {k: round(x, 3) for k, x in timings.items()},
        "cell_time_s": {
            "steal_total": round(sum(r["steal_time_s"] for r in rows), 3),
            "probe_total": round(sum(r["probe_time_s"] for r in rows), 3),
        },
        "config": run.config.raw,
        "environment": {
            "sslsteal_fast": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


def seed_metrics(row: dict[str, Any], victim_eval: dict[str, Any]) -> dict[str, float | None]:
    """One cell's :data:`AGGREGATE_METRICS` (None where a metric or a baseline is missing)."""
    out: dict[str, float | None] = {}
    for metric, victim_key, floor_key in _BASELINES:
        value, victim, floor = row.get(metric), victim_eval.get(victim_key), victim_eval.get(floor_key)
        out[metric] = None if value is None else float(value)
        out[f"{metric}_share"] = None if value is None or not victim else float(value) / float(victim)
        gap = None if value is None or victim is None or floor is None else gap_share(value, floor, victim)
        out[f"{metric}_gap_share"] = gap
    fid = row.get("fidelity_cosine")
    out["fidelity_cosine"] = None if fid is None else float(fid)
    return out


def aggregate(
    rows: list[dict[str, Any]], victim_eval: dict[str, Any], *, confidence: float = CONFIDENCE
) -> list[dict[str, Any]]:
    """One dict per (query set, defense, loss, budget), in the rows' order, with :data:`AGGREGATE_COLUMNS`.

    ``n_seeds`` counts the group's cells; each metric's mean and ``confidence`` interval over seeds
    are Student-t (:func:`~sslsteal_fast.util.stats.mean_ci`): ``ci_low``/``ci_high`` are None for one
    seed (no interval), and every part is None when no seed has the metric.
    """
    groups: dict[tuple[str, str, str, int], list[dict[str, float | None]]] = defaultdict(list)
    for r in rows:
        groups[(r["query_dataset"], r["defense"], r["loss"], int(r["budget"]))].append(seed_metrics(r, victim_eval))
    out = []
    for (qname, defense, loss, budget), members in groups.items():
        record: dict[str, Any] = {
            "query_dataset": qname,
            "defense": defense,
            "loss": loss,
            "budget": budget,
            "n_seeds": len(members),
        }
        for metric in AGGREGATE_METRICS:
            values = [m[metric] for m in members if m[metric] is not None]
            ci = mean_ci(values, confidence) if values else None
            record[f"{metric}_mean"] = None if ci is None else ci.mean
            record[f"{metric}_ci_low"] = None if ci is None else ci.low
            record[f"{metric}_ci_high"] = None if ci is None else ci.high
        out.append(record)
    return out


def _with_interval(record: dict[str, Any] | None, metric: str, fmt: str, *, mark_single: bool) -> str:
    """``mean ± half-width`` of ``metric`` in an aggregate record (``fmt`` for both), "—" when missing.

    Without an interval only the mean is shown, tagged "(n=1)" when ``mark_single`` (a grid of
    several seeds of which this group has one).
    """
    if record is None or record[f"{metric}_mean"] is None:
        return "—"
    mean, high = record[f"{metric}_mean"], record[f"{metric}_ci_high"]
    if high is None:
        return f"{mean:{fmt}}" + (" (n=1)" if mark_single else "")
    return f"{mean:{fmt}} ± {high - mean:{fmt}}"


def markdown_table(run: SweepRun, rows: list[dict[str, Any]]) -> str:
    """Per query set x loss x budget: linear-probe and kNN top-1 (each with its share of the
    untrained-to-victim gap and of the victim's) and fidelity, as mean ± 95% CI half-width over seeds."""
    g = run.config.grid
    v = run.victim_eval
    agg = {(a["query_dataset"], a["defense"], a["loss"], a["budget"]): a for a in aggregate(rows, v)}
    several_defenses = len(g.defenses) > 1
    train_size = run.victim.train_size
    budgets = list(g.budgets)
    seeds = sorted({a["n_seeds"] for a in agg.values()})

    def head(b: int) -> str:
        return f"{b} ({b / train_size:.0%})" if train_size else str(b)

    several_seeds = bool(seeds) and seeds[-1] > 1
    if several_seeds:
        n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        spread = (
            f"Cells: mean ± half-width of the {CONFIDENCE:.0%} confidence interval over {n} seeds (Student t); "
            "(n=1): one seed, no interval."
        )
    else:
        spread = "Cells: one seed each, so no confidence intervals."
    floor = v.get("random_init_top1")
    lines = [
        f"Victim: linear probe top-1 {v['victim_top1']:.1%}, kNN top-1 {v['victim_knn_top1']:.1%}"
        + (f", trained on {train_size} images" if train_size else "")
        + (
            f". Untrained {run.config.steal.arch} encoder (the floor): linear {v['random_init_top1']:.1%}, "
            f"kNN {v['random_init_knn_top1']:.1%}"
            if floor is not None
            else ""
        ),
        "",
        spread
        + (
            " Gap share: (stolen - untrained) / (victim - untrained), the share of what the victim adds over an "
            "untrained encoder that the theft recovered."
            if floor is not None
            else ""
        ),
    ]
    for probe, metric, floor_key in (
        ("linear", "victim_top1", "random_init_top1"),
        ("kNN", "victim_knn_top1", "random_init_knn_top1"),
    ):
        if v.get(floor_key) is not None and gap_share(0.0, v[floor_key], v[metric]) is None:
            lines.append(f"The victim's {probe} probe is no better than the untrained encoder's: no gap to share (—).")

    def grid_table(title: str, budget_heads: list[str], cell: Any) -> None:
        """One markdown table: a row per (query set[, defense], loss), a column per budget."""
        lines.extend(["", title, ""])
        lines.append(
            "| query set | " + ("defense | " if several_defenses else "") + "loss | " + " | ".join(budget_heads) + " |"
        )
        lines.append("|---|" + ("---|" if several_defenses else "") + "---|" + "---:|" * len(budgets))
        for q in g.query_datasets:
            for d in g.defenses:
                for loss in g.losses:
                    cells = [cell(agg.get((q.name, d, loss, b))) for b in budgets]
                    prefix = f"| {q.name} | " + (f"{d} | " if several_defenses else "")
                    lines.append(prefix + f"{loss} | " + " | ".join(cells) + " |")

    def interval(metric: str, fmt: str) -> Any:
        return lambda record: _with_interval(record, metric, fmt, mark_single=several_seeds)

    def shares(metric: str) -> Any:
        def cell(record: dict[str, Any] | None) -> str:
            if record is None or record[f"{metric}_share_mean"] is None:
                return "—"
            gap = _with_interval(record, f"{metric}_gap_share", ".0%", mark_single=several_seeds)
            return f"{gap} ({record[f'{metric}_share_mean']:.0%})"

        return cell

    grid_table(
        "Stolen encoders, linear-probe top-1 by query budget"
        + (" (budget as a fraction of the victim's training set)" if train_size else ""),
        [head(b) for b in budgets],
        interval("probe_top1", ".1%"),
    )
    if floor is not None:
        grid_table(
            "Linear-probe top-1 as a share of the untrained-to-victim gap (in brackets: of the victim's)",
            [str(b) for b in budgets],
            shares("probe_top1"),
        )
    grid_table("kNN top-1", [str(b) for b in budgets], interval("knn_top1", ".1%"))
    if floor is not None:
        grid_table(
            "kNN top-1 as a share of the untrained-to-victim gap (in brackets: of the victim's)",
            [str(b) for b in budgets],
            shares("knn_top1"),
        )
    grid_table(
        "Fidelity: mean cosine between the stolen and the victim's representations of the probe test images",
        [str(b) for b in budgets],
        interval("fidelity_cosine", ".3f"),
    )
    if several_defenses:
        honest = {r["defense"]: r["honest_top1"] for r in rows if r.get("honest_top1") is not None}
        lines.extend(
            ["", "Honest user's linear-probe top-1 on defended answers (same for every cell of a defense)", ""]
        )
        lines.append("| defense | honest user top-1 |")
        lines.append("|---|---:|")
        for d in g.defenses:
            lines.append(f"| {d} | {float(honest[d]):.1%} |" if d in honest else f"| {d} | — |")
    return "\n".join(lines) + "\n"


def write_outputs(run: SweepRun, *, started: float | None = None) -> dict[str, Any]:
    """Write ``results.csv``, ``aggregate.csv``, ``table.md``, the plots and (last) ``summary.json`` into ``run.out``.

    ``started``: ``time.perf_counter()`` when the command began, for ``timings_s.total_s``.
    Returns ``{"rows": ..., "aggregate": ..., "summary": ..., "table": ...}``.
    """
    t = time.perf_counter()
    rows = collect_rows(run)
    out = run.out
    write_csv(out / "results.csv", CSV_COLUMNS, rows)
    groups = aggregate(rows, run.victim_eval)
    write_csv(out / "aggregate.csv", AGGREGATE_COLUMNS, groups)
    table = markdown_table(run, rows)
    write_text(out / "table.md", table)
    if rows:
        g = run.config.grid
        plots.sweep_plots(
            groups,
            run.victim_eval,
            out,
            name=run.config.name,
            query_sets=[q.name for q in g.query_datasets],
            defenses=list(g.defenses),
            losses=list(g.losses),
        )
        if plots.detection_roc_plot(plots.detection_curves(out, rows), out / "detection_roc.png") is None:
            (out / "detection_roc.png").unlink(missing_ok=True)  # not an earlier grid's curves
    timings = dict(run.timings, report_s=time.perf_counter() - t)
    if started is not None:
        timings["total_s"] = time.perf_counter() - started
    summary = summarize(run, rows, timings)
    summary["aggregate"] = {"confidence": CONFIDENCE, "interval": "Student t over seeds", "groups": groups}
    write_json(out / "summary.json", summary)
    return {"rows": rows, "aggregate": groups, "summary": summary, "table": table}


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """``rows`` as CSV with ``columns`` (others ignored; None and NaN as empty cells), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: _fmt(r.get(k)) for k in columns})

    atomic_write(path, write)


def _fmt(x: Any) -> Any:
    if isinstance(x, float):
        return "" if math.isnan(x) else round(x, 6)
    return "" if x is None else x


# Every column the SQLite store holds is either in the CSV or deliberately left to SQLite.
_SQLITE_ONLY = {"cell_forward_passes", "config_json", "finished_at"}
assert {name for name, _ in CELL_COLUMNS} - _SQLITE_ONLY <= set(CSV_COLUMNS)
