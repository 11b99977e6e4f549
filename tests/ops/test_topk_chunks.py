"""topk_similarity with k larger than one search block: the blocks' lists merged, against torch.topk."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import TOPK_CUDA_TOL, TOPK_TOL, bank_inputs


def _full_topk(queries: torch.Tensor, bank: torch.Tensor, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk over the whole (N, M) score matrix, scored in float64."""
    q, b = queries.double(), bank.double()
    if metric == "cosine":
        scores = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    else:
        scores = reference.pairwise_distance(q, b, "sqeuclidean")
    return torch.topk(scores, k, dim=1, largest=metric == "cosine", sorted=True)


@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
@pytest.mark.parametrize(("bank_rows", "k"), [(23, 10), (23, 23), (16, 13), (9, 9)])
def test_k_above_the_block_with_three_or_more_blocks(monkeypatch, metric, bank_rows, k):
    monkeypatch.setattr(ops, "TOPK_CHUNK", 4)  # 23 rows: 6 blocks; k = 10 > 2 blocks' worth
    queries, bank = bank_inputs(5, bank_rows, 3, seed=1)
    values, indices = ops.topk_similarity(queries, bank, k=k, metric=metric)
    want_v, want_i = _full_topk(queries, bank, k, metric)
    assert values.shape == indices.shape == (5, k)
    assert torch.equal(indices, want_i)
    torch.testing.assert_close(values.double(), want_v, rtol=TOPK_TOL[torch.float32], atol=TOPK_TOL[torch.float32])


def test_merged_values_keep_their_gradient(monkeypatch):
    monkeypatch.setattr(ops, "TOPK_CHUNK", 4)
    queries, bank = bank_inputs(3, 14, 4, seed=2)
    queries.requires_grad_(True)
    values, _ = ops.topk_similarity(queries, bank, k=9, metric="sqeuclidean")
    values.sum().backward()
    want_v, _ = _full_topk(queries.detach(), bank, 9, "sqeuclidean")
    assert queries.grad is not None and torch.isfinite(queries.grad).all()
    torch.testing.assert_close(values.detach().double(), want_v, rtol=1e-5, atol=1e-5)


def test_merged_ties_go_to_the_smaller_index(monkeypatch):
    monkeypatch.setattr(ops, "TOPK_CHUNK", 3)
    queries = torch.ones(2, 3)
    bank = torch.ones(11, 3)  # every score ties
    _, indices = ops.topk_similarity(queries, bank, k=8, metric="cosine")
    assert torch.equal(indices, torch.arange(8).expand(2, 8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
def test_cuda_k_above_two_blocks_of_65536(metric):
    """The real sizes: k > 131,072 over a bank of three or more 65,536-row blocks."""
    queries, bank = bank_inputs(3, 3 * 65536 + 17, 8, seed=3, device="cuda")
    k = 2 * 65536 + 5
    values, indices = ops.topk_similarity(queries, bank, k=k, metric=metric)
    want_v, want_i = _full_topk(queries, bank, k, metric)
    assert values.shape == (3, k)
    tol = TOPK_CUDA_TOL[torch.float32]
    torch.testing.assert_close(values.double(), want_v, rtol=tol, atol=tol)
    assert all(row.unique().numel() == k for row in indices)  # k distinct bank rows per query
    # Ranks may swap only between scores within the tolerance: the rows the indices pick score as the ranks say.
    q, b = queries.double(), bank.double()
    if metric == "cosine":
        got = (
            torch.nn.functional.normalize(q, dim=1)[:, None, :] * torch.nn.functional.normalize(b, dim=1)[indices]
        ).sum(-1)
    else:
        got = ((q[:, None, :] - b[indices]) ** 2).sum(-1)
    torch.testing.assert_close(got, want_v, rtol=tol, atol=tol)
