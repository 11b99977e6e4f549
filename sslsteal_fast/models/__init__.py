"""Encoders (CIFAR-style ResNet-18/34/50 and a small CPU-friendly CNN), SimCLR heads and checkpoints.

>>> enc = build_encoder("resnet18")            # (B, 3, H, W) float in [0, 1] -> (B, 512)
>>> model = SimCLRModel(enc, proj_dim=128)     # forward -> (rep (B, 512), proj (B, 128))
>>> save_checkpoint("victim", model, {"dataset": "shapes", "seed": 0})   # victim.safetensors + victim.json
>>> stolen = StolenEncoder(build_encoder("resnet18"), out_dim=2048)  # a 512-d thief + Linear(512, 2048) head
"""

from __future__ import annotations

from sslsteal_fast.models.checkpoint import (
    build_from_metadata,
    check_metadata,
    checkpoint_metadata,
    checkpoint_paths,
    load_checkpoint,
    save_checkpoint,
)
from sslsteal_fast.models.encoders import (
    ARCHITECTURES,
    REP_DIMS,
    BasicBlock,
    Bottleneck,
    CifarResNet,
    SmallEncoder,
    StolenEncoder,
    build_encoder,
    is_builtin_encoder,
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
    "StolenEncoder",
    "build_encoder",
    "build_from_metadata",
    "check_metadata",
    "checkpoint_metadata",
    "checkpoint_paths",
    "is_builtin_encoder",
    "load_checkpoint",
    "save_checkpoint",
]
