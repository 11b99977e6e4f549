"""Loading the compiled extension and registering the Python halves of its custom ops.

The C++ side (``csrc/sslsteal_fast.cpp``) declares every schema; the kernels register themselves
for the CPU (and CUDA) dispatch keys. Here we add what belongs in Python: autograd formulas (the
backward is its own op that recomputes tiles from saved per-row statistics) and "fake" kernels that
give output shapes for ``torch.compile`` / meta tensors, so every op passes ``torch.library.opcheck``.

Set ``SSLSTEAL_DISABLE_NATIVE=1`` to force the plain-PyTorch fallback (used by the tests).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from sslsteal_fast.ops import reference

_LOADED: bool | None = None
_LOAD_ERROR: str | None = None
_WARNED = False


def _load() -> bool:
    global _LOADED, _LOAD_ERROR
    if _LOADED is not None:
        return _LOADED
    if os.environ.get("SSLSTEAL_DISABLE_NATIVE", "") not in ("", "0"):
        _LOADED, _LOAD_ERROR = False, "disabled by SSLSTEAL_DISABLE_NATIVE"
        return False
    try:
        # The optional native extension, loaded on first use so that a missing build falls back.
        from sslsteal_fast import _C  # noqa: F401  (registers torch.ops.sslsteal_fast.*)
    except ImportError as exc:  # not built, or built against another torch
        _LOADED, _LOAD_ERROR = False, str(exc)
        return False
    _register_python_parts()
    _LOADED = True
    return True


def native_available() -> bool:
    """True when the compiled extension is loaded and its ops are registered."""
    return _load()


def load_error() -> str | None:
    _load()
    return _LOAD_ERROR


def has_kernel(device_type: str) -> bool:
    if not _load():
        return False
    if device_type == "cpu":
        return True
    return torch._C._dispatch_has_kernel_for_dispatch_key("sslsteal_fast::info_nce_fwd", device_type.upper())


def native_for(t: torch.Tensor) -> bool:
    """Whether a native kernel serves tensors like ``t``; warns once when falling back."""
    global _WARNED
    if has_kernel(t.device.type):
        return True
    if not _WARNED:
        _WARNED = True
        why = _LOAD_ERROR if not _load() else f"no native kernel for device {t.device.type!r}"
        warnings.warn(
            f"sslsteal_fast: using the plain-PyTorch reference ops ({why}). They are correct but hold "
            "n x n matrices; build the extension with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register_python_parts() -> None:
    lib = "sslsteal_fast::"
    register_fake = torch.library.register_fake
    register_autograd = torch.library.register_autograd

    # ---- fake (shape-only) kernels -----------------------------------------------------------
    @register_fake(lib + "pairwise_distance")
    def _(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
        return x.new_empty((x.shape[0], y.shape[0]))

    @register_fake(lib + "info_nce_fwd")
    def _(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
        n = a.shape[0] + b.shape[0]
        sd = _stat_dtype(a.dtype)
        return a.new_empty((n,)), a.new_empty((n,), dtype=sd), a.new_empty((n,), dtype=sd)

    @register_fake(lib + "info_nce_bwd")
    def _(grad_rows, a, b, lse_all, lse_pos, temperature):  # type: ignore[no-untyped-def]
        return torch.empty_like(a), torch.empty_like(b)

    @register_fake(lib + "soft_nn_fwd")
    def _(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
        n = z.shape[0]
        sd = _stat_dtype(z.dtype)
        return z.new_empty((n,)), z.new_empty((n,), dtype=sd), z.new_empty((n,), dtype=sd)

    @register_fake(lib + "soft_nn_bwd")
    def _(grad_rows, z, labels, lse_all, lse_pos, temperature):  # type: ignore[no-untyped-def]
        return torch.empty_like(z)

    @register_fake(lib + "topk_similarity")
    def _(queries: torch.Tensor, bank: torch.Tensor, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = queries.shape[0]
        return queries.new_empty((n, k)), queries.new_empty((n, k), dtype=torch.int64)

    # ---- autograd -----------------------------------------------------------------------------
    def _setup_pd(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, y, metric = inputs
        ctx.metric = metric
        ctx.save_for_backward(x, y, output)

    def _backward_pd(ctx: Any, grad: torch.Tensor) -> tuple:
        x, y, out = ctx.saved_tensors
        return (*_pairwise_distance_grad(x, y, out, grad, ctx.metric), None)

    register_autograd(lib + "pairwise_distance", _backward_pd, setup_context=_setup_pd)

    # InfoNCE and SoftNN share one autograd shape: inputs (first, second, temperature) with second
    # the b rows or the labels, outputs (rows, lse_all, lse_pos); the backward op recomputes tiles.
    def _setup_contrastive(ctx: Any, inputs: tuple, output: tuple) -> None:
        first, second, temperature = inputs
        _, lse_all, lse_pos = output
        ctx.temperature = temperature
        ctx.save_for_backward(first, second, lse_all, lse_pos)

    def _contrastive_backward(bwd: Any) -> Any:
        def backward(ctx: Any, g_rows: torch.Tensor, _g_lse: Any, _g_pos: Any) -> tuple:
            if g_rows is None:
                return None, None, None
            first, second, lse_all, lse_pos = ctx.saved_tensors
            grads = bwd(g_rows.contiguous(), first, second, lse_all, lse_pos, ctx.temperature)
            return (*grads, None) if isinstance(grads, tuple) else (grads, None, None)

        return backward

    for fwd, bwd in (("info_nce_fwd", "info_nce_bwd"), ("soft_nn_fwd", "soft_nn_bwd")):
        backward = _contrastive_backward(getattr(torch.ops.sslsteal_fast, bwd))
        register_autograd(lib + fwd, backward, setup_context=_setup_contrastive)

    def _no_double_backward(ctx: Any, *grads: Any) -> tuple:
        raise RuntimeError(
            "sslsteal_fast: double backward through the fused loss kernels is not supported; "
            "use the reference ops in sslsteal_fast.ops.reference for higher-order gradients"
        )

    for name in ("info_nce_bwd", "soft_nn_bwd"):
        register_autograd(lib + name, _no_double_backward, setup_context=lambda ctx, inputs, output: None)

    def _setup_topk(ctx: Any, inputs: tuple, output: tuple) -> None:
        queries, bank, _, metric = inputs
        values, idx = output
        ctx.metric = metric
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(queries, bank, values, idx)

    def _backward_topk(ctx: Any, g_values: torch.Tensor, _g_idx: Any) -> tuple:
        queries, bank, values, idx = ctx.saved_tensors
        return (*_topk_values_grad(queries, bank, values, idx, g_values, ctx.metric), None, None)

    register_autograd(lib + "topk_similarity", _backward_topk, setup_context=_setup_topk)


def _pairwise_distance_grad(
    x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, grad: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of pairwise_distance written with matmuls (O(N*M) like the output itself).

    Squared metrics: about the forward's common shift (rowsum(g) x - g y cancels like the forward's
    norm expansion), and NaN distances pass no gradient, as clamp_min's backward in the reference;
    the non-finite entries of their rows still turn it NaN (0 * NaN), as autograd of the reference does.
    """
    if metric == "cosine":
        xn_norm = x.norm(dim=1, keepdim=True)
        yn_norm = y.norm(dim=1, keepdim=True)
        xh = x / xn_norm.clamp_min(1e-12)
        yh = y / yn_norm.clamp_min(1e-12)
        # d = 1 - xh @ yh.T  ->  d(xh) = -grad @ yh, d(yh) = -grad.T @ xh
        gxh = -(grad @ yh)
        gyh = -(grad.T @ xh)
        gx = (gxh - xh * (gxh * xh).sum(1, keepdim=True)) / xn_norm.clamp_min(1e-12)
        gy = (gyh - yh * (gyh * yh).sum(1, keepdim=True)) / yn_norm.clamp_min(1e-12)
        return gx, gy
    if metric == "euclidean":
        # d = sqrt(s); ds = grad / (2 d), 0 where d == 0 (the subgradient we pick at coincident rows).
        safe = torch.where(out > 0, out, torch.ones_like(out))
        grad = torch.where(out > 0, grad / (2.0 * safe), torch.zeros_like(grad))
    else:
        grad = grad.masked_fill(torch.isnan(out), 0.0)
    shift = reference.distance_shift(x, y)
    x, y = x - shift, y - shift
    gx = 2.0 * (grad.sum(1, keepdim=True) * x - grad @ y)
    gy = 2.0 * (grad.sum(0)[:, None] * y - grad.T @ x)
    return gx, gy


def _topk_values_grad(
    queries: torch.Tensor, bank: torch.Tensor, values: torch.Tensor, idx: torch.Tensor, g: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute the selected values differentiably from the indices and backpropagate through them.

    Only the selected rows get a gradient. A NaN value (a non-finite query or bank row) makes the
    gradients of both its rows NaN, whatever the metric: the direct ||q - b||^2 of an inf row would
    give +-inf there instead.
    """
    with torch.enable_grad():
        q = queries.detach().requires_grad_(True)
        bk = bank.detach().requires_grad_(True)
        picked = bk[idx.reshape(-1)].view(idx.shape[0], idx.shape[1], -1)
        if metric == "cosine":
            qn = torch.nn.functional.normalize(q, dim=1)[:, None, :]
            pn = torch.nn.functional.normalize(picked, dim=2)
            vals = (qn * pn).sum(-1)
        else:
            vals = ((q[:, None, :] - picked) ** 2).sum(-1)
        # A factor 1 where the value is finite and NaN where it is NaN (never 0 * NaN elsewhere).
        vals = vals * torch.ones_like(vals).masked_fill_(torch.isnan(values), float("nan"))
        gq, gb = torch.autograd.grad(vals, (q, bk), g)
    return gq, gb
