"""NaN and +-inf input propagate as NaN through every native op, values and gradients, on every device.

The float64 plain-PyTorch reference (:mod:`sslsteal_fast.ops.reference`) is the oracle: the native
value or gradient is NaN exactly where the reference's (or its autograd's) is, and equal elsewhere.
Two documented departures: SoftNN also makes the finite entries of the non-finite row's own gradient
NaN (autograd of the reference leaves them 0), and top-k gradients reach only the selected rows (the
reference's dense matmul spreads a NaN to every bank row, selected or not).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import TOL

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")

BAD = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(-float("inf"), id="-inf"),
]


def _grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """fn's output and the gradients of a fixed weighting of it with respect to copies of ``inputs``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    return out.detach(), torch.autograd.grad((out * weights).sum(), leaves)


def _assert_nan_parity(got: torch.Tensor, exp: torch.Tensor, *, superset: bool = False) -> None:
    """NaN exactly where ``exp`` is NaN (at least there, with ``superset``); float64-close elsewhere."""
    got_nan, exp_nan = torch.isnan(got), torch.isnan(exp)
    assert got_nan[exp_nan].all(), "a NaN of the reference came out finite"
    if not superset:
        assert torch.equal(got_nan, exp_nan), f"NaN at {got_nan.sum()} entries, the reference at {exp_nan.sum()}"
    keep = ~got_nan
    rtol, atol = TOL[torch.float64]
    torch.testing.assert_close(got[keep], exp[keep], rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize("metric", ops.METRICS)
@pytest.mark.parametrize("bad", BAD)
def test_pairwise_distance_nonfinite_values_and_grads(device, bad, metric):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(7, 5, generator=g, dtype=torch.float64).to(device)
    x[2, 1] = bad
    y[4, 3] = bad
    got, got_g = _grads(lambda a, b: ops.pairwise_distance(a, b, metric), x, y)
    exp, exp_g = _grads(lambda a, b: reference.pairwise_distance(a, b, metric), x, y)
    # Exactly the pairs with a non-finite row are NaN (the old kernels gave 0 there, max(0, NaN) = 0).
    expected_nan = torch.zeros(6, 7, dtype=torch.bool, device=device)
    expected_nan[2, :] = True
    expected_nan[:, 4] = True
    assert torch.equal(torch.isnan(got), expected_nan)
    _assert_nan_parity(got, exp)
    for gg, ee in zip(got_g, exp_g, strict=True):
        _assert_nan_parity(gg, ee)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("bad", BAD)
def test_info_nce_nonfinite_values_and_grads(device, bad, reduction):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64).to(device)
    b = (a.cpu() + 0.3 * torch.randn(6, 5, generator=g, dtype=torch.float64)).to(device)
    a[2, 1] = bad
    got, got_g = _grads(lambda p, q: ops.info_nce(p, q, 0.5, reduction), a, b)
    exp, exp_g = _grads(lambda p, q: reference.info_nce(p, q, 0.5, reduction), a, b)
    # The bad row is a negative of every row: every loss row, and every gradient entry, is NaN.
    assert torch.isnan(got).all()
    _assert_nan_parity(got, exp)
    for gg, ee in zip(got_g, exp_g, strict=True):
        assert torch.isnan(gg).all()
        _assert_nan_parity(gg, ee)


@pytest.mark.parametrize("bad", BAD)
def test_info_nce_all_nonfinite_input_is_nan(device, bad):
    a = torch.full((4, 3), bad, device=device)
    assert torch.isnan(ops.info_nce(a, a.clone())).item()  # was 0.0
    assert torch.isnan(ops.info_nce(a, torch.randn(4, 3, device=device))).item()


SOFT_NN_LABELS = {
    "pairs": [0, 1, 2, 3, 4, 5] * 2,
    "singletons": [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8],  # rows 6..11 have no partner
    "distinct": list(range(12)),  # no row has a partner: the mean is over nothing, 0
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("labels", list(SOFT_NN_LABELS), ids=list(SOFT_NN_LABELS))
@pytest.mark.parametrize("bad", BAD)
def test_soft_nn_nonfinite_values_and_grads(device, bad, labels, reduction):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 5, generator=g, dtype=torch.float64).to(device)
    z[3, 2] = bad
    lab = torch.tensor(SOFT_NN_LABELS[labels], device=device)
    got, (got_g,) = _grads(lambda x: ops.soft_nn(x, lab, 2.0, reduction), z)
    exp, (exp_g,) = _grads(lambda x: reference.soft_nn(x, lab, 2.0, reduction), z)
    _assert_nan_parity(got, exp)
    if reduction == "none":
        has_partner = torch.tensor([SOFT_NN_LABELS[labels].count(v) > 1 for v in SOFT_NN_LABELS[labels]], device=device)
        assert torch.isnan(got[has_partner]).all()  # the bad row is in every row's denominator
        assert (got[~has_partner] == 0).all()
    elif labels != "distinct":
        assert torch.isnan(got).item()  # the stealing loss: caught by steal's "loss became nan" check
    _assert_nan_parity(got_g, exp_g, superset=True)
    assert torch.isnan(got_g).all()


def _full_scores(q: torch.Tensor, bank: torch.Tensor, metric: str) -> torch.Tensor:
    """Every query x bank score from the float64 reference (NaN for a non-finite row)."""
    if metric == "cosine":
        return 1.0 - reference.pairwise_distance(q, bank, "cosine")
    return reference.pairwise_distance(q, bank, "sqeuclidean")


def _expected_topk(q: torch.Tensor, bank: torch.Tensor, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.sort's order on the full score matrix (NaN largest), ties to the smaller index."""
    full = _full_scores(q, bank, metric)
    values, order = torch.sort(full, dim=1, descending=metric == "cosine", stable=True)
    return values[:, :k], order[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
@pytest.mark.parametrize("bad", BAD)
def test_topk_nonfinite_rows_follow_torch_order(device, bad, metric):
    g = torch.Generator().manual_seed(4)
    q = torch.randn(4, 5, generator=g, dtype=torch.float64).to(device)
    bank = torch.randn(20, 5, generator=g, dtype=torch.float64).to(device)
    bank[5, 1] = bad
    bank[11, 0] = bad
    q[1, 0] = bad
    values, idx = ops.topk_similarity(q, bank, 4, metric)
    exp_values, exp_idx = _expected_topk(q, bank, 4, metric)
    assert torch.equal(idx, exp_idx)
    torch.testing.assert_close(values, exp_values, equal_nan=True, rtol=1e-9, atol=1e-9)
    # The NaN query row: k NaN values, indices 0..k-1; cosine ranks the two bad bank rows first.
    assert torch.isnan(values[1]).all() and idx[1].tolist() == [0, 1, 2, 3]
    if metric == "cosine":
        assert idx[[0, 2, 3], :2].tolist() == [[5, 11]] * 3
        assert torch.isnan(values[:, :2]).all() and not torch.isnan(values[[0, 2, 3], 2:]).any()
    else:
        assert not torch.isnan(values[[0, 2, 3]]).any()


@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
@pytest.mark.parametrize("bad", BAD)
def test_topk_nonfinite_gradients(device, bad, metric):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(4, 5, generator=g, dtype=torch.float64).to(device)
    bank = torch.randn(20, 5, generator=g, dtype=torch.float64).to(device)
    bank[5, 1] = bad
    q[1, 0] = bad
    (values, idx), (gq, gb) = _grads_topk(q, bank, metric)

    # Oracle for the finite part: the selected scores rebuilt with plain torch from the same indices.
    def rebuilt(qq, bb):
        p = bb[idx.reshape(-1)].view(4, 3, 5)
        if metric == "cosine":
            return (F.normalize(qq, dim=1)[:, None, :] * F.normalize(p, dim=2)).sum(-1)
        return ((qq[:, None, :] - p) ** 2).sum(-1)

    _, (eq, eb) = _grads(rebuilt, q, bank)
    nan_value = torch.isnan(values)
    bad_queries = nan_value.any(1)
    bad_bank = torch.zeros(20, dtype=torch.bool, device=device)
    bad_bank[idx[nan_value]] = True
    selected = torch.zeros(20, dtype=torch.bool, device=device)
    selected[idx.reshape(-1)] = True
    assert bad_queries[1] and (bad_bank[5] == (metric == "cosine"))  # cosine ranks the NaN row first
    # A NaN value makes its query row's and its bank row's gradients NaN (the direct ||q - b||^2 of an
    # inf row would give +-inf instead); gradients reach only the selected bank rows.
    assert torch.isnan(gq[bad_queries]).all() and torch.isnan(gb[bad_bank]).all()
    assert (gb[~selected] == 0).all()
    rtol, atol = TOL[torch.float64]
    torch.testing.assert_close(gq[~bad_queries], eq[~bad_queries], rtol=rtol, atol=atol)
    clean = selected & ~bad_bank
    torch.testing.assert_close(gb[clean], eb[clean], rtol=rtol, atol=atol)


def _grads_topk(q: torch.Tensor, bank: torch.Tensor, metric: str):
    leaves = [q.detach().clone().requires_grad_(True), bank.detach().clone().requires_grad_(True)]
    values, idx = ops.topk_similarity(*leaves, 3, metric)
    weights = torch.linspace(0.5, 1.5, values.numel(), dtype=values.dtype, device=values.device).view_as(values)
    grads = torch.autograd.grad((values.nan_to_num(0.0) * weights).sum(), leaves)
    return (values.detach(), idx), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
def test_topk_fewer_finite_candidates_than_k(device, metric, dtype):
    # One contract on every device: all k results are real bank rows (the CPU raised here, CUDA
    # returned index 2147483647 with -+inf); NaN ones rank by torch.topk's order, in index order.
    g = torch.Generator().manual_seed(6)
    bank = torch.randn(6, 4, generator=g).to(device=device, dtype=dtype)
    bank[1, 0] = float("nan")
    bank[3, 2] = float("inf")
    bank[4, 1] = -float("inf")
    q = torch.randn(2, 4, generator=g).to(device=device, dtype=dtype)
    for k in (5, 6):
        values, idx = ops.topk_similarity(q, bank, k, metric)
        assert idx.dtype == torch.int64 and ((idx >= 0) & (idx < 6)).all()
        for row in range(2):
            finite = [i for i in idx[row].tolist() if i in (0, 2, 5)]
            nan_rows = [i for i in idx[row].tolist() if i in (1, 3, 4)]
            assert nan_rows == sorted(nan_rows)
            if metric == "cosine":
                assert idx[row, :3].tolist() == [1, 3, 4] and torch.isnan(values[row, :3]).all()
                assert torch.isfinite(values[row, 3:]).all()
            else:
                assert idx[row, 3:].tolist() == [1, 3, 4][: k - 3] and torch.isnan(values[row, 3:]).all()
                assert torch.isfinite(values[row, :3]).all() and sorted(finite) == [0, 2, 5]
        exp_values, exp_idx = _expected_topk(q.double(), bank.double(), k, metric)
        assert torch.equal(idx, exp_idx)
        torch.testing.assert_close(values.double(), exp_values, equal_nan=True, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
def test_topk_nan_query_row_gives_nan_values(device, metric):
    q = torch.randn(3, 4, device=device)
    q[1] = float("nan")
    values, idx = ops.topk_similarity(q, torch.randn(50, 4, device=device), 7, metric)
    assert torch.isnan(values[1]).all() and idx[1].tolist() == list(range(7))
    assert torch.isfinite(values[[0, 2]]).all()
