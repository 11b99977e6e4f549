"""How closely a stolen encoder reproduces its victim on held-out data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Fidelity", "fidelity"]


@dataclass
class Fidelity:
    """Agreement between stolen and victim representations of the same held-out images.

    Attributes:
        cosine: mean over rows of cos(stolen_i, victim_i), in [-1, 1] (1 = same directions).
        l2: mean over rows of ||stolen_i - victim_i||_2 (0 = identical), in the victim's units.
        agreement: fraction of rows where the two encoders' downstream linear probes predict the same
            class, or None when no predictions were given.
    """

    cosine: float
    l2: float
    agreement: float | None


def fidelity(
    stolen_x: torch.Tensor,
    victim_x: torch.Tensor,
    stolen_pred: torch.Tensor | None = None,
    victim_pred: torch.Tensor | None = None,
) -> Fidelity:
    """Compare stolen (N, D) and victim (N, D) representations row by row (same images, same order).

    Only meaningful when the stolen model answers in the victim's space (same D; a ``StolenEncoder``
    does). ``stolen_pred`` / ``victim_pred``: int64 (N,) predictions of each encoder's linear probe on
    those rows; both or neither.
    """
    for name, t in (("stolen_x", stolen_x), ("victim_x", victim_x)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] == 0 or not t.is_floating_point():
            raise ValueError(f"fidelity: {name} must be a non-empty float (N, D) tensor")
    if stolen_x.shape != victim_x.shape:
        raise ValueError(
            f"fidelity: stolen {tuple(stolen_x.shape)} and victim {tuple(victim_x.shape)} representations must have "
            "the same shape; fidelity is only defined when the stolen model outputs the victim's dimension"
        )
    s, v = stolen_x.double(), victim_x.to(stolen_x.device).double()
    cosine = float(F.cosine_similarity(s, v, dim=1, eps=1e-12).mean())
    l2 = float((s - v).norm(dim=1).mean())
    agreement: float | None = None
    if (stolen_pred is None) != (victim_pred is None):
        raise ValueError("fidelity: pass both stolen_pred and victim_pred, or neither")
    if stolen_pred is not None and victim_pred is not None:
        if stolen_pred.shape != (stolen_x.shape[0],) or victim_pred.shape != (stolen_x.shape[0],):
            raise ValueError(
                f"fidelity: predictions must be (N,) = ({stolen_x.shape[0]},), got {tuple(stolen_pred.shape)} and "
                f"{tuple(victim_pred.shape)}"
            )
        agreement = float((stolen_pred.cpu() == victim_pred.cpu()).float().mean())
    return Fidelity(cosine, l2, agreement)
