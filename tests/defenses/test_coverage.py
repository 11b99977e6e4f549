"""Coverage defense: coverage and noise grow with distinct queries; per-client transforms; restart."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.defenses import CoverageDefense, client_transform
from sslsteal_fast.testing import F32_ATOL
from tests.helpers import images_for

KEY = b"c" * 32


def test_coverage_and_noise_grow_with_distinct_queries():
    cov = CoverageDefense(n_bits=8, lam=1.0, alpha=1.0, transform=False, key=KEY)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g)
    seen = []
    sigmas = []
    for chunk in torch.split(torch.arange(600), 100):
        sigmas.append(cov.sigmas(x[chunk], "thief") / x[chunk].pow(2).mean(1).sqrt())
        seen.append(cov.coverage("thief"))
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False))
    assert sigmas[-1].mean() > sigmas[0].mean()
    # a client repeating one query stays at one bucket
    for _ in range(5):
        cov.sigmas(x[:1].clone(), "honest")
    assert cov.coverage("honest") == 1 / 256
    assert cov.bills == {"thief": 600, "honest": 5}


def test_noise_scales_with_coverage_and_is_keyed():
    cov = CoverageDefense(n_bits=4, lam=0.5, alpha=1.0, relative=False, transform=False, key=KEY)
    out = 1e-6 * torch.randn(250, 8, generator=torch.Generator().manual_seed(3))
    first = cov(out[:200].clone(), images_for(200), "a")
    assert cov.coverage("a") == 1.0  # 200 random directions occupy all 16 buckets
    last = cov(out[200:].clone(), images_for(50, seed=9), "a")  # sigma = lam * 1.0
    assert 0.4 < float(last.std()) < 0.6
    assert float(first[:3].std()) < 0.3  # early rows: low coverage, little noise
    again = cov(out[200:].clone(), images_for(50, seed=9), "a")
    assert torch.equal(again, last)  # keyed per (client, input)


def test_per_client_transforms_differ_and_are_consistent():
    q_a, q_b = client_transform(KEY, "a", 12), client_transform(KEY, "b", 12)
    eye = torch.eye(12)
    assert torch.allclose(q_a @ q_a.T, eye, atol=F32_ATOL) and torch.allclose(q_b @ q_b.T, eye, atol=F32_ATOL)
    assert not torch.allclose(q_a, q_b, atol=1e-3)
    assert torch.equal(q_a, client_transform(KEY, "a", 12))
    cov = CoverageDefense(n_bits=6, lam=0.0, key=KEY)  # no noise: pure remapping
    v, x = torch.randn(10, 12), images_for(10)
    a1, a2, b = cov(v.clone(), x, "a"), cov(v.clone(), x, "a"), cov(v.clone(), x, "b")
    assert torch.allclose(a1, a2) and not torch.allclose(a1, b, atol=1e-3)
    assert torch.allclose(a1 @ a1.T, v @ v.T, atol=1e-4)  # geometry kept for each client
    assert torch.allclose(a1 @ q_a.T, v, atol=F32_ATOL)


def test_coverage_state_survives_restart(tmp_path):
    path = str(tmp_path / "cov.sqlite")
    cov = CoverageDefense(n_bits=6, state=path)
    v = torch.randn(40, 8)
    cov(v, images_for(40), "c")
    before, q = cov.coverage("c"), cov.transform_for("c", 8)
    cov.state.close()
    again = CoverageDefense(n_bits=6, state=path)
    assert again.coverage("c") == before > 0
    assert torch.equal(again.transform_for("c", 8), q)  # the secret lives in the state
    assert again.bills == {"c": 40}


@pytest.mark.parametrize("kwargs", [{"n_bits": 0}, {"n_bits": 40}, {"lam": -1}, {"alpha": 0}, {"transform": "yes"}])
def test_bad_coverage_params_raise(kwargs):
    with pytest.raises(ValueError):
        CoverageDefense(**kwargs)
