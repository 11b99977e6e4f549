"""Edge cases: size-1 and size-2 inputs, non-contiguous views, extreme temperatures and distances,
all-equal and all-distinct labels, and bad input raising readable errors that name the argument."""

from __future__ import annotations

import math

import pytest
import torch

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import pair_inputs, snn_inputs

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")


def test_info_nce_single_pair_is_zero():
    # B = 1: each row's only other row is its positive.
    a, b = pair_inputs(1, 4, torch.float64)
    assert ops.info_nce(a, b).item() == pytest.approx(0.0, abs=1e-12)


def test_info_nce_extreme_temperature_stays_finite():
    a, b = pair_inputs(64, 16, torch.float32, requires_grad=True)
    loss = ops.info_nce(a, b, temperature=0.01)
    loss.backward()
    exp = reference.info_nce(a.detach().double(), b.detach().double(), 0.01)
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert loss.item() == pytest.approx(exp.item(), rel=1e-4)


def test_soft_nn_far_positives_stay_finite():
    # Positives 10^4 * T farther than the negatives: exp underflows unless the positive set keeps its
    # own running maximum.
    t = 1.0
    z = torch.zeros(4, 2, dtype=torch.float64)
    z[1, 0] = 100.0  # d(0, 1) = 10^4 = 10^4 * T, same label as row 0
    z[2, 0] = 0.5
    z[3, 0] = 100.5
    labels = torch.tensor([0, 0, 1, 1])
    zz = z.clone().requires_grad_(True)
    got = ops.soft_nn(zz, labels, t, "none")
    got.sum().backward()
    exp = reference.soft_nn(z, labels, t, "none")
    assert torch.isfinite(got).all() and torch.isfinite(zz.grad).all()
    torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-6)
    assert got[0].item() > 9000  # ~ 10^4 - 0.25


def test_soft_nn_float32_large_distances():
    z, labels = snn_inputs(50, 8, torch.float32, scale=300.0, requires_grad=True)
    loss = ops.soft_nn(z, labels, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_soft_nn_label_extremes():
    z, _ = snn_inputs(12, 5, torch.float64)
    # All labels distinct: no row has a positive, the mean over an empty set is 0 and grads are 0.
    distinct = torch.arange(12)
    zz = z.clone().requires_grad_(True)
    loss = ops.soft_nn(zz, distinct)
    loss.backward()
    assert loss.item() == 0.0 and (zz.grad == 0).all()
    assert (ops.soft_nn(z, distinct, reduction="none") == 0).all()
    # All labels equal: every other row is a positive, the loss is exactly 0.
    assert ops.soft_nn(z, torch.zeros(12, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-12)


def test_soft_nn_single_row_and_int32_labels():
    z = torch.randn(1, 3)
    assert ops.soft_nn(z, torch.zeros(1, dtype=torch.long)).item() == 0.0
    z, labels = snn_inputs(10, 4, torch.float64)
    torch.testing.assert_close(ops.soft_nn(z, labels.int()), ops.soft_nn(z, labels))


def test_identical_rows_everywhere():
    a = torch.ones(7, 9)
    assert ops.info_nce(a, a).item() == pytest.approx(math.log(13), rel=1e-5)
    d = ops.pairwise_distance(a, a)
    assert (d == 0).all()
    vals, idx = ops.topk_similarity(a, a, 3, "sqeuclidean")
    assert (vals == 0).all() and idx[0].tolist() == [0, 1, 2]


def test_non_contiguous_inputs():
    base = torch.randn(20, 30, dtype=torch.float64)
    a, b = base[::2, ::3], base[1::2, ::3]  # strided rows and columns
    assert not a.is_contiguous()
    torch.testing.assert_close(ops.info_nce(a, b), reference.info_nce(a, b))
    labels = torch.arange(20) % 10
    zt = base.T[:, :20].T  # transposed view
    torch.testing.assert_close(ops.soft_nn(zt, labels, 5.0), reference.soft_nn(zt, labels, 5.0))
    torch.testing.assert_close(ops.pairwise_distance(a, b.T.contiguous().T), reference.pairwise_distance(a, b))
    v, i = ops.topk_similarity(a, base[:, ::3], 2)
    rv, ri = reference.topk_similarity(a, base[:, ::3], 2)
    torch.testing.assert_close(v, rv)


def test_empty_rows_pairwise_distance():
    assert ops.pairwise_distance(torch.zeros(0, 3), torch.zeros(4, 3)).shape == (0, 4)


BAD_CALLS = [
    (lambda: ops.info_nce(torch.randn(3), torch.randn(3)), ValueError, "a must be a 2-D"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(3, 5)), ValueError, "feature dimension"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(2, 4)), ValueError, "batch size"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(3, 4).double()), TypeError, "float64"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(3, 4), temperature=0), ValueError, "temperature"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(3, 4), temperature=-1.0), ValueError, "temperature"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(3, 4), temperature=float("nan")), ValueError, "temperature"),
    (lambda: ops.info_nce(torch.randn(3, 4), torch.randn(3, 4), reduction="avg"), ValueError, "reduction"),
    (lambda: ops.info_nce(torch.randn(0, 4), torch.randn(0, 4)), ValueError, "at least one row"),
    (lambda: ops.info_nce(torch.randint(0, 3, (3, 4)), torch.randint(0, 3, (3, 4))), TypeError, "a must be float"),
    (lambda: ops.info_nce([[1.0]], torch.randn(1, 1)), TypeError, "a must be a torch.Tensor"),
    (lambda: ops.soft_nn(torch.randn(4, 3), torch.zeros(3, dtype=torch.long)), ValueError, "labels must be 1-D"),
    (lambda: ops.soft_nn(torch.randn(4, 3), torch.zeros(4)), TypeError, "labels must be int64"),
    (lambda: ops.soft_nn(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), ValueError, "labels"),
    (lambda: ops.soft_nn(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), 0.0), ValueError, "temperature"),
    (
        lambda: ops.soft_nn(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), reduction="max"),
        ValueError,
        "reduction",
    ),
    (lambda: ops.pairwise_distance(torch.randn(3, 4), torch.randn(3, 4), "manhattan"), ValueError, "metric"),
    (lambda: ops.pairwise_distance(torch.randn(3, 4, 1), torch.randn(3, 4)), ValueError, "x must be a 2-D"),
    (
        lambda: ops.topk_similarity(torch.randn(3, 4), torch.randn(5, 4), k=0),
        ValueError,
        r"k must be an int in \[1, 5\]",
    ),
    (
        lambda: ops.topk_similarity(torch.randn(3, 4), torch.randn(5, 4), k=6),
        ValueError,
        r"k must be an int in \[1, 5\]",
    ),
    (lambda: ops.topk_similarity(torch.randn(3, 4), torch.randn(5, 4), k=2.0), TypeError, "k must be an int"),
    (lambda: ops.topk_similarity(torch.randn(3, 4), torch.randn(5, 4), metric="euclidean"), ValueError, "metric"),
    (lambda: ops.topk_similarity(torch.randn(3, 4), torch.randn(5, 3)), ValueError, "feature dimension"),
]


@pytest.mark.parametrize("call,exc,match", BAD_CALLS)
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_device_mix_raises():
    with pytest.raises(ValueError, match="device"):
        ops.info_nce(torch.randn(3, 4), torch.randn(3, 4, device="cuda"))
    with pytest.raises(ValueError, match="device"):
        ops.soft_nn(torch.randn(4, 3, device="cuda"), torch.zeros(4, dtype=torch.long))


def test_raw_op_rejects_bad_input_without_crashing():
    # Direct torch.ops calls skip the Python checks; the C++ checks still raise, never crash.
    with pytest.raises(RuntimeError, match="temperature"):
        torch.ops.sslsteal_fast.info_nce_fwd(torch.randn(2, 3), torch.randn(2, 3), -1.0)
    with pytest.raises(RuntimeError, match="labels"):
        torch.ops.sslsteal_fast.soft_nn_fwd(torch.randn(2, 3), torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(RuntimeError, match="k must be"):
        torch.ops.sslsteal_fast.topk_similarity(torch.randn(2, 3), torch.randn(4, 3), 9, "cosine")
    with pytest.raises(RuntimeError, match="lse_all"):
        torch.ops.sslsteal_fast.soft_nn_bwd(
            torch.ones(2), torch.randn(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(5), torch.ones(2), 1.0
        )


# ---- the C++ contract of the raw ops (csrc/sslsteal_fast.cpp) -----------------------------------------
_LIB = torch.ops.sslsteal_fast if ops.native_available() else None


def _raw_bwd_inputs(loss: str, dtype: torch.dtype):
    """(op name, forward outputs, the backward's trailing arguments) for a small raw call."""
    if loss == "info_nce":
        a, b = pair_inputs(3, 4, dtype)
        return _LIB.info_nce_fwd(a, b, 0.1), (a, b)
    z, labels = snn_inputs(6, 4, dtype)
    return _LIB.soft_nn_fwd(z, labels, 10.0), (z, labels)


@pytest.mark.parametrize("loss", ["info_nce", "soft_nn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_raw_backward_grad_rows_must_have_the_input_dtype(loss, dtype):
    # The forward's loss rows are in the input dtype, so their gradient is too; statistics stay float32.
    (rows, lse_all, lse_pos), args = _raw_bwd_inputs(loss, dtype)
    bwd = getattr(_LIB, loss + "_bwd")
    assert rows.dtype == dtype and lse_all.dtype == torch.float32
    grads = bwd(torch.ones_like(rows), *args, lse_all, lse_pos, 0.5)
    for g, x in zip(grads if isinstance(grads, tuple) else (grads,), args, strict=False):
        assert g.dtype == dtype and g.shape == x.shape
    wrong = torch.float64 if dtype == torch.float32 else torch.float32
    expected = {torch.bfloat16: "BFloat16", torch.float16: "Half", torch.float32: "Float"}[dtype]
    with pytest.raises(RuntimeError, match=rf"^sslsteal_fast::{loss}_bwd: grad_rows must .* dtype {expected}\b"):
        bwd(torch.ones_like(rows, dtype=wrong), *args, lse_all, lse_pos, 0.5)
    with pytest.raises(RuntimeError, match=rf"^sslsteal_fast::{loss}_bwd: lse_pos "):
        bwd(torch.ones_like(rows), *args, lse_all, lse_pos.double(), 0.5)


RAW_BAD_CALLS = [
    ("info_nce_fwd", lambda: _LIB.info_nce_fwd(torch.randn(2, 3), torch.randn(2, 3), 0.0), "temperature"),
    ("info_nce_fwd", lambda: _LIB.info_nce_fwd(torch.randn(2, 3), torch.randn(3, 3), 0.1), "a and b"),
    ("info_nce_fwd", lambda: _LIB.info_nce_fwd(torch.randn(2, 3), torch.randn(2, 3).double(), 0.1), "b "),
    ("info_nce_fwd", lambda: _LIB.info_nce_fwd(torch.randn(2), torch.randn(2), 0.1), "a must be"),
    ("soft_nn_fwd", lambda: _LIB.soft_nn_fwd(torch.randn(2, 3), torch.zeros(2), 1.0), "labels"),
    ("soft_nn_fwd", lambda: _LIB.soft_nn_fwd(torch.randn(2, 3).int(), torch.zeros(2).long(), 1.0), "z must be"),
    ("pairwise_distance", lambda: _LIB.pairwise_distance(torch.randn(2, 3), torch.randn(2, 4), "cosine"), "x and y"),
    ("pairwise_distance", lambda: _LIB.pairwise_distance(torch.randn(2, 3), torch.randn(2, 3), "l1"), "metric"),
    ("topk_similarity", lambda: _LIB.topk_similarity(torch.randn(2, 3), torch.randn(4, 3), 1, "euclidean"), "metric"),
    ("topk_similarity", lambda: _LIB.topk_similarity(torch.randn(2, 3), torch.randn(4, 3), 0, "cosine"), "k must be"),
]


@pytest.mark.parametrize("op,call,names", RAW_BAD_CALLS)
def test_raw_op_errors_name_the_op_and_the_argument(op, call, names):
    with pytest.raises(RuntimeError, match=rf"^sslsteal_fast::{op}: .*{names}"):
        call()


def test_raw_ops_zero_rows_rule():
    # The loss ops need at least one row; the search ops return empty results for empty query sets.
    e = torch.zeros(0, 4)
    no_labels = torch.zeros(0, dtype=torch.long)
    stats = torch.zeros(0)
    for op, call in [
        ("info_nce_fwd", lambda: _LIB.info_nce_fwd(e, e, 0.1)),
        ("info_nce_bwd", lambda: _LIB.info_nce_bwd(stats, e, e, stats, stats, 0.1)),
        ("soft_nn_fwd", lambda: _LIB.soft_nn_fwd(e, no_labels, 0.1)),
        ("soft_nn_bwd", lambda: _LIB.soft_nn_bwd(stats, e, no_labels, stats, stats, 0.1)),
    ]:
        with pytest.raises(RuntimeError, match=rf"^sslsteal_fast::{op}: .*at least one row"):
            call()
    x = torch.randn(3, 4)
    assert _LIB.pairwise_distance(e, x, "sqeuclidean").shape == (0, 3)
    assert _LIB.pairwise_distance(x, e, "euclidean").shape == (3, 0)
    assert _LIB.pairwise_distance(e, e, "cosine").shape == (0, 0)
    values, indices = _LIB.topk_similarity(e, x, 2, "cosine")
    assert values.shape == (0, 2) and indices.shape == (0, 2) and indices.dtype == torch.int64
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::topk_similarity: k must be in \[1, M = 0\]"):
        _LIB.topk_similarity(x, e, 1, "sqeuclidean")
