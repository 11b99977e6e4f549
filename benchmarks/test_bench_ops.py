"""pytest-benchmark suites for the native ops (``make bench-suite``; compare runs with
``--benchmark-compare``). ``make bench`` prints the side-by-side tables instead (benchmarks/run.py).

Each benchmark checks agreement with the reference before timing, reusing the tests' input builders (sslsteal_fast.testing).
"""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import bank_inputs, pair_inputs

N, D = 2048, 256
pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")


def _loss_impls():
    a, b = pair_inputs(N // 2, D, requires_grad=True)
    labels = torch.arange(N // 2).repeat(2)
    a64, b64 = a.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    return {
        "info_nce-native": lambda: ops.info_nce(a, b),
        "info_nce-plain": lambda: reference.info_nce(a, b),
        "info_nce-paper": lambda: reference.info_nce_paper(a64, b64),
        "soft_nn-native": lambda: ops.soft_nn(torch.cat([a, b]), labels),
        "soft_nn-plain": lambda: reference.soft_nn(torch.cat([a, b]), labels),
        "soft_nn-paper": lambda: reference.soft_nn_paper(torch.cat([a64, b64]), labels),
    }


@pytest.mark.parametrize("impl", list(_loss_impls()))
def test_loss_forward_backward(benchmark, impl):
    fn = _loss_impls()[impl]
    loss_name = impl.split("-")[0]
    native = _loss_impls()[f"{loss_name}-native"]().item()
    assert fn().item() == pytest.approx(native, rel=1e-3)
    benchmark.group = f"{loss_name} fwd+bwd n={N} D={D}"
    benchmark(lambda: fn().backward())


@pytest.mark.parametrize("impl", ["native", "plain", "mm"])
def test_pairwise_distance(benchmark, impl):
    x, y = bank_inputs(N, N, D)
    fns = {
        "native": lambda: ops.pairwise_distance(x, y),
        "plain": lambda: reference.pairwise_distance(x, y),
        "mm": lambda: torch.mm(x, y.T),
    }
    torch.testing.assert_close(ops.pairwise_distance(x, y), reference.pairwise_distance(x, y), rtol=1e-4, atol=1e-2)
    benchmark.group = f"pairwise_distance {N}x{N} D={D}"
    benchmark(fns[impl])


@pytest.mark.parametrize("impl", ["native", "chunked"])
def test_topk_similarity(benchmark, impl):
    q, bank = bank_inputs(128, 200_000, 128)
    fns = {
        "native": lambda: ops.topk_similarity(q, bank, 10),
        "chunked": lambda: reference.topk_similarity(q, bank, 10),
    }
    torch.testing.assert_close(fns["native"]()[0], fns["chunked"]()[0])
    benchmark.group = "topk_similarity 128 x 200k D=128 k=10"
    benchmark(fns[impl])
