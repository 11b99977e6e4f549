"""Functional API over the native ops.

Every function validates its arguments here (a clear ``ValueError``/``TypeError`` naming the
argument), then runs the compiled kernel registered as a ``torch.ops.sslsteal_fast`` custom op, or
the plain-PyTorch reference from :mod:`sslsteal_fast.ops.reference` when the extension is missing
(with a one-time warning) or the device has no native kernel.

The loss ops are fused and tiled: memory is O(n * D), never an n x n buffer.

Non-finite input propagates as NaN, as in plain PyTorch: a row with a NaN or +-inf entry makes every
distance, similarity and loss term it enters NaN (and the gradients that flow from them), so a
diverging run shows up as a NaN loss instead of a plausible number. Squared distances are taken
about a common shift of the rows, so float32 keeps its precision far from the origin (details in
:mod:`sslsteal_fast.ops.reference`, the float64 oracle the kernels are tested against).
"""

from __future__ import annotations

import torch

from sslsteal_fast.config import TEMPERATURES
from sslsteal_fast.ops import reference
from sslsteal_fast.ops._native import native_available, native_for
from sslsteal_fast.ops._validate import check_labels, check_matrix, check_pair
from sslsteal_fast.util.checks import check_choice, check_int, check_number

__all__ = [
    "METRICS",
    "REDUCTIONS",
    "TOPK_CHUNK",
    "info_nce",
    "native_available",
    "pairwise_distance",
    "soft_nn",
    "topk_similarity",
]

METRICS = ("sqeuclidean", "euclidean", "cosine")
TOPK_METRICS = ("cosine", "sqeuclidean")
REDUCTIONS = ("mean", "sum", "none")
#: Bank rows per search when ``k`` exceeds them: :func:`topk_similarity` then searches the bank in
#: blocks of this many rows (each block's ``min(k, rows)`` best) and merges the lists stably, so no
#: single native search is asked for more than this many results.
TOPK_CHUNK = 65536


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "sqeuclidean") -> torch.Tensor:
    """Pairwise distances between the rows of ``x`` (N, D) and ``y`` (M, D) -> (N, M).

    ``metric``: ``"sqeuclidean"`` (||x - y||^2, clamped at 0), ``"euclidean"`` or ``"cosine"``
    (1 - cosine similarity; a zero row has similarity 0). Differentiable in ``x`` and ``y``.
    Any pair with a non-finite row (a NaN or +-inf entry) has distance NaN.
    """
    check_matrix("x", x)
    check_matrix("y", y)
    check_pair("x", x, "y", y, same_rows=False)
    check_choice("metric", metric, METRICS)
    if native_for(x):
        return torch.ops.sslsteal_fast.pairwise_distance(x, y, metric)
    return reference.pairwise_distance(x, y, metric)


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURES["info_nce"], reduction: str = "mean"
) -> torch.Tensor:
    """NT-Xent (InfoNCE) over the 2B L2-normalised rows of ``[a; b]``.

    ``a`` and ``b`` are (B, D): row i of ``a`` and row i of ``b`` are positives of each other, and
    every other of the 2B - 2 rows is a negative. Per row:
    ``-log(exp(s_ip / T) / sum_{k != i} exp(s_ik / T))`` with cosine similarities ``s``.
    ``reduction="none"`` returns the 2B per-row losses (rows of ``a`` first).
    """
    check_matrix("a", a)
    check_matrix("b", b)
    check_pair("a", a, "b", b, same_rows=True)
    temperature = _check_loss_args("info_nce", "a and b", a.shape[0], temperature, reduction)
    if native_for(a):
        rows, _, _ = torch.ops.sslsteal_fast.info_nce_fwd(a, b, temperature)
        return reference.reduce_rows(rows, None, reduction)
    return reference.info_nce(a, b, temperature, reduction)


def soft_nn(
    z: torch.Tensor, labels: torch.Tensor, temperature: float = TEMPERATURES["soft_nn"], reduction: str = "mean"
) -> torch.Tensor:
    """Soft Nearest Neighbor loss (Frosst, Papernot & Hinton 2019) on unnormalised rows.

    Squared Euclidean distances ``d``; per row
    ``-log(sum_{j != i, y_j = y_i} exp(-d_ij / T) / sum_{k != i} exp(-d_ik / T))``.
    Rows with no same-label partner are left out of ``mean`` and ``sum`` (and are 0 in ``none``).
    A non-finite row makes every row with a partner NaN (it sits in every row's denominator).
    Stealing calls it with ``z = [stolen; victim]`` and ``labels = arange(B).repeat(2)``.
    """
    check_matrix("z", z)
    check_labels(labels, z)
    temperature = _check_loss_args("soft_nn", "z", z.shape[0], temperature, reduction)
    if native_for(z):
        rows, _, lse_pos = torch.ops.sslsteal_fast.soft_nn_fwd(z, labels, temperature)
        valid = lse_pos != float("-inf")  # -inf: no partner; NaN: a partner, and a NaN loss row
        return reference.reduce_rows(rows, valid, reduction)
    return reference.soft_nn(z, labels, temperature, reduction)


def _check_loss_args(op: str, rows_of: str, rows: int, temperature: object, reduction: object) -> float:
    """The loss ops' shared arguments; returns the temperature as a float."""
    check_choice("reduction", reduction, REDUCTIONS)
    if rows == 0:
        raise ValueError(f"{op}: {rows_of} must have at least one row (got 0)")
    return check_number("temperature", temperature, low=0.0, strict=True)


def topk_similarity(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, metric: str = "cosine"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best rows of ``bank`` (M, D) for each row of ``queries`` (N, D).

    Returns ``(values, indices)``, each (N, k), best first. ``metric="cosine"``: largest cosine
    similarity; ``"sqeuclidean"``: smallest squared distance, ranked about a common shift and then
    recomputed directly as ``||q - b||^2`` for the k winners. Ties go to the smaller index. The bank is
    streamed in blocks, so no N x M matrix is held. ``values`` is differentiable; ``indices`` int64.

    Non-finite rows follow ``torch.topk``'s order, on every device: a query or bank row with a NaN or
    +-inf entry scores NaN, and NaN counts as larger than every number, so it ranks *first* by cosine
    and *last* by distance. Every bank row is a candidate, so there are always k results (k <= M),
    never a placeholder index: a NaN query row gets k NaN values with indices 0..k-1, and a query
    with fewer than k finite scores gets its finite ones in order followed (sqeuclidean) or preceded
    (cosine) by the NaN ones, in index order.
    """
    check_matrix("queries", queries)
    check_matrix("bank", bank)
    check_pair("queries", queries, "bank", bank, same_rows=False)
    check_choice("metric", metric, TOPK_METRICS)
    check_int("k", k, low=1, high=bank.shape[0])  # at most the bank's M rows
    if not native_for(queries):
        return reference.topk_similarity(queries, bank, k, metric)
    if k <= TOPK_CHUNK:
        return torch.ops.sslsteal_fast.topk_similarity(queries, bank, k, metric)
    return _topk_merged(queries, bank, k, metric, TOPK_CHUNK)


def _topk_merged(
    queries: torch.Tensor, bank: torch.Tensor, k: int, metric: str, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The native search over blocks of ``chunk`` bank rows, merged into the best ``k`` (``k > chunk``).

    Each block gives its ``min(k, rows)`` best; the running list keeps at most ``k`` columns, so a
    merge never asks for more columns than the lists hold. The merge is a stable sort over the
    concatenated lists (earlier blocks first), so ties still go to the smaller bank index and NaN
    keeps torch.topk's place (largest).
    """
    largest = metric == "cosine"
    best_v: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start in range(0, bank.shape[0], chunk):
        block = bank[start : start + chunk]
        v, i = torch.ops.sslsteal_fast.topk_similarity(queries, block, min(k, block.shape[0]), metric)
        i = i + start
        if best_v is None or best_i is None:
            best_v, best_i = v, i
            continue
        cat_v, cat_i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
        keep = min(k, cat_v.shape[1])
        order = torch.sort(cat_v.detach(), dim=1, descending=largest, stable=True).indices[:, :keep]
        best_v, best_i = cat_v.gather(1, order), cat_i.gather(1, order)
    assert best_v is not None and best_i is not None  # k <= M, so the bank has a row
    return best_v, best_i
