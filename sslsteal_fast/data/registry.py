"""``load_dataset(spec, split, **options)``: one entry point for built-in and on-disk datasets.

Specs: built-ins ``digits``, ``shapes``, ``shapes-ood`` (no download); on-disk ``NAME:PATH`` with
NAME in ``cifar10``, ``cifar100``, ``svhn``, ``stl10``, ``mnist``, ``fashion-mnist``, ``imagefolder``,
``npz``. Options common to every dataset:

- ``size``: resize to size x size (bilinear, antialiased when shrinking). Built-ins default to 32.
- ``channels``: 1 or 3 (grey is repeated, RGB becomes luma). Built-ins default to 3.
- ``count``: number of images; for ``shapes``/``shapes-ood`` how many to generate, otherwise a
  random subset (drawn with ``seed``, kept in file order).
- ``seed``: generation seed of ``shapes``/``shapes-ood``, subset seed otherwise (default 0).

Extra options: ``cifar100`` takes ``label="fine"|"coarse"``; ``imagefolder`` takes
``follow_symlinks=True`` to read links that lead outside its folder. Unknown options raise
``ValueError``; so do sizes and counts past what fits in memory (:data:`~sslsteal_fast.config.MAX_IMAGE_SIZE`,
:data:`~sslsteal_fast.config.MAX_IMAGES`, :data:`~sslsteal_fast.config.MAX_DATASET_BYTES`), checked
before anything is read (:func:`check_dataset` runs the same checks without loading).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslsteal_fast.config import MAX_DATASET_BYTES, MAX_IMAGE_SIZE, MAX_IMAGES, check_seed
from sslsteal_fast.data import formats
from sslsteal_fast.data.dataset import ImageDataset, convert_channels, resize_images
from sslsteal_fast.data.shapes import shapes_dataset
from sslsteal_fast.util.checks import check_bool, check_choice, check_int

__all__ = [
    "BUILTIN_DATASETS",
    "DATASETS",
    "DISK_DATASETS",
    "check_dataset",
    "load_dataset",
    "parse_spec",
    "resolve_spec",
]

COMMON_OPTIONS = ("size", "channels", "count", "seed")


@dataclass(frozen=True)
class _Entry:
    splits: tuple[str, ...]
    needs_path: bool
    extra_options: tuple[str, ...]
    read: Callable[..., ImageDataset]  # (path | None, split, **extra) -> ImageDataset
    default_size: int | None = None
    default_channels: int | None = None


def _shapes(domain: str) -> Callable[..., ImageDataset]:
    def read(path: Path | None, split: str, *, size: int, count: int | None, seed: int) -> ImageDataset:
        return shapes_dataset(domain, split, size=size, count=count, seed=seed)

    return read


_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(("train", "test"), False, (), lambda p, s: formats.load_digits(s), 32, 3),
    "shapes": _Entry(("train", "test"), False, (), _shapes("shapes"), 32, 3),
    "shapes-ood": _Entry(("train", "test"), False, (), _shapes("shapes-ood"), 32, 3),
    "cifar10": _Entry(("train", "test"), True, (), formats.load_cifar10),
    "cifar100": _Entry(("train", "test"), True, ("label",), formats.load_cifar100),
    "svhn": _Entry(("train", "test", "extra"), True, (), formats.load_svhn),
    "stl10": _Entry(("train", "test", "unlabeled"), True, (), formats.load_stl10),
    "mnist": _Entry(("train", "test"), True, (), lambda p, s: formats.load_mnist(p, s, name="mnist")),
    "fashion-mnist": _Entry(("train", "test"), True, (), lambda p, s: formats.load_mnist(p, s, name="fashion-mnist")),
    "imagefolder": _Entry(("train", "test", "val"), True, ("follow_symlinks",), formats.load_imagefolder),
    "npz": _Entry(("train", "test", "val"), True, (), formats.load_npz),
}

BUILTIN_DATASETS = tuple(k for k, e in _REGISTRY.items() if not e.needs_path)
DISK_DATASETS = tuple(k for k, e in _REGISTRY.items() if e.needs_path)
DATASETS = BUILTIN_DATASETS + tuple(f"{k}:PATH" for k in DISK_DATASETS)


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """``"cifar10:~/data/cifar"`` -> ``("cifar10", Path(...))``; ``"shapes"`` -> ``("shapes", None)``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset spec must be a non-empty string; valid: {', '.join(DATASETS)}")
    name, sep, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {spec!r}; valid: {', '.join(DATASETS)}")
    entry = _REGISTRY[name]
    if entry.needs_path and not rest:
        raise ValueError(f"dataset {name!r} is read from disk: write it as '{name}:PATH'")
    if not entry.needs_path and sep:
        raise ValueError(f"dataset {name!r} is built in and takes no path (write just '{name}')")
    return name, (Path(rest).expanduser() if rest else None)


def resolve_spec(spec: str, base: str | Path = ".") -> str:
    """``spec`` with its path (if any) made absolute, a relative one taken from ``base``.

    ``resolve_spec("npz:data/x.npz", "/exp")`` -> ``"npz:/exp/data/x.npz"``; built-ins are returned as is.
    The path need not exist.
    """
    name, path = parse_spec(spec)
    if path is None:
        return spec
    return f"{name}:{(path if path.is_absolute() else Path(base).expanduser() / path).absolute()}"


@dataclass(frozen=True)
class _Request:
    """A validated ``load_dataset`` call."""

    name: str
    path: Path | None
    entry: _Entry
    size: int | None
    channels: int | None
    count: int | None
    seed: int
    extra: dict[str, Any]


def _request(spec: str, split: str, options: dict[str, Any]) -> _Request:
    name, path = parse_spec(spec)
    entry = _REGISTRY[name]
    if split not in entry.splits:
        raise ValueError(f"{name}: unknown split {split!r}; valid: {', '.join(entry.splits)}")
    valid = COMMON_OPTIONS + entry.extra_options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    size = options.get("size", entry.default_size)
    channels = options.get("channels", entry.default_channels)
    count = options.get("count")
    seed = check_seed(f"{name}: option seed", options.get("seed", 0))
    if size is not None:
        check_int(f"{name}: option size", size, low=4)
        if size > MAX_IMAGE_SIZE:
            raise ValueError(
                f"{name}: option size = {size} is too large: at most {MAX_IMAGE_SIZE} px a side (images are held in "
                "memory as uint8 tensors, and the encoders here take 32 px)"
            )
    if count is not None:
        check_int(f"{name}: option count", count, low=1)
        if count > MAX_IMAGES:
            raise ValueError(
                f"{name}: option count = {count:,} is too large: at most {MAX_IMAGES:,} images (a dataset is held in "
                "memory)"
            )
    if channels is not None:
        check_choice(f"{name}: option channels", channels, (1, 3))
    if count is not None and size is not None:
        need = count * (channels or 3) * size * size
        if need > MAX_DATASET_BYTES:
            raise ValueError(
                f"{name}: count = {count:,} images of {size}x{size} px would take {need / 2**30:.0f} GiB of memory "
                f"(at most {MAX_DATASET_BYTES / 2**30:.0f} GiB); lower count or size"
            )
    extra = {k: options[k] for k in entry.extra_options if k in options}
    if "follow_symlinks" in extra:
        check_bool(f"{name}: option follow_symlinks", extra["follow_symlinks"])
    return _Request(name, path, entry, size, channels, count, seed, extra)


def check_dataset(spec: str, split: str = "train", **options: Any) -> None:
    """Every check :func:`load_dataset` makes before reading (spec, split, options, bounds), reading nothing."""
    _request(spec, split, options)


def load_dataset(spec: str, split: str = "train", **options: Any) -> ImageDataset:
    """Load a dataset by spec (see the module docstring) -> :class:`ImageDataset` with uint8 (N, C, H, W)."""
    r = _request(spec, split, options)
    if r.name in ("shapes", "shapes-ood"):
        ds = r.entry.read(r.path, split, size=r.size, count=r.count, seed=r.seed)
    else:
        extra = dict(r.extra)
        if r.name == "imagefolder" and r.size is not None:
            extra["size"] = r.size  # resize while reading, so mixed-size folders load
        ds = r.entry.read(r.path, split, **extra)
        if r.count is not None:
            if r.count > len(ds):
                raise ValueError(f"{r.name}: count = {r.count} but the {split} split has only {len(ds)} images")
            g = torch.Generator().manual_seed(r.seed)
            ds = ds.subset(torch.randperm(len(ds), generator=g)[: r.count].sort().values)
    images = ds.images
    if r.size is not None:
        images = resize_images(images, r.size)
    if r.channels is not None:
        images = convert_channels(images, r.channels)
    return ImageDataset(images, ds.labels, ds.num_classes, ds.name)
