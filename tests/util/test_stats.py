"""The seed statistics: Student-t intervals against scipy and a hand computation, gap shares."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sslsteal_fast.testing import STATS_RTOL
from sslsteal_fast.util.checks import ArgumentTypeError
from sslsteal_fast.util.stats import gap_share, mean_ci, t_half_width

#: t_{0.975, 2} from a printed table of Student's t (two-sided 95%, 2 degrees of freedom).
T_975_DF2 = 4.302652729749464


def test_hand_computed_interval_of_three_values() -> None:
    ci = mean_ci([0.5, 0.6, 0.7])
    # mean 0.6; sample sd sqrt((0.01 + 0 + 0.01) / 2) = 0.1; half-width t * 0.1 / sqrt(3).
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert ci.n == 3
    assert ci.mean == pytest.approx(0.6, rel=STATS_RTOL)
    assert ci.sd == pytest.approx(0.1, rel=STATS_RTOL)
    assert ci.half_width == pytest.approx(half, rel=STATS_RTOL)
    assert (ci.low, ci.high) == (pytest.approx(0.6 - half, rel=STATS_RTOL), pytest.approx(0.6 + half, rel=STATS_RTOL))
    assert round(ci.half_width, 4) == 0.2484  # the printed value


@pytest.mark.parametrize("seed", range(20))
def test_interval_matches_scipy_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    values = rng.normal(rng.uniform(-5, 5), rng.uniform(0.01, 3), size=n)
    confidence = float(rng.choice([0.8, 0.9, 0.95, 0.99]))
    ci = mean_ci(values.tolist(), confidence)
    low, high = sps.t.interval(confidence, n - 1, loc=values.mean(), scale=sps.sem(values))
    assert ci.n == n and ci.confidence == confidence
    assert ci.mean == pytest.approx(values.mean(), rel=STATS_RTOL, abs=STATS_RTOL)
    assert ci.sd == pytest.approx(values.std(ddof=1), rel=STATS_RTOL)
    assert ci.low == pytest.approx(low, rel=1e-10, abs=1e-12)
    assert ci.high == pytest.approx(high, rel=1e-10, abs=1e-12)
    assert t_half_width(float(values.std(ddof=1)), n, confidence) == pytest.approx((high - low) / 2, rel=1e-10)


def test_one_value_has_no_interval() -> None:
    ci = mean_ci([0.42])
    assert (ci.n, ci.mean) == (1, 0.42)
    assert ci.sd is None and ci.low is None and ci.high is None and ci.half_width is None


def test_identical_values_have_a_zero_width_interval() -> None:
    ci = mean_ci([0.3, 0.3, 0.3, 0.3])
    assert ci.half_width == pytest.approx(0.0, abs=1e-15) and ci.sd == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    "values, confidence",
    [([], 0.95), ([0.1, float("nan")], 0.95), ([0.1, float("inf")], 0.95), ([0.1, 0.2], 1.0), ([0.1, 0.2], 0.0)],
)
def test_bad_inputs_are_refused(values: list[float], confidence: float) -> None:
    with pytest.raises(ValueError):
        mean_ci(values, confidence)


def test_t_half_width_needs_two_values() -> None:
    with pytest.raises(ValueError, match="n"):
        t_half_width(0.1, 1)
    with pytest.raises(ArgumentTypeError, match="n"):
        t_half_width(0.1, True)  # type: ignore[arg-type]


def test_gap_share() -> None:
    assert gap_share(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert gap_share(0.2, 0.2, 0.8) == 0.0 and gap_share(0.8, 0.2, 0.8) == 1.0
    assert gap_share(0.1, 0.2, 0.8) == pytest.approx(-1 / 6)  # worse than untrained: negative
    assert gap_share(0.5, 0.3, 0.3) is None and gap_share(0.5, 0.4, 0.3) is None  # no gap to share
