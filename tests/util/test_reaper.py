"""The reaper kills every process carrying its mark once its owner is gone, SIGKILL included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sslsteal_fast.util.reaper import MARK_VARIABLE, WATCH_INTERVAL_S, Reaper, marked_processes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")

# An owner that starts a reaper and a marked grandchild which survives it (its own session, SIGTERM
# ignored: only the reaper's SIGKILL ends it), prints the grandchild's pid, then waits to be killed.
OWNER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from sslsteal_fast.util.reaper import Reaper
    reaper = Reaper()
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"],
        env={**os.environ, **reaper.environ()}, start_new_session=True,
    )
    print(child.pid, reaper.mark, flush=True)
    if sys.argv[1] == "finish":
        reaper.finish()
        print("finished", flush=True)
    time.sleep(300)
    """
)


# An owner whose marked child starts a grandchild that does not carry the mark (as a process whose
# title overwrote its environment block no longer shows it); it prints both pids and the mark.
OWNER_OF_A_TREE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from sslsteal_fast.util.reaper import MARK_VARIABLE, Reaper
    reaper = Reaper()
    grandchild = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys, time\\n"
         f"env = {{k: v for k, v in os.environ.items() if k != {MARK_VARIABLE!r}}}\\n"
         f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], env=env, start_new_session=True)\\n"
         "print(p.pid, flush=True); time.sleep(300)"],
        env={**os.environ, **reaper.environ()}, stdout=subprocess.PIPE, text=True,
    )
    print(child.pid, child.stdout.readline().strip(), reaper.mark, flush=True)
    time.sleep(300)
    """
)


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` has ended (looked at once, then until ``timeout_s`` has passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _owner(mode: str) -> tuple[subprocess.Popen[str], int, str]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert owner.stdout is not None
    pid, mark = owner.stdout.readline().split()
    return owner, int(pid), mark


def test_a_sigkilled_owner_takes_its_marked_processes_with_it() -> None:
    owner, child, mark = _owner("wait")
    try:
        assert marked_processes(mark) == [child]
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert _gone(child, 15), "the reaper left a marked process alive after its owner was killed"
        assert marked_processes(mark) == []
    finally:
        owner.kill()
        owner.wait(10)
        if not _gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_a_descendant_that_lost_its_mark_is_reaped_too() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_OF_A_TREE],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert owner.stdout is not None
    child, grandchild, mark = owner.stdout.readline().split()
    pids = [int(child), int(grandchild)]
    try:
        assert marked_processes(mark) == [pids[0]]  # the grandchild carries no mark
        time.sleep(3 * WATCH_INTERVAL_S)  # the watcher has seen the tree
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert all(_gone(p, 15) for p in pids), "the reaper left an unmarked descendant of a marked process"
    finally:
        owner.kill()
        owner.wait(10)
        for p in pids:
            if not _gone(p, 0):
                os.kill(p, signal.SIGKILL)


def test_finish_reaps_now_and_the_owner_goes_on() -> None:
    owner, child, mark = _owner("finish")
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "finished"
        assert _gone(child, 1) and owner.poll() is None
    finally:
        owner.kill()
        owner.wait(10)


def test_the_reaper_spares_unmarked_processes_and_its_owner() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reaper = Reaper()
        assert MARK_VARIABLE not in os.environ
        reaper.finish()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)
