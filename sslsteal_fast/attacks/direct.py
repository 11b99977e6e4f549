"""The paper's attack: train the stolen model on (query image, victim answer) pairs with a representation loss.

Two strategies (``StealConfig.strategy``):

* ``"query-once"`` (default): each of the ``budget`` images is sent once and its answer cached; every
  epoch reuses the cache while the stolen model sees a fresh local augmentation of the clean image
  (``augment=True``) - local augmentations are free. Billed queries == ``budget``.
* ``"augmented"``: every epoch each image is augmented and the *view* is sent to the victim and
  billed, and the stolen model is trained on the same view - the paper's accounting, where the
  victim is re-queried every epoch: ``budget * epochs`` billed queries. With ``augment=False`` the
  clean images are re-sent every epoch (the reference code's re-query quirk, made explicit).
"""

from __future__ import annotations

import torch

from sslsteal_fast.attacks.base import Attack, Run, collect_answers
from sslsteal_fast.config import StealConfig

__all__ = ["DirectAttack"]


class DirectAttack(Attack):
    """Dziedzic et al. (ICML 2022): ``loss(stolen(x), victim(x))``, query-once or augmented."""

    name = "direct"

    def needed_queries(self, cfg: StealConfig) -> int:
        return cfg.budget if cfg.strategy == "query-once" else cfg.budget * cfg.epochs

    def cost(self, cfg: StealConfig) -> str:
        if cfg.strategy == "query-once":
            return super().cost(cfg)
        return f"{cfg.budget} images x {cfg.epochs} epochs of augmented views"

    def lower(self, cfg: StealConfig) -> str:
        return "lower the budget" if cfg.strategy == "query-once" else "lower the budget or the epochs"

    def check_targets(self, targets: torch.Tensor, cfg: StealConfig, out_dim: int | None) -> None:
        if cfg.strategy != "query-once":
            raise ValueError("steal: targets can only be reused with strategy='query-once'; drop targets")
        super().check_targets(targets, cfg, out_dim)

    def collect(self, run: Run) -> None:
        if run.cfg.strategy == "query-once":
            collect_answers(run)
        else:
            run.query_sha = run.queries.sha256(run.cfg.victim_batch_size)

    def batch_loss(self, run: Run, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = run.local(x)
        y = run.targets[index.to(run.device)] if run.targets is not None else run.query(x)
        return run.loss_fn(run.stolen(x), y)
