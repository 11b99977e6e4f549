"""Test-wide fixtures: the ``device`` parametrisation, RNG hygiene, thread count."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

# One intra-op thread: the tests are small, and on a shared 2-core machine oversubscribed OpenMP
# pools (torch + ORT + workers) turn sub-second tests into multi-second ones.
torch.set_num_threads(1)

HAS_CUDA = torch.cuda.is_available()
if HAS_CUDA:
    # Stages default to device "auto", so on a GPU machine the steal/sweep tests train on CUDA; several
    # assert that a seed reproduces a run exactly, which cuDNN's autotuned kernels do not promise.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@pytest.fixture(
    params=[
        "cpu",
        pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]),
    ]
)
def device(request: pytest.FixtureRequest) -> str:
    """Every device test runs on every machine's test list (same ids); CUDA cases skip without a GPU."""
    return request.param


@pytest.fixture(autouse=True)
def _restore_rng_state():
    """Each test starts from seed 0 and leaves the global RNG states as it found them."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if HAS_CUDA else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.manual_seed(0)
    yield
    torch.set_rng_state(torch_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)
    np.random.set_state(np_state)
    random.setstate(py_state)
