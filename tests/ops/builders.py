"""Input builders shared by the op tests and the benchmarks (benchmarks/ imports this file)."""

from __future__ import annotations

import torch


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
    """(a, b), each (B, D): a stolen/victim pair of representation batches."""
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
    """(z (n, D), labels (n,)); default labels pair row i with row i + n/2 as in stealing."""
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
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_queries, dim, generator=g).to(device=device, dtype=dtype)
    bank = torch.randn(n_bank, dim, generator=g).to(device=device, dtype=dtype)
    return q, bank
