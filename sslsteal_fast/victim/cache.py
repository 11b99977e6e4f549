"""The victim cache: a victim trained once per configuration and exported to ONNX, reused by every experiment.

:func:`trained_victim` trains a SimCLR victim (with any hooks, e.g. the rotation watermark) into the
user cache (:func:`~sslsteal_fast.util.files.cache_root`) under
``victims/<arch>-<dataset>-<hash of the run identity>/``: the checkpoint (``victim.safetensors`` +
``victim.json``, plus the hooks' files) and its ONNX export (``victim.onnx``, written last, so its
presence marks a finished entry). A configuration the package ships pretrained weights for
(:mod:`~sslsteal_fast.victim.pretrained`) is installed from those, sha256-checked, instead of trained.
Later calls with the same configuration reuse it; a call killed
mid-training resumes from the last finished epoch (:func:`~sslsteal_fast.victim.train.train_victim`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.models import checkpoint_metadata, load_checkpoint
from sslsteal_fast.util.files import atomic_write, cache_root, file_sha256, safe_filename, stable_hash
from sslsteal_fast.victim.export import export_onnx, read_metadata
from sslsteal_fast.victim.pretrained import install_packaged, packaged_for_entry, pretrained_enabled
from sslsteal_fast.victim.train import TrainHook, is_finished, run_identity, train_victim

__all__ = ["VICTIM_CACHE_VERSION", "CachedVictim", "cache_folder", "trained_victim"]

#: Bump when the cached victims' recipe changes in a way their configuration does not capture.
VICTIM_CACHE_VERSION = 1


@dataclass
class CachedVictim:
    """A trained victim in the cache.

    Attributes:
        prefix: its checkpoint prefix (``load_checkpoint(prefix)``; hook files sit next to it).
        onnx: its ONNX export (what ``OnnxVictim`` serves).
        sha256: hash of the ONNX file (the victim's identity in experiment ids).
        trained_now: whether this call trained it (False: an earlier call did).
        train_time_s: seconds this call spent training and exporting.
        metadata: the checkpoint metadata merged with the ONNX ``metadata_props``.
    """

    prefix: Path
    onnx: Path
    sha256: str
    trained_now: bool
    train_time_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


def cache_folder(cfg: VictimTrainConfig, hooks: Sequence[TrainHook] = ()) -> Path:
    """The cache entry of a configuration (everything but ``out``, ``device`` and ``progress`` counts)."""
    key = stable_hash({"version": VICTIM_CACHE_VERSION, "train": run_identity(cfg, hooks)})
    return cache_root() / "victims" / f"{cfg.arch}-{safe_filename(cfg.dataset)}-{key}"


def trained_victim(
    cfg: VictimTrainConfig,
    hooks: Sequence[TrainHook] = (),
    *,
    log: Callable[[str], None] = print,
) -> CachedVictim:
    """The cached victim of ``cfg`` (+ ``hooks``): trained and exported on first use, reused after.

    ``cfg.out`` is ignored (the cache decides where the run lives); ``cfg.device`` and
    ``cfg.progress`` apply to training.
    """
    folder = cache_folder(cfg, hooks)
    prefix = folder / "victim"
    onnx = folder / "victim.onnx"
    if onnx.is_file() and is_finished(prefix, hooks):
        log(f"victim: reusing the cached victim {folder}")
        return CachedVictim(prefix, onnx, file_sha256(onnx), False, 0.0, _metadata(prefix, onnx))
    packaged = packaged_for_entry(folder.name) if pretrained_enabled() else None
    if packaged is not None and not is_finished(prefix, hooks):
        install_packaged(packaged, folder)  # checks every file's sha256 first
        log(f"victim: installed the packaged pretrained victim {packaged.name!r} (sha256 checked) in {folder}")
        model, meta = load_checkpoint(prefix)
        _export(model, meta, prefix, onnx)
        return CachedVictim(prefix, onnx, file_sha256(onnx), False, 0.0, _metadata(prefix, onnx))
    what = " + ".join(["SimCLR", *(h.name for h in hooks)])
    log(f"victim: training {cfg.arch} ({what}) on {cfg.dataset} for {cfg.epochs} epochs (cached in {folder})")
    start = time.perf_counter()
    train_victim(dataclasses.replace(cfg, out=str(prefix)), hooks)
    model, meta = load_checkpoint(prefix)
    _export(model, meta, prefix, onnx)
    return CachedVictim(prefix, onnx, file_sha256(onnx), True, time.perf_counter() - start, _metadata(prefix, onnx))


def _export(model: Any, meta: dict[str, Any], prefix: Path, onnx: Path) -> None:
    """Write the entry's ONNX file: its "done" marker, so atomically and last.

    It names its checkpoint relative to the cache, so its bytes (the victim's identity in experiment
    ids and derived secrets) do not depend on where the cache lives.
    """
    shape = (int(meta.get("in_channels", 3)), int(meta["image_size"]), int(meta["image_size"]))
    source = str(prefix.relative_to(cache_root()))
    atomic_write(onnx, lambda tmp: export_onnx(model, tmp, shape, source_checkpoint=source))


def _metadata(prefix: Path, onnx: Path) -> dict[str, Any]:
    meta = checkpoint_metadata(prefix)
    return {**meta, **read_metadata(onnx)}
