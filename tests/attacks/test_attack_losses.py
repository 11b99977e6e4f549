"""The later attacks' losses vs float64 transcriptions of their sources' formulas, values and gradients.

Barlow Twins (Zbontar et al. 2021, Eq. 1-2), the soft cross-entropy of distillation (Hinton et al.
2015) and Cont-Steal's InfoNCE with a memory of negatives (Sha et al. 2023), each written out as
loops over the formula's indices in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from sslsteal_fast.attacks import BarlowTwinsLoss, ContStealLoss, InfoNCELoss, SoftCrossEntropyLoss, make_loss
from sslsteal_fast.testing import TRANSCRIPTION_TOL

RTOL, ATOL = TRANSCRIPTION_TOL


def ref_barlow_twins(s: torch.Tensor, v: torch.Tensor, lam: float, eps: float = 1e-5) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lam sum_{i != j} C_ij^2, C_ij = sum_b zs_bi zv_bj / B over batch-standardised z."""
    b, d = s.shape

    def standardise(z: torch.Tensor) -> list[list[torch.Tensor]]:
        cols = []
        for j in range(d):
            mean = sum(z[k, j] for k in range(b)) / b
            var = sum((z[k, j] - mean) ** 2 for k in range(b)) / b
            cols.append([(z[k, j] - mean) / torch.sqrt(var + eps) for k in range(b)])
        return cols

    zs, zv = standardise(s), standardise(v)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(zs[i][k] * zv[j][k] for k in range(b)) / b
            total = total + ((1 - c) ** 2 if i == j else lam * c**2)
    return total


def ref_soft_ce(s: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    """T^2 * mean_b -sum_d softmax(v_b / T)_d log softmax(s_b / T)_d."""
    b, d = s.shape
    total = 0.0
    for k in range(b):
        zv = sum(torch.exp(v[k, j] / t) for j in range(d))
        zs = sum(torch.exp(s[k, j] / t) for j in range(d))
        for j in range(d):
            p = torch.exp(v[k, j] / t) / zv
            total = total - p * torch.log(torch.exp(s[k, j] / t) / zs)
    return t * t * total / b


def ref_cont_steal(s: torch.Tensor, v: torch.Tensor, memory: torch.Tensor, tau: float) -> torch.Tensor:
    """Anchors: the 2B rows of s and v; positive: the same image's other row; negatives: every other row
    of [s; v; memory] (cosine similarity / tau). Memory rows are negatives only."""
    b = s.shape[0]
    rows = [r / r.norm() for r in torch.cat([s, v, memory])]
    total = 0.0
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        num = torch.exp(rows[i] @ rows[p] / tau)
        den = sum(torch.exp(rows[i] @ rows[k] / tau) for k in range(len(rows)) if k != i)
        total = total - torch.log(num / den)
    return total / (2 * b)


def _pair(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, d, generator=g, dtype=torch.float64)
    v = torch.relu(torch.randn(b, d, generator=g, dtype=torch.float64)) + 0.1 * s  # correlated, like a theft
    return s, v


def _check(loss, ref, s: torch.Tensor, v: torch.Tensor) -> None:
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    got, want = loss(s1, v), ref(s2, v)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    got.backward()
    want.backward()
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_barlow_twins_matches_its_formula(lam: float) -> None:
    s, v = _pair()
    _check(BarlowTwinsLoss(lam), lambda a, b: ref_barlow_twins(a, b, lam), s, v)


def test_barlow_twins_default_weight_and_dead_features() -> None:
    assert make_loss("barlow_twins").off_diagonal_weight == 5e-3  # Zbontar et al.'s lambda
    s, v = _pair()
    v[:, 2] = 0.7  # a dead victim feature: constant over the batch, standardised to 0 (not NaN)
    _check(BarlowTwinsLoss(), lambda a, b: ref_barlow_twins(a, b, 5e-3), s, v)
    with pytest.raises(ValueError, match="at least 2 rows"):
        BarlowTwinsLoss()(s[:1], v[:1])


@pytest.mark.parametrize("t", [20.0, 1.0, 0.3])
def test_soft_cross_entropy_matches_its_formula(t: float) -> None:
    s, v = _pair(seed=1)
    _check(SoftCrossEntropyLoss(t), lambda a, b: ref_soft_ce(a, b, t), s, v)


def test_soft_cross_entropy_compares_with_the_victim_not_itself() -> None:
    """The reference code's quirk (stolen against itself) would not depend on the target at all."""
    s, v = _pair(seed=2)
    loss = SoftCrossEntropyLoss()
    assert loss.temperature == 20.0  # Hinton et al.'s MNIST temperature
    assert not torch.isclose(loss(s, v), loss(s, v + torch.randn_like(v)))
    # At s == v it is T^2 times the entropy of softmax(v / T), its minimum over s.
    p = torch.softmax(v / 20.0, dim=1)
    torch.testing.assert_close(loss(v, v), 400.0 * -(p * p.log()).sum(1).mean())


@pytest.mark.parametrize("memory_rows", [0, 1, 4, 7])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_cont_steal_matches_its_formula(memory_rows: int, tau: float) -> None:
    s, v = _pair(b=5, d=4, seed=3)
    memory = torch.randn(memory_rows, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64).abs() + 0.1
    # An odd memory loses its oldest (first) row; fewer than two rows: no memory.
    kept = memory[memory_rows % 2 :] if memory_rows >= 2 else memory[:0]
    _check(
        lambda a, b: ContStealLoss(tau)(a, b, memory),
        lambda a, b: ref_cont_steal(a, b, kept, tau),
        s,
        v,
    )


def test_cont_steal_without_memory_is_info_nce_and_checks_memory() -> None:
    s, v = _pair(seed=5)
    torch.testing.assert_close(ContStealLoss(0.07)(s, v), InfoNCELoss(0.07)(s, v))
    assert ContStealLoss().temperature == 0.07
    with pytest.raises(ValueError, match=r"memory must be \(M, 5\)"):
        ContStealLoss()(s, v, torch.zeros(4, 3, dtype=torch.float64))
    # A memory of answers identical to the anchors' positives makes the task harder: the loss grows.
    assert ContStealLoss()(s, v, v.repeat(2, 1)) > ContStealLoss()(s, v) + math.log(2) / 2
