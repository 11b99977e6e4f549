"""Checkpoints as ``<prefix>.safetensors`` (weights) + ``<prefix>.json`` (metadata). Never pickle.

The JSON holds everything needed to rebuild the module plus whatever the caller adds (dataset, seed,
epochs, image_size, ...). Structural fields, by ``model`` kind:

* ``"encoder"``: ``arch`` (one of :data:`ARCHITECTURES`), ``in_channels``, ``rep_dim``;
* ``"simclr"``: the same plus ``proj_dim`` and ``hidden_dim`` of the projection head;
* ``"stolen"`` (a :class:`StolenEncoder`): the encoder's ``arch`` (or ``"custom"`` for an encoder of
  any other architecture, with its ``encoder_class`` recorded for information), ``in_channels``,
  ``backbone_dim`` (the encoder's dimension) and ``rep_dim`` (the victim's, after the linear head
  when the two differ). Its provenance (victim sha256, loss, budget, query set, bills) is under
  ``"steal"``.

The same JSON is also embedded in the safetensors header under the key ``"sslsteal_fast"``, so the
weights file describes itself. Both files are written atomically (temporary file + rename), so an
interrupted save never leaves a half-written checkpoint behind.

Loading trusts nothing it reads: the JSON's structural fields are type- and range-checked, then the
module is built on the ``meta`` device (shapes only, no memory) and every tensor shape in the
safetensors header is compared with it, all before a single weight is allocated. A corrupt or
inconsistent checkpoint raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from sslsteal_fast.config import ARCHITECTURES, REP_DIMS
from sslsteal_fast.models.encoders import StolenEncoder, build_encoder, is_builtin_encoder
from sslsteal_fast.models.simclr import SimCLRModel
from sslsteal_fast.util.checks import check_choice, check_int
from sslsteal_fast.util.files import save_tensors, write_text

__all__ = [
    "CUSTOM_ARCH",
    "FORMAT",
    "MAX_CHANNELS",
    "MAX_DIM",
    "build_from_metadata",
    "check_metadata",
    "checkpoint_metadata",
    "checkpoint_paths",
    "load_checkpoint",
    "model_metadata",
    "save_checkpoint",
]

FORMAT = "sslsteal_fast.checkpoint/1"
#: The model kinds a checkpoint can hold.
MODEL_KINDS = ("encoder", "simclr", "stolen")
#: ``arch`` of a stolen encoder whose thief is not one of :data:`ARCHITECTURES`.
CUSTOM_ARCH = "custom"
#: Largest ``in_channels`` a checkpoint may declare.
MAX_CHANNELS = 64
#: Largest ``rep_dim`` / ``backbone_dim`` / ``proj_dim`` / ``hidden_dim`` a checkpoint may declare.
MAX_DIM = 1 << 15


def checkpoint_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a prefix; a trailing ``.safetensors``/``.json`` is ignored."""
    prefix = Path(prefix)
    if prefix.suffix in (".safetensors", ".json"):
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + ".safetensors"), prefix.with_name(prefix.name + ".json")


def _describe_failure(model: nn.Module) -> ValueError:
    return ValueError(
        f"save_checkpoint: cannot describe a {type(model).__name__}; pass an encoder from build_encoder, a "
        "SimCLRModel of one, or a StolenEncoder"
    )


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """The structural metadata that rebuilds ``model`` (see the module docstring for the fields)."""
    if isinstance(model, SimCLRModel):
        meta = model_metadata(model.encoder)
        meta.update(model="simclr", proj_dim=model.proj_dim, hidden_dim=model.head.hidden_dim)
        return meta
    if isinstance(model, StolenEncoder):
        if is_builtin_encoder(model.encoder):
            meta = model_metadata(model.encoder)
        else:
            cls = type(model.encoder)
            meta = {"arch": CUSTOM_ARCH, "encoder_class": f"{cls.__module__}.{cls.__qualname__}"}
        meta.update(
            model="stolen", in_channels=model.in_channels, backbone_dim=model.backbone_dim, rep_dim=model.rep_dim
        )
        return meta
    if not is_builtin_encoder(model):
        raise _describe_failure(model)
    return {"model": "encoder", "arch": model.arch, "in_channels": int(model.in_channels), "rep_dim": model.rep_dim}


def check_metadata(meta: Any) -> dict[str, Any]:
    """``meta`` if its structural fields are well-typed and in range; else ``ValueError`` naming the field.

    Checks ``format``, ``model``, ``arch``, ``in_channels`` (1 to :data:`MAX_CHANNELS`), the
    dimensions (1 to :data:`MAX_DIM`, and the architecture's own where it fixes them) and, for a
    stolen encoder, that ``steal`` is an object. Nothing is built.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"the metadata must be a JSON object, got {type(meta).__name__}")
    if meta.get("format", FORMAT) != FORMAT:
        raise ValueError(f"unknown format {meta['format']!r}; this version reads {FORMAT!r}")
    kind = check_choice("model kind", meta.get("model", "encoder"), MODEL_KINDS)
    archs = (*ARCHITECTURES, CUSTOM_ARCH) if kind == "stolen" else ARCHITECTURES
    arch = check_choice("architecture", meta.get("arch"), archs)
    check_int("in_channels", meta.get("in_channels", 3), low=1, high=MAX_CHANNELS)
    if kind == "stolen":
        check_int("rep_dim", meta.get("rep_dim"), low=1, high=MAX_DIM)
        backbone = check_int("backbone_dim", meta.get("backbone_dim"), low=1, high=MAX_DIM)
        if arch != CUSTOM_ARCH and backbone != REP_DIMS[arch]:
            raise ValueError(f"backbone_dim is {backbone} but a {arch} encoder has {REP_DIMS[arch]}")
        if not isinstance(meta.get("steal", {}), dict):
            raise ValueError(f"steal must be a JSON object, got {type(meta['steal']).__name__}")
        if not isinstance(meta.get("encoder_class", ""), str):
            raise ValueError(f"encoder_class must be a string, got {meta['encoder_class']!r}")
    elif "rep_dim" in meta:
        rep = check_int("rep_dim", meta["rep_dim"], low=1, high=MAX_DIM)
        if rep != REP_DIMS[arch]:
            raise ValueError(f"rep_dim is {rep} but a {arch} encoder has {REP_DIMS[arch]}")
    if kind == "simclr":
        for field in ("proj_dim", "hidden_dim"):
            check_int(field, meta.get(field), low=1, high=MAX_DIM)
    return meta


def build_from_metadata(meta: dict[str, Any], *, encoder: nn.Module | None = None) -> nn.Module:
    """A freshly initialised module with the structure that ``meta`` describes (validated first).

    ``encoder``: for a stolen encoder of a custom architecture, a module of that architecture (it
    becomes the result's ``encoder``); ignored otherwise. Built on the current default device (build
    under ``torch.device("meta")`` for shapes only).
    """
    check_metadata(meta)
    kind = meta.get("model", "encoder")
    in_channels = int(meta.get("in_channels", 3))
    if kind == "stolen":
        if meta["arch"] == CUSTOM_ARCH:
            if not isinstance(encoder, nn.Module):
                raise ValueError(
                    f"the stolen encoder's architecture is custom ({meta.get('encoder_class', 'unknown class')}); "
                    "pass a module of that architecture to load it into: load_checkpoint(prefix, encoder=...)"
                )
            backbone = encoder
        else:
            backbone = build_encoder(meta["arch"], in_channels)
        return StolenEncoder(
            backbone, int(meta["rep_dim"]), backbone_dim=int(meta["backbone_dim"]), in_channels=in_channels
        )
    built = build_encoder(meta["arch"], in_channels)
    if kind == "simclr":
        return SimCLRModel(built, proj_dim=int(meta["proj_dim"]), hidden_dim=int(meta["hidden_dim"]))
    return built


def save_checkpoint(prefix: str | Path, model: nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Write ``<prefix>.safetensors`` and ``<prefix>.json``.

    ``metadata`` (JSON-serialisable) is merged with the structural metadata of ``model``; a key that
    contradicts the model (e.g. a wrong ``rep_dim``) raises ``ValueError``. A :class:`StolenEncoder`'s
    ``provenance`` is recorded under ``"steal"`` unless ``metadata`` has that key.
    """
    meta: dict[str, Any] = {"format": FORMAT}
    structural = model_metadata(model)
    if isinstance(model, StolenEncoder) and model.provenance:
        meta["steal"] = model.provenance
    for key, value in (metadata or {}).items():
        if key in structural and structural[key] != value:
            raise ValueError(f"save_checkpoint: metadata[{key!r}] = {value!r} but the model has {structural[key]!r}")
        meta[key] = value
    meta.update(structural)
    try:
        text = json.dumps(meta, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"save_checkpoint: metadata must be JSON-serialisable ({exc})") from exc
    weights_path, meta_path = checkpoint_paths(prefix)
    save_tensors(weights_path, dict(model.state_dict()), meta)
    write_text(meta_path, text + "\n")


def checkpoint_metadata(prefix: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON metadata, validated (:func:`check_metadata`) without reading any tensor.

    Raises ``FileNotFoundError`` when ``<prefix>.json`` is missing and ``ValueError`` naming it when
    it is not valid JSON or fails the checks.
    """
    meta_path = checkpoint_paths(prefix)[1]
    if not meta_path.is_file():
        raise FileNotFoundError(f"checkpoint metadata {meta_path} does not exist")
    return _read_metadata(meta_path)


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint metadata {meta_path}: not valid JSON ({exc})") from exc
    try:
        return check_metadata(meta)
    except ValueError as exc:
        raise ValueError(f"checkpoint metadata {meta_path}: {exc}") from exc


def _read_header(weights_path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (safetensors dtype, shape)}`` from the file's header; no tensor is read."""
    try:
        with safe_open(str(weights_path), framework="pt") as fh:
            names = list(fh.keys())
            return {k: (fh.get_slice(k).get_dtype(), tuple(fh.get_slice(k).get_shape())) for k in names}
    except SafetensorError as exc:
        raise ValueError(f"checkpoint weights {weights_path}: not a valid safetensors file ({exc})") from exc


def _dtype_kind(dtype: torch.dtype | str) -> str:
    if isinstance(dtype, torch.dtype):
        return "bool" if dtype == torch.bool else "float" if dtype.is_floating_point else "int"
    return "bool" if dtype == "BOOL" else "float" if dtype.startswith(("F", "BF")) else "int"


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _check_header(weights_path: Path, expected: dict[str, torch.Tensor], header: dict, what: str) -> None:
    """Every tensor ``expected`` (a state dict, e.g. of a meta-device module) is in ``header`` with its shape."""
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors ({_some(unexpected)})")
    for name in sorted(set(expected) & set(header)):
        dtype, shape = header[name]
        want = expected[name]
        if shape != tuple(want.shape):
            problems.append(f"{name} has shape {list(shape)} in the file, {list(want.shape)} in the architecture")
        elif _dtype_kind(dtype) != _dtype_kind(want.dtype):
            problems.append(f"{name} has dtype {dtype} in the file, {want.dtype} in the architecture")
    if problems:
        shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
        raise ValueError(f"checkpoint weights {weights_path} do not fit the {what} of its metadata: {shown}")


def load_checkpoint(prefix: str | Path, *, encoder: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the saved module from its metadata and load its weights (strictly); returns ``(model, metadata)``.

    The model is in eval mode, on the CPU (a custom ``encoder`` stays where it is and is loaded in
    place). A :class:`StolenEncoder` gets its ``provenance`` back from ``metadata["steal"]``.

    Args:
        prefix: the checkpoint prefix (a trailing ``.safetensors``/``.json`` is ignored).
        encoder: for a stolen encoder of a custom architecture, a module of that architecture to load
            the weights into (the metadata records its class but never code).

    Raises:
        FileNotFoundError: a file is missing (the message names both expected files).
        ValueError: naming the file: invalid JSON, metadata of the wrong type or out of range, a
            truncated or corrupt safetensors file, tensors missing or of the wrong shape for the
            architecture; or a custom stolen encoder without ``encoder``.
    """
    weights_path, meta_path = checkpoint_paths(prefix)
    missing = [str(p) for p in (weights_path, meta_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {prefix}: expected {weights_path.name} and {meta_path.name}; missing: {', '.join(missing)}"
        )
    meta = _read_metadata(meta_path)
    header = _read_header(weights_path)
    what = f"{meta.get('model', 'encoder')} model ({meta['arch']})"
    try:
        with torch.device("meta"):
            skeleton = build_from_metadata(meta, encoder=encoder)
    except ValueError as exc:
        raise ValueError(f"checkpoint {meta_path}: {exc}") from exc
    _check_header(weights_path, skeleton.state_dict(), header, what)
    model = build_from_metadata(meta, encoder=encoder)
    try:
        state = load_file(str(weights_path))
    except SafetensorError as exc:
        raise ValueError(f"checkpoint weights {weights_path}: not a valid safetensors file ({exc})") from exc
    model.load_state_dict(state, strict=True)
    if isinstance(model, StolenEncoder):
        model.provenance = dict(meta.get("steal", {}))
    model.eval()
    return model, meta
