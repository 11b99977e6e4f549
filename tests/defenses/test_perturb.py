"""Output perturbations: keyed noise (determinism, independence, no gain from averaging), quantise, top-k, factory."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.defenses import (
    DefenseState,
    GaussianNoise,
    NoDefense,
    Quantize,
    TopKSparsify,
    make_defense,
    parse_spec,
)
from sslsteal_fast.victim import Defense
from tests.helpers import images_for

KEY = b"k" * 32


def test_noise_is_deterministic_per_client_and_input():
    noise = GaussianNoise(sigma=1.0, key=KEY)
    x, out = images_for(8), torch.zeros(8, 16)
    a = noise(out.clone(), x, "alice")
    assert torch.equal(a, noise(out.clone(), x, "alice"))
    # row order or batch composition does not matter: each row's noise depends only on its own input
    assert torch.equal(noise(out[:3].clone(), x[[5, 0, 2]], "alice"), a[[5, 0, 2]])
    b = noise(out.clone(), x, "bob")
    assert not torch.allclose(a, b)
    corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.3  # independent across clients
    other = GaussianNoise(sigma=1.0, key=b"q" * 32)(out.clone(), x, "alice")
    assert not torch.allclose(a, other)  # a different secret gives different noise


def test_averaging_repeated_queries_gains_nothing():
    noise = GaussianNoise(sigma=0.5, mean=0.0, key=KEY)
    x, clean = images_for(4), torch.randn(4, 32)
    answers = torch.stack([noise(clean.clone(), x, "thief") for _ in range(20)])
    single_err = (answers[0] - clean).pow(2).mean()
    averaged_err = (answers.mean(0) - clean).pow(2).mean()
    assert torch.allclose(averaged_err, single_err)
    # while independent noise (distinct clients = distinct keys) would average down
    sybils = torch.stack([noise(clean.clone(), x, f"acct{i}") for i in range(20)])
    assert (sybils.mean(0) - clean).pow(2).mean() < single_err / 5


def test_noise_statistics_and_mean():
    out = GaussianNoise(sigma=2.0, mean=5.0, key=KEY)(torch.zeros(400, 64), images_for(400), "c")
    assert abs(float(out.mean()) - 5.0) < 0.05
    assert abs(float(out.std()) - 2.0) < 0.05


def test_noise_secret_survives_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    x = images_for(3)
    a = GaussianNoise(sigma=1.0, state=str(path))(torch.zeros(3, 8), x, "c")
    b = GaussianNoise(sigma=1.0, state=DefenseState(path))(torch.zeros(3, 8), x, "c")
    assert torch.equal(a, b)


def test_quantize_and_topk():
    x = torch.tensor([[0.123, -1.987, 3.5, 0.0]])
    assert torch.allclose(Quantize(decimals=1)(x, None, "c"), torch.tensor([[0.1, -2.0, 3.5, 0.0]]))
    q = Quantize(levels=3)(x, None, "c")  # levels at min, mid, max of the row
    assert set(q.flatten().tolist()) <= {-1.987, (3.5 - 1.987) / 2, 3.5} or q.unique().numel() <= 3
    assert q.unique().numel() <= 3
    t = TopKSparsify(k=2)(x.clone(), None, "c")
    assert torch.equal(t, torch.tensor([[0.0, -1.987, 3.5, 0.0]]))
    assert torch.equal(TopKSparsify(k=10)(x, None, "c"), x)


@pytest.mark.parametrize(
    "build",
    [
        lambda: GaussianNoise(sigma=-1.0),
        lambda: GaussianNoise(sigma=float("nan")),
        lambda: GaussianNoise(sigma=1.0, mean=float("inf")),
        lambda: Quantize(),
        lambda: Quantize(decimals=2, levels=4),
        lambda: Quantize(levels=1),
        lambda: TopKSparsify(k=0),
        lambda: TopKSparsify(k=2.5),
        lambda: make_defense("noise:sigma=-3"),
        lambda: make_defense("noise:sigmaa=1"),
        lambda: make_defense("laser"),
        lambda: make_defense("noise:sigma"),
        lambda: make_defense({"sigma": 1.0}),
    ],
)
def test_bad_params_raise(build):
    with pytest.raises(ValueError):
        build()


def test_factory_parses_specs():
    assert parse_spec("noise:sigma=0.5,mean=5") == ("noise", {"sigma": 0.5, "mean": 5})
    assert parse_spec({"name": "detection", "threshold": 0.7}) == ("detection", {"threshold": 0.7})
    assert isinstance(make_defense("none"), NoDefense)
    noise = make_defense("noise:sigma=0.25", key=KEY)
    assert isinstance(noise, GaussianNoise) and noise.config.sigma == 0.25
    det = make_defense("detection:threshold=0.6,policy=refuse,feature=input")
    assert det.config.policy == "refuse" and det.config.feature == "input"
    cov = make_defense("coverage:n_bits=8,transform=false")
    assert cov.config.n_bits == 8 and cov.config.transform is False
    for spec in ("none", "noise", "quantize:decimals=2", "topk:k=4", "detection", "coverage"):
        assert isinstance(make_defense(spec), Defense)
