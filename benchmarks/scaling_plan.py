"""A paper-scale sweep planned from measured per-cell costs: GPU-hours, object-store traffic, store size.

The study: CIFAR-10, a ResNet-18 victim and thief at 32 x 32, 4 losses x 6 budgets (500 to 50,000)
x 3 query sets x 4 defenses x 3 seeds, 100 thief epochs, the probe on 50,000 + 1,000 images.

Measured here, on this machine:

* the work of a cell: FLOPs of a thief image (forward and backward, one view) and of a probe image
  (forward), counted by ``torch.utils.flop_counter`` on the package's ResNet-18, and the time both
  take on this CPU (median of a few steps), which gives the CPU's achieved rate;
* the bytes of every sweep input (uint8 images, float32 answers) from the safetensors files a real
  sweep writes, and the bytes per row of ``results.sqlite`` from a real sweep's store;
* the engine's overhead per cell, from ``bench_sweep_engines.py --json`` when given (``--engines``).

GPU time is FLOPs at an assumed sustained rate (``--gpu-tflops``, default 20: about what small
32 px ResNets reach on an H100-class GPU in float32 with TF32 convolutions); it is an estimate, not
a measurement, until ``bench_sweep_gpu.py`` has run on a GPU.

    PYTHONPATH=. python benchmarks/scaling_plan.py [--engines engines.json] [--gpu-tflops 20] [--nodes 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import machine, markdown_table
from torch.utils.flop_counter import FlopCounterMode

from sslsteal_fast.config import REP_DIMS
from sslsteal_fast.models import build_encoder
from sslsteal_fast.sweep import ResultStore, load_config, run_sweep
from sslsteal_fast.util.files import save_tensors

LOSSES, BUDGETS, QUERY_SETS, DEFENSES, SEEDS = 4, (500, 1000, 5000, 10000, 25000, 50000), 3, 4, 3
EPOCHS = 100
PROBE_IMAGES = 51_000
#: The victim: SimCLR, 200 epochs of 195 steps of 2 x 256 views (the paper's recipe, paper/cifar10-resnet18.toml).
VICTIM_VIEWS = 200 * 195 * 512
IMAGE = (3, 32, 32)
ARCH = "resnet18"


def flops_and_seconds(batch: int = 64, reps: int = 3) -> dict[str, float]:
    """Per image: FLOPs and this CPU's seconds of a thief step (fwd + bwd) and a probe forward."""
    torch.manual_seed(0)
    model = build_encoder(ARCH, IMAGE[0])
    x = torch.rand(batch, *IMAGE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step() -> None:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    @torch.no_grad()
    def forward() -> None:
        model.eval()
        model(x)
        model.train()

    out = {}
    for name, fn in (("train", train_step), ("forward", forward)):
        with FlopCounterMode(display=False) as counter:
            fn()
        out[f"{name}_gflop_per_image"] = counter.get_total_flops() / batch / 1e9
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[f"{name}_cpu_s_per_image"] = statistics.median(times) / batch
    return out


def bytes_per_row() -> dict[str, float]:
    """Bytes per stored item, from the files a real (tiny) sweep writes at 32 x 32 with ResNet-18's width."""
    rep = REP_DIMS[ARCH]
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        folder = Path(tmp)
        n = 1000
        images = torch.randint(0, 256, (n, *IMAGE), dtype=torch.uint8)
        save_tensors(folder / "q.safetensors", {"images": images, "labels": torch.zeros(n, dtype=torch.int64)}, {})
        save_tensors(folder / "a.safetensors", {"answers": torch.rand(n, rep)}, {})
        sizes = {
            "query_image_bytes": (folder / "q.safetensors").stat().st_size / n,
            "answer_bytes": (folder / "a.safetensors").stat().st_size / n,
        }
        sizes["store_row_bytes"] = _store_row_bytes(folder)
    return sizes


def _store_row_bytes(folder: Path) -> float:
    """``results.sqlite`` bytes per committed cell of a 20-cell sweep (ids, metrics, config JSON)."""
    from bench_sweep_engines import overhead_config

    cfg = load_config(overhead_config(folder, 20))
    run_sweep(cfg, folder / "out", progress=False, log=lambda m: None)
    db, empty = folder / "out" / "results.sqlite", folder / "empty.sqlite"
    ResultStore(empty).close()
    for path in (db, empty):  # fold the write-ahead log into the file before measuring it
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with ResultStore(db) as store:
        rows = len(store.cells())
    return (db.stat().st_size - empty.stat().st_size) / rows


def plan(m: dict[str, Any], gpu_tflops: float, nodes: int, overhead_s: float | None) -> dict[str, Any]:
    cells = LOSSES * len(BUDGETS) * QUERY_SETS * DEFENSES * SEEDS
    per_budget_cells = cells // len(BUDGETS)
    steal_images = per_budget_cells * sum(BUDGETS) * EPOCHS
    steal_flop = steal_images * m["train_gflop_per_image"] * 1e9
    probe_flop = cells * PROBE_IMAGES * m["forward_gflop_per_image"] * 1e9
    answer_rows = QUERY_SETS * DEFENSES * max(BUDGETS)
    answers_flop = answer_rows * m["forward_gflop_per_image"] * 1e9
    rate = gpu_tflops * 1e12
    cpu_rate = m["train_gflop_per_image"] * 1e9 / m["train_cpu_s_per_image"]
    largest = (
        EPOCHS * max(BUDGETS) * m["train_gflop_per_image"] * 1e9 + PROBE_IMAGES * m["forward_gflop_per_image"] * 1e9
    )
    inputs = {
        "query images": QUERY_SETS * max(BUDGETS) * m["query_image_bytes"],
        "victim answers": answer_rows * m["answer_bytes"],
        "probe data": PROBE_IMAGES * m["query_image_bytes"],
        "victim features": 1000 * m["answer_bytes"],
    }
    put = sum(inputs.values())
    return {
        "cells": cells,
        "victim_gpu_h": VICTIM_VIEWS * m["train_gflop_per_image"] * 1e9 / rate / 3600,
        "steal_gpu_h": steal_flop / rate / 3600,
        "probe_gpu_h": probe_flop / rate / 3600,
        "answers_gpu_h": answers_flop / rate / 3600,
        "largest_cell_gpu_h": largest / rate / 3600,
        "cpu_core_rate_gflops": cpu_rate / 1e9,
        "inputs_bytes": inputs,
        "put_bytes": put,
        "fetched_bytes_no_shared_fs": put * nodes,
        "detection_bytes": (cells // DEFENSES) * sum(BUDGETS) / len(BUDGETS) * 11,  # one detector: f64 + 3 bools
        "encoder_bytes": cells * sum(p.numel() for p in build_encoder(ARCH, 3).parameters()) * 4,
        "store_bytes": cells * m["store_row_bytes"],
        "driver_overhead_h": None if overhead_s is None else cells * overhead_s / 3600,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=None, help="bench_sweep_engines.py --json output (the engine overhead)")
    parser.add_argument("--gpu-tflops", type=float, default=20.0, help="assumed sustained GPU rate (TFLOP/s)")
    parser.add_argument("--nodes", type=int, default=8, help="nodes without a shared file system, for the traffic")
    parser.add_argument("--json", default=None)
    opts = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    m = {**flops_and_seconds(), **bytes_per_row()}
    overhead = None
    if opts.engines:
        runs = json.loads(Path(opts.engines).read_text())["overhead"]["runs"]
        overhead = runs["ray"]["overhead_per_cell_s"]
    p = plan(m, opts.gpu_tflops, opts.nodes, overhead)
    print(f"scaling_plan: {machine()}\n")
    print("Measured per-item costs")
    print(
        markdown_table(
            ["item", "value"],
            [
                ["thief image, fwd+bwd (GFLOP)", f"{m['train_gflop_per_image']:.2f}"],
                ["probe / victim image, fwd (GFLOP)", f"{m['forward_gflop_per_image']:.2f}"],
                ["thief image on this CPU (ms)", f"{m['train_cpu_s_per_image'] * 1e3:.1f}"],
                ["probe image on this CPU (ms)", f"{m['forward_cpu_s_per_image'] * 1e3:.1f}"],
                ["this CPU's achieved rate (GFLOP/s)", f"{p['cpu_core_rate_gflops']:.0f}"],
                ["query image in a sweep file (bytes)", f"{m['query_image_bytes']:.0f}"],
                ["victim answer in a sweep file (bytes)", f"{m['answer_bytes']:.0f}"],
                ["results.sqlite per cell (bytes)", f"{m['store_row_bytes']:.0f}"],
                ["Ray overhead per cell (slot-ms)", "—" if overhead is None else f"{overhead * 1e3:.0f}"],
            ],
        )
    )
    gib = 1 << 30
    print(f"\nThe plan: {p['cells']} cells, GPU at an assumed {opts.gpu_tflops:g} TFLOP/s")
    print(
        markdown_table(
            ["quantity", "value"],
            [
                ["victim training, once, on the driver (GPU-hours)", f"{p['victim_gpu_h']:.1f}"],
                ["stealing (GPU-hours)", f"{p['steal_gpu_h']:.1f}"],
                ["probing (GPU-hours)", f"{p['probe_gpu_h']:.1f}"],
                ["victim answers, once per (query set, defense) (GPU-hours)", f"{p['answers_gpu_h']:.2f}"],
                ["the largest cell (GPU-hours)", f"{p['largest_cell_gpu_h']:.2f}"],
                *[[f"object store: {k} (GiB)", f"{v / gib:.2f}"] for k, v in p["inputs_bytes"].items()],
                ["object store: put once by the driver (GiB)", f"{p['put_bytes'] / gib:.2f}"],
                [
                    f"fetched by {opts.nodes} nodes without a shared file system, at most (GiB)",
                    f"{p['fetched_bytes_no_shared_fs'] / gib:.1f}",
                ],
                ["detection files returned (GiB)", f"{p['detection_bytes'] / gib:.3f}"],
                ["stolen encoders returned, with save_encoders (GiB)", f"{p['encoder_bytes'] / gib:.1f}"],
                ["results.sqlite (MiB)", f"{p['store_bytes'] / (1 << 20):.1f}"],
                [
                    "driver overhead, all cells (hours of one slot)",
                    "—" if p["driver_overhead_h"] is None else f"{p['driver_overhead_h']:.3f}",
                ],
            ],
        )
    )
    if opts.json:
        Path(opts.json).write_text(json.dumps({"measured": m, "plan": p}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
