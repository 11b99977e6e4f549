"""What every ownership test returns: a p-value, the significance level and the verdict it implies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sslsteal_fast.util.checks import check_number

__all__ = ["Verdict", "check_alpha", "decide"]


def check_alpha(name: str, alpha: Any) -> float:
    """``alpha`` as a float if it is a significance level, in (0, 1); else an error naming ``name``."""
    return check_number(name, alpha, low=0.0, high=1.0, strict=True)


@dataclass(kw_only=True)
class Verdict:
    """``verdict`` is ``"stolen"`` when ``p_value < alpha``, else ``"independent"`` (see :func:`decide`)."""

    p_value: float
    verdict: str
    alpha: float

    def __post_init__(self) -> None:
        self.alpha = check_alpha(f"{type(self).__name__}.alpha", self.alpha)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON / CSV)."""
        return dataclasses.asdict(self)


def decide(p_value: float, alpha: float) -> str:
    """The verdict of a one-sided test at level ``alpha`` (in (0, 1))."""
    return "stolen" if p_value < check_alpha("alpha", alpha) else "independent"
