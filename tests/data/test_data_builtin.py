"""Built-in datasets (digits, shapes, shapes-ood), the ImageDataset container and image helpers."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.data import (
    SHAPE_CLASSES,
    ImageDataset,
    convert_channels,
    load_dataset,
    resize_images,
    to_float,
    to_uint8,
)


def test_digits_split_is_fixed_and_disjoint() -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (3, 32, 32) and train.num_classes == 10
    assert torch.bincount(test.labels).min() >= 35  # stratified
    raw_train = load_dataset("digits", "train", size=8, channels=1)
    raw_test = load_dataset("digits", "test", size=8, channels=1)
    assert raw_train.images.shape[1:] == (1, 8, 8)
    assert int(raw_train.images.max()) == 255
    train_rows = {bytes(r) for r in raw_train.images.flatten(1).numpy()}
    overlap = sum(bytes(r) in train_rows for r in raw_test.images.flatten(1).numpy())
    assert overlap < 5  # only exact duplicates that exist in the source data itself
    assert torch.equal(load_dataset("digits", "train").images, train.images)


def test_shapes_deterministic_by_seed() -> None:
    a = load_dataset("shapes", "train", count=40, seed=3)
    b = load_dataset("shapes", "train", count=40, seed=3)
    c = load_dataset("shapes", "train", count=40, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    test = load_dataset("shapes", "test", count=40, seed=3)
    assert not torch.equal(a.images, test.images)  # disjoint seed streams per split


def test_shapes_format_and_balance() -> None:
    ds = load_dataset("shapes", "train", count=100, size=24)
    assert ds.images.shape == (100, 3, 24, 24) and ds.images.dtype == torch.uint8
    assert ds.num_classes == len(SHAPE_CLASSES) == 10 and ds.name == "shapes"
    assert torch.bincount(ds.labels, minlength=10).tolist() == [10] * 10
    grey = load_dataset("shapes-ood", "test", count=10, size=16, channels=1)
    assert grey.images.shape == (10, 1, 16, 16)


def test_shapes_default_counts() -> None:
    assert len(load_dataset("shapes", "test")) == 1000


def test_shapes_classes_are_visible() -> None:
    """Each image differs from its own background: the shape is actually drawn (not clipped away)."""
    ds = load_dataset("shapes", "train", count=200, seed=1)
    x = to_float(ds.images)
    centre = x[:, :, 8:24, 8:24].flatten(1).std(1)
    assert (centre > 0.05).float().mean() > 0.95


def test_shapes_vs_ood_differ_in_distribution() -> None:
    iid = to_float(load_dataset("shapes", "train", count=300).images)
    ood = to_float(load_dataset("shapes-ood", "train", count=300).images)
    # Brightness: light backgrounds vs dark ones.
    assert iid.mean() - ood.mean() > 0.2

    # Texture: high-frequency energy (neighbour differences) is larger in the shifted domain.
    def hf(x: torch.Tensor) -> torch.Tensor:
        return (x[..., 1:] - x[..., :-1]).abs().mean() / x.std()

    assert hf(ood) > 1.3 * hf(iid)
    # Per-image statistics separate the domains almost perfectly.
    assert (iid.mean((1, 2, 3)) > 0.4).float().mean() > 0.9
    assert (ood.mean((1, 2, 3)) < 0.4).float().mean() > 0.9


def test_image_dataset_validation_and_subset() -> None:
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    ds = ImageDataset(images, torch.arange(4), 4, "toy")
    sub = ds.subset(torch.tensor([3, 1]))
    assert sub.labels.tolist() == [3, 1] and sub.name == "toy" and len(ds.subset(slice(0, 2))) == 2
    assert ds.image_shape == (3, 2, 2)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(images.float(), torch.arange(4), 4, "toy")
    with pytest.raises(ValueError, match="int64"):
        ImageDataset(images, torch.arange(4, dtype=torch.int32), 4, "toy")
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        ImageDataset(images, torch.arange(3), 4, "toy")


def test_float_uint8_helpers() -> None:
    x = torch.tensor([0, 128, 255], dtype=torch.uint8)
    f = to_float(x)
    assert f.dtype == torch.float32 and f[0] == 0 and f[2] == 1
    assert torch.equal(to_uint8(f), x)
    assert to_uint8(torch.tensor([-1.0, 2.0])).tolist() == [0, 255]
    with pytest.raises(ValueError, match="uint8 or floating"):
        to_float(torch.tensor([1, 2]))
    img = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    assert resize_images(img, 5).shape == (2, 3, 5, 5) and resize_images(img, 10) is img
    grey = convert_channels(img, 1)
    assert grey.shape == (2, 1, 10, 10)
    assert torch.equal(convert_channels(grey, 3)[:, 1], grey[:, 0])
