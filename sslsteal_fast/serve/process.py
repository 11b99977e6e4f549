"""A server in a child process: :class:`ServerProcess` starts ``sslsteal serve`` and reads the URL it prints.

What the tests and ``benchmarks/bench_http.py`` use to run a real server (and to SIGKILL it):

>>> with ServerProcess("victim.onnx", "api-state", "--max-batch", "64") as server:
...     victim = HttpVictim(server.url, key)
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

__all__ = ["ServerProcess"]


class ServerProcess:
    """``python -m sslsteal_fast serve MODEL --state STATE --port PORT ARGS...`` in a child process.

    Args:
        model, state: the ``.onnx`` file and the state folder.
        args: more ``sslsteal serve`` options.
        port: 0 picks a free port (the URL says which).
        timeout: seconds to wait for the URL line.
        log: where the server's stderr goes (default: discarded).

    Raises:
        RuntimeError: the server exited, or printed no URL within ``timeout`` seconds (with its stderr).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        state: str | os.PathLike[str],
        *args: str,
        port: int = 0,
        timeout: float = 120.0,
        log: str | os.PathLike[str] | None = None,
    ) -> None:
        command = [sys.executable, "-m", "sslsteal_fast", "serve", str(model), "--state", str(state)]
        command += ["--port", str(port), "--quiet", *args]
        self._log_path = Path(log) if log is not None else None
        err: IO[str] | int = open(self._log_path, "a") if self._log_path is not None else subprocess.PIPE  # noqa: SIM115
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
        if not isinstance(err, int):
            err.close()
        self._stderr: list[str] = []
        if self.process.stderr is not None:
            threading.Thread(target=self._drain, args=(self.process.stderr, self._stderr), daemon=True).start()
        lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._drain, args=(self.process.stdout, lines), daemon=True).start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(f"the server printed no URL within {timeout:g} s: {self.stderr}") from None
        if not first.startswith("http"):
            self.kill()
            raise RuntimeError(f"the server's first line is not its URL: {first!r}; {self.stderr}")
        self.url = first.strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    @staticmethod
    def _drain(stream: IO[str], sink: queue.Queue[str] | list[str]) -> None:
        for line in stream:
            if isinstance(sink, list):
                sink.append(line)
                del sink[:-200]  # the last lines are enough to say why it failed
            else:
                sink.put(line)

    @property
    def stderr(self) -> str:
        """The server's last lines on stderr (when not sent to ``log``)."""
        return "".join(self._stderr)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no clean-up (a crash)."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful shutdown: the admitted requests finish), SIGKILL after ``timeout``; the exit code."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
