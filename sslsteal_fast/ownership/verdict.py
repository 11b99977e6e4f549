"""What every ownership test returns: a p-value, the significance level and the verdict it implies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Verdict", "decide"]


@dataclass(kw_only=True)
class Verdict:
    """``verdict`` is ``"stolen"`` when ``p_value < alpha``, else ``"independent"`` (see :func:`decide`)."""

    p_value: float
    verdict: str
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON / CSV)."""
        return dataclasses.asdict(self)


def decide(p_value: float, alpha: float) -> str:
    """The verdict of a one-sided test at level ``alpha``."""
    return "stolen" if p_value < alpha else "independent"
