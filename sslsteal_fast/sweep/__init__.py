"""Query-budget sweeps: losses x budgets x query sets x seeds (x defenses), run in parallel and resumable.

>>> cfg = load_config("sweep.toml")          # or demo_config() for the built-in demo
>>> run = run_sweep(cfg, "sweep-out")         # victim queried once per query set; cells in a process pool
>>> write_outputs(run)                         # results.csv, summary.json, table.md, probe_vs_queries.png

Config: :mod:`.config`; execution and the victim-query accounting: :mod:`.runner`; SQLite results and
resume: :mod:`.store`; cached files and the victim cache: :mod:`.artifacts`; outputs: :mod:`.report`.
"""

from __future__ import annotations

from sslsteal_fast.sweep.cli import demo_config, run_and_report
from sslsteal_fast.sweep.config import SweepConfig, load_config, parse_config
from sslsteal_fast.sweep.report import CSV_COLUMNS, forward_pass_shares, write_outputs
from sslsteal_fast.sweep.runner import Cell, SweepRun, expand_grid, run_sweep
from sslsteal_fast.sweep.store import ResultStore

__all__ = [
    "CSV_COLUMNS",
    "Cell",
    "ResultStore",
    "SweepConfig",
    "SweepRun",
    "demo_config",
    "expand_grid",
    "forward_pass_shares",
    "load_config",
    "parse_config",
    "run_and_report",
    "run_sweep",
    "write_outputs",
]
