"""Kill what a process started once that process is gone, however it died (SIGKILL included).

A program that starts a tree of helper processes (a local Ray instance: its GCS, raylet, workers
and agents) cleans them up when it exits normally. Killed with SIGKILL it cannot, and some of them
(Ray's dashboard and runtime-env agents) outlive it, re-parented to init. :class:`Reaper` closes
that gap:

* it draws a random mark, which the owner puts in the environment of everything it starts
  (:meth:`Reaper.environ`); children inherit it, whatever they call themselves later;
* it starts a small watcher process in a session of its own (so the terminal's Ctrl-C and the
  owner's process group do not reach it) that waits on a pipe from the owner. Every second it
  notes the marked processes and all their descendants (pid and start time). A mark alone is not
  enough: a process that rewrites its title over its environment block (``setproctitle``, as Ray's
  agents do) loses it, but it stays a descendant of a marked one. The kernel closes the pipe when
  the owner exits, for any reason, and the watcher then sends SIGTERM, and after a grace period
  SIGKILL, to every process it noted that still runs (an orphan among them re-parented to init),
  every marked one, and their descendants;
* :meth:`Reaper.finish` does the same on a normal exit, and waits for it.

Processes are found through Linux ``/proc/PID/environ`` (readable for one's own processes); where
there is no ``/proc`` the watcher finds nothing and the owner's own clean-up is all there is.

The watcher is this file run as a script (``python reaper.py MARK``): it imports only the standard
library, not the package, so it starts in milliseconds.
"""

from __future__ import annotations

import os
import secrets
import select
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


#: Seconds between two looks of the watcher at the marked processes and their descendants.
WATCH_INTERVAL_S = 1.0

#: A process as the watcher knows it: its pid and its start time (clock ticks after boot), so that
#: a pid the kernel has given to a new process since is never signalled.
Proc = tuple[int, int]


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state) of every process, from ``/proc/PID/stat``."""
    table = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def marked_processes(mark: str) -> list[int]:
    """Pids of the live processes (not this one) whose environment holds ``mark``.

    A process that rewrites its title over its environment block (``setproctitle``, as Ray's agents
    do) may no longer show its mark here: :class:`Reaper` also follows the process tree.
    """
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for pid, (_, _, state) in _processes().items():
        if pid == os.getpid() or state in ("Z", "X"):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(pid)
    return found


def _with_descendants(roots: set[Proc], table: dict[int, tuple[int, int, str]]) -> set[Proc]:
    """``roots`` that still run, and every live process below them."""
    alive = {(pid, start) for pid, start in roots if pid in table and table[pid][1] == start}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, frontier = set(alive), [pid for pid, _ in alive]
    while frontier:
        for child in children.get(frontier.pop(), []):
            entry = (child, table[child][1])
            if entry not in found:
                found.add(entry)
                frontier.append(child)
    return {(pid, start) for pid, start in found if table[pid][2] not in ("Z", "X") and pid != os.getpid()}


def _track(mark: str, known: set[Proc]) -> set[Proc]:
    """``known`` plus the processes marked ``mark`` now, with all their descendants."""
    table = _processes()
    marked = {(pid, table[pid][1]) for pid in marked_processes(mark) if pid in table}
    return known | _with_descendants(known | marked, table)


def reap(mark: str, grace_s: float = GRACE_S, known: set[Proc] | None = None) -> int:
    """SIGTERM every process marked ``mark`` or in ``known``, and all their descendants; SIGKILL those
    alive after ``grace_s``. Returns how many were signalled.

    Repeats until none is left (a dying parent may start a child meanwhile), a few rounds at most.
    """
    signalled: set[Proc] = set()
    tracked = set(known or ())
    for _ in range(5):
        tracked = _track(mark, tracked)
        live = _with_descendants(tracked, _processes())
        if not live:
            break
        signalled |= live
        _signal(live, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _with_descendants(live, _processes()):
            time.sleep(0.1)
        _signal(_with_descendants(live, _processes()), signal.SIGKILL)
        time.sleep(0.1)
    return len(signalled)


def _signal(procs: set[Proc], sig: signal.Signals) -> None:
    for pid, _ in procs:
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
    """The watcher: follow the marked processes until the owner's end (the pipe on stdin closes), then reap."""
    if len(argv) != 2:
        print("usage: reaper.py MARK", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe decides
    mark, known = argv[1], set()
    stdin = sys.stdin.buffer
    while True:
        try:
            ready, _, _ = select.select([stdin], [], [], WATCH_INTERVAL_S)
            if ready and not os.read(stdin.fileno(), 65536):
                break  # EOF: the owner closed the pipe or died
        except OSError:
            break
        known = _track(mark, known)
    reap(mark, known=known)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
