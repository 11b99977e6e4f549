"""Summary statistics over repeated runs: the mean and its Student-t confidence interval, gap shares.

One place for the numbers every report quotes (sweep tables and aggregates, the defense study,
results write-ups), so that they all mean the same thing. Torch-free; scipy is loaded when the
first interval is computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sslsteal_fast.util.checks import ArgumentTypeError, check_int, check_number

__all__ = ["MeanCI", "gap_share", "mean_ci", "t_half_width"]


@dataclass(frozen=True)
class MeanCI:
    """The mean of ``n`` values with its two-sided ``confidence`` interval (Student t).

    ``sd`` is the sample standard deviation (``ddof = 1``); with one value there is no spread to
    estimate, so ``sd``, ``low`` and ``high`` are None (no interval, rather than a zero-width one).
    """

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None
    confidence: float = 0.95

    @property
    def half_width(self) -> float | None:
        """``t_{(1+c)/2, n-1} * sd / sqrt(n)``, or None without an interval."""
        return None if self.high is None else self.high - self.mean


def t_half_width(sd: float, n: int, confidence: float = 0.95) -> float:
    """Half-width of the Student-t interval of a mean: ``t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` (n >= 2)."""
    from scipy import stats  # heavy: loaded only when an interval is computed

    check_int("t_half_width: n", n, low=2)
    check_number("t_half_width: confidence", confidence, low=0.0, high=1.0, strict=True)
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """The mean of ``values`` and its ``confidence`` interval (Student t with ``n - 1`` degrees of freedom).

    Raises ``ValueError`` on no values or a non-finite one (a missing metric is the caller's to drop).
    """
    check_number("mean_ci: confidence", confidence, low=0.0, high=1.0, strict=True)
    xs = [float(v) for v in values]
    if not xs:
        raise ArgumentTypeError("mean_ci: no values")
    if not all(math.isfinite(x) for x in xs):
        raise ArgumentTypeError(f"mean_ci: values must be finite, got {xs}")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(1, mean, None, None, None, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    h = t_half_width(sd, n, confidence)
    return MeanCI(n, mean, sd, mean - h, mean + h, confidence)


def gap_share(value: float, floor: float, ceiling: float) -> float | None:
    """Where ``value`` lies between ``floor`` (0) and ``ceiling`` (1): ``(value - floor) / (ceiling - floor)``.

    For a stolen copy: the share of the untrained-to-victim gap it recovered. None when there is no
    gap (``ceiling <= floor``: a victim no better than the untrained encoder has nothing to steal).
    """
    if ceiling <= floor:
        return None
    return (value - floor) / (ceiling - floor)
