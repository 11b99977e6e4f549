"""Tolerances as data (one table for every op test).

Float32/float64 kernels are compared with the float64 reference at (rtol, atol) below. For bfloat16
and float16 we follow flash-attention's rule: the kernel's error against the float64 reference may
be at most ``LOW_PRECISION_FACTOR`` times PyTorch's own error when it runs the reference in that dtype.
"""

from __future__ import annotations

import torch

TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (2e-4, 2e-5),
}
LOW_PRECISION_FACTOR = 2.0
LOW_PRECISION_SLACK = 1e-3  # absolute slack for errors that are ~0 in both


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale)


def assert_low_precision_rule(actual: torch.Tensor, torch_lowp: torch.Tensor, exact: torch.Tensor) -> None:
    """max|actual - exact| <= 2 * max|torch_in_that_dtype - exact| (+ a tiny slack)."""
    err = (actual.double() - exact.double()).abs().max().item()
    ref_err = (torch_lowp.double() - exact.double()).abs().max().item()
    bound = LOW_PRECISION_FACTOR * ref_err + LOW_PRECISION_SLACK * max(1.0, exact.double().abs().max().item())
    assert err <= bound, f"low-precision error {err:.3g} exceeds {LOW_PRECISION_FACTOR} x torch's own {ref_err:.3g}"
