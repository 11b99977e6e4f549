"""``benchmarks/bench_http.py --quick`` runs end to end against real servers and its billing checks hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_http_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_http.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=85,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["ok"] and doc["in_process_b256"] > 0
    assert {(r["clients"], r["batch"]) for r in doc["throughput"]} == {(1, 1), (1, 16), (8, 1), (8, 16)}
    assert all(r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in doc["throughput"])
    assert all(b["billed"] == b["received"] == b["budget"] for b in doc["billing"])
    assert all(k["billed"] == k["received"] > 0 for k in doc["crash"]["keys"])
    assert "| clients | batch | img/s |" in run.stdout
