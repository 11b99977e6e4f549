"""SimCLRAugment: shapes, value range, device, randomness per image, reproducibility."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.data import SimCLRAugment, blur_kernel_size, load_dataset, to_float
from sslsteal_fast.testing import F32_ATOL


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_range_device(device: str, channels: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(16, channels, 20, 20, device=device)
    y = SimCLRAugment(12)(x)
    assert y.shape == (16, channels, 12, 12) and y.device == x.device and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_views_differ_per_image_and_are_seeded() -> None:
    x = to_float(load_dataset("shapes", count=8, seed=0).images)
    aug = SimCLRAugment(32)
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    b = aug(x)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)
    # Same input image repeated: views still differ (independent parameters per row).
    same = aug(x[:1].expand(4, -1, -1, -1).contiguous())
    assert (same[0] - same[1]).abs().max() > 0.05


def test_strength_zero_and_no_blur_keeps_colours() -> None:
    torch.manual_seed(0)
    x = torch.full((64, 3, 8, 8), 0.25)
    x[:, 0] = 0.75
    y = SimCLRAugment(8, strength=0.0, blur=False)(x)
    # Crops and flips of a constant image are that image; only grayscale (p 0.2) changes colours.
    grey = (y[:, 0] - y[:, 1]).abs().amax((1, 2)) < 1e-5
    assert 0 < int(grey.sum()) < 40
    assert torch.allclose(y[~grey], x[~grey], atol=F32_ATOL)


def test_blur_kernel_and_errors() -> None:
    assert [blur_kernel_size(s) for s in (8, 32, 64, 96)] == [3, 3, 7, 9]
    aug = SimCLRAugment(8)
    assert aug(torch.rand(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="float images"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        aug(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="strength"):
        SimCLRAugment(8, strength=2.0)
    with pytest.raises(ValueError, match="min_scale"):
        SimCLRAugment(8, min_scale=0.0)


def test_pose_augmentation_moves_content_and_is_off_by_default() -> None:
    """rotation / translate / min_zoom add one affine step; the paper's pipeline is unchanged without them."""
    x = torch.zeros(64, 3, 16, 16)
    x[:, :, 2:6, 2:6] = 1.0  # a bright square in the top-left corner
    plain = SimCLRAugment(16, min_scale=1.0, strength=0.0, blur=False, grayscale_p=0.0)
    posed = SimCLRAugment(16, min_scale=1.0, strength=0.0, blur=False, grayscale_p=0.0, rotation=180, translate=0.2)
    assert "RandomAffine" not in repr(plain._pipeline(3)) and "RandomAffine" in repr(posed._pipeline(3))
    torch.manual_seed(0)
    centre_plain = _centre_of_mass(plain(x))
    torch.manual_seed(0)
    centre_posed = _centre_of_mass(posed(x))
    # Without the affine step the square stays in its corner (flips move it to the other top corner).
    assert (centre_plain[:, 0] < 5).all()
    assert (centre_posed[:, 0] > 8).float().mean() > 0.25  # rotated and shifted: often in the bottom half


def _centre_of_mass(v: torch.Tensor) -> torch.Tensor:
    w = v.mean(1)
    rows = torch.arange(16.0)[None, :, None]
    cols = torch.arange(16.0)[None, None, :]
    mass = w.sum((1, 2))
    return torch.stack([(w * rows).sum((1, 2)) / mass, (w * cols).sum((1, 2)) / mass], 1)


@pytest.mark.parametrize(
    "kwargs", [{"rotation": -1}, {"rotation": 181}, {"translate": 1.5}, {"min_zoom": 0.0}, {"grayscale_p": 2}]
)
def test_bad_pose_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="SimCLRAugment"):
        SimCLRAugment(16, **kwargs)
