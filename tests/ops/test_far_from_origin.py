"""Float32 squared distances keep their precision far from the origin, and top-k distances are exact.

|x|^2 + |y|^2 - 2 <x, y> cancels catastrophically once |x|^2 dwarfs the distances (rows at 1e5: the
terms are ~1e11, the distances ~30), so the kernels shift the rows by a common offset first. Oracles
are float64 direct differences of the very same float32 values (no norm expansion at all).
"""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import FAR_FROM_ORIGIN_RTOL, TOPK_EXACT_RTOL

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")

OFFSETS = [1e3, 1e5]
RTOL = FAR_FROM_ORIGIN_RTOL[torch.float32]


def _rows(n: int, dim: int, offset: float, seed: int, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows of a unit Gaussian cloud centred at (offset, ..., offset)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64) + offset).to(device=device, dtype=dtype)


def _direct_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x.double()[:, None, :] - y.double()[None, :, :]) ** 2).sum(-1)


def _assert_rel(got: torch.Tensor, exp: torch.Tensor, rtol: float) -> None:
    """max |got - exp| <= rtol * max |exp| (float64)."""
    err = (got.double() - exp.double()).abs().max().item()
    assert err <= rtol * exp.double().abs().max().item(), f"error {err:.3g} vs scale {exp.abs().max().item():.3g}"


@pytest.mark.parametrize("offset", OFFSETS)
def test_soft_nn_float32_far_from_origin(device, offset):
    # The stealing call: z = [stolen; victim], each row's partner half a batch away.
    z = _rows(64, 16, offset, 0, device)
    labels = torch.arange(32, device=device).repeat(2)
    leaf = z.clone().requires_grad_(True)
    loss = ops.soft_nn(leaf, labels)
    loss.backward()
    z64 = z.double().requires_grad_(True)
    exp = reference.soft_nn(z64, labels)
    exp.backward()
    # Before the shift, offset 1e5 gave ~1e4 against 18.25 in float64.
    assert loss.item() == pytest.approx(exp.item(), rel=RTOL)
    _assert_rel(leaf.grad, z64.grad, RTOL)
    rows = ops.soft_nn(z, labels, reduction="none")
    _assert_rel(rows, reference.soft_nn(z.double(), labels, reduction="none"), RTOL)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_pairwise_distance_float32_far_from_origin(device, offset, metric):
    x, y = _rows(50, 16, offset, 1, device), _rows(40, 16, offset, 2, device)
    exact = _direct_sq(x, y)
    if metric == "euclidean":
        exact = exact.sqrt()
    xl, yl = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    got = ops.pairwise_distance(xl, yl, metric)
    torch.testing.assert_close(got.double(), exact, rtol=RTOL, atol=0.0)  # every entry, relatively
    w = torch.linspace(0.5, 1.5, got.numel(), device=device).view_as(got)
    gx, gy = torch.autograd.grad((got * w).sum(), (xl, yl))
    x64, y64 = x.double().requires_grad_(True), y.double().requires_grad_(True)
    e64 = ((x64[:, None, :] - y64[None, :, :]) ** 2).sum(-1)
    e64 = e64.sqrt() if metric == "euclidean" else e64
    ex, ey = torch.autograd.grad((e64 * w.double()).sum(), (x64, y64))
    _assert_rel(gx, ex, RTOL)
    _assert_rel(gy, ey, RTOL)


@pytest.mark.parametrize("offset", [0.0, *OFFSETS])
def test_topk_sqeuclidean_values_are_exact(device, offset):
    # The k winners' distances are recomputed directly: one float32 rounding of the float64 value
    # (the norm expansion left ~10x that at the origin, and everything at 1e5).
    q, bank = _rows(30, 16, offset, 3, device), _rows(3000, 16, offset, 4, device)
    values, idx = ops.topk_similarity(q, bank, 5, "sqeuclidean")
    exact = _direct_sq(q, bank)
    exp_values, exp_idx = torch.sort(exact, dim=1, stable=True)
    assert torch.equal(idx, exp_idx[:, :5])
    torch.testing.assert_close(values.double(), exp_values[:, :5], rtol=TOPK_EXACT_RTOL[torch.float32], atol=0.0)
    assert (values[:, 1:] >= values[:, :-1]).all()  # still best first


def test_topk_sqeuclidean_float64_values_are_exact(device):
    # At 1e8 even float64's norm expansion keeps only ~3 digits (|q|^2 ~ 1e17, eps 1e-16).
    q, bank = _rows(20, 8, 1e8, 5, device, torch.float64), _rows(500, 8, 1e8, 6, device, torch.float64)
    values, idx = ops.topk_similarity(q, bank, 4, "sqeuclidean")
    exact = _direct_sq(q, bank).gather(1, idx)
    torch.testing.assert_close(values, exact, rtol=TOPK_EXACT_RTOL[torch.float64], atol=0.0)


def test_topk_sqeuclidean_ties_stay_on_the_smaller_index(device):
    # Equal exact distances after the recompute keep the smaller index first.
    bank = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]], device=device) + 1e4
    q = torch.full((1, 2), 1e4, device=device)
    values, idx = ops.topk_similarity(q, bank, 5, "sqeuclidean")
    assert idx.tolist() == [[1, 2, 3, 4, 0]]
    assert values.tolist() == [[1.0, 1.0, 1.0, 1.0, 4.0]]
