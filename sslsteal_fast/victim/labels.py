"""A label-only API: the owner's linear classifier on top of a victim, answering only argmax labels.

The paper's comparison point (a Knockoff-style thief, Orekondy et al. 2019) steals from a downstream
*classifier* rather than from the encoder. :class:`LabelVictim` places the owner's linear head
(:class:`LinearHead`, fitted by the owner on its own labelled data - the sweep uses the victim's
linear probe, fitted on ``[probe] train``) on any :class:`~sslsteal_fast.victim.Victim` and answers
each image with the head's argmax over the victim's representation. Billing is the wrapped victim's:
one billed query per image (its budget, response cache and defenses apply as they are), and the
thief sees the labels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslsteal_fast.util.checks import ArgumentTypeError, check_client
from sslsteal_fast.victim.protocol import Victim, remaining_budget, victim_sha256

__all__ = ["LabelVictim", "LinearHead"]


@dataclass(frozen=True)
class LinearHead:
    """A linear classifier on standardised features: ``logits = ((x - mean) / std) @ weight.T + bias``.

    Shapes: mean (D,), std (D,), weight (K, D), bias (K,); K >= 2 classes.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("mean", "std", "weight", "bias"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ArgumentTypeError(
                    f"LinearHead: {name} must be a tensor, got {type(getattr(self, name)).__name__}"
                )
        k, d = self.weight.shape if self.weight.dim() == 2 else (0, 0)
        if k < 2 or self.bias.shape != (k,) or self.mean.shape != (d,) or self.std.shape != (d,):
            raise ValueError(
                "LinearHead: expected weight (K, D) with K >= 2, bias (K,), mean (D,) and std (D,), got "
                f"{tuple(self.weight.shape)}, {tuple(self.bias.shape)}, {tuple(self.mean.shape)}, "
                f"{tuple(self.std.shape)}"
            )

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, D) -> class scores (N, K), in float32 on the features' device."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"LinearHead: expected features (N, {self.dim}), got {tuple(x.shape)}")
        x = x.to(torch.float32)
        mean, std, weight, bias = (t.to(device=x.device, dtype=torch.float32) for t in self.as_tensors().values())
        return torch.nn.functional.linear((x - mean) / std, weight, bias)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, D) -> int64 (N,) argmax labels."""
        return self.logits(x).argmax(dim=1)

    def as_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """``{prefix + "mean": ..., "std", "weight", "bias"}`` (to save; :meth:`from_tensors` reads it back)."""
        return {prefix + k: getattr(self, k) for k in ("mean", "std", "weight", "bias")}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "") -> LinearHead:
        """The head saved by :meth:`as_tensors` with ``prefix``."""
        return cls(*(tensors[prefix + k] for k in ("mean", "std", "weight", "bias")))


class LabelVictim:
    """A label-only API over ``victim``: ``query(x)`` -> int64 (N,) argmax labels of ``head`` on its answers.

    Bills exactly what ``victim`` bills (one query per image); ``queries_used``, ``forward_passes``,
    ``remaining``, ``input_shape`` and ``sha256`` are the wrapped victim's.
    """

    def __init__(self, victim: Victim, head: LinearHead) -> None:
        if not isinstance(victim, Victim):
            raise ArgumentTypeError(f"LabelVictim: victim must be a Victim, got {type(victim).__name__}")
        if not isinstance(head, LinearHead):
            raise ArgumentTypeError(f"LabelVictim: head must be a LinearHead, got {type(head).__name__}")
        if head.dim != int(victim.output_dim):
            raise ValueError(
                f"LabelVictim: the head takes {head.dim}-d features but the victim answers with {victim.output_dim}"
            )
        self.victim = victim
        self.head = head
        self.input_shape = victim.input_shape
        self.num_classes = head.num_classes
        self.sha256 = victim_sha256(victim)

    @property
    def queries_used(self) -> int:
        return int(self.victim.queries_used)

    @property
    def forward_passes(self) -> int:
        return int(self.victim.forward_passes)

    @property
    def remaining(self) -> int | None:
        return remaining_budget(self.victim)

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor:
        """Images (N, C, H, W) -> int64 (N,) labels on the CPU; bills N queries to ``client``."""
        check_client(client)
        return self.head.predict(self.victim.query(x, client=client)).cpu()
