"""The label-only baseline (Knockoff-style; Orekondy, Schiele & Fritz, CVPR 2019): steal from the labels.

The paper's comparison point. The owner serves a downstream classifier - a linear head on the
victim's representation (:class:`~sslsteal_fast.victim.LabelVictim`; in a sweep, the victim's linear
probe, fitted by the owner on ``[probe] train``) - and the thief sees only its argmax label for each
query image (one billed query per image). The thief trains its encoder and a linear classifier
``Linear(thief dim, K)`` on those labels with cross-entropy (``loss = "cross_entropy"``); the encoder
alone is the stolen model (no head into the victim's space: its representation is not trained to
match the victim's, so fidelity by cosine is not defined for it), scored by the same probes.
"""

from __future__ import annotations

import torch
from torch import nn

from sslsteal_fast.attacks.base import Attack, Run
from sslsteal_fast.attacks.losses import LossFn
from sslsteal_fast.config import StealConfig
from sslsteal_fast.victim import Victim

__all__ = ["LabelOnlyAttack"]


class LabelOnlyAttack(Attack):
    """Knockoff-style: cross-entropy of ``classifier(stolen(x))`` against the victim classifier's argmax."""

    name = "label_only"
    takes_custom_loss = False

    def loss_function(self, cfg: StealConfig) -> LossFn:
        return nn.CrossEntropyLoss()

    def check_victim(self, victim: Victim) -> None:
        k = getattr(victim, "num_classes", None)
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(
                "steal: the label_only attack needs a victim that answers labels (an int num_classes >= 2 and "
                "int64 labels), such as LabelVictim(victim, head); got one without num_classes"
            )

    def output_dim(self, victim: Victim) -> int | None:
        return None

    def check_targets(self, targets: torch.Tensor, cfg: StealConfig, out_dim: int | None) -> None:
        if (
            not isinstance(targets, torch.Tensor)
            or targets.dtype != torch.int64
            or targets.dim() != 1
            or targets.shape[0] < cfg.budget
        ):
            raise ValueError(
                f"steal: the label_only attack's targets must be an int64 (>= {cfg.budget},) tensor of labels, got "
                f"{getattr(targets, 'dtype', type(targets).__name__)} {tuple(getattr(targets, 'shape', ()))}"
            )

    def use_targets(self, run: Run, targets: torch.Tensor) -> None:
        run.targets = self._checked(run, targets[: run.cfg.budget].to(run.device))
        run.answers_used = run.cfg.budget

    def extra_modules(self, run: Run) -> list[nn.Module]:
        classes = int(run.victim.num_classes)  # type: ignore[attr-defined]
        run.state["classifier"] = nn.Linear(run.stolen.rep_dim, classes).to(run.device)
        return [run.state["classifier"]]

    def collect(self, run: Run) -> None:
        labels = []
        for _, batch in run.chunks("querying victim (labels)"):
            answer = run.victim.query(batch, client=run.cfg.client)
            if not isinstance(answer, torch.Tensor) or answer.shape != (batch.shape[0],):
                got = tuple(answer.shape) if isinstance(answer, torch.Tensor) else type(answer).__name__
                raise ValueError(f"steal: a label-only victim must answer one label per image, got {got}")
            labels.append(answer.to(torch.int64))
            run.answers_used += int(batch.shape[0])
        run.targets = self._checked(run, torch.cat(labels).to(run.device))

    def batch_loss(self, run: Run, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert run.targets is not None
        logits = run.state["classifier"](run.stolen(run.local(x)))
        return run.loss_fn(logits, run.targets[index.to(run.device)])

    @staticmethod
    def _checked(run: Run, labels: torch.Tensor) -> torch.Tensor:
        classes = int(run.victim.num_classes)  # type: ignore[attr-defined]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"steal: the victim's labels must be in [0, {classes}), got {int(labels.min())}..{int(labels.max())}"
            )
        return labels
