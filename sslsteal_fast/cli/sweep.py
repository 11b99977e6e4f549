"""Experiment subcommands: ``sslsteal sweep CONFIG.toml --out DIR`` and ``sslsteal demo --out DIR``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from sslsteal_fast.cli.common import add_command, add_out, check_out, device_spec, emit, info
from sslsteal_fast.config import DEVICES, ENGINES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``demo`` to the ``sslsteal`` parser."""
    s = add_command(subparsers, _cmd_sweep)
    s.add_argument(
        "config",
        type=Path,
        help="sweep TOML file, or the name of a config shipped with the package (e.g. paper/cifar10-resnet18.toml)",
    )
    s.add_argument(
        "--data-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="the folder that holds the datasets: what {data_root} stands for in the config's paths "
        "(default: the config's run.data_root)",
    )
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
    add_out(p, "folder", "output folder (created; rerunning into the same folder resumes the sweep)", required=True)
    p.add_argument("--workers", type=int, default=None, help="parallel cells (default: the config's run.workers)")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="where cells run: local (this machine's process pool) or ray (Ray tasks, a local Ray instance "
        "unless --address; needs pip install 'sslsteal_fast[ray]') (default: the config's run.engine)",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="with --engine ray: the Ray cluster to join, auto (this machine's) or host:port or ray://host:port "
        "(default: the config's run.address; none starts a local Ray instance sized to this machine)",
    )
    p.add_argument(
        "--device",
        type=device_spec,
        default=None,
        metavar="{" + ",".join(DEVICES) + "}",
        help="where cells run: auto, cpu, cuda (every GPU, several cells each as memory allows) or cuda:N "
        "(default: the config's run.device, auto unless set)",
    )


def _run(cfg: Any, args: argparse.Namespace, start: float) -> tuple[dict[str, Any], list[str]]:
    """Run or resume ``cfg`` into ``--out`` and write its outputs; returns (summary, failed cell ids)."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.sweep import run_sweep, write_outputs

    if args.workers is not None:
        cfg = cfg.with_workers(args.workers)
    if args.device is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=args.device))
    cfg = _engine_overrides(cfg, args)
    run = run_sweep(cfg, args.out, progress=not args.quiet, log=lambda message: info(args, message))
    written = write_outputs(run, started=start)
    summary = written["summary"]
    if not args.json:
        cells = summary["cells"]
        print(written["table"])
        print(
            f"victim forward passes: {summary['victim_forward_passes']} (unique queries {summary['unique_queries']}; "
            f"billed over all cells {summary['billed_queries_total']}); "
            f"cells: {cells['ran_this_run']} run now, {cells['resumed']} resumed"
        )
        print(
            f"wrote {args.out}/results.csv, aggregate.csv, summary.json, table.md, probe_vs_queries.png, "
            "fidelity_vs_queries.png"
        )
    if run.failed:
        where = "rerun without --quiet for their tracebacks" if args.quiet else "tracebacks above"
        print(
            f"sslsteal {args.command}: {len(run.failed)} cells failed ({where}); rerun the same command to retry "
            "only those",
            file=sys.stderr,
        )
    return summary, list(run.failed)


def _engine_overrides(cfg: Any, args: argparse.Namespace) -> Any:
    """``cfg`` with ``--engine`` / ``--address`` applied (an address alone implies the Ray engine)."""
    if args.engine is None and args.address is None:
        return cfg
    engine = args.engine or ("ray" if args.address is not None else cfg.run.engine)
    address = args.address if args.address is not None else (cfg.run.address if engine == "ray" else None)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, engine=engine, address=address))


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a grid of attacks from a TOML config: losses x budgets x query sets x seeds x defenses.

    Run the grid a TOML file describes (see sslsteal_fast/sweep/configs/demo.toml for a commented
    example). CONFIG may also name a config shipped with the package, such as the paper's setups
    under paper/ (paper/cifar10-resnet18.toml ...; they read the datasets from --data-root DIR).
    The victim is queried once per query set for the largest budget; smaller budgets reuse
    prefixes of those answers. Each finished cell is committed to DIR/results.sqlite, so rerunning the
    same command after an interruption resumes where it stopped. Writes results.csv, summary.json,
    table.md and probe_vs_queries.png to DIR and prints the table (--json: summary.json's contents).
    Exit status 1 when some cells failed.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.sweep import load_config

    start = time.perf_counter()
    check_out(args.out, "folder")
    with _config_file(args.config) as path:
        cfg = load_config(path, data_root=args.data_root)
    summary, failed = _run(cfg, args, start)
    if args.json:
        emit(args, {**summary, "out": str(args.out), "failed_cells": failed}, "")
    return 1 if failed else 0


@contextlib.contextmanager
def _config_file(given: Path) -> Iterator[Path]:
    """``given`` when it is a file, else the config of that name shipped in ``sslsteal_fast/sweep/configs``."""
    packaged = resources.files("sslsteal_fast.sweep").joinpath("configs", *given.parts)
    if given.is_file() or given.is_absolute() or ".." in given.parts or not packaged.is_file():
        yield given  # load_config names a missing file
        return
    with resources.as_file(packaged) as path:
        yield path


def _cmd_demo(args: argparse.Namespace) -> int:
    """The built-in sweep: a SimCLR victim on `shapes`, stolen with 4 losses at 3 budgets (< 5 min on 2 cores).

    Train (or reuse from the cache: $SSLSTEAL_CACHE, else ~/.cache/sslsteal_fast) a small SimCLR victim
    on the built-in `shapes` images, serve it through ONNX Runtime, steal it with mse, info_nce, soft_nn
    and wasserstein at three budgets with queries from `shapes` (images the victim never saw) and
    `shapes-ood`, probe every stolen copy (linear, kNN, fidelity), and write the table and plot to DIR.
    The config is sslsteal_fast/sweep/configs/demo.toml.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.sweep import DefenseStudyConfig, demo_config, run_defense_study

    start = time.perf_counter()
    check_out(args.out, "folder")
    summary, failed = _run(demo_config(args.quick), args, start)
    study = None
    if args.defenses:
        run = _engine_overrides(demo_config(args.quick), args).run  # the study's sweeps run where the demo's did
        study_cfg = DefenseStudyConfig.quick() if args.quick else DefenseStudyConfig()
        study = run_defense_study(
            args.out,
            dataclasses.replace(study_cfg, engine=run.engine, address=run.address),
            progress=not args.quiet,
            log=lambda message: info(args, message),
        )
        if not args.json:
            print(
                f"wrote {args.out}/defenses.csv, defenses_mean.csv, ownership.csv, ownership_power.csv and their plots"
            )
    if args.json:
        emit(args, {**summary, "out": str(args.out), "failed_cells": failed, "defense_study": study}, "")
    return 1 if failed else 0
