"""A sweep SIGKILLed mid-run (parent and pool workers) resumes with no lost and no duplicated cells."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sslsteal_fast.sweep import ResultStore, load_config, run_sweep, write_outputs

ROOT = Path(__file__).resolve().parents[2]


def committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM cells").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_sigkill_mid_sweep_then_resume(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(losses=("mse", "info_nce", "soft_nn", "wasserstein"), budgets=(8, 16, 32), workers=2)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "sslsteal_fast.cli", "sweep", str(config), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while committed(db) < 2:
            if proc.poll() is not None:
                pytest.fail(f"the sweep exited before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no cell was committed within 120 s")
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers, mid-cell
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    cfg = load_config(config)
    total = cfg.grid.size
    before = committed(db)
    assert 2 <= before < total, "the kill should land mid-sweep"

    resumed = run_sweep(cfg.with_workers(1), out, progress=False, log=lambda _: None)
    assert resumed.resumed == before and resumed.ran == total - before and not resumed.failed
    with ResultStore(db) as store:
        ids = [c["cell_id"] for c in store.cells()]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == set(resumed.cell_ids)

    write_outputs(resumed)
    summary = json.loads((out / "summary.json").read_text())
    # The victim's answers were cached before the kill: the resumed run never queried it again.
    assert summary["victim_forward_passes_this_run"] == 0
    assert summary["victim_forward_passes"] == summary["unique_queries"] == 2 * 32
