"""Frozen-encoder features: eval mode (BatchNorm uses running statistics), no gradients, batched."""

from __future__ import annotations

import torch
from torch import nn

from sslsteal_fast.data import to_float
from sslsteal_fast.util.checks import check_positive_int
from sslsteal_fast.util.progress import progress_bar
from sslsteal_fast.victim import Victim, query_victim
from sslsteal_fast.victim.train import resolve_device

__all__ = ["extract_features"]


def extract_features(
    encoder: nn.Module | Victim,
    images: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    *,
    progress: bool = False,
) -> torch.Tensor:
    """Representations of ``images`` (N, C, H, W) (uint8, or float in [0, 1]) -> float32 (N, D) on the CPU.

    An ``nn.Module`` is run in eval mode under ``torch.no_grad`` - BatchNorm normalises with its running
    statistics and never updates them - and its previous train/eval mode is restored afterwards. A model
    returning a tuple (``SimCLRModel``: ``(rep, proj)``) contributes its first element, the representation.
    ``device`` None runs on the device of the module's parameters; otherwise (``"auto"``, ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, a torch.device) the module is moved there.

    A :class:`~sslsteal_fast.victim.Victim` (e.g. ``OnnxVictim``) is queried through its API, so
    every row is billed: probe a victim through an instance without a budget.
    """
    check_positive_int("extract_features: batch_size", batch_size)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"extract_features: images must be (N, C, H, W), got {tuple(getattr(images, 'shape', ()))}")
    if not isinstance(encoder, nn.Module):
        if not callable(getattr(encoder, "query", None)):
            raise TypeError(
                f"extract_features: expected an nn.Module or a victim with .query, got {type(encoder).__name__}"
            )
        return query_victim(encoder, images, batch_size, progress=progress)

    if device is None:
        param = next(encoder.parameters(), None)
        run_on = param.device if param is not None else torch.device("cpu")
    else:
        run_on = resolve_device(device)
        encoder.to(run_on)
    was_training = encoder.training
    encoder.eval()
    outs: list[torch.Tensor] = []
    starts = progress_bar(
        range(0, images.shape[0], batch_size), desc="features", unit="batch", leave=False, disable=not progress
    )
    try:
        with torch.no_grad():
            for start in starts:
                out = encoder(to_float(images[start : start + batch_size].to(run_on)))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                outs.append(out.float().cpu())
    finally:
        encoder.train(was_training)
    if not outs:
        raise ValueError("extract_features: images is empty (N = 0)")
    return torch.cat(outs)
