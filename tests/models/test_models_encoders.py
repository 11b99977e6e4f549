"""Encoder architectures: output shapes, rep_dim, CIFAR-style stem, projection head, SimCLR model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslsteal_fast.models import ARCHITECTURES, REP_DIMS, ProjectionHead, SimCLRModel, build_encoder


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_and_rep_dim(arch: str, in_channels: int) -> None:
    torch.manual_seed(0)
    enc = build_encoder(arch, in_channels).eval()
    assert enc.arch == arch and enc.in_channels == in_channels
    assert enc.rep_dim == REP_DIMS[arch]
    with torch.no_grad():
        out = enc(torch.rand(2, in_channels, 16, 16))
    assert out.shape == (2, REP_DIMS[arch])
    assert torch.isfinite(out).all() and (out >= 0).all()  # pooled post-ReLU features


def test_rep_dims_match_the_paper() -> None:
    assert REP_DIMS == {"small": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_cifar_stem_keeps_resolution(arch: str) -> None:
    """3x3 stride-1 stem and no max-pool: the first stage runs at the input resolution."""
    enc = build_encoder(arch)
    stem_conv = enc.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in enc.modules())
    with torch.no_grad():
        feat = enc.layer1(enc.stem(torch.rand(1, 3, 8, 8)))
    assert feat.shape[-2:] == (8, 8)


def test_param_counts_are_the_standard_ones() -> None:
    counts = {a: sum(p.numel() for p in build_encoder(a).parameters()) for a in ("resnet18", "resnet34")}
    # CIFAR ResNet-18/34 without the final classifier (kuangliu/pytorch-cifar layout).
    assert counts == {"resnet18": 11_168_832, "resnet34": 21_276_992}


def test_build_encoder_errors() -> None:
    with pytest.raises(ValueError, match="choose one of: small, resnet18, resnet34, resnet50"):
        build_encoder("vit")
    with pytest.raises(ValueError, match="in_channels"):
        build_encoder("small", 0)


def test_projection_head_and_simclr_model() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4)
    assert head(torch.rand(5, 8)).shape == (5, 4)
    with pytest.raises(ValueError, match="hidden_dim"):
        ProjectionHead(8, 0, 4)
    model = SimCLRModel(build_encoder("small"), proj_dim=32)
    assert (model.rep_dim, model.proj_dim, model.head.hidden_dim) == (256, 32, 256)
    rep, proj = model(torch.rand(3, 3, 12, 12))
    assert rep.shape == (3, 256) and proj.shape == (3, 32)
    with pytest.raises(ValueError, match="rep_dim"):
        SimCLRModel(nn.Linear(3, 3))


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = build_encoder("small")
    torch.manual_seed(3)
    b = build_encoder("small")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
