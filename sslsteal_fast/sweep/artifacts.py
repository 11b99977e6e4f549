"""The served victim a sweep attacks: an ONNX file given, a checkpoint exported, a victim trained (cached), or an API.

A ``[victim.train]`` victim (with its optional watermark) comes from the victim cache
(:func:`sslsteal_fast.victim.trained_victim`), shared with every other experiment: trained once per
configuration, reused after, resumed if a run was killed mid-training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslsteal_fast.models import checkpoint_paths, load_checkpoint
from sslsteal_fast.ownership import WatermarkHook
from sslsteal_fast.sweep.config import DatasetRef, VictimSource
from sslsteal_fast.util.files import atomic_write, file_sha256
from sslsteal_fast.victim import HttpVictim, OnnxVictim, Victim, export_onnx, read_metadata, trained_victim
from sslsteal_fast.victim.http import read_key

__all__ = ["PreparedVictim", "prepare_victim"]


@dataclass
class PreparedVictim:
    """The served victim a sweep attacks.

    Attributes:
        onnx: path of the ONNX file every query goes through (``OnnxVictim``); None for an API.
        sha256: hash of that file (an API's: the one its server reports): the victim's identity in
            cell ids and cache keys.
        source: ``"onnx"``, ``"checkpoint"``, ``"trained"`` (this run), ``"cache"`` (an earlier run) or
            ``"url"`` (an encoder API, queried with ``key``).
        train_size: images the victim was trained on, when known.
        train_time_s: seconds spent training it in this run (0 if it came from a file or the cache).
        metadata: what is known about it (checkpoint metadata, ONNX metadata_props).
        checkpoint: its checkpoint prefix when there is one (a watermarked victim's head sits next to it).
    """

    onnx: Path | None
    sha256: str
    source: str
    train_size: int | None
    train_time_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    url: str | None = None
    key: str | None = field(default=None, repr=False)

    def api(self, *, budget: int | None = None, batch_size: int = 256, defenses: Any = ()) -> Victim:
        """A victim to query: an ``OnnxVictim`` of the file, or an ``HttpVictim`` of the API.

        An API bills its own budget and applies its server's defenses, so it takes neither here.
        """
        if self.url is None:
            assert self.onnx is not None
            return OnnxVictim(self.onnx, budget=budget, batch_size=batch_size, defenses=defenses)
        if defenses:
            raise ValueError("a victim.url API is defended by its server; the sweep cannot add defenses to it")
        assert self.key is not None
        return HttpVictim(self.url, self.key)

    def train_data(self) -> tuple[DatasetRef, str | None] | None:
        """Its training images as recorded in its metadata, and their recorded hash (None if not recorded).

        ``train_victim`` records them (``train_data``: spec, split, options, ``images_sha256``);
        checkpoints written before that record give the same from ``dataset``, ``image_size``,
        ``count`` and ``data_seed``. None when the metadata does not say (a foreign ONNX model, a
        checkpoint saved by other code).
        """
        meta = self.metadata
        record = meta.get("train_data")
        if isinstance(record, dict) and isinstance(record.get("spec"), str):
            options = {k: v for k, v in dict(record.get("options") or {}).items() if v is not None}
            ref = DatasetRef(record["spec"], record["spec"], str(record.get("split", "train")), options)
            sha = record.get("images_sha256")
            return ref, sha if isinstance(sha, str) else None
        if isinstance(meta.get("dataset"), str) and isinstance(meta.get("image_size"), int):
            options = {"size": meta["image_size"], "seed": int(meta.get("data_seed", 0))}
            if isinstance(meta.get("count"), int):
                options["count"] = meta["count"]
            return DatasetRef(meta["dataset"], meta["dataset"], str(meta.get("split", "train")), options), None
        return None


def prepare_victim(
    spec: VictimSource, out: Path, *, progress: bool = True, log: Callable[[str], None] = print
) -> PreparedVictim:
    """Resolve ``spec`` to an ONNX file (use it, export a checkpoint into ``out``, or train, cached) or an API."""
    if spec.url is not None:
        assert spec.key_file is not None
        key = read_key(spec.key_file)
        with HttpVictim(spec.url, key) as api:
            return PreparedVictim(None, api.sha256, "url", spec.train_size, url=spec.url, key=key)
    if spec.onnx is not None:
        if not spec.onnx.is_file():
            raise FileNotFoundError(f"victim.onnx: no ONNX model at {spec.onnx}")
        meta: dict[str, Any] = dict(read_metadata(spec.onnx))
        return PreparedVictim(spec.onnx, file_sha256(spec.onnx), "onnx", _train_size(spec, meta), metadata=meta)
    if spec.checkpoint is not None:
        return _export_checkpoint(spec, out, log)
    assert spec.train is not None
    hooks = [WatermarkHook(spec.watermark)] if spec.watermark is not None else []
    cached = trained_victim(dataclasses.replace(spec.train, progress=progress), hooks, log=log)
    return PreparedVictim(
        cached.onnx,
        cached.sha256,
        "trained" if cached.trained_now else "cache",
        _train_size(spec, cached.metadata),
        cached.train_time_s,
        cached.metadata,
        cached.prefix,
    )


def _train_size(spec: VictimSource, meta: dict[str, Any]) -> int | None:
    if spec.train_size is not None:
        return spec.train_size
    for key in ("train_size", "num_images", "dataset_size"):
        if key in meta:
            try:
                return int(meta[key])
            except (TypeError, ValueError):
                return None
    return None


def _export_checkpoint(spec: VictimSource, out: Path, log: Callable[[str], None]) -> PreparedVictim:
    assert spec.checkpoint is not None
    weights, _ = checkpoint_paths(spec.checkpoint)
    model, meta = load_checkpoint(spec.checkpoint)
    size = meta.get("image_size")
    if not isinstance(size, int):
        raise ValueError("victim.checkpoint: the checkpoint metadata has no integer 'image_size'; re-save it with one")
    onnx = out / "victim" / f"victim-{file_sha256(weights)[:12]}.onnx"
    if not onnx.is_file():
        log(f"exporting checkpoint {spec.checkpoint} to {onnx}")
        shape = (int(meta.get("in_channels", 3)), size, size)
        atomic_write(onnx, lambda tmp: export_onnx(model, tmp, shape, source_checkpoint=str(spec.checkpoint)))
    meta = {**meta, **read_metadata(onnx)}
    return PreparedVictim(
        onnx, file_sha256(onnx), "checkpoint", _train_size(spec, meta), metadata=meta, checkpoint=spec.checkpoint
    )
