"""Export an encoder to ONNX (dynamic batch) and check the file against PyTorch with ONNX Runtime.

Which ``torch.onnx`` exporter, and why (torch 2.5 through 2.13):

* ``dynamo=True`` (``torch.export`` + onnxscript) is the default exporter since torch 2.9 and the
  only one PyTorch still develops; the TorchScript exporter (``dynamo=False``) still exists in 2.13
  but warns that it "will be removed". The dynamo exporter has no implementations below opset 18:
  asked for 17 it tries a down-conversion that fails for ``ReduceMean`` and silently keeps 18, so
  we ask it for ``max(opset, 18)`` directly. Both satisfy the project's "opset >= 17".
* On torch 2.5-2.8 the dynamo exporter was a preview (and needed onnxscript), so there the
  TorchScript exporter -- stable, exact opset, ``dynamic_axes`` and constant folding -- is used.
* ``exporter="auto"`` picks by that rule (and falls back to TorchScript, with a warning, if the
  dynamo export of a model fails); ``"dynamo"`` / ``"torchscript"`` force one.

Both paths export in eval mode from a CPU float32 copy of the model, so BatchNorm is folded into
the convolutions (the TorchScript exporter's eval peephole pass, the onnxscript optimiser on the
dynamo path) and the caller's model is left untouched. The written file is self-contained (no
external-data sidecar) and carries metadata in ``metadata_props`` (see :data:`METADATA_KEYS`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from torch import nn

from sslsteal_fast._version import __version__

__all__ = ["METADATA_KEYS", "PARITY_TOLERANCE", "export_onnx", "max_relative_difference", "read_metadata"]

#: The largest max relative difference (see :func:`max_relative_difference`) an export may have.
PARITY_TOLERANCE = 1e-4

#: Keys :func:`export_onnx` writes into the model's ``metadata_props`` (all values are strings).
METADATA_KEYS = (
    "output",  # "representation" or "projection"
    "output_dim",  # D of the (N, D) output
    "input_shape",  # JSON [C, H, W]
    "arch",  # architecture name, "" when unknown
    "source_checkpoint",  # checkpoint prefix the weights came from, "" when unknown
    "exporter",  # "dynamo" or "torchscript"
    "opset",  # the ai.onnx opset in the file
    "max_rel_diff",  # parity against PyTorch measured at export time
    "torch_version",
    "sslsteal_fast_version",
)

Output = Literal["representation", "projection"]
Exporter = Literal["auto", "dynamo", "torchscript"]

INPUT_NAME = "images"
OUTPUT_NAME = "representation"


class _Served(nn.Module):
    """What the API serves: the encoder's representation or a SimCLRModel's projection output."""

    def __init__(self, model: nn.Module, output: Output) -> None:
        super().__init__()
        is_simclr = isinstance(getattr(model, "encoder", None), nn.Module) and isinstance(
            getattr(model, "head", None), nn.Module
        )
        if output == "projection" and not is_simclr:
            raise ValueError(
                "output='projection' needs a SimCLRModel (a module with .encoder and .head whose forward "
                f"returns (rep, proj)); got {type(model).__name__}"
            )
        self.output = output
        # For the representation of a SimCLRModel serve only its encoder (the head is not run).
        self.net = model.encoder if (is_simclr and output == "representation") else model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.output == "projection":
            y = y[1]
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"the model must return a tensor (N, D); got {type(y).__name__}")
        return y.flatten(1)


def _pick_exporter(exporter: Exporter) -> Literal["dynamo", "torchscript"]:
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    has_dynamo = "dynamo" in inspect.signature(torch.onnx.export).parameters
    if exporter == "auto":
        major, minor = (int(p) for p in torch.__version__.split(".")[:2])
        return "dynamo" if has_dynamo and (major, minor) >= (2, 9) else "torchscript"
    if exporter == "dynamo" and not has_dynamo:
        raise ValueError(f"torch {torch.__version__} has no dynamo ONNX exporter; use exporter='torchscript'")
    return exporter


class _DropTorchvisionNotice(logging.Filter):
    """Drops the dynamo exporter's "torchvision is not installed. Skipping torchvision::nms" lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "torchvision is not installed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence exporter chatter that is not actionable for our encoders (nothing else is hidden)."""
    registry_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    notice = _DropTorchvisionNotice()
    registry_logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            # torch.export's pytree deprecations and the TorchScript exporter's "legacy" notice.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        registry_logger.removeFilter(notice)


def _export_graph(net: nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str) -> None:
    params = inspect.signature(torch.onnx.export).parameters
    common = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if exporter == "dynamo":
        kwargs = dict(common, dynamo=True, opset_version=max(opset, 18))
        kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", min=1)}}
        if "external_data" in params:
            kwargs["external_data"] = False
        if "verbose" in params:
            kwargs["verbose"] = False
        with _quiet_exporter():
            torch.onnx.export(net, (example,), str(path), **kwargs)
    else:
        kwargs = dict(
            common,
            opset_version=opset,
            do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        if "dynamo" in params:
            kwargs["dynamo"] = False
        with _quiet_exporter():
            torch.onnx.export(net, (example,), str(path), **kwargs)


def _arch_of(model: nn.Module) -> str:
    """``model.arch`` (or its encoder's, for a SimCLRModel), "" when the model does not say."""
    arch = getattr(model, "arch", None)
    if arch is None:
        arch = getattr(getattr(model, "encoder", None), "arch", None)
    return arch if isinstance(arch, str) else ""


def max_relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest per-row ``max|actual - expected| / max|expected|`` (float64), the parity measure.

    Normalising by each row's largest magnitude, not element by element, keeps exact zeros (common
    after ReLU + pooling) from turning float32 rounding into huge "relative" errors; an all-zero
    reference row is normalised by the batch's largest magnitude instead.
    """
    a = np.asarray(actual, dtype=np.float64).reshape(len(actual), -1)
    e = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {e.shape}")
    if a.size == 0:
        return 0.0
    if not np.isfinite(a).all():
        return float("inf")
    row_max = np.abs(e).max(axis=1)
    # An all-zero reference row is measured against the batch's scale instead of dividing by ~0.
    scale = np.where(row_max > 0, row_max, max(float(row_max.max()), float(np.finfo(np.float32).tiny)))
    return float((np.abs(a - e).max(axis=1) / scale).max())


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    opset: int = 17,
    output: Output = "representation",
    *,
    arch: str | None = None,
    source_checkpoint: str | None = None,
    metadata: Mapping[str, str] | None = None,
    exporter: Exporter = "auto",
    check_batch_sizes: tuple[int, ...] = (1, 3, 8),
    seed: int = 0,
) -> float:
    """Export ``model`` to ONNX with a dynamic batch axis and check it against PyTorch.

    Args:
        model: an encoder ``(N, C, H, W) float -> (N, D)`` or a SimCLRModel (``.encoder``, ``.head``,
            forward -> ``(rep, proj)``). It is copied to CPU float32 eval mode; the original is untouched.
        path: the ``.onnx`` file to write (parent folders are created).
        input_shape: ``(C, H, W)`` of one image; the batch axis is always dynamic.
        opset: lowest acceptable ai.onnx opset (>= 17); the dynamo exporter writes ``max(opset, 18)``.
        output: ``"representation"`` (the encoder output) or ``"projection"`` (a SimCLRModel's head output).
        arch: architecture name for the metadata (defaults to ``model.arch`` if present).
        source_checkpoint: checkpoint prefix the weights came from, for the metadata.
        metadata: extra string ``metadata_props`` (may not override :data:`METADATA_KEYS`).
        exporter: ``"auto"`` (see the module docstring), ``"dynamo"`` or ``"torchscript"``.
        check_batch_sizes: batch sizes of the uniform [0, 1) random inputs the parity check runs.
        seed: seed of those inputs.

    Returns:
        The max relative difference between ONNX Runtime (CPU) and PyTorch over the check inputs
        (see :func:`max_relative_difference`); it is also stored in the file's metadata.

    Raises:
        ValueError: bad arguments, or the export differs from PyTorch by more than
            :data:`PARITY_TOLERANCE` (the file is removed then).
    """
    import onnxruntime as ort

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if output not in ("representation", "projection"):
        raise ValueError(f"output must be 'representation' or 'projection', got {output!r}")
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) positive ints, got {input_shape!r}")
    if not check_batch_sizes or min(check_batch_sizes) < 1:
        raise ValueError(f"check_batch_sizes must be positive batch sizes, got {check_batch_sizes!r}")
    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(METADATA_KEYS))
    if clash:
        raise ValueError(f"metadata may not override the keys export_onnx writes: {clash}")
    which = _pick_exporter(exporter)

    served = _Served(copy.deepcopy(model).to("cpu", torch.float32).eval(), output).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand((2, *input_shape), generator=gen)
    with torch.inference_mode():
        ref_dim = served(example).shape[1]
    # torch.export refuses inference tensors and parameters with autograd state on some versions.
    with torch.no_grad():
        try:
            _export_graph(served, example, path, opset, which)
        except Exception as exc:
            if exporter != "auto" or which != "dynamo":
                raise
            # Some graphs (data-dependent control flow, unsupported ops) only trace with TorchScript.
            warnings.warn(
                f"dynamo ONNX export failed ({type(exc).__name__}: {exc}); retrying with the TorchScript exporter",
                RuntimeWarning,
                stacklevel=2,
            )
            which = "torchscript"
            _export_graph(served, example, path, opset, which)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    diff = 0.0
    with torch.inference_mode():
        for n in check_batch_sizes:
            x = torch.rand((n, *input_shape), generator=gen)
            got = session.run(None, {in_name: x.numpy()})[0]
            diff = max(diff, max_relative_difference(got, served(x).numpy()))
    if not diff <= PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"ONNX export differs from PyTorch: max relative difference {diff:.3g} > {PARITY_TOLERANCE:g} "
            f"(exporter={which}); the file was not kept"
        )

    proto = onnx.load(str(path))
    file_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    props = dict(extra)
    props.update(
        output=output,
        output_dim=str(ref_dim),
        input_shape=json.dumps(list(input_shape)),
        arch=arch if arch is not None else _arch_of(model),
        source_checkpoint=source_checkpoint or "",
        exporter=which,
        opset=str(file_opset),
        max_rel_diff=f"{diff:.6g}",
        torch_version=torch.__version__,
        sslsteal_fast_version=__version__,
    )
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "sslsteal_fast"
    proto.producer_version = __version__
    onnx.save(proto, str(path))
    return diff


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (empty for foreign models without any).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an ONNX model (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no ONNX model at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is a folder or a special file, not an ONNX model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ValueError(f"{path}: not a valid ONNX model ({exc})") from None
    if not proto.HasField("graph"):
        raise ValueError(f"{path}: not a valid ONNX model (it has no graph)")
    return {p.key: p.value for p in proto.metadata_props}
