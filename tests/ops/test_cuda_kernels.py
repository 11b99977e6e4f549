"""CUDA-specific checks of the native kernels (general CPU/CUDA parity lives in the other tests/ops files).

- low precision follows flash-attention's rule: the kernel's error against the float64 reference is at
  most twice PyTorch's own error in the same dtype (plus a small absolute floor);
- memory: the fused losses' peak extra memory stays far below one n x n buffer;
- CPU/CUDA device mixes raise errors that say what to move;
- results are bitwise identical run to run (no float atomics);
- ragged shapes (n not a multiple of 128, D not 16-byte aligned) and extreme temperatures.

Every test is marked ``cuda`` and skipped when no CUDA device (or no native CUDA kernel) is present.
"""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.ops._native import has_kernel
from sslsteal_fast.testing import (
    ABS_FLOOR,
    FP16_MEAN_GRAD_FACTOR,
    LOW_PRECISION_FACTOR,
    LOW_PRECISION_GRAD_RTOL,
    SOFT_NN_FAR_TOL,
    TOL,
    TOPK_CUDA_TOL,
)

HAS_CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device"),
]

LOW_PRECISION = (torch.bfloat16, torch.float16)


@pytest.fixture(autouse=True)
def _rng_and_native():
    if not has_kernel("cuda"):
        pytest.skip("sslsteal_fast was built without CUDA kernels")
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all()
    torch.manual_seed(0)
    yield
    torch.random.set_rng_state(cpu_state)
    torch.cuda.set_rng_state_all(cuda_state)


def _pair(b: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(b, d, device="cuda", dtype=torch.float64)
    bb = a + 0.3 * torch.randn(b, d, device="cuda", dtype=torch.float64)
    return a.to(dtype), bb.to(dtype)


def _soft_inputs(n: int, d: int, dtype: torch.dtype, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    z = (spread * torch.randn(n, d, device="cuda", dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, max(2, n // 4), (n,), device="cuda")
    return z, labels


def _err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref.double()).abs().max().item()


def _grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    g = torch.linspace(0.5, 1.5, out.numel(), device=out.device, dtype=out.dtype).view_as(out)
    (out * g).sum().backward()
    return out.detach(), [leaf.grad for leaf in leaves]


# ---- flash-attention rule for bf16 / fp16 -----------------------------------------------------------
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("n_half,d", [(256, 64), (300, 70)])
def test_info_nce_low_precision_rule(dtype, n_half, d):
    a, b = _pair(n_half, d, dtype)
    fn_native = lambda x, y: ops.info_nce(x, y, 0.1, reduction="none")  # noqa: E731
    fn_ref = lambda x, y: reference.info_nce(x, y, 0.1, reduction="none")  # noqa: E731
    ref_out, ref_g = _grads(fn_ref, a.double(), b.double())
    nat_out, nat_g = _grads(fn_native, a, b)
    pt_out, pt_g = _grads(fn_ref, a, b)
    assert _err(nat_out, ref_out) <= LOW_PRECISION_FACTOR * _err(pt_out, ref_out) + ABS_FLOOR[dtype]
    for gn, gp, gr in zip(nat_g, pt_g, ref_g, strict=True):
        assert _err(gn, gr) <= LOW_PRECISION_FACTOR * _err(gp, gr) + ABS_FLOOR[dtype]


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_soft_nn_low_precision_rule(dtype):
    z, labels = _soft_inputs(300, 64, dtype)
    fn_native = lambda x: ops.soft_nn(x, labels, 10.0, reduction="none")  # noqa: E731
    fn_ref = lambda x: reference.soft_nn(x, labels, 10.0, reduction="none")  # noqa: E731
    ref_out, (ref_g,) = _grads(fn_ref, z.double())
    nat_out, (nat_g,) = _grads(fn_native, z)
    pt_out, (pt_g,) = _grads(fn_ref, z)
    assert _err(nat_out, ref_out) <= LOW_PRECISION_FACTOR * _err(pt_out, ref_out) + ABS_FLOOR[dtype]
    assert _err(nat_g, ref_g) <= LOW_PRECISION_FACTOR * _err(pt_g, ref_g) + ABS_FLOOR[dtype]


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_pairwise_distance_low_precision_rule(dtype, metric):
    x = torch.randn(200, 96, device="cuda").to(dtype)
    y = torch.randn(333, 96, device="cuda").to(dtype)
    ref = reference.pairwise_distance(x.double(), y.double(), metric)
    nat = ops.pairwise_distance(x, y, metric)
    pt = reference.pairwise_distance(x, y, metric)
    assert nat.dtype == dtype
    assert _err(nat, ref) <= LOW_PRECISION_FACTOR * _err(pt, ref) + ABS_FLOOR[dtype] * ref.abs().max().item()


# ---- float32 / float64 parity on ragged shapes and extreme temperatures -----------------------------
@pytest.mark.parametrize("dtype,tol", [(dt, TOL[dt][0]) for dt in (torch.float32, torch.float64)])
@pytest.mark.parametrize("temperature", [0.01, 0.07, 1.0])
def test_info_nce_parity_ragged(dtype, tol, temperature):
    a, b = _pair(129, 70, dtype)
    fn_native = lambda x, y: ops.info_nce(x, y, temperature, reduction="none")  # noqa: E731
    fn_ref = lambda x, y: reference.info_nce(x, y, temperature, reduction="none")  # noqa: E731
    nat_out, nat_g = _grads(fn_native, a, b)
    ref_out, ref_g = _grads(fn_ref, a.double(), b.double())
    scale = max(1.0, ref_out.abs().max().item())
    assert _err(nat_out, ref_out) <= tol * scale
    for gn, gr in zip(nat_g, ref_g, strict=True):
        assert _err(gn, gr) <= tol * max(1.0, gr.abs().max().item())


@pytest.mark.parametrize("dtype,tol", list(SOFT_NN_FAR_TOL.items()))
def test_soft_nn_far_positives_stay_finite(dtype, tol):
    # Distances up to ~1e4 * T: exp(-d/T) underflows in any single-max scheme; separate maxima keep it exact.
    n, d, temperature = 200, 8, 1.0
    z, _ = _soft_inputs(n, d, torch.float64, spread=25.0)
    labels = torch.arange(n, device="cuda") % 50
    out = ops.soft_nn(z.to(dtype), labels, temperature, reduction="none")
    ref = reference.soft_nn(z, labels, temperature, reduction="none")
    assert torch.isfinite(out).all()
    assert _err(out, ref) <= tol * max(1.0, ref.abs().max().item())


def test_soft_nn_rows_without_positive_are_zero_and_excluded():
    z, _ = _soft_inputs(130, 32, torch.float32)
    labels = torch.arange(130, device="cuda")
    labels[:4] = 0  # only rows 0..3 have positives
    rows = ops.soft_nn(z, labels, 1.0, reduction="none")
    assert (rows[4:] == 0).all()
    ref = reference.soft_nn(z.double(), labels, 1.0, reduction="mean")
    assert abs(ops.soft_nn(z, labels, 1.0).item() - ref.item()) <= 1e-4 * max(1.0, abs(ref.item()))


def test_fp32_follows_torch_tf32_setting():
    a, b = _pair(256, 128, torch.float32)
    ref = reference.info_nce(a.double(), b.double(), 0.05, reduction="none")
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        precise = _err(ops.info_nce(a, b, 0.05, reduction="none"), ref)
        torch.backends.cuda.matmul.allow_tf32 = True
        fast = _err(ops.info_nce(a, b, 0.05, reduction="none"), ref)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    assert precise <= 1e-4
    assert fast <= 5e-2


# ---- top-k ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
@pytest.mark.parametrize("k", [1, 10, 300])
def test_topk_streams_bank(dtype, metric, k):
    q = torch.randn(150, 64, device="cuda").to(dtype)
    bank = torch.randn(20000, 64, device="cuda").to(dtype)
    vals, idx = ops.topk_similarity(q, bank, k, metric)
    assert vals.shape == (150, k) and idx.dtype == torch.int64
    # Values agree with a float64 recomputation at the returned indices, and are the true k best up to
    # near-ties (compare against the float64 reference's k-th value).
    qd, bd = q.double(), bank.double()
    if metric == "cosine":
        exact = (
            torch.nn.functional.normalize(qd, dim=1)[:, None, :] * torch.nn.functional.normalize(bd[idx], dim=2)
        ).sum(-1)
    else:
        exact = ((qd[:, None, :] - bd[idx]) ** 2).sum(-1)
    ref_v, _ = reference.topk_similarity(qd, bd, k, metric)
    tol = TOPK_CUDA_TOL[dtype]
    scale = 1.0 if metric == "cosine" else ref_v.abs().max().item()
    assert _err(vals, exact) <= tol * scale
    assert _err(exact, ref_v) <= tol * scale
    best_first = (vals[:, :-1] >= vals[:, 1:]) if metric == "cosine" else (vals[:, :-1] <= vals[:, 1:])
    assert best_first.all()


def test_topk_ties_go_to_smaller_index():
    bank = torch.randn(5000, 32, device="cuda")
    bank[4000] = bank[17]
    bank[4999] = bank[17]
    q = bank[17:18].clone()
    _, idx = ops.topk_similarity(q, bank, 3, "sqeuclidean")
    assert idx[0].tolist() == [17, 4000, 4999]


# ---- memory ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["info_nce", "soft_nn"])
def test_loss_peak_memory_far_below_n_squared(loss):
    n, d = 16384, 128
    torch.cuda.synchronize()
    if loss == "info_nce":
        a, b = _pair(n // 2, d, torch.bfloat16)
        a.requires_grad_(True)
        b.requires_grad_(True)
        inputs_bytes = 2 * a.numel() * a.element_size() * 2  # inputs + their grads
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ops.info_nce(a, b, 0.1).backward()
    else:
        z, labels = _soft_inputs(n, d, torch.bfloat16)
        z.requires_grad_(True)
        inputs_bytes = z.numel() * z.element_size() * 2
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ops.soft_nn(z, labels, 10.0).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - inputs_bytes
    n_by_n = n * n * 2  # one bf16 n x n matrix: 512 MiB
    assert extra < n_by_n / 8, f"peak extra memory {extra / 2**20:.1f} MiB"


# ---- device mixes ------------------------------------------------------------------------------------
def test_device_mix_raises_clear_errors():
    a = torch.randn(8, 4, device="cuda")
    b = torch.randn(8, 4)
    with pytest.raises((ValueError, RuntimeError), match="device"):
        ops.info_nce(a, b)
    with pytest.raises((ValueError, RuntimeError), match="device"):
        ops.soft_nn(a, torch.zeros(8, dtype=torch.long))
    with pytest.raises((ValueError, RuntimeError), match="device"):
        ops.pairwise_distance(a, b)
    with pytest.raises((ValueError, RuntimeError), match="device"):
        ops.topk_similarity(a, b, 2)
    # The raw ops (bypassing the Python checks) must refuse mixes too, not read host memory.
    # A cpu/cuda mix dispatches to the CUDA kernel, which names the stray tensor and both devices.
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::info_nce_fwd: b is on cpu but a is on cuda.*same device"):
        torch.ops.sslsteal_fast.info_nce_fwd(a, b, 0.1)
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::soft_nn_fwd: labels is on cpu but z is on cuda"):
        torch.ops.sslsteal_fast.soft_nn_fwd(a, torch.zeros(8, dtype=torch.long), 0.1)
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::pairwise_distance: y is on cpu but x is on cuda"):
        torch.ops.sslsteal_fast.pairwise_distance(a, b, "cosine")
    # Every argument check names the stray tensor and the reference tensor with their own devices
    # (never "x is on cpu but x is on cpu"), the backward's row vectors too.
    ones = torch.ones(16, device="cuda")
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::info_nce_bwd: lse_all is on cpu but a is on cuda"):
        torch.ops.sslsteal_fast.info_nce_bwd(ones, a, a, ones.cpu(), ones, 0.1)
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::info_nce_bwd: grad_rows is on cpu but a is on cuda"):
        torch.ops.sslsteal_fast.info_nce_bwd(ones.cpu(), a, a, ones, ones, 0.1)
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::topk_similarity: bank is on cpu but queries is on cuda"):
        torch.ops.sslsteal_fast.topk_similarity(a, b, 2, "cosine")


# ---- the n = 0 rule (csrc/sslsteal_fast.cpp), as on CPU (tests/ops/test_edge_cases.py) ----------------
def test_raw_ops_zero_rows_rule_cuda():
    lib = torch.ops.sslsteal_fast
    e = torch.zeros(0, 4, device="cuda")
    no_labels = torch.zeros(0, dtype=torch.long, device="cuda")
    stats = torch.zeros(0, device="cuda")
    for op, call in [
        ("info_nce_fwd", lambda: lib.info_nce_fwd(e, e, 0.1)),
        ("info_nce_bwd", lambda: lib.info_nce_bwd(stats, e, e, stats, stats, 0.1)),
        ("soft_nn_fwd", lambda: lib.soft_nn_fwd(e, no_labels, 0.1)),
        ("soft_nn_bwd", lambda: lib.soft_nn_bwd(stats, e, no_labels, stats, stats, 0.1)),
    ]:
        with pytest.raises(RuntimeError, match=rf"^sslsteal_fast::{op}: .*at least one row"):
            call()
    x = torch.randn(3, 4, device="cuda")
    assert lib.pairwise_distance(e, x, "sqeuclidean").shape == (0, 3)
    assert lib.pairwise_distance(x, e, "euclidean").shape == (3, 0)
    values, indices = lib.topk_similarity(e, x, 2, "cosine")
    assert values.shape == (0, 2) and indices.shape == (0, 2) and indices.dtype == torch.int64
    with pytest.raises(RuntimeError, match=r"^sslsteal_fast::topk_similarity: k must be in \[1, M = 0\]"):
        lib.topk_similarity(x, e, 1, "sqeuclidean")


# ---- determinism -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bitwise_deterministic(dtype):
    a, b = _pair(700, 96, dtype)
    z, labels = _soft_inputs(900, 80, dtype)

    def run() -> list[torch.Tensor]:
        _, (ga, gb) = _grads(lambda x, y: ops.info_nce(x, y, 0.1, reduction="none"), a, b)
        out, (gz,) = _grads(lambda x: ops.soft_nn(x, labels, 5.0, reduction="none"), z)
        v, i = ops.topk_similarity(a, z, 5)
        return [ga, gb, out, gz, v, i, ops.pairwise_distance(a, z)]

    first, second = run(), run()
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)


def test_opcheck_cuda():
    a, b = _pair(40, 24, torch.float32)
    z, labels = _soft_inputs(50, 24, torch.float32)
    a.requires_grad_(True)
    b.requires_grad_(True)
    z.requires_grad_(True)
    lib = torch.ops.sslsteal_fast
    torch.library.opcheck(lib.info_nce_fwd, (a, b, 0.1))
    torch.library.opcheck(lib.soft_nn_fwd, (z, labels, 2.0))
    torch.library.opcheck(lib.pairwise_distance, (a, z, "euclidean"))
    torch.library.opcheck(lib.topk_similarity, (a.detach(), z.detach(), 3, "cosine"))


# ---- torch >= 2.9's float32 precision API ------------------------------------------------------------
def test_new_fp32_precision_api_is_followed_and_never_raises():
    # Once torch.backends.cuda.matmul.fp32_precision has been set, torch's legacy getter (allowTF32CuBLAS)
    # raises; the kernels read the new setting, and only for float32 inputs.
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no torch.backends.cuda.matmul.fp32_precision")
    a, b = _pair(256, 128, torch.float32)
    ref = reference.info_nce(a.double(), b.double(), 0.05, reduction="none")
    old = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        fast = _err(ops.info_nce(a, b, 0.05, reduction="none"), ref)
        ops.info_nce(a.bfloat16(), b.bfloat16(), 0.05)  # no float32 input: the setting is not even read
        ops.pairwise_distance(a, b)
        ops.topk_similarity(a, b, 3)
        matmul.fp32_precision = "ieee"
        precise = _err(ops.info_nce(a, b, 0.05, reduction="none"), ref)
    finally:
        matmul.fp32_precision = old
    assert precise <= 1e-4
    assert fast <= 5e-2
    assert fast > precise  # the TF32 setting took effect


# ---- float16 gradients under reduction="mean" --------------------------------------------------------
def _mean_grad_errors(fn, inputs: tuple[torch.Tensor, ...], fn_ref) -> tuple[list[float], list[float]]:
    """Max abs gradient error of the native op and of PyTorch's own float16 path, against float64."""

    def grads(f, xs):
        leaves = [x.detach().clone().requires_grad_(True) for x in xs]
        f(*leaves).backward()
        return [leaf.grad for leaf in leaves]

    ref = grads(fn_ref, [x.double() for x in inputs])
    nat = grads(fn, inputs)
    pt = grads(fn_ref, inputs)
    return [_err(g, r) for g, r in zip(nat, ref, strict=True)], [_err(g, r) for g, r in zip(pt, ref, strict=True)]


def test_info_nce_fp16_mean_reduction_gradients():
    # reduction="mean" makes the backward's weights ~1/n^2 (~1e-8 here), below float16's smallest
    # subnormal: unscaled, most of them flushed to 0 and the gradients were 4-5x worse than PyTorch's.
    a, b = _pair(2048, 128, torch.float16)
    nat, pt = _mean_grad_errors(
        lambda x, y: ops.info_nce(x, y, 0.1), (a, b), lambda x, y: reference.info_nce(x, y, 0.1)
    )
    for e_nat, e_pt in zip(nat, pt, strict=True):
        assert e_nat <= FP16_MEAN_GRAD_FACTOR * e_pt, (nat, pt)


def test_soft_nn_fp16_mean_reduction_gradients():
    z, labels = _soft_inputs(4096, 64, torch.float16)
    (e_nat,), (e_pt,) = _mean_grad_errors(
        lambda x: ops.soft_nn(x, labels, 10.0), (z,), lambda x: reference.soft_nn(x, labels, 10.0)
    )
    assert e_nat <= FP16_MEAN_GRAD_FACTOR * e_pt, (e_nat, e_pt)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_info_nce_zero_row_keeps_other_gradients_finite(dtype):
    # An all-zero row has 1/max(|x|, eps) = 1e12; folded into float16's W it made W inf, and inf * 0
    # NaN in every other row's gradient.
    a, b = _pair(300, 64, dtype)
    a[3] = 0
    fn_native = lambda x, y: ops.info_nce(x, y, 0.1, reduction="none")  # noqa: E731
    fn_ref = lambda x, y: reference.info_nce(x, y, 0.1, reduction="none")  # noqa: E731
    _, (ga, gb) = _grads(fn_native, a, b)
    _, (ra, rb) = _grads(fn_ref, a.double(), b.double())
    others = torch.ones(300, dtype=torch.bool, device="cuda")
    others[3] = False  # the zero row's own gradient is dz / eps: huge in any dtype
    assert torch.isfinite(ga[others]).all() and torch.isfinite(gb).all()
    scale = max(1.0, ra[others].abs().max().item(), rb.abs().max().item())
    assert _err(ga[others], ra[others]) <= LOW_PRECISION_GRAD_RTOL[dtype] * scale
    assert _err(gb, rb) <= LOW_PRECISION_GRAD_RTOL[dtype] * scale


# ---- the small shared-memory backward of 99 KiB devices (sm_86 / sm_89 / sm_120) ----------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_small_tile_backward_matches_default_layout(monkeypatch, dtype):
    # SSLSTEAL_CUDA_SMALL_TILES=1 forces the layout those devices get. Each gradient element is summed
    # in the same order in both layouts, so the results are bitwise equal.
    a, b = _pair(300, 70, dtype)
    z, labels = _soft_inputs(260, 72, dtype)
    fn_nce = lambda x, y: ops.info_nce(x, y, 0.1, reduction="none")  # noqa: E731
    fn_snn = lambda x: ops.soft_nn(x, labels, 2.0, reduction="none")  # noqa: E731
    _, default_nce = _grads(fn_nce, a, b)
    _, default_snn = _grads(fn_snn, z)
    monkeypatch.setenv("SSLSTEAL_CUDA_SMALL_TILES", "1")
    _, small_nce = _grads(fn_nce, a, b)
    _, small_snn = _grads(fn_snn, z)
    for x, y in zip(default_nce + default_snn, small_nce + small_snn, strict=True):
        assert torch.equal(x, y)
