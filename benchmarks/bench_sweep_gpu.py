"""The demo sweep on the GPU against the same sweep on the CPU: both wall times and their ratio.

Runs the packaged demo grid (``sslsteal_fast/sweep/configs/demo.toml``; ``--quick``: ``demo-quick.toml``)
with ``[run] device = "cuda"`` and then with ``"cpu"``, each into its own temporary directory, so nothing
resumes. The victim comes from the shared victim cache: it is trained (or found there) once before
either sweep and that time is reported on its own, so **neither sweep's wall time includes victim
training**. Each wall time is the whole ``run_sweep`` call: query and probe data, the victim's answers
(OnnxVictim), the victim's evaluation and every cell (steal + probe). Every other setting is the
config's own (``[run] workers`` included).

    PYTHONPATH=. python benchmarks/bench_sweep_gpu.py [--quick] [--json out.json]

Exits 0 with a message when CUDA is unavailable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sslsteal_fast.sweep import SweepConfig, demo_config, run_sweep
from sslsteal_fast.sweep.artifacts import prepare_victim


def on_device(cfg: SweepConfig, device: str) -> SweepConfig:
    """``cfg`` with ``[run] device`` set to ``device``."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=device))


def timed_sweep(cfg: SweepConfig, device: str) -> dict[str, Any]:
    """Run ``cfg`` on ``device`` into a fresh temporary directory; its wall time and what it did."""
    with tempfile.TemporaryDirectory(prefix=f"bench-sweep-{device}-") as out:
        start = time.perf_counter()
        run = run_sweep(on_device(cfg, device), Path(out), progress=False, log=lambda m: print(f"  [{device}] {m}"))
        wall = time.perf_counter() - start
    return {
        "device": device,
        "wall_s": wall,
        "cells": len(run.cells),
        "ran": run.ran,
        "failed": len(run.failed),
        "workers": run.workers,
        "threads": run.threads,
        "victim_source": run.victim.source,
        "victim_train_s_in_sweep": run.victim.train_time_s,
        "timings": run.timings,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo grid (demo-quick.toml)")
    parser.add_argument(
        "--devices", nargs="+", choices=("cuda", "cpu"), default=["cuda", "cpu"], help="the sweeps to run, in order"
    )
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    opts = parser.parse_args()
    if "cuda" in opts.devices and not torch.cuda.is_available():
        print("bench_sweep_gpu: no CUDA device; skipping")
        return 0
    cfg = demo_config(quick=opts.quick)
    grid = "demo-quick.toml" if opts.quick else "demo.toml"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"bench_sweep_gpu: {grid} ({cfg.name}), {gpu}, torch {torch.__version__}")

    with tempfile.TemporaryDirectory(prefix="bench-sweep-victim-") as out:
        start = time.perf_counter()
        victim = prepare_victim(cfg.victim, Path(out), progress=False)
        victim_s = time.perf_counter() - start
    print(
        f"victim: {victim.source} in {victim_s:.1f} s (training time {victim.train_time_s:.1f} s, "
        f"on the victim config's device); excluded from both sweeps below"
    )
    runs = {}
    for device in opts.devices:
        try:
            runs[device] = timed_sweep(cfg, device)
        except Exception as exc:  # one device failing still reports the other
            runs[device] = {"device": device, "error": f"{type(exc).__name__}: {exc}"}
        r = runs[device]
        if "error" in r:
            print(f"sweep on {device}: FAILED ({r['error']})")
        else:
            print(
                f"sweep on {device}: {r['wall_s']:.1f} s wall, {r['ran']}/{r['cells']} cells ran, {r['failed']} failed, "
                f"{r['workers']} worker(s) x {r['threads']} thread(s); victim {r['victim_source']}"
            )
    ok = all("error" not in r and r["failed"] == 0 and r["ran"] == r["cells"] for r in runs.values())
    ratio = runs["cpu"]["wall_s"] / runs["cuda"]["wall_s"] if ok and len(runs) == 2 else None
    measured = (
        f"GPU {runs['cuda']['wall_s']:.1f} s, CPU {runs['cpu']['wall_s']:.1f} s: GPU {ratio:.2f}x faster"
        if ratio is not None
        else ", ".join(f"{d} {r['wall_s']:.1f} s" for d, r in runs.items() if "wall_s" in r) or "did not complete"
    )
    target = {
        "work": f"sslsteal sweep {grid}, victim training excluded",
        "target": "wall time vs the same sweep on CPU (PASS: every cell ran on both)",
        "measured": measured,
        "value": ratio,
        "pass": ok,
    }
    print("\nTargets")
    print(f"  {target['work']}  target {target['target']}  measured {measured}  {'PASS' if ok else 'FAIL'}")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(
                {
                    "device": gpu,
                    "torch": torch.__version__,
                    "grid": grid,
                    "victim": {"source": victim.source, "prepare_s": victim_s, "train_s": victim.train_time_s},
                    "runs": runs,
                    "targets": [target],
                },
                fh,
                indent=1,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
