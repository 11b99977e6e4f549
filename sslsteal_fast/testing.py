"""Test support shared by the test suite and the benchmarks: input builders and the tolerance table.

Like ``torch.testing``, this is part of the package so that the benchmarks (which check agreement
before they time) and the tests reach the same inputs and the same tolerances without path tricks,
and so that code built on the package can check its own kernels or defenses the same way.

Tolerances as data (after xformers' ``fmha/common.py``): every numeric tolerance the tests use is a
named entry below. For bfloat16 and float16 the rule is flash-attention's: a kernel's error
against the float64 reference may be at most :data:`LOW_PRECISION_FACTOR` times PyTorch's own
error when it runs the reference in that dtype (:func:`assert_low_precision_rule`).
"""

from __future__ import annotations

import torch

__all__ = [
    "ABS_FLOOR",
    "CSV_ATOL",
    "DISTANCE_TOL",
    "EM_MONOTONE_SLACK",
    "EXPORT_RTOL",
    "F32_ATOL",
    "FAR_FROM_ORIGIN_RTOL",
    "FOREIGN_ATOL",
    "FP16_MEAN_GRAD_FACTOR",
    "GMM_SCORE_ATOL",
    "LOW_PRECISION_FACTOR",
    "LOW_PRECISION_GRAD_RTOL",
    "LOW_PRECISION_SLACK",
    "SOFT_NN_FAR_TOL",
    "STATS_RTOL",
    "TOL",
    "TOPK_CUDA_TOL",
    "TOPK_EXACT_RTOL",
    "TOPK_TOL",
    "TRANSCRIPTION_TOL",
    "assert_close",
    "assert_low_precision_rule",
    "bank_inputs",
    "pair_inputs",
    "snn_inputs",
]

# ------------------------------------------------------------------------------------- tolerances

#: (rtol, atol) of a float32/float64 loss or distance kernel against the float64 reference.
TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (2e-4, 2e-5),
}
#: rtol of pairwise distances per dtype (atol is 30 x rtol: distances are O(D) near the origin).
DISTANCE_TOL: dict[torch.dtype, float] = {torch.float32: 2e-4, torch.bfloat16: 5e-2}
#: rtol = atol of top-k similarity values per dtype (cosines are in [-1, 1]).
TOPK_TOL: dict[torch.dtype, float] = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}
#: ... on CUDA, where float32 products run on tensor cores (TF32 / 3xTF32), relative to the largest value.
TOPK_CUDA_TOL: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
#: rtol of top-k squared distances against float64 ||q - b||^2 (recomputed directly for the k winners):
#: one ulp of the output dtype, at any offset from the origin.
TOPK_EXACT_RTOL: dict[torch.dtype, float] = {torch.float32: 2.0**-23, torch.float64: 1e-14}
#: rtol of float32 squared distances, SoftNN losses and their gradients (relative to the largest) against
#: float64 for rows far from the origin (offsets 1e3 and 1e5; the kernels shift the rows first).
FAR_FROM_ORIGIN_RTOL: dict[torch.dtype, float] = {torch.float32: 1e-4}
#: rtol of SoftNN with positives far beyond the negatives (the separate positive maxima are exercised).
SOFT_NN_FAR_TOL: dict[torch.dtype, float] = {torch.float32: 5e-4, torch.float64: 1e-9}
#: Absolute error below which a difference is noise for each dtype (the 2x rule is relative to PyTorch).
ABS_FLOOR: dict[torch.dtype, float] = {
    torch.float32: 1e-5,
    torch.float64: 1e-10,
    torch.bfloat16: 1e-3,
    torch.float16: 2e-4,
}
#: Low precision: the kernel's error may be this many times PyTorch's own error in that dtype ...
LOW_PRECISION_FACTOR = 2.0
#: ... and for float16 gradients under reduction="mean" (tiny weights, where flushing to zero would show)
#: at most this many times, with no absolute floor (the gradients are ~1e-5, below ABS_FLOOR).
FP16_MEAN_GRAD_FACTOR = 1.5
#: rtol (relative to the largest float64 gradient, at least 1) of a bfloat16 / float16 loss gradient where
#: PyTorch's own path in that dtype is no baseline (an all-zero row: its F.normalize eps rounds to 0
#: in float16, so PyTorch gives NaN everywhere).
LOW_PRECISION_GRAD_RTOL: dict[torch.dtype, float] = {torch.bfloat16: 3e-2, torch.float16: 1e-2}
#: ... plus this absolute slack (relative to the largest exact value) for errors that are ~0 in both.
LOW_PRECISION_SLACK = 1e-3
#: (rtol, atol) of a float64 loss module against a float64 loop transcription of the paper's formula.
TRANSCRIPTION_TOL = (1e-7, 1e-9)
#: Float32 rounding of O(1) values (rotations, orthogonal maps, cosine scores).
F32_ATOL = 1e-5
#: ONNX export parity (the project's contract: max relative difference vs PyTorch).
EXPORT_RTOL = 1e-4
#: ONNX Runtime vs numpy on hand-built float32 graphs.
FOREIGN_ATOL = 1e-5
#: rtol of float64 summary statistics (means, t intervals) against scipy's or a hand computation.
STATS_RTOL = 1e-12
#: CSV cells are rounded to 6 decimals (``report._fmt``): the absolute error of a value read back.
CSV_ATOL = 1e-6
#: |sklearn's GaussianMixture score - ours| on toy data (mean log-likelihood per row).
GMM_SCORE_ATOL = 0.05
#: EM may lose this much mean log-likelihood per iteration to rounding (it never really decreases).
EM_MONOTONE_SLACK = 1e-9


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    """``actual`` matches ``expected`` within :data:`TOL` for ``dtype`` (atol times ``scale``), in float64."""
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale)


def assert_low_precision_rule(actual: torch.Tensor, torch_lowp: torch.Tensor, exact: torch.Tensor) -> None:
    """max|actual - exact| <= LOW_PRECISION_FACTOR * max|torch_in_that_dtype - exact| (+ a tiny slack)."""
    err = (actual.double() - exact.double()).abs().max().item()
    ref_err = (torch_lowp.double() - exact.double()).abs().max().item()
    bound = LOW_PRECISION_FACTOR * ref_err + LOW_PRECISION_SLACK * max(1.0, exact.double().abs().max().item())
    assert err <= bound, f"low-precision error {err:.3g} exceeds {LOW_PRECISION_FACTOR} x torch's own {ref_err:.3g}"


# ----------------------------------------------------------------------------------------- inputs


def pair_inputs(
    bsz: int,
    dim: int,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    *,
    seed: int = 0,
    identical: bool = False,
    requires_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), each (B, D): a stolen/victim pair of representation batches (b = a + noise)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(bsz, dim, generator=g, dtype=torch.float64)
    b = a.clone() if identical else a + 0.5 * torch.randn(bsz, dim, generator=g, dtype=torch.float64)
    a, b = a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)
    return a.requires_grad_(requires_grad), b.requires_grad_(requires_grad)


def snn_inputs(
    n: int,
    dim: int,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    *,
    seed: int = 0,
    num_labels: int | None = None,
    scale: float = 1.0,
    requires_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z (n, D), labels (n,)); by default labels pair row i with row i + n/2, as in stealing."""
    g = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(n, dim, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)
    if num_labels is None:
        labels = torch.arange(n) % max(1, n // 2)
    else:
        labels = torch.randint(0, num_labels, (n,), generator=g)
    return z.requires_grad_(requires_grad), labels.to(device)


def bank_inputs(
    n_queries: int, n_bank: int, dim: int, dtype: torch.dtype = torch.float32, device: str = "cpu", *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries (N, D), bank (M, D)) of independent standard-normal rows."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_queries, dim, generator=g).to(device=device, dtype=dtype)
    bank = torch.randn(n_bank, dim, generator=g).to(device=device, dtype=dtype)
    return q, bank
