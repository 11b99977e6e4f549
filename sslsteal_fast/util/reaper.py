"""Kill what a process started once that process is gone, however it died (SIGKILL included).

A program that starts a tree of helper processes (a local Ray instance: its GCS, raylet, workers
and agents) cleans them up when it exits normally. Killed with SIGKILL it cannot, and some of them
(Ray's dashboard and runtime-env agents) outlive it, re-parented to init. :class:`Reaper` closes
that gap:

* it draws a random mark, which the owner puts in the environment of everything it starts
  (:meth:`Reaper.environ`); children inherit it, whatever they call themselves later;
* it starts a small watcher process in a session of its own (so the terminal's Ctrl-C and the
  owner's process group do not reach it) that blocks reading a pipe from the owner. The kernel
  closes that pipe when the owner exits, for any reason, and the watcher then sends SIGTERM, and
  after a grace period SIGKILL, to every process whose environment holds the mark;
* :meth:`Reaper.finish` does the same on a normal exit, and waits for it.

Processes are found through Linux ``/proc/PID/environ`` (readable for one's own processes); where
there is no ``/proc`` the watcher finds nothing and the owner's own clean-up is all there is.

The watcher is this file run as a script (``python reaper.py MARK``): it imports only the standard
library, not the package, so it starts in milliseconds.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["MARK_VARIABLE", "Reaper", "marked_processes", "reap"]

#: The environment variable that carries the mark.
MARK_VARIABLE = "SSLSTEAL_REAPER_MARK"
#: Seconds between SIGTERM and SIGKILL.
GRACE_S = 3.0
#: Seconds a normal :meth:`Reaper.finish` waits for the watcher.
FINISH_TIMEOUT_S = 30.0


def marked_processes(mark: str) -> list[int]:
    """Pids of the live processes (not this one) whose environment holds ``mark``."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if state not in ("Z", "X") and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def reap(mark: str, grace_s: float = GRACE_S) -> int:
    """SIGTERM every process marked ``mark``, SIGKILL those still alive after ``grace_s``; returns how many.

    Repeats until none is left (a dying parent may start a child meanwhile), a few rounds at most.
    """
    killed: set[int] = set()
    for _ in range(5):
        pids = marked_processes(mark)
        if not pids:
            break
        killed.update(pids)
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and marked_processes(mark):
            time.sleep(0.1)
        _signal(marked_processes(mark), signal.SIGKILL)
        time.sleep(0.1)
    return len(killed)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Reaper:
    """A watcher that kills every process carrying this reaper's mark once the owner (this process) ends."""

    def __init__(self) -> None:
        self.mark = secrets.token_hex(8)
        env = {k: v for k, v in os.environ.items() if k != MARK_VARIABLE}
        self._watcher = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), self.mark],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def environ(self) -> dict[str, str]:
        """The variables to add to the environment of the processes to reap."""
        return {MARK_VARIABLE: self.mark}

    def finish(self, timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """Reap now (the owner is done with its processes) and wait for the watcher to end."""
        if self._watcher.stdin is not None and not self._watcher.stdin.closed:
            self._watcher.stdin.close()
        try:
            self._watcher.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._watcher.kill()
            self._watcher.wait()


def _main(argv: list[str]) -> int:
    """The watcher: wait for the owner's end (the pipe on stdin closes), then reap."""
    if len(argv) != 2:
        print("usage: reaper.py MARK", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe decides
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except OSError:
        pass
    reap(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
