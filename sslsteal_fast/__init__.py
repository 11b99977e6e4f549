"""sslsteal_fast: model extraction against self-supervised encoders, with fused native kernels.

Data flows one way: data -> models -> victim (trained, exported, served over ONNX Runtime, with
defenses plugged in) -> attacks -> stolen encoder -> probes / ownership tests -> experiments
(sweeps), with the native ops (:mod:`sslsteal_fast.ops`) underneath everything. See
docs/ARCHITECTURE.md.

``import sslsteal_fast`` loads nothing heavy: ``sslsteal_fast.ops`` (and torch with it) is imported
on first use, which keeps ``import sslsteal_fast`` and ``sslsteal --help`` fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sslsteal_fast._version import __version__

if TYPE_CHECKING:
    from sslsteal_fast import ops


def __getattr__(name: str) -> Any:
    # `sslsteal_fast.ops` on first access (PEP 562): keeps `import sslsteal_fast` fast (no torch).
    if name == "ops":
        return importlib.import_module("sslsteal_fast.ops")
    raise AttributeError(f"module 'sslsteal_fast' has no attribute {name!r}")


def build_info() -> dict[str, Any]:
    """What the compiled extension was built with (and whether it loaded)."""
    import torch

    from sslsteal_fast.ops import _native  # loaded on call: keeps `import sslsteal_fast` fast

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
