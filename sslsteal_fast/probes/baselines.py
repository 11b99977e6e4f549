"""Reference encoders a victim's probe accuracy is read against: untrained, and supervised on the same images.

A probe accuracy alone says little: an untrained encoder of the same architecture already reaches
some of it (random convolutional features are not useless), and a supervised encoder trained with
labels on the victim's own images bounds what that architecture can do there. A self-supervised
victim is worth stealing when it sits well above the first and not far below the second; the share
of the untrained-to-victim gap a stolen copy recovers is what it really stole.

- :func:`untrained_encoder`: the architecture at its initialisation (seeded).
- :func:`supervised_encoder`: the architecture trained with cross-entropy through a linear head on
  labelled images (Adam, per-step cosine schedule, optional augmentation); the head is dropped and
  the encoder returned, to be probed like any other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslsteal_fast.data import ImageDataset, SimCLRAugment, to_float
from sslsteal_fast.models import build_encoder
from sslsteal_fast.util.checks import ArgumentTypeError, check_int, check_number, check_positive_int
from sslsteal_fast.util.progress import progress_bar
from sslsteal_fast.util.seeding import derive_seed

__all__ = ["supervised_encoder", "untrained_encoder"]


def untrained_encoder(arch: str, in_channels: int = 3, *, seed: int = 0) -> nn.Module:
    """A freshly initialised encoder (eval mode), seeded apart from any victim or thief of the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "untrained-floor"))
        return build_encoder(arch, in_channels).eval()


def supervised_encoder(
    arch: str,
    data: ImageDataset,
    *,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    augment: SimCLRAugment | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> nn.Module:
    """Train ``arch`` with labels on ``data`` (cross-entropy through a linear head); returns the encoder.

    ``augment`` (e.g. the victim's own view generator) is applied to every batch; None trains on the
    images as they are. The result is a pure function of the arguments on one machine.
    """
    if not isinstance(data, ImageDataset):
        raise ArgumentTypeError(f"supervised_encoder: data must be an ImageDataset, got {type(data).__name__}")
    if bool((data.labels < 0).any()):
        raise ValueError(f"supervised_encoder: dataset {data.name!r} has unlabeled rows")
    check_positive_int("supervised_encoder: epochs", epochs)
    check_int("supervised_encoder: batch_size", batch_size, low=2)
    check_number("supervised_encoder: lr", lr, low=0.0, strict=True)
    check_number("supervised_encoder: weight_decay", weight_decay, low=0.0)
    device = torch.device(device)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "supervised-init"))
        encoder = build_encoder(arch, int(data.images.shape[1]))
        model = nn.Sequential(encoder, nn.Linear(encoder.rep_dim, data.num_classes)).to(device)
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        n = len(data)
        batch = min(batch_size, n)
        steps = n // batch
        total = epochs * steps
        images, labels = data.images.to(device), data.labels.to(device)
        generator = torch.Generator().manual_seed(derive_seed(seed, "supervised-order"))
        model.train()
        for epoch in progress_bar(range(epochs), desc="supervised", unit="epoch", disable=not progress):
            torch.manual_seed(derive_seed(seed, f"supervised-views-{epoch}"))
            order = torch.randperm(n, generator=generator).to(device)
            for i in range(steps):
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * (epoch * steps + i) / total))
                idx = order[i * batch : (i + 1) * batch]
                x = to_float(images[idx])
                if augment is not None:
                    x = augment(x)
                if device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return encoder.eval()
