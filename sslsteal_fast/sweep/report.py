"""A finished sweep's outputs: ``results.csv``, ``summary.json``, ``probe_vs_queries.png``, ``table.md``.

Rows come from SQLite (only the cells of the current grid), so a resumed sweep reports every cell,
whether it ran now or earlier.

Forward-pass shares: with nested budgets one set of victim answers serves many cells, so no cell
"caused" a given forward pass alone. Each cell's ``victim_forward_passes_share`` is its Shapley
value in this cost-sharing game, which is the airport game (Littlechild & Owen, 1973): the rows
``(b_{j-1}, b_j]`` between consecutive budgets are split equally among the cells whose budget
reaches ``b_j``. Shares are non-negative, grow with the budget, and sum to the true forward passes.
"""

from __future__ import annotations

import csv
import math
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
import torch

from sslsteal_fast._version import __version__
from sslsteal_fast.sweep.runner import SweepRun, answers_group
from sslsteal_fast.sweep.store import CELL_COLUMNS, DETECTION_COLUMNS, ResultStore
from sslsteal_fast.util.files import atomic_write, write_json, write_text

__all__ = [
    "CSV_COLUMNS",
    "collect_rows",
    "forward_pass_shares",
    "markdown_table",
    "plot_results",
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _aggregate(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str, str, int], tuple[float, float, int]]:
    """(query set, defense, loss, budget) -> (mean, std over seeds, number of seeds)."""
    acc: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for r in rows:
        if r.get(metric) is not None:
            acc[(r["query_dataset"], r["defense"], r["loss"], r["budget"])].append(float(r[metric]))
    return {k: (*_mean_std(v), len(v)) for k, v in acc.items()}


def markdown_table(run: SweepRun, rows: list[dict[str, Any]]) -> str:
    """Linear-probe top-1 (mean ± std over seeds, % of the victim) per query set x loss x budget."""
    g = run.config.grid
    v = run.victim_eval
    agg = _aggregate(rows, "probe_top1")
    fid = _aggregate(rows, "fidelity_cosine")
    knn = _aggregate(rows, "knn_top1")
    several_defenses = len(g.defenses) > 1
    train_size = run.victim.train_size
    budgets = list(g.budgets)

    def head(b: int) -> str:
        return f"{b} ({b / train_size:.0%})" if train_size else str(b)

    lines = [
        f"Victim: linear probe top-1 {v['victim_top1']:.1%}, kNN top-1 {v['victim_knn_top1']:.1%}"
        + (f", trained on {train_size} images" if train_size else "")
        + (
            f". Untrained {run.config.steal.arch} encoder (the floor): linear {v['random_init_top1']:.1%}, "
            f"kNN {v['random_init_knn_top1']:.1%}"
            if "random_init_top1" in v
            else ""
        ),
    ]

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
                    cells = [cell((q.name, d, loss, b)) for b in budgets]
                    prefix = f"| {q.name} | " + (f"{d} | " if several_defenses else "")
                    lines.append(prefix + f"{loss} | " + " | ".join(cells) + " |")

    def probe_cell(key: tuple[str, str, str, int]) -> str:
        stat = agg.get(key)
        if stat is None:
            return "—"
        mean, std, n = stat
        spread = f" ± {std:.1%}" if n > 1 else ""
        rel = f" ({mean / v['victim_top1']:.0%})" if v["victim_top1"] else ""
        return f"{mean:.1%}{spread}{rel}"

    def knn_fid_cell(key: tuple[str, str, str, int]) -> str:
        k, f = knn.get(key), fid.get(key)
        return "—" if k is None or f is None else f"{k[0]:.1%} / {f[0]:.3f}"

    grid_table(
        "Stolen encoders, linear-probe top-1 (% of the victim's) by query budget"
        + (" (budget as a fraction of the victim's training set)" if train_size else ""),
        [head(b) for b in budgets],
        probe_cell,
    )
    grid_table(
        "kNN top-1 / fidelity (mean cosine to the victim's representations) at the same cells",
        [str(b) for b in budgets],
        knn_fid_cell,
    )
    if several_defenses:
        honest = _aggregate(rows, "honest_top1")
        lines.extend(
            ["", "Honest user's linear-probe top-1 on defended answers (same for every cell of a defense)", ""]
        )
        lines.append("| defense | honest user top-1 |")
        lines.append("|---|---:|")
        for d in g.defenses:
            values = [m for (_, dd, _, _), (m, _, _) in honest.items() if dd == d]
            lines.append(f"| {d} | {values[0]:.1%} |" if values else f"| {d} | — |")
    return "\n".join(lines) + "\n"


def plot_results(run: SweepRun, rows: list[dict[str, Any]], path: Path) -> None:
    """Probe top-1 vs queries (log x), one line per loss (mean ± std over seeds), one panel per query set."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the non-interactive backend

    g = run.config.grid
    agg = _aggregate(rows, "probe_top1")
    panels = [(q.name, d) for q in g.query_datasets for d in g.defenses]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharey=True, squeeze=False)
    victim_top1 = run.victim_eval["victim_top1"]
    floor = run.victim_eval.get("random_init_top1")
    colors = plt.get_cmap("tab10")
    for ax, (qname, defense) in zip(axes[0], panels, strict=True):
        for i, loss in enumerate(g.losses):
            pts = [(b, agg[(qname, defense, loss, b)]) for b in g.budgets if (qname, defense, loss, b) in agg]
            if not pts:
                continue
            xs = [b for b, _ in pts]
            means = [s[0] for _, s in pts]
            stds = [s[1] for _, s in pts]
            ax.plot(xs, means, marker="o", color=colors(i), label=loss)
            if any(s > 0 for s in stds):
                lo = [m - s for m, s in zip(means, stds, strict=True)]
                hi = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(xs, lo, hi, color=colors(i), alpha=0.2, linewidth=0)
        ax.axhline(victim_top1, color="black", linestyle="--", linewidth=1.2, label=f"victim ({victim_top1:.1%})")
        if floor is not None:
            ax.axhline(floor, color="gray", linestyle=":", linewidth=1.2, label=f"untrained ({floor:.1%})")
        ax.set_xscale("log")
        ax.set_xticks(list(g.budgets))
        ax.set_xticklabels([str(b) for b in g.budgets])
        ax.minorticks_off()
        ax.set_xlabel("queries (budget)")
        ax.set_title(qname if len(g.defenses) == 1 else f"{qname} (defense: {defense})")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("linear-probe top-1")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    n_seeds = len(g.seeds)
    fig.suptitle(
        f"{run.config.name}: stolen encoders vs queries" + (f" (mean ± std, {n_seeds} seeds)" if n_seeds > 1 else "")
    )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def write_outputs(run: SweepRun, *, started: float | None = None) -> dict[str, Any]:
    """Write ``results.csv``, ``table.md``, the plot and (last) ``summary.json`` into ``run.out``.

    ``started``: ``time.perf_counter()`` when the command began, for ``timings_s.total_s``.
    Returns ``{"rows": ..., "summary": ..., "table": ...}``.
    """
    t = time.perf_counter()
    rows = collect_rows(run)
    out = run.out
    write_csv(out / "results.csv", CSV_COLUMNS, rows)
    table = markdown_table(run, rows)
    write_text(out / "table.md", table)
    if rows:
        plot_results(run, rows, out / "probe_vs_queries.png")
    timings = dict(run.timings, report_s=time.perf_counter() - t)
    if started is not None:
        timings["total_s"] = time.perf_counter() - started
    summary = summarize(run, rows, timings)
    write_json(out / "summary.json", summary)
    return {"rows": rows, "summary": summary, "table": table}


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
