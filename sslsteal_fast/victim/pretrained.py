"""Pretrained victims shipped with the package: named recipes, their weights, sha256-checked on load.

Training the built-in demo's victims takes longer than the demo itself on a laptop CPU, so the
package ships their checkpoints (safetensors + JSON metadata, a few MB each) under
``sslsteal_fast/pretrained/<name>/``, described by ``pretrained/manifest.json``:

- ``recipe``: the ``[victim.train]`` table that trains it (any :class:`~sslsteal_fast.config.VictimTrainConfig`
  field, plus an optional ``watermark`` table of :class:`~sslsteal_fast.config.WatermarkConfig` fields);
- ``cache_entry``: the victim-cache folder that recipe maps to
  (:func:`~sslsteal_fast.victim.cache.cache_folder`);
- ``files``: the sha256 of every file;
- ``measured``: what the recipe reached when these weights were made (probe accuracies, training time,
  the machine), and the probe it was measured with.

When :func:`~sslsteal_fast.victim.trained_victim` is asked for a configuration whose cache entry is a
packaged one, it installs the packaged files (after checking every sha256) instead of training; set
``SSLSTEAL_PRETRAINED=0`` to train from scratch. ``sslsteal train-victim --recipe NAME`` retrains a
recipe and compares the result with the packaged weights (``make victim``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sslsteal_fast.config import VictimTrainConfig, WatermarkConfig
from sslsteal_fast.util.files import atomic_write, file_sha256, write_json

__all__ = [
    "MANIFEST_FORMAT",
    "PackagedVictim",
    "install_packaged",
    "packaged_for_entry",
    "packaged_victim",
    "packaged_victims",
    "pretrained_enabled",
    "recipe_configs",
    "write_packaged",
]

MANIFEST_FORMAT = "sslsteal_fast.pretrained/1"
_ENV = "SSLSTEAL_PRETRAINED"


@dataclass(frozen=True)
class PackagedVictim:
    """One packaged victim (see the module docstring); ``folder`` holds its files."""

    name: str
    description: str
    recipe: dict[str, Any]
    cache_entry: str
    files: dict[str, str]
    measured: dict[str, Any]
    folder: Path

    def configs(self) -> tuple[VictimTrainConfig, WatermarkConfig | None]:
        """The recipe as a training config (and its watermark config, when it has one)."""
        return recipe_configs(self.recipe)

    def verify(self) -> None:
        """Check every file against its recorded sha256; ValueError naming the file otherwise."""
        for fname, digest in self.files.items():
            path = self.folder / fname
            if not path.is_file():
                raise ValueError(f"packaged victim {self.name!r}: {path} is missing; reinstall the package")
            actual = file_sha256(path)
            if actual != digest:
                raise ValueError(
                    f"packaged victim {self.name!r}: {path} has sha256 {actual[:16]}... but the manifest records "
                    f"{digest[:16]}...; the file is corrupt or was changed, reinstall the package"
                )


def _root() -> Path:
    return Path(str(resources.files("sslsteal_fast").joinpath("pretrained")))


def packaged_victims(root: str | Path | None = None) -> dict[str, PackagedVictim]:
    """Every packaged victim, by name (empty when the package ships none)."""
    folder = Path(root) if root is not None else _root()
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        raw = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{manifest}: not a valid manifest ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{manifest}: not a {MANIFEST_FORMAT} manifest")
    out: dict[str, PackagedVictim] = {}
    for name, e in raw.get("victims", {}).items():
        try:
            out[name] = PackagedVictim(
                name=name,
                description=str(e.get("description", "")),
                recipe=dict(e["recipe"]),
                cache_entry=str(e["cache_entry"]),
                files={str(k): str(v) for k, v in e["files"].items()},
                measured=dict(e.get("measured", {})),
                folder=folder / name,
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{manifest}: entry {name!r} is malformed ({err!r})") from None
    return out


def packaged_victim(name: str) -> PackagedVictim:
    """The packaged victim called ``name``; ValueError listing the known names otherwise."""
    known = packaged_victims()
    if name not in known:
        raise ValueError(f"unknown recipe {name!r}; packaged recipes: {', '.join(sorted(known)) or 'none'}")
    return known[name]


def packaged_for_entry(entry: str) -> PackagedVictim | None:
    """The packaged victim whose cache entry is the folder name ``entry``, if any."""
    return next((v for v in packaged_victims().values() if v.cache_entry == entry), None)


def pretrained_enabled() -> bool:
    """False when ``SSLSTEAL_PRETRAINED`` is ``0``/``false``/``no``: then every victim is trained."""
    return os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def recipe_configs(recipe: dict[str, Any]) -> tuple[VictimTrainConfig, WatermarkConfig | None]:
    """A ``[victim.train]``-style table -> (VictimTrainConfig, WatermarkConfig or None)."""
    values = dict(recipe)
    wm = values.pop("watermark", None)
    return VictimTrainConfig(**values), (WatermarkConfig(**wm) if wm is not None else None)


def install_packaged(victim: PackagedVictim, dest: str | Path) -> Path:
    """Check the packaged files' sha256, then copy them into the folder ``dest`` (atomically each)."""
    victim.verify()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for fname in victim.files:
        atomic_write(dest / fname, lambda tmp, src=victim.folder / fname: shutil.copyfile(src, tmp))
    return dest


def write_packaged(
    root: str | Path,
    name: str,
    *,
    source_folder: str | Path,
    files: list[str],
    recipe: dict[str, Any],
    cache_entry: str,
    description: str,
    measured: dict[str, Any],
) -> PackagedVictim:
    """Add (or replace) a packaged victim under ``root`` from a finished cache entry (maintainers' tool)."""
    root = Path(root)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for fname in files:
        src = Path(source_folder) / fname
        atomic_write(folder / fname, lambda tmp, src=src: shutil.copyfile(src, tmp))
        digests[fname] = file_sha256(folder / fname)
    manifest = root / "manifest.json"
    raw = json.loads(manifest.read_text()) if manifest.is_file() else {"format": MANIFEST_FORMAT, "victims": {}}
    raw["victims"][name] = {
        "description": description,
        "recipe": recipe,
        "cache_entry": cache_entry,
        "files": digests,
        "measured": measured,
    }
    raw["victims"] = dict(sorted(raw["victims"].items()))
    write_json(manifest, raw)
    return packaged_victims(root)[name]
