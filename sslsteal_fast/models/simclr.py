"""SimCLR model: an encoder followed by a projection head (Chen et al. 2020, as used in the paper)."""

from __future__ import annotations

import torch
from torch import nn

from sslsteal_fast.util.checks import check_positive_int

__all__ = ["ProjectionHead", "SimCLRModel"]


class ProjectionHead(nn.Module):
    """MLP ``Linear(in_dim, hidden_dim) - ReLU - Linear(hidden_dim, out_dim)``: (B, in_dim) -> (B, out_dim).

    The paper's head is Linear(512, 512) - ReLU - Linear(512, 128).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            check_positive_int(f"ProjectionHead: {name}", value)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.net(x)


class SimCLRModel(nn.Module):
    """Encoder + projection head. ``forward(x)`` returns ``(rep, proj)``: (B, rep_dim) and (B, proj_dim).

    The contrastive loss is applied to ``proj``; the served representation is ``rep``.
    ``hidden_dim`` defaults to ``rep_dim`` (as in the paper).
    """

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        rep_dim = getattr(encoder, "rep_dim", None)
        if not isinstance(rep_dim, int):
            raise ValueError("SimCLRModel: the encoder must have an int attribute rep_dim (use build_encoder)")
        self.encoder = encoder
        self.rep_dim = rep_dim
        self.proj_dim = proj_dim
        self.head = ProjectionHead(rep_dim, hidden_dim if hidden_dim is not None else rep_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) float -> ((B, rep_dim), (B, proj_dim))."""
        rep = self.encoder(x)
        return rep, self.head(rep)
