"""sslsteal_fast: model extraction against self-supervised encoders, with fused native kernels.

Data flows one way: data -> victim (served over ONNX Runtime) -> attack -> stolen encoder ->
probe / ownership test, with the native ops (:mod:`sslsteal_fast.ops`) underneath everything.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from sslsteal_fast import ops  # noqa: E402


def build_info() -> dict[str, Any]:
    """What the compiled extension was built with (and whether it loaded)."""
    import torch

    from sslsteal_fast.ops import _native

    info: dict[str, Any] = {
        "version": __version__,
        "torch": torch.__version__,
        "native": _native.native_available(),
        "load_error": _native.load_error(),
        "torch_cuda": torch.version.cuda,
    }
    if info["native"]:
        from sslsteal_fast import _C

        info.update(_C.build_info())
        info["cuda_kernels"] = _native.has_kernel("cuda")
    return info


__all__ = ["__version__", "build_info", "ops"]
