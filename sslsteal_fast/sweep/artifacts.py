"""Files a sweep keeps: atomically written safetensors, the user cache, and the served victim.

Everything a sweep computes once and reuses (query images, the victim's answers, probe data, the
victim's own probe features) is a safetensors file written to a temporary name and renamed, so a
sweep killed mid-write never leaves a half file that a resumed sweep would trust. File names carry
a content hash of what determines them, so a changed config never reads a stale file.

A victim given as a ``[victim.train]`` spec is trained once per spec and kept in the user cache
(``$SSLSTEAL_CACHE``, else ``$XDG_CACHE_HOME/sslsteal_fast``, else ``~/.cache/sslsteal_fast``) under
``victims/<arch>-<dataset>-<hash>/``: the SimCLR checkpoint (``victim.safetensors`` + ``.json``) and
its ONNX export (``victim.onnx``, written last, so its presence marks a finished entry). Later runs
with the same spec reuse it; a run killed mid-training resumes from the last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sslsteal_fast.models import load_checkpoint
from sslsteal_fast.sweep.config import VictimSpec, VictimTrainSpec, stable_hash

__all__ = [
    "cache_root",
    "save_tensors",
    "load_tensors",
    "read_file_metadata",
    "file_sha256",
    "PreparedVictim",
    "prepare_victim",
]

# Bump when the cached victim's recipe changes in a way its spec does not capture.
VICTIM_CACHE_VERSION = 1


def cache_root() -> Path:
    """The user cache folder for trained victims (created on demand)."""
    env = os.environ.get("SSLSTEAL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sslsteal_fast"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write ``tensors`` (contiguous CPU copies) and JSON ``metadata`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        save_file(state, str(tmp), metadata={"sweep": json.dumps(metadata, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_file_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata :func:`save_tensors` stored in ``path``."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get("sweep", "{}"))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a file written by :func:`save_tensors`."""
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensors[key] = fh.get_tensor(key)
        meta = fh.metadata() or {}
    return tensors, json.loads(meta.get("sweep", "{}"))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (the victim's identity in cell ids)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class PreparedVictim:
    """The served victim a sweep attacks.

    Attributes:
        onnx: path of the ONNX file every query goes through (``OnnxVictim``).
        sha256: hash of that file: the victim's identity in cell ids and cache keys.
        source: ``"onnx"``, ``"checkpoint"``, ``"trained"`` (this run) or ``"cache"`` (an earlier run).
        train_size: images the victim was trained on, when known.
        train_time_s: seconds spent training it in this run (0 if it came from a file or the cache).
        metadata: what is known about it (checkpoint metadata, ONNX metadata_props).
    """

    onnx: Path
    sha256: str
    source: str
    train_size: int | None
    train_time_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


def prepare_victim(
    spec: VictimSpec, out: Path, *, progress: bool = True, log: Callable[[str], None] = print
) -> PreparedVictim:
    """Resolve ``spec`` to an ONNX file: use it, export a checkpoint into ``out``, or train (cached)."""
    from sslsteal_fast.victim import read_metadata

    if spec.onnx is not None:
        if not spec.onnx.is_file():
            raise FileNotFoundError(f"victim.onnx: no ONNX model at {spec.onnx}")
        meta: dict[str, Any] = dict(read_metadata(spec.onnx))
        return PreparedVictim(spec.onnx, file_sha256(spec.onnx), "onnx", _train_size(spec, meta), metadata=meta)
    if spec.checkpoint is not None:
        return _export_checkpoint(spec, out, log)
    assert spec.train is not None
    return _trained_victim(spec, spec.train, progress=progress, log=log)


def _train_size(spec: VictimSpec, meta: dict[str, Any]) -> int | None:
    if spec.train_size is not None:
        return spec.train_size
    for key in ("train_size", "num_images", "dataset_size"):
        if key in meta:
            try:
                return int(meta[key])
            except (TypeError, ValueError):
                return None
    return None


def _input_shape(meta: dict[str, Any], where: str) -> tuple[int, int, int]:
    size = meta.get("image_size")
    if not isinstance(size, int):
        raise ValueError(f"{where}: the checkpoint metadata has no integer 'image_size'; re-save it with one")
    return int(meta.get("in_channels", 3)), size, size


def _export_checkpoint(spec: VictimSpec, out: Path, log: Callable[[str], None]) -> PreparedVictim:
    from sslsteal_fast.models import checkpoint_paths
    from sslsteal_fast.victim import export_onnx, read_metadata

    assert spec.checkpoint is not None
    weights, _ = checkpoint_paths(spec.checkpoint)
    model, meta = load_checkpoint(spec.checkpoint)
    onnx = out / "victim" / f"victim-{file_sha256(weights)[:12]}.onnx"
    if not onnx.is_file():
        log(f"exporting checkpoint {spec.checkpoint} to {onnx}")
        export_onnx(model, onnx, _input_shape(meta, "victim.checkpoint"), source_checkpoint=str(spec.checkpoint))
    meta = {**meta, **read_metadata(onnx)}
    return PreparedVictim(onnx, file_sha256(onnx), "checkpoint", _train_size(spec, meta), metadata=meta)


def _trained_victim(
    spec: VictimSpec, train: VictimTrainSpec, *, progress: bool, log: Callable[[str], None]
) -> PreparedVictim:
    """Train with ``victim.train.train_victim`` into the user cache (it resumes a killed run), then export."""
    from sslsteal_fast.victim import export_onnx, read_metadata
    from sslsteal_fast.victim.train import train_victim

    key = stable_hash({"version": VICTIM_CACHE_VERSION, "train": train.key()})
    folder = cache_root() / "victims" / f"{train.arch}-{_safe(train.dataset)}-{key}"
    prefix = folder / "victim"
    onnx = folder / "victim.onnx"
    if onnx.is_file() and prefix.with_suffix(".json").is_file():
        meta = json.loads(prefix.with_suffix(".json").read_text())
        log(f"victim: reusing the cached victim {folder}")
        return PreparedVictim(onnx, file_sha256(onnx), "cache", _train_size(spec, meta), metadata=meta)

    log(f"victim: training {train.arch} with SimCLR on {train.dataset} for {train.epochs} epochs (cached in {folder})")
    start = time.perf_counter()
    train_victim(train.config(out=str(prefix), progress=progress))
    model, meta = load_checkpoint(prefix)
    c, size = int(meta.get("in_channels", 3)), int(meta.get("image_size", train.image_size))
    # Export to a temporary name and rename: the ONNX file is the cache entry's "done" marker.
    tmp = folder / f".victim.onnx.tmp{os.getpid()}"
    try:
        export_onnx(model, tmp, (c, size, size), source_checkpoint=str(prefix))
        os.replace(tmp, onnx)
    finally:
        tmp.unlink(missing_ok=True)
    train_time = time.perf_counter() - start
    meta = {**meta, **read_metadata(onnx)}
    return PreparedVictim(onnx, file_sha256(onnx), "trained", _train_size(spec, meta), train_time, meta)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
