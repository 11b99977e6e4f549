"""Encoders (CIFAR-style ResNet-18/34/50 and a small CPU-friendly CNN), SimCLR heads and checkpoints.

>>> enc = build_encoder("resnet18")            # (B, 3, H, W) float in [0, 1] -> (B, 512)
>>> model = SimCLRModel(enc, proj_dim=128)     # forward -> (rep (B, 512), proj (B, 128))
>>> save_checkpoint("victim", model, {"dataset": "shapes", "seed": 0})   # victim.safetensors + victim.json
"""

from __future__ import annotations

from sslsteal_fast.models.checkpoint import build_from_metadata, checkpoint_paths, load_checkpoint, save_checkpoint
from sslsteal_fast.models.encoders import (
    ARCHITECTURES,
    REP_DIMS,
    BasicBlock,
    Bottleneck,
    CifarResNet,
    SmallEncoder,
    build_encoder,
)
from sslsteal_fast.models.simclr import ProjectionHead, SimCLRModel

__all__ = [
    "ARCHITECTURES",
    "REP_DIMS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ProjectionHead",
    "SimCLRModel",
    "SmallEncoder",
    "build_encoder",
    "build_from_metadata",
    "checkpoint_paths",
    "load_checkpoint",
    "save_checkpoint",
]
