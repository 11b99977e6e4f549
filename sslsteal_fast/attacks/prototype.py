"""Prototype stealing (Representation Distillation Attack style, ECCV 2024): train on each image's mean answer.

The thief sends ``views`` augmented views of each query image (``StealConfig.views``; every view is
billed: ``budget * views`` queries) and averages the victim's answers into the image's *prototype*,
an estimate of the victim's representation that is less tied to one view. The stolen model is then
distilled on those same views: each step, each image of the batch contributes one of its views (drawn
at random), pulled to the image's prototype with ``cfg.loss``, for ``epochs`` passes, without querying
again. The views are kept, rounded to uint8, for the whole steal (``budget * views`` images).

The views are :func:`~sslsteal_fast.attacks.views.seeded_views`: a function of the image's row and
``views`` alone, so a sweep shares one set of prototypes between every prototype cell of a query set
and defense (nested budgets, any seed), and a served victim's response cache recognises a repeated
steal's views (forward passes drop, the bill does not).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sslsteal_fast.attacks.base import Attack, Run
from sslsteal_fast.attacks.views import seeded_views
from sslsteal_fast.config import StealConfig
from sslsteal_fast.data import SimCLRAugment, to_float

__all__ = ["PrototypeAttack", "prototypes"]


def prototypes(
    query: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    rows: torch.Tensor,
    views: int,
    augment: SimCLRAugment,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Send ``views`` seeded views of each image to ``query`` (one call, billed there).

    ``images`` (n, C, H, W), uint8 or float, are query-set rows ``rows``; ``query`` maps the
    (n * views, C, H, W) views to (n * views, D) answers. Returns ``(prototypes (n, D), the views sent
    (n * views, C, H, W) float)``.
    """
    sent = seeded_views(augment, to_float(images), rows, views)
    return query(sent).reshape(len(rows), views, -1).mean(1), sent


def _kept(views: torch.Tensor, per_image: int) -> torch.Tensor:
    """Views (n * per_image, C, H, W) in [0, 1] -> uint8 (n, per_image, C, H, W), to hold for the steal."""
    return (views * 255).round_().to(torch.uint8).reshape(-1, per_image, *views.shape[1:])


class PrototypeAttack(Attack):
    """RDA-style: ``loss(stolen(view_k(x)), mean_v victim(view_v(x)))`` with ``views`` billed views per image."""

    name = "prototype"

    def needed_queries(self, cfg: StealConfig) -> int:
        return cfg.budget * cfg.views

    def cost(self, cfg: StealConfig) -> str:
        return f"{cfg.budget} images x {cfg.views} augmented views"

    def lower(self, cfg: StealConfig) -> str:
        return "lower the budget or the views"

    def use_targets(self, run: Run, targets: torch.Tensor) -> None:
        super().use_targets(run, targets)
        run.answers_used = run.cfg.budget * run.cfg.views  # each prototype is the mean of `views` answers
        views = run.cfg.views
        kept = [
            _kept(seeded_views(run.views, to_float(batch.to(run.device)), rows, views), views)
            for rows, batch in run.chunks(f"making the {views} views per image")
        ]  # the views the prototypes came from: made again locally (they depend on the rows alone), not sent
        run.state["views"] = torch.cat(kept)

    def collect(self, run: Run) -> None:
        views = run.cfg.views
        means, kept = [], []
        for rows, batch in run.chunks(f"querying victim ({views} views per image)"):
            mean, sent = prototypes(run.query, batch.to(run.device), rows, views, run.views)
            means.append(mean)
            kept.append(_kept(sent, views))
        run.targets, run.state["views"] = torch.cat(means), torch.cat(kept)

    def batch_loss(self, run: Run, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert run.targets is not None
        index = index.to(run.device)
        pick = torch.randint(run.cfg.views, (len(index),), device=run.device)
        return run.loss_fn(run.stolen(to_float(run.state["views"][index, pick])), run.targets[index])
