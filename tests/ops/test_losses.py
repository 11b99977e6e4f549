"""InfoNCE and SoftNN: parity with the float64 references (values and gradients), gradcheck, opcheck."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import assert_close, assert_low_precision_rule, pair_inputs, snn_inputs

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")

TEMPERATURES = st.sampled_from([0.01, 0.07, 0.5, 3.0, 100.0])
SETTINGS = settings(max_examples=25, deadline=None)


def _grads(fn, *inputs):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad])
    return out.detach(), grads


def _leaf(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.detach().to(dtype).requires_grad_(True)


def _lowp_grads(fn, inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Gradients of fn at ``inputs`` cast to ``dtype``; a per-row loss is weighted by fixed weights that
    are exact in bfloat16 and float16, so every dtype backpropagates the same upstream gradient."""
    leaves = [_leaf(t, dtype) for t in inputs]
    out = fn(*leaves)
    weights = None
    if out.dim() == 1:
        weights = torch.linspace(0.5, 1.5, out.numel(), device=out.device).bfloat16().to(out.dtype)
    return torch.autograd.grad(out, leaves, weights)


class TestInfoNCE:
    @SETTINGS
    @given(
        bsz=st.integers(1, 40),
        dim=st.integers(1, 70),
        temperature=TEMPERATURES,
        identical=st.booleans(),
        reduction=st.sampled_from(["mean", "sum", "none"]),
    )
    def test_matches_reference_float64(self, bsz, dim, temperature, identical, reduction):
        a, b = pair_inputs(bsz, dim, torch.float64, identical=identical, requires_grad=True)
        weights = torch.rand(2 * bsz, dtype=torch.float64) if reduction == "none" else None

        def loss(fn):
            def run(x, y):
                out = fn(x, y, temperature, reduction)
                return (out * weights).sum() if weights is not None else out

            return run

        got, g_got = _grads(loss(ops.info_nce), a, b)
        a2, b2 = _leaf(a, torch.float64), _leaf(b, torch.float64)
        exp, g_exp = _grads(loss(reference.info_nce), a2, b2)
        assert_close(got, exp, torch.float64)
        for x, y in zip(g_got, g_exp, strict=False):
            assert_close(x, y, torch.float64)

    @pytest.mark.parametrize("bsz,dim", [(1, 3), (2, 8), (37, 61), (700, 33)])
    def test_float32_against_float64_reference(self, device, bsz, dim):
        a, b = pair_inputs(bsz, dim, torch.float32, device, requires_grad=True)
        got, g_got = _grads(lambda x, y: ops.info_nce(x, y, 0.07), a, b)
        exp, g_exp = _grads(
            lambda x, y: reference.info_nce(x, y, 0.07), _leaf(a, torch.float64), _leaf(b, torch.float64)
        )
        assert_close(got, exp, torch.float32, scale=10)
        for x, y in zip(g_got, g_exp, strict=False):
            assert_close(x, y, torch.float32)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_low_precision_rule(self, device, dtype):
        a, b = pair_inputs(64, 48, dtype, device)
        exact = reference.info_nce(a.double(), b.double(), 0.1, "none")
        torch_lowp = reference.info_nce(a, b, 0.1, "none")
        got = ops.info_nce(a, b, 0.1, "none")
        assert got.dtype == dtype
        assert_low_precision_rule(got, torch_lowp, exact)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_low_precision_rule_backward(self, device, dtype, reduction):
        # Autograd hands the backward op loss-row gradients in the input dtype.
        a, b = pair_inputs(64, 48, dtype, device)
        run = lambda fn: lambda x, y: fn(x, y, 0.1, reduction)  # noqa: E731
        exact = _lowp_grads(run(reference.info_nce), (a, b), torch.float64)
        torch_lowp = _lowp_grads(run(reference.info_nce), (a, b), dtype)
        got = _lowp_grads(run(ops.info_nce), (a, b), dtype)
        for g, g_lowp, g_exact in zip(got, torch_lowp, exact, strict=True):
            assert g.dtype == dtype
            assert_low_precision_rule(g, g_lowp, g_exact)

    def test_identical_rows_closed_form(self):
        # Every row identical: all 2B - 1 others tie, so each row's loss is log(2B - 1).
        a = torch.ones(5, 7, dtype=torch.float64)
        assert ops.info_nce(a, a.clone(), 0.3).item() == pytest.approx(math.log(9), rel=1e-12)

    def test_gradcheck(self):
        a, b = pair_inputs(4, 5, torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, y: ops.info_nce(x, y, 0.2, "none"), (a, b))

    def test_opcheck(self, device):
        a, b = pair_inputs(6, 5, torch.float32, device, requires_grad=True)
        torch.library.opcheck(torch.ops.sslsteal_fast.info_nce_fwd.default, (a, b, 0.1))
        rows, lse_all, lse_pos = torch.ops.sslsteal_fast.info_nce_fwd(a.detach(), b.detach(), 0.1)
        torch.library.opcheck(
            torch.ops.sslsteal_fast.info_nce_bwd.default,
            (torch.ones_like(rows), a.detach(), b.detach(), lse_all, lse_pos, 0.1),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )

    def test_double_backward_raises(self):
        a, b = pair_inputs(3, 4, torch.float64, requires_grad=True)
        (ga,) = torch.autograd.grad(ops.info_nce(a, b), a, create_graph=True)
        with pytest.raises(RuntimeError, match="double backward"):
            ga.sum().backward()

    def test_deterministic(self):
        a, b = pair_inputs(300, 40, torch.float32, requires_grad=True)
        first = _grads(lambda x, y: ops.info_nce(x, y, 0.07, "none").sum(), a, b)
        second = _grads(lambda x, y: ops.info_nce(x, y, 0.07, "none").sum(), a, b)
        assert torch.equal(first[0], second[0])
        assert all(torch.equal(x, y) for x, y in zip(first[1], second[1], strict=False))


class TestSoftNN:
    @SETTINGS
    @given(
        n=st.integers(1, 80),
        dim=st.integers(1, 70),
        temperature=TEMPERATURES,
        num_labels=st.sampled_from([None, 1, 3, 50]),
        scale=st.sampled_from([0.1, 1.0, 10.0]),
        reduction=st.sampled_from(["mean", "sum", "none"]),
    )
    def test_matches_reference_float64(self, n, dim, temperature, num_labels, scale, reduction):
        z, labels = snn_inputs(n, dim, torch.float64, num_labels=num_labels, scale=scale, requires_grad=True)
        weights = torch.rand(n, dtype=torch.float64) if reduction == "none" else None

        def loss(fn):
            def run(x):
                out = fn(x, labels, temperature, reduction)
                return (out * weights).sum() if weights is not None else out

            return run

        got, (g_got,) = _grads(loss(ops.soft_nn), z)
        exp, (g_exp,) = _grads(loss(reference.soft_nn), _leaf(z, torch.float64))
        # Distances go through the norm expansion in both; scale the tolerance by |z|^2 / T.
        s = max(1.0, scale * scale * dim / temperature)
        assert_close(got, exp, torch.float64, scale=s)
        assert_close(g_got, g_exp, torch.float64, scale=s)

    @pytest.mark.parametrize("n,dim,num_labels", [(2, 3, None), (65, 17, 4), (1030, 24, None)])
    def test_float32_against_float64_reference(self, device, n, dim, num_labels):
        z, labels = snn_inputs(n, dim, torch.float32, device, num_labels=num_labels, requires_grad=True)
        got, (g_got,) = _grads(lambda x: ops.soft_nn(x, labels, 2.0), z)
        exp, (g_exp,) = _grads(lambda x: reference.soft_nn(x, labels, 2.0), _leaf(z, torch.float64))
        assert_close(got, exp, torch.float32, scale=10 * dim)
        assert_close(g_got, g_exp, torch.float32, scale=dim)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_low_precision_rule(self, device, dtype):
        z, labels = snn_inputs(96, 32, dtype, device)
        exact = reference.soft_nn(z.double(), labels, 50.0, "none")
        torch_lowp = reference.soft_nn(z, labels, 50.0, "none")
        got = ops.soft_nn(z, labels, 50.0, "none")
        assert got.dtype == dtype
        assert_low_precision_rule(got, torch_lowp, exact)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_low_precision_rule_backward(self, device, dtype, reduction):
        z, labels = snn_inputs(96, 32, dtype, device)
        run = lambda fn: lambda x: fn(x, labels, 50.0, reduction)  # noqa: E731
        (exact,) = _lowp_grads(run(reference.soft_nn), (z,), torch.float64)
        (torch_lowp,) = _lowp_grads(run(reference.soft_nn), (z,), dtype)
        (got,) = _lowp_grads(run(ops.soft_nn), (z,), dtype)
        assert got.dtype == dtype
        assert_low_precision_rule(got, torch_lowp, exact)

    def test_gradcheck(self):
        z, labels = snn_inputs(6, 4, torch.float64, num_labels=2, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: ops.soft_nn(x, labels, 1.5, "none"), (z,))

    def test_opcheck(self, device):
        z, labels = snn_inputs(8, 5, torch.float32, device, requires_grad=True)
        torch.library.opcheck(torch.ops.sslsteal_fast.soft_nn_fwd.default, (z, labels, 10.0))
        rows, lse_all, lse_pos = torch.ops.sslsteal_fast.soft_nn_fwd(z.detach(), labels, 10.0)
        torch.library.opcheck(
            torch.ops.sslsteal_fast.soft_nn_bwd.default,
            (torch.ones_like(rows), z.detach(), labels, lse_all, lse_pos, 10.0),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )

    def test_stealing_call_convention(self):
        # z = [stolen; victim], labels = arange(B).repeat(2): each row's only positive is its partner.
        stolen, victim = pair_inputs(9, 6, torch.float64)
        z = torch.cat([stolen, victim])
        labels = torch.arange(9).repeat(2)
        d = reference.pairwise_distance(z, z)
        logits = -d / 100.0
        logits.fill_diagonal_(float("-inf"))
        partner = (torch.arange(18) + 9) % 18
        expected = (torch.logsumexp(logits, 1) - logits[torch.arange(18), partner]).mean()
        assert ops.soft_nn(z, labels).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("loss", ["info_nce", "soft_nn"])
def test_torch_compile_fullgraph(loss):
    a, b = pair_inputs(16, 8, torch.float32, requires_grad=True)
    labels = torch.arange(16).repeat(2)

    def f(x, y):
        if loss == "info_nce":
            return ops.info_nce(x, y, 0.1)
        return ops.soft_nn(torch.cat([x, y]), labels, 10.0)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    eager_out, eager_grads = _grads(f, a, b)
    comp_out, comp_grads = _grads(compiled, a, b)
    torch.testing.assert_close(comp_out, eager_out)
    for x, y in zip(comp_grads, eager_grads, strict=False):
        torch.testing.assert_close(x, y)
