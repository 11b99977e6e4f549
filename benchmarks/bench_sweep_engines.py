"""The sweep's two engines side by side: the process pool (``local``) against Ray on the same machine.

Two measurements, each run on both engines in one invocation, each sweep into a fresh folder:

* ``overhead``: a 200-cell grid of near-instant cells (a ``small`` thief on 16x16 images, one epoch,
  budgets of 4 to 20 queries, a one-epoch probe), run three ways in interleaved rounds: in the
  driver's own process, one cell after another (``workers = 1``: the cells' work and nothing else),
  on the pool and on Ray with ``SLOTS`` slots each. An engine's **overhead per cell** is
  ``(its cells phase x slots - the in-process cells phase) / cells``: the slot-seconds it spends
  around each cell beyond the cell's own work (worker start-up, pickling, the object store, result
  transfer). The fixed cost outside the cells phase (starting and stopping Ray) is reported apart.
  The median of ``--repeats`` rounds per engine.
* ``demo``: the packaged demo grid (``sweep/configs/demo.toml``) on both engines: the wall time of
  each and whether ``results.csv`` is the same row for row (every column but the times and the node).

Both engines get the same slots: ``workers = SLOTS`` threads 1 for the pool, ``num_cpus = 1`` on a
local Ray instance of ``SLOTS`` CPUs.

    PYTHONPATH=. python benchmarks/bench_sweep_engines.py [--only overhead|demo] [--cells 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, markdown_table

from sslsteal_fast.sweep import ResultStore, SweepConfig, demo_config, load_config, run_sweep, write_outputs
from sslsteal_fast.sweep.artifacts import prepare_victim
from sslsteal_fast.sweep.grid import RUN_DEPENDENT_COLUMNS

ENGINES = ("local", "ray")
#: The overhead grid's three ways of running: the cells alone (in the driver, serially), then the engines.
WAYS = ("in-process", *ENGINES)
#: Parallel cells on either engine (this machine's cores, at most).
SLOTS = 2


def overhead_config(folder: Path, cells: int) -> Path:
    """A grid of ``cells`` near-instant cells (4 losses x 5 budgets x cells / 20 seeds) against a tiny victim."""
    import torch

    from sslsteal_fast.models import build_encoder
    from sslsteal_fast.victim import export_onnx

    if cells % 20:
        raise SystemExit("--cells must be a multiple of 20 (4 losses x 5 budgets x seeds)")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = build_encoder("small")
    export_onnx(encoder, folder / "victim.onnx", (3, 16, 16))
    seeds = ", ".join(str(s) for s in range(cells // 20))
    path = folder / "overhead.toml"
    path.write_text(
        f"""
name = "engine-overhead"
[datasets.q]
spec = "shapes"
seed = 1
count = 20
size = 16
[datasets.probe-train]
spec = "shapes"
seed = 2
count = 40
size = 16
[datasets.probe-test]
spec = "shapes"
split = "test"
count = 20
size = 16
[victim]
onnx = "{folder / "victim.onnx"}"
[probe]
train = "probe-train"
test = "probe-test"
epochs = 1
knn_k = 5
[grid]
losses = ["mse", "info_nce", "soft_nn", "wasserstein"]
budgets = [4, 8, 12, 16, 20]
query_datasets = ["q"]
seeds = [{seeds}]
[steal]
epochs = 1
[run]
workers = {SLOTS}
threads = 1
"""
    )
    return path


def on_engine(cfg: SweepConfig, way: str) -> SweepConfig:
    """``cfg`` run ``way``: ``in-process`` (one worker: the driver itself), ``local`` or ``ray``."""
    if way == "in-process":
        return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, engine="local", workers=1, threads=1))
    extra = {"num_cpus": 1.0} if way == "ray" else {}
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, engine=way, workers=SLOTS, threads=1, **extra))


def timed(cfg: SweepConfig, engine: str, out: Path, report: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    run = run_sweep(on_engine(cfg, engine), out, progress=False, log=lambda m: None)
    wall = time.perf_counter() - start
    if report:
        write_outputs(run)
    with ResultStore(out / "results.sqlite") as store:
        rows = store.cells()
    cells_s = run.timings["cells_s"]
    return {
        "engine": engine,
        "wall_s": wall,
        "cells_s": cells_s,
        "fixed_s": wall - cells_s,
        "cells": len(rows),
        "failed": len(run.failed),
        "median_cell_s": statistics.median(r["wall_time_s"] for r in rows),
        "engine_info": run.engine_info,
    }


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {
            r["cell_id"]: {k: v for k, v in r.items() if k not in RUN_DEPENDENT_COLUMNS} for r in csv.DictReader(fh)
        }


def bench_overhead(cells: int, repeats: int) -> dict[str, Any]:
    """``repeats`` interleaved rounds of the three ways; per way the median round (by its cells phase)."""
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        folder = Path(tmp)
        cfg = load_config(overhead_config(folder, cells))
        rounds: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS}
        same = True
        for i in range(repeats):
            for w in WAYS:
                rounds[w].append(timed(cfg, w, folder / f"{w}-{i}"))
            same = same and all(
                store_rows(folder / f"{w}-{i}") == store_rows(folder / f"in-process-{i}") for w in ENGINES
            )
    runs = {w: sorted(rs, key=lambda x: x["cells_s"])[len(rs) // 2] for w, rs in rounds.items()}
    base = runs["in-process"]["cells_s"]
    for w in ENGINES:
        runs[w]["overhead_per_cell_s"] = (runs[w]["cells_s"] * SLOTS - base) / cells
    return {"runs": runs, "rounds": rounds, "identical": same}


def store_rows(out: Path) -> dict[str, dict[str, Any]]:
    with ResultStore(out / "results.sqlite") as store:
        return {r["cell_id"]: {k: v for k, v in r.items() if k not in RUN_DEPENDENT_COLUMNS} for r in store.cells()}


def bench_demo() -> dict[str, Any]:
    cfg = demo_config()
    with tempfile.TemporaryDirectory(prefix="bench-engines-demo-") as tmp:
        folder = Path(tmp)
        prepare_victim(cfg.victim, folder / "victim", progress=False)  # the cache: neither sweep trains it
        runs = {e: timed(cfg, e, folder / e, report=True) for e in ENGINES}
        a, b = csv_rows(folder / "local" / "results.csv"), csv_rows(folder / "ray" / "results.csv")
        differ = sorted({k for cid in a.keys() & b.keys() for k in a[cid] if a[cid][k] != b[cid][k]})
    return {"runs": runs, "rows": len(a), "identical": a == b, "differing_columns": differ}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("overhead", "demo"), default=None)
    parser.add_argument("--cells", type=int, default=200, help="cells of the overhead grid (a multiple of 20)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the overhead grid")
    parser.add_argument("--json", default=None)
    opts = parser.parse_args()
    print(f"bench_sweep_engines: {machine()}; {SLOTS} slots per engine\n")
    result: dict[str, Any] = {"machine": machine(), "slots": SLOTS}
    ok = True
    if opts.only in (None, "overhead"):
        r = bench_overhead(opts.cells, opts.repeats)
        result["overhead"] = r
        rows = [
            [
                w,
                x["cells"],
                1 if w == "in-process" else SLOTS,
                f"{x['fixed_s']:.1f}",
                f"{x['cells_s']:.1f}",
                f"{x['median_cell_s'] * 1e3:.0f}",
                "—" if w == "in-process" else f"{x['overhead_per_cell_s'] * 1e3:.0f}",
            ]
            for w, x in r["runs"].items()
        ]
        print(f"Scheduling overhead, {opts.cells} near-instant cells (median of {opts.repeats} interleaved rounds)")
        headers = ["run", "cells", "slots", "fixed cost (s)", "cells phase (s)", "median cell (ms)"]
        print(markdown_table([*headers, "overhead per cell (slot-ms)"], rows))
        loc, ray = r["runs"]["local"], r["runs"]["ray"]
        print(
            f"overhead per cell: local {loc['overhead_per_cell_s'] * 1e3:.0f} ms, Ray {ray['overhead_per_cell_s'] * 1e3:.0f} ms; "
            f"rows identical on all three: {r['identical']}\n"
        )
        ok = ok and r["identical"] and not loc["failed"] and not ray["failed"]
    if opts.only in (None, "demo"):
        r = bench_demo()
        result["demo"] = r
        rows = [
            [e, x["cells"], f"{x['wall_s']:.1f}", f"{x['cells_s']:.1f}", f"{x['fixed_s']:.1f}"]
            for e, x in r["runs"].items()
        ]
        print("The demo grid (sweep/configs/demo.toml), victim from the cache")
        print(markdown_table(["engine", "cells", "wall (s)", "cells phase (s)", "everything else (s)"], rows))
        ratio = r["runs"]["ray"]["wall_s"] / r["runs"]["local"]["wall_s"]
        print(
            f"Ray/local wall: {ratio:.2f}x; results.csv identical row for row ({r['rows']} rows, times and node "
            f"aside): {r['identical']}{'' if r['identical'] else ' - differing: ' + ', '.join(r['differing_columns'])}"
        )
        ok = ok and r["identical"]
    if opts.json:
        Path(opts.json).write_text(json.dumps(result, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
