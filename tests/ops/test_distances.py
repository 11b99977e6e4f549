"""pairwise_distance and topk_similarity: parity with the references, gradients, opcheck."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import DISTANCE_TOL, TOPK_TOL, assert_close, bank_inputs

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")
SETTINGS = settings(max_examples=25, deadline=None)


class TestPairwiseDistance:
    @SETTINGS
    @given(
        n=st.integers(1, 40),
        m=st.integers(1, 40),
        dim=st.integers(1, 70),
        metric=st.sampled_from(ops.METRICS),
        with_zero_row=st.booleans(),
    )
    def test_matches_reference_with_grads(self, n, m, dim, metric, with_zero_row):
        x, y = bank_inputs(n, m, dim, torch.float64)
        if with_zero_row:
            x[0] = 0.0
        if metric == "euclidean":
            y[0] = x[0]  # a coincident pair: distance 0, gradient defined as 0
        x.requires_grad_(True)
        y.requires_grad_(True)
        w = torch.rand(n, m, dtype=torch.float64)
        got = ops.pairwise_distance(x, y, metric)
        gx, gy = torch.autograd.grad((got * w).sum(), (x, y))
        x2, y2 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
        exp = reference.pairwise_distance(x2, y2, metric)
        ex, ey = torch.autograd.grad((exp * w).sum(), (x2, y2))
        assert_close(got, exp, torch.float64, scale=dim)
        if not (metric == "euclidean"):
            assert_close(gx, ex, torch.float64, scale=dim)
            assert_close(gy, ey, torch.float64, scale=dim)
        else:
            # At d = 0 autograd of sqrt gives inf/nan; we define the gradient as 0 there.
            assert torch.isfinite(gx).all() and torch.isfinite(gy).all()

    @pytest.mark.parametrize("metric", ops.METRICS)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_dtypes(self, device, metric, dtype):
        x, y = bank_inputs(33, 17, 29, dtype, device)
        got = ops.pairwise_distance(x, y, metric)
        assert got.dtype == dtype and got.shape == (33, 17)
        exp = reference.pairwise_distance(x.double(), y.double(), metric)
        tol = DISTANCE_TOL[dtype]
        torch.testing.assert_close(got.double(), exp, rtol=tol, atol=tol * 30)

    def test_gradcheck(self):
        x, y = bank_inputs(4, 5, 3, torch.float64)
        for metric in ops.METRICS:
            assert torch.autograd.gradcheck(
                lambda a, b, mt=metric: ops.pairwise_distance(a, b, mt),
                (x.clone().requires_grad_(True), y.clone().requires_grad_(True)),
            )

    @pytest.mark.parametrize("metric", ops.METRICS)
    def test_opcheck(self, device, metric):
        x, y = bank_inputs(5, 6, 4, torch.float32, device)
        torch.library.opcheck(
            torch.ops.sslsteal_fast.pairwise_distance.default, (x.requires_grad_(True), y.requires_grad_(True), metric)
        )


class TestTopkSimilarity:
    @SETTINGS
    @given(
        n=st.integers(1, 30),
        m=st.integers(1, 300),
        dim=st.integers(1, 40),
        data=st.data(),
        metric=st.sampled_from(["cosine", "sqeuclidean"]),
    )
    def test_matches_bruteforce(self, n, m, dim, data, metric):
        k = data.draw(st.integers(1, m))
        q, bank = bank_inputs(n, m, dim, torch.float64)
        vals, idx = ops.topk_similarity(q, bank, k, metric)
        if metric == "cosine":
            full = 1.0 - reference.pairwise_distance(q, bank, "cosine")
        else:
            full = reference.pairwise_distance(q, bank, "sqeuclidean")
        exp_vals, _ = torch.sort(full, dim=1, descending=metric == "cosine", stable=True)
        assert_close(vals, exp_vals[:, :k], torch.float64, scale=dim)
        # The indices point at bank rows with exactly those scores.
        assert_close(full.gather(1, idx), vals, torch.float64, scale=dim)
        assert idx.dtype == torch.int64 and (idx >= 0).all() and (idx < m).all()

    def test_ties_go_to_smaller_index_across_blocks(self):
        q = torch.ones(3, 4)
        bank = torch.ones(40000, 4)  # spans several bank blocks
        vals, idx = ops.topk_similarity(q, bank, k=5)
        assert idx.tolist() == [[0, 1, 2, 3, 4]] * 3
        torch.testing.assert_close(vals, torch.ones(3, 5))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
    def test_dtypes_against_reference(self, device, dtype):
        q, bank = bank_inputs(20, 5000, 32, dtype, device)
        vals, idx = ops.topk_similarity(q, bank, 7)
        assert vals.dtype == dtype and idx.shape == (20, 7)
        rv, ri = reference.topk_similarity(q.double(), bank.double(), 7)
        tol = TOPK_TOL[dtype]
        torch.testing.assert_close(vals.double(), rv, rtol=tol, atol=tol)
        # Near-ties can swap in low precision; the selected rows must score within tolerance.
        full = 1.0 - reference.pairwise_distance(q.double(), bank.double(), "cosine")
        torch.testing.assert_close(full.gather(1, idx), rv, rtol=tol * 4, atol=tol * 4)

    def test_values_are_differentiable(self):
        q, bank = bank_inputs(6, 50, 5, torch.float64)
        q.requires_grad_(True)
        bank.requires_grad_(True)
        for metric in ("cosine", "sqeuclidean"):
            assert torch.autograd.gradcheck(lambda a, b, mt=metric: ops.topk_similarity(a, b, 3, mt)[0], (q, bank))

    def test_opcheck(self, device):
        q, bank = bank_inputs(5, 64, 8, torch.float32, device)
        torch.library.opcheck(
            torch.ops.sslsteal_fast.topk_similarity.default, (q.requires_grad_(True), bank, 4, "cosine")
        )
