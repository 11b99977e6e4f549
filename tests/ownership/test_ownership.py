"""Ownership: rotation, watermark verification on a toy, GMM EM vs sklearn, Welch verdict logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from sslsteal_fast.ownership import (
    GaussianMixture,
    WatermarkHead,
    dataset_inference,
    rotate,
    rotation_task,
    verify_watermark,
    welch_verdict,
)
from sslsteal_fast.testing import EM_MONOTONE_SLACK, F32_ATOL, GMM_SCORE_ATOL


class Halves(nn.Module):
    """Toy encoder: mean brightness of the left/right/top/bottom halves (reveals orientation)."""

    rep_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = x.mean(1)
        return torch.stack(
            [
                m[:, :, : w // 2].mean((1, 2)),
                m[:, :, w // 2 :].mean((1, 2)),
                m[:, : h // 2].mean((1, 2)),
                m[:, h // 2 :].mean((1, 2)),
            ],
            1,
        )


class Blind(nn.Module):
    """Toy encoder that ignores orientation (overall brightness only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3))[:, None].repeat(1, 4)


def _oriented(n: int, seed: int) -> torch.Tensor:
    """Images with a bright band at the top (a canonical orientation)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 3, 16, 16, generator=g)
    x[:, :, 2:6, 4:12] += 0.7
    return x.clamp(0, 1)


def test_rotate_is_exact_for_full_turns():
    x = _oriented(2, 0)
    assert torch.allclose(rotate(x, torch.tensor([360.0, 0.0])), x, atol=F32_ATOL)
    twice = rotate(rotate(x, torch.tensor([90.0, 90.0])), torch.tensor([270.0, 270.0]))
    assert torch.allclose(twice[..., 4:12, 4:12], x[..., 4:12, 4:12], atol=1e-4)


def test_watermark_verification_on_toy():
    enc = Halves()
    head = WatermarkHead(4, hidden=16)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    train = _oriented(256, 1)
    for _ in range(150):
        rotated, labels = rotation_task(train, g)
        loss = nn.functional.cross_entropy(head(enc(rotated)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images = (_oriented(200, 2) * 255).to(torch.uint8)
    owned = verify_watermark(head, enc, images, seed=3)
    assert owned.accuracy > 0.8 and owned.verdict == "stolen"
    assert owned.p_value == pytest.approx(binomtest(owned.correct, owned.n, 0.5, alternative="greater").pvalue)
    blind = verify_watermark(head, Blind(), images, seed=3)
    assert blind.verdict == "independent" and blind.p_value > 0.01
    with pytest.raises(ValueError, match="head expects"):
        verify_watermark(WatermarkHead(8), enc, images)


def _blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 7.0, -2.0]])
    scales = np.array([[1.0, 0.5, 0.8], [0.6, 1.2, 0.4], [0.9, 0.9, 1.5]])
    lab = rng.integers(0, 3, n)
    return centers[lab] + scales[lab] * rng.standard_normal((n, 3))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_em_increases_likelihood_and_matches_sklearn(covariance):
    from sklearn.mixture import GaussianMixture as SkGMM

    x = _blobs(900, 0)
    ours = GaussianMixture(3, covariance, reg=1e-6, seed=0, device="cpu").fit(torch.from_numpy(x))
    diffs = np.diff(ours.history)
    assert (diffs >= -EM_MONOTONE_SLACK).all() and ours.history[-1] > ours.history[0] - EM_MONOTONE_SLACK
    sk = SkGMM(3, covariance_type=covariance, reg_covar=1e-6, random_state=0).fit(x)
    test = _blobs(300, 1)
    assert ours.score(torch.from_numpy(test)) == pytest.approx(sk.score(test), abs=GMM_SCORE_ATOL)
    assert np.allclose(
        ours.score_samples(torch.from_numpy(test[:5])).numpy(), sk.score_samples(test[:5]), atol=GMM_SCORE_ATOL * 5
    )


def test_gmm_bad_params_and_inputs():
    for kwargs in ({"n_components": 0}, {"covariance": "tied"}, {"reg": 0.0}, {"max_iter": 0}):
        with pytest.raises(ValueError):
            GaussianMixture(**kwargs)
    with pytest.raises(ValueError):
        GaussianMixture(5).fit(torch.randn(3, 2))
    with pytest.raises(ValueError):
        GaussianMixture(1).fit(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]))


def test_welch_verdict_logic():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, generator=g)
    t, p, verdict = welch_verdict(base + 0.5, torch.randn(300, generator=g))
    assert verdict == "stolen" and p < 0.01 and t > 0
    _, p, verdict = welch_verdict(base, torch.randn(300, generator=g))
    assert verdict == "independent" and p > 0.01
    _, p, verdict = welch_verdict(base - 0.5, torch.randn(300, generator=g))  # lower on private: one-sided
    assert verdict == "independent" and p > 0.5
    assert welch_verdict(torch.ones(5), torch.ones(5))[1:] == (1.0, "independent")
    with pytest.raises(ValueError):
        welch_verdict(torch.ones(1), torch.ones(5))
    with pytest.raises(ValueError):
        welch_verdict(base, base, alpha=0.0)


class Memoriser(nn.Module):
    """Toy 'overfit' encoder: maps images near memorised prototypes onto them, others elsewhere."""

    def __init__(self, protos: torch.Tensor) -> None:
        super().__init__()
        self.protos = protos.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        d = torch.cdist(flat, self.protos).min(1).values[:, None]
        return torch.cat([flat[:, :6], d.repeat(1, 2)], 1)


def test_dataset_inference_end_to_end_on_toy():
    g = torch.Generator().manual_seed(0)
    private = torch.rand(300, 1, 4, 4, generator=g)
    unseen = torch.rand(150, 1, 4, 4, generator=g)
    res = dataset_inference(Memoriser(private), private[:150], private[150:], unseen, n_components=2, pca_dim=8)
    assert res.verdict == "stolen" and res.p_value < 0.01 and res.ll_private > res.ll_unseen
    other = Memoriser(torch.rand(300, 1, 4, 4, generator=g))
    res2 = dataset_inference(other, private[:150], private[150:], unseen, n_components=2, pca_dim=8)
    assert res2.verdict == "independent" and not math.isnan(res2.p_value)


def test_view_alignment_scores_and_alignment_inference_direction() -> None:
    """Pixels as the representation: views of near-flat images agree almost perfectly, views of noise do not."""
    from sslsteal_fast.data import SimCLRAugment
    from sslsteal_fast.ownership import alignment_inference, view_alignment

    flatten = nn.Flatten()
    aug = SimCLRAugment(8, min_scale=1.0, strength=0.0, blur=False, grayscale_p=0.0, rotation=180, translate=0.2)
    flat = (torch.rand(40, 3, 1, 1) * 0.9 + 0.02 * torch.rand(40, 3, 8, 8)).clamp(0, 1)
    noise = torch.rand(40, 3, 8, 8)
    a_flat = view_alignment(flatten, flat, aug, views=4, seed=1)
    a_noise = view_alignment(flatten, noise, aug, views=4, seed=1)
    assert a_flat.shape == (40,) and a_flat.dtype == torch.float64
    assert float(a_flat.min()) > 0.99 and float(a_noise.max()) < 0.99
    # The same views for the same seed: a pure function of its arguments.
    assert torch.equal(a_noise, view_alignment(flatten, noise, aug, views=4, seed=1))
    flagged = alignment_inference(flatten, flat, noise, aug, views=4)
    assert flagged.verdict == "stolen" and flagged.p_value < 1e-6 and flagged.ll_private > flagged.ll_unseen
    cleared = alignment_inference(flatten, noise, flat, aug, views=4)
    assert cleared.verdict == "independent" and cleared.p_value > 0.5
    with pytest.raises(ValueError, match="views must be at least 2"):
        view_alignment(flatten, flat, aug, views=1)


def test_non_finite_scores_are_refused_not_read_as_independent() -> None:
    """A NaN image gives NaN scores: a clear error, never a silent 'independent' verdict."""
    from sslsteal_fast.data import SimCLRAugment
    from sslsteal_fast.ownership import alignment_inference, dataset_inference, welch_verdict

    with pytest.raises(ValueError, match="1 private and 0 unseen scores are not finite"):
        welch_verdict(torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([1.0, 2.0]))
    flatten = nn.Flatten()
    images = torch.rand(12, 3, 8, 8)
    poisoned = images.clone()
    poisoned[0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        alignment_inference(flatten, poisoned, images, SimCLRAugment(8, min_scale=1.0), views=2)
    with pytest.raises(ValueError, match="NaN or inf"):  # the mixture refuses the scored features itself
        dataset_inference(flatten, images, poisoned, images, n_components=1, pca_dim=4)
