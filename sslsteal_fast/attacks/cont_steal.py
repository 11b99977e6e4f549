"""Contrastive stealing with a memory of negatives (Cont-Steal; Sha, He, Yu, Backes & Zhang, CVPR 2023).

The victim answers each clean query image once (``budget`` billed queries). For a batch, the stolen
encoder's output on image i (a local augmentation when ``augment=True``) and the victim's answer for
image i are positives; the negatives are the other images' outputs of both encoders in the batch
and a memory of the victim's answers to the last ``StealConfig.memory`` images of earlier batches
(the batch's own images left out, so an image is never its own negative). The loss is
:class:`~sslsteal_fast.attacks.losses.ContStealLoss`, on the fused native ``info_nce`` op: no n x n
matrix, for any memory size. It always trains with it (``loss = "info_nce"``, tau = 0.07).
"""

from __future__ import annotations

import torch

from sslsteal_fast.attacks.base import Attack, Run, collect_answers
from sslsteal_fast.attacks.losses import ContStealLoss, LossFn
from sslsteal_fast.config import StealConfig

__all__ = ["ContStealAttack"]


class ContStealAttack(Attack):
    """Cont-Steal: InfoNCE between stolen and victim outputs, the victim's other answers as negatives."""

    name = "cont_steal"
    takes_custom_loss = False

    def loss_function(self, cfg: StealConfig) -> LossFn:
        return ContStealLoss(cfg.temperature)

    def collect(self, run: Run) -> None:
        collect_answers(run)

    def batch_loss(self, run: Run, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert run.targets is not None
        index = index.to(run.device)
        memory = run.state.get("memory", index.new_empty(0))
        negatives = memory[~torch.isin(memory, index)]
        value = run.loss_fn(run.stolen(run.local(x)), run.targets[index], run.targets[negatives])  # type: ignore[call-arg]
        run.state["memory"] = torch.cat([memory, index])[-run.cfg.memory :] if run.cfg.memory else memory
        return value
