"""Peak resident memory of one call, for memory tests and benchmarks on the CPU (Linux).

``ru_maxrss`` is a process-lifetime high-water mark, usually set by importing torch, so it cannot
see a call that peaks below it. Instead the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs`` <- 5) right before the call and ``VmHWM`` read right after.
"""

from __future__ import annotations

import gc
from collections.abc import Callable


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_extra_rss_mib(fn: Callable[[], object]) -> float:
    """MiB by which resident memory rose above its level before ``fn()`` at the peak of the call."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024.0
