"""A sweep SIGKILLed mid-run takes its pool workers with it, and resumes with no lost and no duplicated
cells (and no leftover workers)."""

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


def pool_workers(parent: int) -> list[int]:
    """Pids of the spawn workers whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped has died)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through Linux /proc")
def test_sigkill_mid_sweep_kills_workers_then_resume(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(losses=("mse", "info_nce"), budgets=(8, 16, 32), workers=2)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "sslsteal_fast.cli", "sweep", str(config), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while committed(db) < 2:
            if proc.poll() is not None:
                pytest.fail(f"the sweep exited before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no cell was committed within 120 s")
            time.sleep(0.02)
        workers = pool_workers(proc.pid)
        assert len(workers) == 2
        proc.kill()  # the parent alone, mid-cell (as `kill -9` or the OOM killer would)
        proc.wait()
        deadline = time.monotonic() + 15
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [w for w in workers if alive(w)]
        assert not survivors, f"pool workers {survivors} outlived their killed parent"
    finally:
        for pid in [w for w in workers if alive(w)]:
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    cfg = load_config(config)
    total = cfg.grid.size
    before = committed(db)
    assert 2 <= before < total, "the kill should land mid-sweep"

    resumed = run_sweep(cfg, out, progress=False, log=lambda _: None)  # two workers again
    assert resumed.workers == 2
    assert resumed.resumed == before and resumed.ran == total - before and not resumed.failed
    assert pool_workers(os.getpid()) == []  # the resumed run's workers are gone with its pool
    with ResultStore(db) as store:
        ids = [c["cell_id"] for c in store.cells()]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == set(resumed.cell_ids)

    write_outputs(resumed)
    summary = json.loads((out / "summary.json").read_text())
    # The victim's answers were cached before the kill: the resumed run never queried it again.
    assert summary["victim_forward_passes_this_run"] == 0
    assert summary["victim_forward_passes"] == summary["unique_queries"] == 2 * 32
