"""Builders shared by the defense tests: toy query streams, a linear ONNX victim; tolerances in one place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

#: |sklearn score - ours| on toy GMM data (mean log-likelihood per row).
GMM_SCORE_ATOL = 0.05
#: EM may lose this much mean log-likelihood per iteration to rounding (it never really decreases).
EM_MONOTONE_SLACK = 1e-9


def linear_onnx(path: Path, dim: int = 16, seed: int = 0) -> Path:
    """An ONNX encoder ``flatten(x) @ W`` for (N, 3, 4, 4) float input -> (N, dim)."""
    w = np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", dim])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def toy_stream(n_distinct: int, repeats: int, dim: int = 128, jitter: float = 0.05, seed: int = 0):
    """Distinct centred vectors, then ``repeats`` noisy copies ("augmented repeats") of random earlier ones.

    Returns ``(vectors (n, dim), truth bool (n,))`` with truth True for the repeats.
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_distinct, dim, generator=g)
    picks = torch.randint(0, n_distinct, (repeats,), generator=g)
    copies = base[picks] + jitter * torch.randn(repeats, dim, generator=g)
    vectors = torch.cat([base, copies])
    truth = torch.cat([torch.zeros(n_distinct, dtype=torch.bool), torch.ones(repeats, dtype=torch.bool)])
    return vectors, truth


def images_for(n: int, seed: int = 0) -> torch.Tensor:
    """Distinct float images (n, 3, 4, 4) in [0, 1]."""
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
