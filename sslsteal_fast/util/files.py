"""Files the package writes: atomically, content-addressed, and in the user cache.

* :func:`atomic_write` is the one way anything is written: to a temporary name in the same folder,
  then renamed, so a process killed mid-write never leaves a half file that a resumed job would
  trust. :func:`write_json`, :func:`write_text` and :func:`save_tensors` (safetensors with a JSON
  header; never pickle) are built on it.
* :func:`stable_hash` and :func:`file_sha256` give the content ids that name cached files, so a
  changed configuration never reads a stale file.
* :func:`cache_root` is the user cache (trained victims): ``$SSLSTEAL_CACHE``, else
  ``$XDG_CACHE_HOME/sslsteal_fast``, else ``~/.cache/sslsteal_fast``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "atomic_write",
    "cache_root",
    "file_sha256",
    "load_tensors",
    "read_tensor_metadata",
    "safe_filename",
    "save_tensors",
    "stable_hash",
    "write_json",
    "write_text",
]

#: Header entry of the JSON metadata in the safetensors files the package writes.
DEFAULT_HEADER = "sslsteal_fast"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``.

    The parent folder is created. On any error the temporary file is removed and ``path`` is left
    as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (plus a newline) atomically; non-JSON values via ``str``."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    *,
    header: str = DEFAULT_HEADER,
) -> Path:
    """Write ``tensors`` (as contiguous CPU copies) with JSON ``metadata`` under ``header``, atomically."""
    from safetensors.torch import save_file  # torch-backed: loaded when first needed

    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    text = json.dumps(dict(metadata), sort_keys=True, default=str)
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={header: text}))


def read_tensor_metadata(path: str | os.PathLike[str], *, header: str = DEFAULT_HEADER) -> dict[str, Any]:
    """The JSON metadata :func:`save_tensors` stored in ``path`` (empty if there is none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get(header, "{}"))


def load_tensors(
    path: str | os.PathLike[str], *, header: str = DEFAULT_HEADER
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a file written by :func:`save_tensors`."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensors[key] = fh.get_tensor(key)
        meta = fh.metadata() or {}
    return tensors, json.loads(meta.get(header, "{}"))


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex SHA-256 prefix of the canonical JSON of ``obj`` (sorted keys): a stable content id."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_root() -> Path:
    """The user cache folder (not created here)."""
    env = os.environ.get("SSLSTEAL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sslsteal_fast"


def safe_filename(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` replaced by ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
