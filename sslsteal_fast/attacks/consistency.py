"""Augmentation-consistency stealing (StolenEncoder; Liu, Jia, Liu & Gong, CCS 2022).

The victim answers each clean query image once (``budget`` billed queries). The stolen encoder's
output on the clean image *and* on a fresh augmented view of it are both pulled to that one answer::

    loss = loss(stolen(x), victim(x)) + lambda * loss(stolen(view(x)), victim(x))

so the copy learns the victim's invariance to augmentation for free (views are made locally, never
sent). StolenEncoder uses cosine similarity (``loss = "cosine"``) and lambda = 1
(``StealConfig.consistency_weight``); any loss of :data:`~sslsteal_fast.config.LOSSES` works. The view
is always augmented (``StealConfig.augment`` does not apply: the clean term is the clean image).
"""

from __future__ import annotations

import torch

from sslsteal_fast.attacks.base import Attack, Run, collect_answers

__all__ = ["ConsistencyAttack"]


class ConsistencyAttack(Attack):
    """StolenEncoder: the clean image's and an augmented view's outputs both matched to ``victim(x)``."""

    name = "consistency"

    def collect(self, run: Run) -> None:
        collect_answers(run)

    def batch_loss(self, run: Run, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert run.targets is not None
        y = run.targets[index.to(run.device)]
        clean = run.loss_fn(run.stolen(x), y)
        return clean + run.cfg.consistency_weight * run.loss_fn(run.stolen(run.views(x)), y)
