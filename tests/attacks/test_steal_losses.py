"""Stealing losses vs independent float64 transcriptions of the paper's formulas, closed forms, errors."""

from __future__ import annotations

import math

import pytest
import torch

from sslsteal_fast.attacks import (
    LOSSES,
    CosineLoss,
    InfoNCELoss,
    MSELoss,
    SoftNNLoss,
    WassersteinLoss,
    make_loss,
)
from sslsteal_fast.testing import TRANSCRIPTION_TOL

RTOL, ATOL = TRANSCRIPTION_TOL  # float64 against float64 transcriptions


# ---------------------------------------------------------------- transcriptions (loops, float64)
def ref_mse(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    b, d = s.shape
    return sum((s[i, j] - v[i, j]) ** 2 for i in range(b) for j in range(d)) / (b * d)


def ref_info_nce(s: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    z = torch.cat([s, v])
    z = z / z.norm(dim=1, keepdim=True)
    n, b = z.shape[0], s.shape[0]
    total = 0.0
    for i in range(n):
        p = (i + b) % n
        num = torch.exp(z[i] @ z[p] / tau)
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n) if k != i)
        total = total - torch.log(num / den)
    return total / n


def ref_soft_nn(s: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    z = torch.cat([s, v])
    n, b = z.shape[0], s.shape[0]
    total = 0.0
    for i in range(n):
        p = (i + b) % n
        num = torch.exp(-((z[i] - z[p]) ** 2).sum() / t)
        den = sum(torch.exp(-((z[i] - z[k]) ** 2).sum() / t) for k in range(n) if k != i)
        total = total - torch.log(num / den)
    return total / n


def ref_wasserstein(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The paper's formula on non-negative rows: normalise by the sum, L1 between cumulative sums."""
    total = 0.0
    for i in range(s.shape[0]):
        cs, cv, row = 0.0, 0.0, 0.0
        for j in range(s.shape[1]):
            cs = cs + s[i, j] / s[i].sum()
            cv = cv + v[i, j] / v[i].sum()
            row = row + abs(cs - cv)
        total = total + row
    return total / s.shape[0]


def ref_cosine(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return sum(1 - (s[i] @ v[i]) / (s[i].norm() * v[i].norm()) for i in range(s.shape[0])) / s.shape[0]


def _pair(b: int = 6, d: int = 5, seed: int = 0, nonneg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, d, generator=g, dtype=torch.float64)
    if nonneg:
        s, v = s.abs() + 0.1, v.abs() + 0.1
    return s, v


CASES = [
    (MSELoss(), ref_mse, False),
    (InfoNCELoss(0.07), lambda s, v: ref_info_nce(s, v, 0.07), False),
    (InfoNCELoss(0.5), lambda s, v: ref_info_nce(s, v, 0.5), False),
    (SoftNNLoss(100.0), lambda s, v: ref_soft_nn(s, v, 100.0), False),
    (SoftNNLoss(2.0), lambda s, v: ref_soft_nn(s, v, 2.0), False),
    (WassersteinLoss(eps=1e-300), ref_wasserstein, True),
    (CosineLoss(), ref_cosine, False),
]


@pytest.mark.parametrize("loss, ref, nonneg", CASES, ids=lambda c: getattr(c, "name", None) or repr(c)[:12])
def test_value_and_gradient_match_transcription(loss, ref, nonneg) -> None:
    s, v = _pair(nonneg=nonneg)
    s1 = s.clone().requires_grad_(True)
    s2 = s.clone().requires_grad_(True)
    got = loss(s1, v)
    want = ref(s2, v)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    got.backward()
    want.backward()
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("loss", [MSELoss(), SoftNNLoss(), CosineLoss(), InfoNCELoss()])
def test_float32_close_to_float64(loss) -> None:
    s, v = _pair(b=32, d=16, seed=3)
    torch.testing.assert_close(loss(s.float(), v.float()).double(), loss(s, v), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("b", [1, 2, 7])
def test_identical_embeddings_give_log_2n_minus_1(b: int) -> None:
    row = torch.randn(1, 9, dtype=torch.float64)
    z = row.repeat(b, 1)
    expected = math.log(2 * b - 1) if b > 1 else 0.0
    assert float(InfoNCELoss()(z, z)) == pytest.approx(expected, abs=1e-9)
    # All distances 0 -> every one of the 2B - 1 other rows weighs the same for SoftNN too.
    assert float(SoftNNLoss()(z, z)) == pytest.approx(expected, abs=1e-9)


def test_perfect_copy_minimises_pairwise_losses() -> None:
    s, _ = _pair(nonneg=True)
    for loss in (MSELoss(), WassersteinLoss(), CosineLoss()):
        assert float(loss(s, s)) == pytest.approx(0.0, abs=1e-9)


def test_wasserstein_closed_form_point_masses() -> None:
    d = 8
    first = torch.zeros(3, d, dtype=torch.float64)
    first[:, 0] = 1.0
    last = torch.zeros(3, d, dtype=torch.float64)
    last[:, -1] = 1.0
    # All mass at index 0 vs at index D-1: the CDFs differ by 1 at the first D-1 indices.
    assert float(WassersteinLoss(eps=1e-12)(first, last)) == pytest.approx(d - 1, rel=1e-9)
    # Scale invariance: rows are normalised by their sums.
    s, v = _pair(nonneg=True)
    w = WassersteinLoss(eps=1e-12)
    torch.testing.assert_close(w(3.0 * s, v), w(s, v), atol=1e-9, rtol=1e-7)


def test_wasserstein_well_defined_on_negative_and_zero_rows() -> None:
    s, v = _pair(nonneg=True)
    loss = WassersteinLoss()
    # Negative entries count by magnitude: on -s it equals the value on s.
    torch.testing.assert_close(loss(-s, v), loss(s, v))
    # A zero row (or a row summing to ~0 with mixed signs) is finite, with finite gradients.
    zero = torch.zeros_like(s).requires_grad_(True)
    out = loss(zero, v)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(zero.grad).all()
    cancel = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    out = loss(cancel, torch.ones(1, 4, dtype=torch.float64))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(cancel.grad).all()


def test_make_loss_factory() -> None:
    assert set(LOSSES) == {"mse", "info_nce", "soft_nn", "wasserstein", "cosine", "barlow_twins", "soft_ce"}
    for name in LOSSES:
        assert make_loss(name).name == name
    assert make_loss("info_nce").temperature == 0.07
    assert make_loss("soft_nn").temperature == 100.0
    assert make_loss("soft_nn", 1000.0).temperature == 1000.0
    assert make_loss("soft_ce").temperature == 20.0
    assert make_loss("barlow_twins").off_diagonal_weight == 5e-3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_loss("l1"), "unknown loss 'l1'; choose one of"),
        (lambda: make_loss("mse", temperature=0.5), "has no temperature"),
        (lambda: make_loss("info_nce", temperature=0.0), "temperature must be a finite number > 0"),
        (lambda: SoftNNLoss(float("inf")), "temperature"),
        (lambda: InfoNCELoss(True), "temperature"),
        (lambda: WassersteinLoss(eps=0.0), "eps"),
    ],
)
def test_bad_arguments_say_what_to_fix(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", LOSSES)
def test_bad_shapes_raise(name: str) -> None:
    loss = make_loss(name)
    with pytest.raises(ValueError, match="same \\(B, D\\) shape"):
        loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="non-empty \\(B, D\\)"):
        loss(torch.randn(8), torch.randn(8))
    with pytest.raises(TypeError, match="floating-point"):
        loss(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3))
