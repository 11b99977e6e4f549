"""Sweep subcommands: ``sslsteal sweep CONFIG.toml --out DIR`` and ``sslsteal demo --out DIR``."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from sslsteal_fast.sweep.config import SweepConfig, load_config

__all__ = ["register", "demo_config", "run_and_report"]

DEMO_CONFIGS = {False: "demo.toml", True: "demo-quick.toml"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``demo`` to the ``sslsteal`` parser."""
    s = subparsers.add_parser(
        "sweep",
        help="run (or resume) a grid of attacks from a TOML config: losses x budgets x query sets x seeds",
        description=(
            "Run the grid a TOML file describes (see sslsteal_fast/sweep/configs/demo.toml for a commented "
            "example). The victim is queried once per query set for the largest budget; smaller budgets reuse "
            "prefixes of those answers. Each finished cell is committed to DIR/results.sqlite, so rerunning the "
            "same command after an interruption resumes where it stopped. Writes results.csv, summary.json, "
            "table.md and probe_vs_queries.png to DIR and prints the table."
        ),
    )
    s.add_argument("config", type=Path, help="sweep TOML file")
    _common(s)
    s.set_defaults(func=_cmd_sweep)

    d = subparsers.add_parser(
        "demo",
        help="the built-in sweep: a SimCLR victim on `shapes`, stolen with 4 losses at 3 budgets (< 5 min on 2 cores)",
        description=(
            "Train (or reuse from the cache: $SSLSTEAL_CACHE, else ~/.cache/sslsteal_fast) a small SimCLR victim on "
            "the built-in `shapes` images, serve it through ONNX Runtime, steal it with mse, info_nce, soft_nn and "
            "wasserstein at three budgets with queries from `shapes` (images the victim never saw) and `shapes-ood`, "
            "probe every stolen copy (linear, kNN, fidelity), and write the table and plot to DIR. The config is "
            "sslsteal_fast/sweep/configs/demo.toml."
        ),
    )
    d.add_argument("--quick", action="store_true", help="a tiny version (tens of seconds) for smoke tests")
    d.add_argument(
        "--defenses",
        action="store_true",
        help="also run the defense and ownership study: DIR/defenses.csv (honest user vs thief per defense) and "
        "DIR/ownership.csv (watermark and dataset-inference verdicts for the victim, stolen and independent encoders)",
    )
    _common(d)
    d.set_defaults(func=_cmd_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder (created; reused to resume)")
    p.add_argument("--workers", type=int, default=None, help="parallel cells (default: the config's run.workers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def demo_config(quick: bool = False) -> SweepConfig:
    """The packaged demo config (``configs/demo.toml``, or ``configs/demo-quick.toml`` with ``quick``)."""
    ref = resources.files("sslsteal_fast.sweep").joinpath("configs", DEMO_CONFIGS[quick])
    with resources.as_file(ref) as path:
        return load_config(path)


def run_and_report(cfg: SweepConfig, out: Path, *, workers: int | None = None, progress: bool = True) -> int:
    """Run or resume ``cfg`` into ``out``, write every output, print the table; returns an exit code."""
    from sslsteal_fast.sweep.report import write_outputs
    from sslsteal_fast.sweep.runner import run_sweep

    start = time.perf_counter()
    if workers is not None:
        cfg = cfg.with_workers(workers)
    run = run_sweep(cfg, out, progress=progress)
    written = write_outputs(run, started=start)
    total = time.perf_counter() - start
    summary = written["summary"]
    print()
    print(written["table"])
    print(
        f"victim forward passes: {summary['victim_forward_passes']} (unique queries {summary['unique_queries']}; "
        f"billed over all cells {summary['billed_queries_total']}); "
        f"cells: {summary['cells']['ran_this_run']} run now, {summary['cells']['resumed']} resumed"
    )
    print(f"wrote {out}/results.csv, summary.json, table.md, probe_vs_queries.png in {total:.1f} s")
    if run.failed:
        print(
            f"{len(run.failed)} cells failed (tracebacks above); rerun the same command to retry only those",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    return run_and_report(cfg, args.out, workers=args.workers, progress=not args.no_progress)


def _cmd_demo(args: argparse.Namespace) -> int:
    cfg = demo_config(args.quick)
    code = run_and_report(cfg, args.out, workers=args.workers, progress=not args.no_progress)
    if args.defenses:
        from sslsteal_fast.defenses import run_defense_demo

        run_defense_demo(args.out, quick=args.quick, progress=not args.no_progress)
    return code
