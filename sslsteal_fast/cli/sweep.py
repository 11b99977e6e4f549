"""Experiment subcommands: ``sslsteal sweep CONFIG.toml --out DIR`` and ``sslsteal demo --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslsteal_fast.cli.common import add_command

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``demo`` to the ``sslsteal`` parser."""
    s = add_command(subparsers, _cmd_sweep)
    s.add_argument("config", type=Path, help="sweep TOML file")
    _common(s)

    d = add_command(subparsers, _cmd_demo)
    d.add_argument("--quick", action="store_true", help="a tiny version (tens of seconds) for smoke tests")
    d.add_argument(
        "--defenses",
        action="store_true",
        help="also run the defense and ownership study: DIR/defenses.csv (honest user vs thief per defense) and "
        "DIR/ownership.csv (watermark and dataset-inference verdicts for the victim, stolen and independent encoders)",
    )
    _common(d)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder (created; reused to resume)")
    p.add_argument("--workers", type=int, default=None, help="parallel cells (default: the config's run.workers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a grid of attacks from a TOML config: losses x budgets x query sets x seeds x defenses.

    Run the grid a TOML file describes (see sslsteal_fast/sweep/configs/demo.toml for a commented
    example). The victim is queried once per query set for the largest budget; smaller budgets reuse
    prefixes of those answers. Each finished cell is committed to DIR/results.sqlite, so rerunning the
    same command after an interruption resumes where it stopped. Writes results.csv, summary.json,
    table.md and probe_vs_queries.png to DIR and prints the table.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.sweep import load_config, run_and_report

    return run_and_report(load_config(args.config), args.out, workers=args.workers, progress=not args.no_progress)


def _cmd_demo(args: argparse.Namespace) -> int:
    """The built-in sweep: a SimCLR victim on `shapes`, stolen with 4 losses at 3 budgets (< 5 min on 2 cores).

    Train (or reuse from the cache: $SSLSTEAL_CACHE, else ~/.cache/sslsteal_fast) a small SimCLR victim
    on the built-in `shapes` images, serve it through ONNX Runtime, steal it with mse, info_nce, soft_nn
    and wasserstein at three budgets with queries from `shapes` (images the victim never saw) and
    `shapes-ood`, probe every stolen copy (linear, kNN, fidelity), and write the table and plot to DIR.
    The config is sslsteal_fast/sweep/configs/demo.toml.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.sweep import demo_config, run_and_report, run_defense_study

    code = run_and_report(demo_config(args.quick), args.out, workers=args.workers, progress=not args.no_progress)
    if args.defenses:
        run_defense_study(args.out, quick=args.quick, progress=not args.no_progress)
    return code
