"""Encoders: CIFAR-style ResNets (as in the paper) and a small, fast CNN for CPU defaults.

Every encoder maps float images (B, C, H, W) in [0, 1] to representations (B, rep_dim) and carries
``arch``, ``in_channels`` and ``rep_dim`` attributes, which :func:`save_checkpoint` records.
Only Conv / BatchNorm / ReLU / Add / GlobalAveragePool / Flatten are used, so every encoder exports
to ONNX (opset >= 17) with a dynamic batch dimension and any spatial size.

:class:`StolenEncoder` is what an attack trains: any encoder plus, when its dimension is not the
victim's, a linear head into the victim's space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sslsteal_fast.config import ARCHITECTURES, REP_DIMS
from sslsteal_fast.util.checks import ArgumentTypeError, check_choice, check_positive_int

__all__ = [
    "ARCHITECTURES",
    "REP_DIMS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "SmallEncoder",
    "StolenEncoder",
    "build_encoder",
    "is_builtin_encoder",
]


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallEncoder(nn.Module):
    """Four 3x3 conv-BN-ReLU layers (strides 1, 2, 2, 2) and global average pooling.

    Widths 32/64/128/256, so ``rep_dim = 256``; about 0.4 M parameters and ~15 M multiply-adds per
    32x32 image (a ResNet-18 needs ~560 M), which lets a SimCLR victim train in seconds per epoch on
    two CPU cores. Input (B, C, H, W) -> (B, 256); representations are non-negative (post-ReLU).
    """

    arch = "small"

    def __init__(self, in_channels: int = 3, widths: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.rep_dim = widths[-1]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(widths):
            layers.append(_conv_bn_relu(c_in, width, stride=1 if i == 0 else 2))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, rep_dim)."""
        return torch.flatten(self.pool(self.features(x)), 1)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The residual branch: identity, or a strided 1x1 conv + BN where the shape changes."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34). (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs, 4x expansion, residual (ResNet-50). (B, c_in, H, W) -> (B, 4*planes, H/s, W/s)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


_RESNET_LAYOUTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class CifarResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem, no max-pool, stages 64/128/256/512 (strides 1, 2, 2, 2).

    Global average pooling gives the representation: 512-d (ResNet-18/34) or 2048-d (ResNet-50).
    Input (B, C, H, W) float -> (B, rep_dim). No classifier layer: this is the encoder only.
    """

    def __init__(self, arch: str, in_channels: int = 3) -> None:
        super().__init__()
        check_choice("ResNet", arch, tuple(_RESNET_LAYOUTS))
        block, depths = _RESNET_LAYOUTS[arch]
        self.arch = arch
        self.in_channels = in_channels
        self.stem = _conv_bn_relu(in_channels, 64, stride=1)
        c_in = 64
        stages: list[nn.Module] = []
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                blocks.append(block(c_in, planes, stride=2 if (i > 0 and j == 0) else 1))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.rep_dim = c_in
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, rep_dim)."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_encoder(arch: str, in_channels: int = 3) -> nn.Module:
    """Build an encoder by name (one of :data:`ARCHITECTURES`); it has ``.arch``, ``.in_channels``, ``.rep_dim``.

    Weights are freshly initialised from the current torch RNG (seed it for reproducibility).
    """
    check_positive_int("in_channels", in_channels)
    check_choice("architecture", arch, ARCHITECTURES)
    return SmallEncoder(in_channels) if arch == "small" else CifarResNet(arch, in_channels)


def is_builtin_encoder(module: nn.Module) -> bool:
    """Whether ``module`` is an encoder :func:`build_encoder` makes (so its name and channels rebuild it)."""
    if not isinstance(module, (SmallEncoder, CifarResNet)) or module.arch not in ARCHITECTURES:
        return False
    return module.rep_dim == REP_DIMS[module.arch]


class StolenEncoder(nn.Module):
    """A stolen model: any encoder plus, when its dimension is not the victim's, a linear head.

    ``forward`` (B, C, H, W) float in [0, 1] -> (B, out_dim), in the victim's space. When the encoder's
    dimension ``backbone_dim`` equals ``out_dim`` there is no head and this is the encoder itself;
    otherwise ``adapter = Linear(backbone_dim, out_dim)`` maps to the victim's dimension (as the
    reference code's replaced ``fc`` layer does, e.g. a 512-d ResNet-18 thief of a 2048-d ResNet-50).

    Attributes:
        encoder: the thief without the head: (B, C, H, W) -> (B, backbone_dim).
        adapter: the ``nn.Linear`` head, or None.
        arch: the encoder's ``arch`` (its class name when it has none).
        in_channels: image channels the encoder takes.
        backbone_dim: the encoder's output dimension.
        rep_dim: ``out_dim``, the dimension of the returned representation.
        provenance: JSON-serialisable facts about how it was stolen (victim, loss, budget, query set,
            bills; filled by :func:`sslsteal_fast.attacks.steal`); :func:`save_checkpoint` records them
            under the ``"steal"`` key and :func:`load_checkpoint` restores them.

    Args:
        encoder: any module mapping (B, C, H, W) to (B, backbone_dim).
        out_dim: the victim's dimension.
        backbone_dim: the encoder's output dimension; None reads ``encoder.rep_dim``.
        in_channels: None reads ``encoder.in_channels`` (3 if it has none).
    """

    def __init__(
        self, encoder: nn.Module, out_dim: int, *, backbone_dim: int | None = None, in_channels: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise ArgumentTypeError(f"StolenEncoder: encoder must be an nn.Module, got {type(encoder).__name__}")
        if backbone_dim is None:
            backbone_dim = getattr(encoder, "rep_dim", None)
            if not isinstance(backbone_dim, int):
                raise ValueError(
                    "StolenEncoder: the encoder has no int attribute rep_dim; pass backbone_dim (its output dimension)"
                )
        check_positive_int("StolenEncoder: backbone_dim", backbone_dim)
        check_positive_int("StolenEncoder: out_dim", out_dim)
        channels = in_channels if in_channels is not None else getattr(encoder, "in_channels", 3)
        self.encoder = encoder
        self.adapter: nn.Linear | None = nn.Linear(backbone_dim, out_dim) if backbone_dim != out_dim else None
        self.arch: str = str(getattr(encoder, "arch", type(encoder).__name__))
        self.in_channels = check_positive_int("StolenEncoder: in_channels", channels)
        self.backbone_dim = backbone_dim
        self.rep_dim = out_dim
        self.provenance: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, rep_dim)."""
        h = self.encoder(x)
        return h if self.adapter is None else self.adapter(h)
