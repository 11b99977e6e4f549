"""Probes: linear probe on separable / random labels, kNN vs brute force, eval mode, fidelity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslsteal_fast.data import ImageDataset
from sslsteal_fast.probes import (
    EncoderFeatures,
    ProbeConfig,
    evaluate_encoder,
    extract_features,
    fidelity,
    knn_probe,
    linear_probe,
    probe_encoder,
    probe_features,
)


@pytest.fixture(autouse=True)
def _one_thread_and_rng():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)
    torch.set_num_threads(threads)


def _separable(n: int, d: int = 20, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels = argmax of a fixed linear map, with a margin: linearly separable by construction."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, c, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, d, generator=g) * 3.0 + 7.0  # off-centre and scaled: standardisation matters
    scores = (x - 7.0) @ w
    top2 = scores.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 0.5
    return x[keep], scores[keep].argmax(1)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_linear_probe_separates_separable_data(optimizer: str) -> None:
    xtr, ytr = _separable(2000)
    xte, yte = _separable(1000, seed=1)
    batch = 256 if optimizer == "adam" else None
    res = linear_probe(xtr, ytr, xte, yte, 5, optimizer=optimizer, epochs=100, batch_size=batch)
    assert res.top1 >= 0.97
    assert res.top5 == 1.0  # five classes: top-5 covers all
    assert res.predictions.shape == (len(yte),) and res.predictions.dtype == torch.int64


def test_linear_probe_is_at_chance_on_random_labels() -> None:
    g = torch.Generator().manual_seed(0)
    c = 10
    xtr, xte = torch.randn(1000, 32, generator=g), torch.randn(2000, 32, generator=g)
    ytr, yte = torch.randint(0, c, (1000,), generator=g), torch.randint(0, c, (2000,), generator=g)
    res = linear_probe(xtr, ytr, xte, yte, c)
    # Chance is 0.1; 3 binomial standard deviations at n = 2000 is ~0.02.
    assert abs(res.top1 - 0.1) < 0.03
    assert abs(res.top5 - 0.5) < 0.05


def test_linear_probe_deterministic_and_handles_constant_features() -> None:
    xtr, ytr = _separable(500)
    xtr = torch.cat([xtr, torch.zeros(len(xtr), 3)], 1)  # dead ReLU channels
    a = linear_probe(xtr, ytr, xtr, ytr, 5)
    b = linear_probe(xtr, ytr, xtr, ytr, 5)
    assert a.top1 == b.top1 and torch.equal(a.predictions, b.predictions)
    assert math.isfinite(a.top1) and a.top1 > 0.95


def _brute_knn(xtr, ytr, xte, c, k, tau):
    """Full similarity matrix in float64, neighbours by (similarity desc, index asc), weights exp(s / tau)."""
    a = xtr.double() / xtr.double().norm(dim=1, keepdim=True)
    b = xte.double() / xte.double().norm(dim=1, keepdim=True)
    sim = b @ a.T
    preds, scores = [], []
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: (-float(sim[i, j]), j))[:k]
        votes = torch.zeros(c, dtype=torch.float64)
        for j in order:
            votes[ytr[j]] += math.exp(float(sim[i, j]) / tau)
        scores.append(votes)
        preds.append(int(votes.argmax()))
    return torch.tensor(preds), torch.stack(scores)


@pytest.mark.parametrize("k, tau", [(1, 0.07), (7, 0.07), (25, 0.5), (200, 0.07)])
def test_knn_matches_brute_force(k: int, tau: float) -> None:
    g = torch.Generator().manual_seed(k)
    c = 6
    xtr, xte = torch.randn(120, 8, generator=g), torch.randn(40, 8, generator=g)
    ytr, yte = torch.randint(0, c, (120,), generator=g), torch.randint(0, c, (40,), generator=g)
    res = knn_probe(xtr, ytr, xte, yte, c, k=k, temperature=tau, chunk=16)
    pred, scores = _brute_knn(xtr, ytr, xte, c, min(k, 120), tau)
    assert torch.equal(res.predictions, pred)
    assert res.top1 == pytest.approx(float((pred == yte).float().mean()))
    top5 = (scores.topk(5, dim=1).indices == yte[:, None]).any(1).float().mean()
    assert res.top5 == pytest.approx(float(top5))


def test_knn_separates_clusters_and_clips_k() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g)
    ytr, yte = torch.arange(300) % 5, torch.arange(100) % 5
    xtr = centres[ytr] + 0.2 * torch.randn(300, 16, generator=g)
    xte = centres[yte] + 0.2 * torch.randn(100, 16, generator=g)
    assert knn_probe(xtr, ytr, xte, yte, 5, k=200).top1 > 0.95
    small = knn_probe(xtr[:10], ytr[:10], xte, yte, 5, k=200)  # k clipped to the 10 training rows
    assert small.top1 > 0.95


class _BNEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.rep_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.conv(x)).mean((2, 3)))


def test_extract_features_respects_eval_mode() -> None:
    enc = _BNEncoder()
    enc.bn.running_mean.fill_(0.3)
    enc.train()
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    feats = extract_features(enc, images, batch_size=3)
    for key, value in enc.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=f"{key} changed by probing")
    assert enc.training  # mode restored
    enc.eval()
    with torch.no_grad():
        expected = enc(images.float() / 255)
    torch.testing.assert_close(feats, expected)
    # Batch composition does not matter in eval mode.
    torch.testing.assert_close(extract_features(enc, images, batch_size=10), feats)


def test_extract_features_takes_the_representation_of_a_pair() -> None:
    class Pair(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.mean((1, 2, 3))[:, None]

    out = extract_features(Pair(), torch.rand(5, 3, 4, 4))
    assert out.shape == (5, 3)


def test_fidelity_values_and_errors() -> None:
    v = torch.randn(50, 8, dtype=torch.float64)
    same = fidelity(v.clone(), v, torch.zeros(50, dtype=torch.long), torch.zeros(50, dtype=torch.long))
    assert same.cosine == pytest.approx(1.0) and same.l2 == pytest.approx(0.0) and same.agreement == 1.0
    shifted = fidelity(v + torch.tensor([3.0, 4.0] + [0.0] * 6, dtype=torch.float64), v)
    assert shifted.l2 == pytest.approx(5.0) and shifted.agreement is None
    assert fidelity(-v, v).cosine == pytest.approx(-1.0)
    half = fidelity(v, v, torch.arange(50) % 2, torch.zeros(50, dtype=torch.long))
    assert half.agreement == 0.5
    with pytest.raises(ValueError, match="only defined when the stolen model outputs the victim's dimension"):
        fidelity(torch.randn(5, 4), torch.randn(5, 6))
    with pytest.raises(ValueError, match="both stolen_pred and victim_pred"):
        fidelity(v, v, torch.zeros(50, dtype=torch.long))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y: linear_probe(x, y, x, y, 1), "num_classes must be an int >= 2"),
        (lambda x, y: linear_probe(x, y, x[:, :3], y, 5), "test_x has 3 features but train_x has 20"),
        (lambda x, y: linear_probe(x, y - 10, x, y, 5), "labels outside"),
        (lambda x, y: linear_probe(x, y, x, y, 5, optimizer="sgd"), "unknown optimizer 'sgd'; choose one of"),
        (lambda x, y: knn_probe(x, y, x, y, 5, k=0), "k must be an int >= 1"),
        (lambda x, y: knn_probe(x, y, x, y, 5, temperature=0.0), "temperature must be"),
        (lambda x, y: knn_probe(x, y[:-1], x, y, 5), "one label per row"),
    ],
)
def test_bad_probe_arguments(call, match: str) -> None:
    x, y = _separable(100)
    with pytest.raises(ValueError, match=match):
        call(x, y)


def _dataset(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randint(0, 60, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    images[:, 0] += (labels * 90).to(torch.uint8)[:, None, None]  # class = red level
    return ImageDataset(images, labels, 3, f"toy{seed}")


def test_evaluate_encoder_end_to_end() -> None:
    torch.manual_seed(0)
    enc = _BNEncoder().eval()
    train, test = _dataset(200, 0), _dataset(100, 1)
    alone = evaluate_encoder(enc, train, test)
    assert {"probe_top1", "probe_top5", "knn_top1", "knn_top5", "rep_dim"} <= alone.keys()
    assert alone["probe_top1"] > 0.9 and alone["rep_dim"] == 4
    ref = probe_encoder(enc, train, test)
    assert isinstance(ref, EncoderFeatures)
    vs_self = evaluate_encoder(enc, train, test, victim=ref)
    assert vs_self["fidelity_cosine"] == pytest.approx(1.0) and vs_self["agreement"] == 1.0
    other = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    mismatched = evaluate_encoder(other, train, test, victim=enc)
    assert mismatched["fidelity_cosine"] is None and 0.0 <= mismatched["agreement"] <= 1.0
    with pytest.raises(ValueError, match="classes"):
        evaluate_encoder(enc, train, ImageDataset(test.images, test.labels, 4, "x"))


def test_probe_features_takes_a_probe_config() -> None:
    x, y = _separable(40)
    with pytest.raises(TypeError, match="config must be a ProbeConfig"):
        probe_features(x, y, x, y, 5, {"epochs": 3})  # type: ignore[arg-type]
    scores = probe_features(x, y, x, y, 5, ProbeConfig(epochs=20, knn_k=5))
    assert scores.as_dict()["probe_top1"] == scores.linear.top1 and 0.0 <= scores.knn.top1 <= 1.0


@pytest.mark.parametrize("where", ["train", "test"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(where: str, bad: float) -> None:
    # A diverged encoder's features: the kNN vote would turn NaN and the linear probe score garbage.
    x = {"train": torch.randn(40, 8), "test": torch.randn(20, 8)}
    y = {"train": torch.arange(40) % 4, "test": torch.arange(20) % 4}
    x[where][3, 5] = bad
    with pytest.raises(ValueError, match=f"1 of the {len(x[where])} {where} feature rows are NaN or infinite"):
        probe_features(x["train"], y["train"], x["test"], y["test"], 4, ProbeConfig(epochs=5))
