"""The reference encoders a victim is read against: untrained (seeded apart) and supervised."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.data import ImageDataset, load_dataset
from sslsteal_fast.models import build_encoder
from sslsteal_fast.probes import probe_encoder, supervised_encoder, untrained_encoder


def test_untrained_encoder_is_seeded_apart_from_a_victims_init() -> None:
    a, b = untrained_encoder("small"), untrained_encoder("small")
    torch.manual_seed(0)
    victim_init = build_encoder("small")
    key = "features.0.0.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key]) and not a.training
    assert not torch.equal(a.state_dict()[key], victim_init.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], untrained_encoder("small", seed=1).state_dict()[key])


def test_supervised_encoder_learns_the_labels() -> None:
    train = load_dataset("shapes", "train", size=16, count=1000, seed=5)
    test = load_dataset("shapes", "test", size=16, count=300)
    untrained = probe_encoder(untrained_encoder("small"), train, test).linear.top1
    sup = supervised_encoder("small", train, epochs=15, batch_size=64)
    assert not sup.training
    assert probe_encoder(sup, train, test).linear.top1 > untrained + 0.05  # 1000 images: ~30% against ~20%
    again = supervised_encoder("small", train, epochs=1, batch_size=64)
    same = supervised_encoder("small", train, epochs=1, batch_size=64)
    assert all(torch.equal(x, y) for x, y in zip(again.state_dict().values(), same.state_dict().values(), strict=True))


def test_supervised_encoder_refuses_bad_input() -> None:
    ds = load_dataset("shapes", "train", size=12, count=20)
    unlabeled = ImageDataset(ds.images, torch.full_like(ds.labels, -1), ds.num_classes, "x")
    with pytest.raises(ValueError, match="unlabeled"):
        supervised_encoder("small", unlabeled, epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        supervised_encoder("small", ds, epochs=0)
    with pytest.raises(TypeError, match="ImageDataset"):
        supervised_encoder("small", ds.images, epochs=1)
