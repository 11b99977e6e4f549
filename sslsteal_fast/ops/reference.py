"""Plain-PyTorch references for every native op.

These are first-class code, not test helpers: they are the oracle the tests compare against (run in
float64), the baseline the benchmarks time, and the fallback when the compiled extension is missing.
They materialise the full n x n matrix, so they are only suitable for moderate n.

All functions take already-validated arguments (see :mod:`sslsteal_fast.ops`).

Numerics shared with the native kernels (``csrc/numerics.h``):

* **Non-finite input propagates as NaN.** A row whose squared norm is not finite (a NaN or +-inf
  entry, or an overflow) has NaN statistics, so every squared distance it takes part in is NaN (not 0,
  not +inf), and so is every log-sum-exp over such a distance. Cosine similarities of such a row are
  NaN through the normalisation. ``torch.topk`` order applies: NaN counts as larger than +inf.
* **No cancellation far from the origin.** Squared distances use |x|^2 + |y|^2 - 2 <x, y>, which in
  float32 loses every digit once |x|^2 dwarfs the distances (rows at an offset of 1e5). Distances do
  not change under a common shift, so :func:`distance_shift` (the mean finite row) is subtracted from
  both sides first. It is detached: the distances do not depend on it, so their gradient does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "distance_shift",
    "info_nce",
    "info_nce_paper",
    "pairwise_distance",
    "reduce_rows",
    "soft_nn",
    "soft_nn_paper",
    "sq_norms",
    "topk_similarity",
]


def distance_shift(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The common shift of a squared-distance computation: the mean of the rows of ``x`` and ``y``
    whose entries are all finite (zeros when there is none), detached, shape (D,), in ``x``'s dtype.

    Subtracting it leaves rows about as far from 0 as their spread, wherever the point cloud sits, so
    the norm expansion keeps its precision. No data-dependent shapes or host syncs (torch.compile).
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        total = torch.zeros(x.shape[1], dtype=acc, device=x.device)
        count = torch.zeros((), dtype=acc, device=x.device)
        for m in (x, y):
            if m is None or m.shape[0] == 0:
                continue
            finite = torch.isfinite(m).all(1, keepdim=True)
            total = total + torch.where(finite, m, 0).sum(0, dtype=acc)
            count = count + finite.sum()
        return (total / count.clamp_min(1)).to(x.dtype)


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared row norms (N,), NaN for a row whose squared norm is not finite (see the module notes)."""
    s = (x * x).sum(1)
    return s.masked_fill(~torch.isfinite(s), float("nan"))


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "sqeuclidean") -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) distances; cosine distance is 1 - cosine similarity.

    Squared distances are taken about :func:`distance_shift` and clamped at 0; NaN for a pair with a
    non-finite row (``clamp_min`` keeps NaN).
    """
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    shift = distance_shift(x, y)
    x, y = x - shift, y - shift
    d = sq_norms(x)[:, None] + sq_norms(y)[None, :] - 2.0 * (x @ y.T)
    d = d.clamp_min(0.0)
    if metric == "euclidean":
        return d.sqrt()
    return d


def reduce_rows(rows: torch.Tensor, valid: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Reduce per-row losses; rows where ``valid`` is False are excluded (they hold 0 in ``none``)."""
    if valid is not None:
        rows = torch.where(valid, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if valid is None:
        return rows.sum() / rows.numel()
    # Mean over valid rows; with none valid the (all-zero) sum divided by 1 gives 0, which keeps
    # training loops alive. No data-dependent branch, so it traces under torch.compile.
    return rows.sum() / valid.sum().clamp_min(1).to(rows.dtype)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07, reduction: str = "mean") -> torch.Tensor:
    """NT-Xent over the 2B L2-normalised rows of [a; b]; row i's positive is row (i + B) mod 2B."""
    z = F.normalize(torch.cat([a, b], 0), dim=1)
    n = z.shape[0]
    bsz = n // 2
    logits = (z @ z.T) / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    partner = (torch.arange(n, device=z.device) + bsz) % n
    rows = torch.logsumexp(logits, dim=1) - logits[torch.arange(n, device=z.device), partner]
    return reduce_rows(rows, None, reduction)


def soft_nn(z: torch.Tensor, labels: torch.Tensor, temperature: float = 100.0, reduction: str = "mean") -> torch.Tensor:
    """Soft Nearest Neighbor loss (Frosst et al. 2019) with squared Euclidean distance.

    Row i: -log(sum_{j != i, y_j = y_i} exp(-d_ij / T) / sum_{k != i} exp(-d_ik / T)).
    Rows without a same-label partner are excluded from ``mean``/``sum`` and are 0 in ``none``.
    """
    n = z.shape[0]
    d = pairwise_distance(z, z, "sqeuclidean")
    logits = -d / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    same = (labels[:, None] == labels[None, :]) & ~eye
    lse_all = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    lse_pos = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    valid = same.any(1)
    rows = torch.where(valid, lse_all - lse_pos, torch.zeros((), dtype=logits.dtype, device=z.device))
    return reduce_rows(rows, valid, reduction)


def topk_similarity(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, metric: str = "cosine", chunk: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked matmul + topk: the k best bank rows per query.

    cosine: the k largest cosine similarities; sqeuclidean: the k smallest squared distances.
    torch.topk's order: NaN counts as the largest value, so a NaN score (a non-finite query or bank
    row) ranks first by cosine and last by distance. Across chunks ties go to the smaller bank
    index; within a chunk the order of tied values is torch.topk's (unspecified), unlike the native
    op. Memory: one (N, chunk) block at a time.
    """
    largest = metric == "cosine"
    q = F.normalize(queries, dim=1) if largest else queries
    best_v: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start in range(0, bank.shape[0], chunk):
        block = bank[start : start + chunk]
        if largest:
            scores = q @ F.normalize(block, dim=1).T
        else:
            scores = pairwise_distance(q, block, "sqeuclidean")
        kk = min(k, block.shape[0])
        v, i = torch.topk(scores, kk, dim=1, largest=largest, sorted=True)
        i = i + start
        if best_v is None:
            best_v, best_i = v, i
        else:
            cat_v = torch.cat([best_v, v], 1)
            cat_i = torch.cat([best_i, i], 1)
            # Stable ordering: sort by value, ties by index (earlier chunks first in cat order).
            order = torch.sort(cat_v, dim=1, descending=largest, stable=True).indices[:, :k]
            best_v, best_i = cat_v.gather(1, order), cat_i.gather(1, order)
    assert best_v is not None and best_i is not None
    return best_v, best_i


def info_nce_paper(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """The authors' formulation: float64, full n x n similarity, positives picked by a mask.

    Kept as a benchmark baseline (what the reference research code computes), not as the oracle.
    """
    z = F.normalize(torch.cat([a, b], 0).double(), dim=1)
    n = z.shape[0]
    bsz = n // 2
    sim = z @ z.T
    labels = torch.cat([torch.arange(bsz), torch.arange(bsz)]).to(z.device)
    mask_pos = (labels[:, None] == labels[None, :]).double()
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    mask_pos = mask_pos[~eye].view(n, -1)
    sim = sim[~eye].view(n, -1)
    positives = sim[mask_pos.bool()].view(n, -1)
    negatives = sim[~mask_pos.bool()].view(n, -1)
    logits = torch.cat([positives, negatives], 1) / temperature
    target = torch.zeros(n, dtype=torch.long, device=z.device)
    return F.cross_entropy(logits, target)


def soft_nn_paper(z: torch.Tensor, labels: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """The authors' formulation: float64 pairwise distances by repeat + matmul over a full n x n tile."""
    x = z.double()
    n = x.shape[0]
    sq = (x * x).sum(1)
    d = sq.repeat(n, 1).T + sq.repeat(n, 1) - 2.0 * (x @ x.T)
    eye = torch.eye(n, dtype=torch.double, device=x.device)
    fracs = torch.exp(-d / temperature) - eye
    same = (labels[:, None] == labels[None, :]).double() - eye
    picked = (fracs * same).sum(1)
    total = fracs.sum(1)
    return -torch.log(1e-5 + picked / (1e-5 + total)).mean()
