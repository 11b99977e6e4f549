"""Progress on stderr: a live bar on a terminal, a few plain lines everywhere else.

A tqdm bar redraws itself with carriage returns and escape codes; written to a log file, a pipe or
a CI transcript that becomes one unreadable line. :func:`progress_bar` is the one way the package
shows progress: on a terminal it is a tqdm bar; on any other stream it is a :class:`LineProgress`,
which writes whole lines (no ``\\r``, no escape codes) and only a few of them:

* a bar that stays (``leave=True``, e.g. epochs of a steal) writes a line each time it passes
  another tenth of its total, and a last line when it ends;
* a transient bar (``leave=False``, e.g. the batches of one query) writes nothing unless it runs
  long, then one line every ``interval`` seconds.

:func:`progress_write` prints a message (an epoch summary) without breaking a live bar. Both write
to ``sys.stderr`` unless given a ``file``, so stdout keeps only a command's result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["LineProgress", "progress_bar", "progress_write"]

#: Seconds between the lines of a bar that has not passed another tenth (or is transient).
INTERVAL_S = 30.0


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
    file: TextIO | None = None,
) -> Any:
    """Progress over ``iterable`` (or ``total`` steps counted with ``update``) on ``file`` (stderr).

    Returns an object with tqdm's interface (iterate it, ``update(n)``, ``set_postfix(**values)``,
    ``set_postfix_str(text)``, ``close()``, usable as a context manager): a tqdm bar on a terminal, a :class:`LineProgress`
    otherwise, a silent tqdm with ``disable``.
    """
    stream = file if file is not None else sys.stderr
    if disable or _is_terminal(stream):
        return tqdm(
            iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable, file=stream, dynamic_ncols=True
        )
    return LineProgress(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream)


def progress_write(message: str, *, file: TextIO | None = None) -> None:
    """Print ``message`` on ``file`` (stderr) as a line of its own, above any live bar."""
    tqdm.write(message, file=file if file is not None else sys.stderr)


class LineProgress:
    """tqdm's interface, written as a few whole lines (see the module docstring)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str = "",
        total: int | None = None,
        unit: str = "it",
        leave: bool = True,
        file: TextIO | None = None,
        interval: float = INTERVAL_S,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.desc = desc
        self.total = total
        self.unit = unit
        self.leave = leave
        self.file = file if file is not None else sys.stderr
        self.interval = interval
        self.n = 0
        self._postfix = ""
        self._start = self._last_time = time.monotonic()
        self._last_tenth = 0
        self._printed_n: int | None = None
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress: nothing to iterate (pass an iterable, or call update())")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count on the next line (``loss=0.1234``)."""
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        """``text`` shown after the count on the next line."""
        self._postfix = text

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; write a line if a tenth was passed or ``interval`` seconds went by."""
        self.n += n
        now = time.monotonic()
        tenth = 10 * self.n // self.total if self.leave and self.total else 0
        if tenth > self._last_tenth or now - self._last_time >= self.interval:
            self._last_tenth = max(tenth, self._last_tenth)
            self._emit(now)

    def close(self) -> None:
        """End the bar: a bar that stays writes its final count (once)."""
        if self._closed:
            return
        self._closed = True
        if self.leave and self._printed_n != self.n:
            self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100 * self.n // self.total}%)" if self.total else ""
        parts = [f"{count} {self.unit}{percent}", tqdm.format_interval(now - self._start)]
        if self._postfix:
            parts.append(self._postfix)
        print(f"{self.desc + ': ' if self.desc else ''}{', '.join(parts)}", file=self.file, flush=True)
        self._printed_n = self.n
        self._last_time = now
