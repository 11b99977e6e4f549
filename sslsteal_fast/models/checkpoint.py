"""Checkpoints as ``<prefix>.safetensors`` (weights) + ``<prefix>.json`` (metadata). Never pickle.

The JSON holds everything needed to rebuild the module (``model`` = ``"encoder"`` or ``"simclr"``,
``arch``, ``in_channels``, ``rep_dim``, and for SimCLR models ``proj_dim`` and ``hidden_dim``) plus
whatever the caller adds (dataset, seed, epochs, image_size, ...). The same JSON is also embedded in
the safetensors header under the key ``"sslsteal_fast"``, so the weights file describes itself.
Both files are written atomically (temporary file + rename), so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from sslsteal_fast.models.encoders import build_encoder
from sslsteal_fast.models.simclr import SimCLRModel
from sslsteal_fast.util.files import save_tensors, write_text

__all__ = ["FORMAT", "build_from_metadata", "checkpoint_paths", "load_checkpoint", "model_metadata", "save_checkpoint"]

FORMAT = "sslsteal_fast.checkpoint/1"


def checkpoint_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a prefix; a trailing ``.safetensors``/``.json`` is ignored."""
    prefix = Path(prefix)
    if prefix.suffix in (".safetensors", ".json"):
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + ".safetensors"), prefix.with_name(prefix.name + ".json")


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """The structural metadata that rebuilds ``model`` (an encoder from build_encoder, or a SimCLRModel)."""
    if isinstance(model, SimCLRModel):
        meta = model_metadata(model.encoder)
        meta.update(model="simclr", proj_dim=model.proj_dim, hidden_dim=model.head.hidden_dim)
        return meta
    arch = getattr(model, "arch", None)
    if not isinstance(arch, str):
        raise ValueError(
            f"save_checkpoint: cannot describe a {type(model).__name__}; pass an encoder from build_encoder "
            "or a SimCLRModel"
        )
    return {"model": "encoder", "arch": arch, "in_channels": int(model.in_channels), "rep_dim": int(model.rep_dim)}


def build_from_metadata(meta: dict[str, Any]) -> nn.Module:
    """A freshly initialised module with the structure that ``meta`` describes."""
    kind = meta.get("model", "encoder")
    encoder = build_encoder(meta["arch"], int(meta.get("in_channels", 3)))
    if kind == "encoder":
        return encoder
    if kind == "simclr":
        return SimCLRModel(encoder, proj_dim=int(meta["proj_dim"]), hidden_dim=int(meta["hidden_dim"]))
    raise ValueError(f"checkpoint metadata: unknown model kind {kind!r} (expected 'encoder' or 'simclr')")


def save_checkpoint(prefix: str | Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write ``<prefix>.safetensors`` and ``<prefix>.json``.

    ``metadata`` (JSON-serialisable) is merged with the structural metadata of ``model``; a key that
    contradicts the model (e.g. a wrong ``rep_dim``) raises ``ValueError``.
    """
    meta: dict[str, Any] = {"format": FORMAT}
    structural = model_metadata(model)
    for key, value in metadata.items():
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


def load_checkpoint(prefix: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the saved module from its metadata and load its weights (strictly); returns ``(model, metadata)``.

    The model is on the CPU in eval mode. Raises ``FileNotFoundError`` naming both expected files.
    """
    weights_path, meta_path = checkpoint_paths(prefix)
    missing = [str(p) for p in (weights_path, meta_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {prefix}: expected {weights_path.name} and {meta_path.name}; missing: {', '.join(missing)}"
        )
    meta = json.loads(meta_path.read_text())
    model = build_from_metadata(meta)
    state = load_file(str(weights_path))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta
