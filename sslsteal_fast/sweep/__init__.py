"""The experiment layer: query-budget sweeps, the demo and the defense study, all driven by one grid.

A sweep is losses x budgets x query sets x seeds x defenses, run in parallel and resumable:

>>> cfg = load_config("sweep.toml")          # or demo_config() for the built-in demo
>>> run = run_sweep(cfg, "sweep-out")         # victim queried once per query set; cells in a process pool
>>> write_outputs(run)                         # results.csv, summary.json, table.md, probe_vs_queries.png

Modules: :mod:`.config` (the TOML file), :mod:`.runner` (the orchestration), :mod:`.inputs` (data,
victim answers and evaluations computed once), :mod:`.grid` (cells, ids, the pool), :mod:`.cell`
(the worker side), :mod:`.store` (SQLite results and resume), :mod:`.artifacts` (the served
victim), :mod:`.report` (outputs), :mod:`.demo` and :mod:`.defense_study` (the packaged experiments).
"""

from __future__ import annotations

from sslsteal_fast.sweep.config import SweepConfig, load_config, parse_config
from sslsteal_fast.sweep.defense_study import DefenseStudyConfig, run_defense_study, run_ownership_study
from sslsteal_fast.sweep.demo import demo_config, run_and_report
from sslsteal_fast.sweep.grid import Cell, expand_grid
from sslsteal_fast.sweep.report import CSV_COLUMNS, forward_pass_shares, write_outputs
from sslsteal_fast.sweep.runner import SweepRun, run_sweep
from sslsteal_fast.sweep.store import ResultStore

__all__ = [
    "CSV_COLUMNS",
    "Cell",
    "DefenseStudyConfig",
    "ResultStore",
    "SweepConfig",
    "SweepRun",
    "demo_config",
    "expand_grid",
    "forward_pass_shares",
    "load_config",
    "parse_config",
    "run_and_report",
    "run_defense_study",
    "run_ownership_study",
    "run_sweep",
    "write_outputs",
]
