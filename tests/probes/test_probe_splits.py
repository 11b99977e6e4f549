"""A probe refuses train and test sets that share an image (by content), in every entry point."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslsteal_fast.data import ImageDataset, load_dataset
from sslsteal_fast.probes import check_disjoint, evaluate_encoder, probe_encoder


def _toy(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.randint(0, 3, (n,), generator=g), 3, f"toy{seed}")


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_a_probe_fitted_on_its_test_set_is_refused() -> None:
    # The leak this guards against: `digits` named for both sets, both read from the train split.
    train = load_dataset("digits", "train", size=8)
    with pytest.raises(ValueError, match=r"train set 'digits' and test set 'digits' share 1437 of the test set's 1437"):
        evaluate_encoder(_encoder(), train, load_dataset("digits", "train", size=8))
    assert 0.0 <= evaluate_encoder(_encoder(), train, load_dataset("digits", "test", size=8))["probe_top1"] <= 1.0


def test_overlap_is_found_by_content_not_by_name() -> None:
    train, other = _toy(40, 0), _toy(30, 1)
    # A "test set" of another name and label set-up that holds 5 training images among 30.
    mixed = ImageDataset(
        torch.cat([other.images[:25], train.images[10:15]]), torch.cat([other.labels[:25], train.labels[10:15]]), 3, "x"
    )
    for call in (probe_encoder, evaluate_encoder):
        with pytest.raises(ValueError, match=r"'toy0' and test set 'x' share 5 of the test set's 30 images"):
            call(_encoder(), train, mixed)
    with pytest.raises(ValueError, match="train set A and test set B share 5"):
        check_disjoint(train.images, mixed.images, train_name="A", test_name="B")
    check_disjoint(train, other)  # disjoint: fine
    check_disjoint(train.images, other.images[:, :1])  # other shapes cannot be the same image


def test_empty_sets_share_nothing() -> None:
    empty = torch.zeros(0, 3, 4, 4, dtype=torch.uint8)
    check_disjoint(empty, empty)
    check_disjoint(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), empty)
