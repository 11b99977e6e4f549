"""Augmented views that are a function of the image's index alone, so the victim's answers to them can be shared.

:func:`seeded_views` draws image ``i``'s views from a generator seeded with
``derive_seed(i, "prototype views")`` (the global RNG state is saved and restored), so the views -
and therefore a victim's answers to them - do not depend on the thief's seed, its batch order or
the budget: image ``i`` of a query set always gets the same ``views`` views. A sweep can then query
the victim once per (query set, defense, views) at its largest budget and let every prototype cell
train on a prefix of those answers, as query-once cells share theirs; a served victim's response
cache answers a repeated steal's views without running the model (it still bills them).
"""

from __future__ import annotations

import torch

from sslsteal_fast.config import StealConfig
from sslsteal_fast.data import SimCLRAugment
from sslsteal_fast.util.checks import check_positive_int
from sslsteal_fast.util.seeding import derive_seed

__all__ = ["seeded_views", "view_augment"]


def view_augment(cfg: StealConfig, size: int) -> SimCLRAugment:
    """The augmentation of a steal with ``cfg`` on ``size`` px images: its local views and the views it sends."""
    return SimCLRAugment(size, strength=cfg.augment_strength, min_scale=cfg.crop_min_scale)


def seeded_views(augment: SimCLRAugment, images: torch.Tensor, index: torch.Tensor, views: int) -> torch.Tensor:
    """``views`` augmented views of each image: float (n, C, H, W) in [0, 1] -> (n * views, C, size, size).

    Rows ``i * views ... (i + 1) * views - 1`` are image ``i``'s views, drawn with the seed of its
    query-set row ``index[i]``; the same (image, row, views, augmentation) always gives the same views.
    """
    check_positive_int("seeded_views: views", views)
    if images.dim() != 4 or index.shape != (images.shape[0],):
        raise ValueError(
            f"seeded_views: images must be (n, C, H, W) with one index each, got {tuple(images.shape)} and "
            f"{tuple(index.shape)}"
        )
    devices = [images.device.index or 0] if images.device.type == "cuda" else []
    out = []
    with torch.random.fork_rng(devices=devices):
        for image, row in zip(images, index.tolist(), strict=True):
            torch.manual_seed(derive_seed(int(row), "prototype views"))
            out.append(augment(image.unsqueeze(0).expand(views, -1, -1, -1).contiguous()))
    if not out:
        return images.new_empty(0, images.shape[1], augment.size, augment.size)
    return torch.cat(out)
