"""Shared benchmark machinery: interleaved median timing, peak memory, machine description, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}{gpu}"
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    fns: dict[str, Callable[[], object]], reps: int, device: str = "cpu", warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each function, run round-robin so drifts hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def peak_rss_mib(setup: str, stmt: str) -> float:
    """Peak extra resident memory (MiB) of running ``stmt`` once after ``setup``, in a fresh process."""
    code = (
        textwrap.dedent(f"""
        import json, sys, torch
        from sslsteal_fast.testing import bank_inputs, pair_inputs
        from sslsteal_fast import ops
        from sslsteal_fast.ops import reference
        from sslsteal_fast.util.profiling import peak_extra_rss_mib
        ops.native_available()
        torch.set_num_threads({torch.get_num_threads()})
    """)
        + textwrap.dedent(setup)
        + textwrap.dedent(f"""
        def run():
            {stmt}
        print(json.dumps(peak_extra_rss_mib(run)))
    """)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
