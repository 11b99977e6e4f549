"""The packaged experiments: the demo sweep (``sslsteal demo``) and running any sweep end to end.

:func:`run_and_report` is what ``sslsteal sweep`` and ``sslsteal demo`` do: run or resume a sweep,
write every output, print the table. The demo's configs ship in ``sweep/configs/``.
"""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

from sslsteal_fast.sweep.config import SweepConfig, load_config
from sslsteal_fast.sweep.report import write_outputs
from sslsteal_fast.sweep.runner import run_sweep

__all__ = ["DEMO_CONFIGS", "demo_config", "run_and_report"]

DEMO_CONFIGS = {False: "demo.toml", True: "demo-quick.toml"}


def demo_config(quick: bool = False) -> SweepConfig:
    """The packaged demo config (``configs/demo.toml``, or ``configs/demo-quick.toml`` with ``quick``)."""
    ref = resources.files("sslsteal_fast.sweep").joinpath("configs", DEMO_CONFIGS[quick])
    with resources.as_file(ref) as path:
        return load_config(path)


def run_and_report(cfg: SweepConfig, out: Path, *, workers: int | None = None, progress: bool = True) -> int:
    """Run or resume ``cfg`` into ``out``, write every output, print the table; returns an exit code.

    The code is 1 when some cells failed (rerunning the same command retries only those), else 0.
    """
    start = time.perf_counter()
    if workers is not None:
        cfg = cfg.with_workers(workers)
    run = run_sweep(cfg, out, progress=progress)
    written = write_outputs(run, started=start)
    summary = written["summary"]
    print()
    print(written["table"])
    print(
        f"victim forward passes: {summary['victim_forward_passes']} (unique queries {summary['unique_queries']}; "
        f"billed over all cells {summary['billed_queries_total']}); "
        f"cells: {summary['cells']['ran_this_run']} run now, {summary['cells']['resumed']} resumed"
    )
    print(
        f"wrote {out}/results.csv, aggregate.csv, summary.json, table.md, probe_vs_queries.png, "
        f"fidelity_vs_queries.png in {time.perf_counter() - start:.1f} s"
    )
    if run.failed:
        print(
            f"{len(run.failed)} cells failed (tracebacks above); rerun the same command to retry only those",
            file=sys.stderr,
        )
        return 1
    return 0
