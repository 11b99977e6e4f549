"""Readers for the standard on-disk dataset formats (files users download themselves) and ``digits``.

Each reader takes the dataset's directory (or file, for ``npz``) and a split, and returns an
:class:`ImageDataset` with uint8 (N, C, H, W) images. A path without the expected files raises
``FileNotFoundError`` naming them. What a file holds is checked before it is returned: a file that
cannot be parsed (a corrupt image, archive or pickle), pixel values that do not fit uint8, or a
label outside ``[0, num_classes)`` is one ``ValueError`` naming the file.

CIFAR's official "python version" is a set of pickled dicts. We unpickle those files only, with
``encoding="bytes"`` (they were written by Python 2) and through a restricted unpickler that can
build nothing but plain containers and numpy arrays, so a crafted file cannot run code. Nothing else
in the package uses pickle.
"""

from __future__ import annotations

import contextlib
import gzip
import pickle
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslsteal_fast.data.dataset import ImageDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_imagefolder",
    "load_mnist",
    "load_npz",
    "load_stl10",
    "load_svhn",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"{name}: unknown split {split!r}; valid: {', '.join(splits)}")


@contextlib.contextmanager
def _parsing(path: Path, what: str) -> Iterator[None]:
    """Turn a parser's failure on ``path`` into one ``ValueError`` naming the file.

    A missing or unreadable file keeps its ``FileNotFoundError`` / ``PermissionError``.
    """
    try:
        yield
    except (FileNotFoundError, PermissionError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - PIL, zipfile, pickle, scipy, gzip: each has its own errors
        raise ValueError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from None


def _pixels(images: np.ndarray, source: Path) -> np.ndarray:
    """``images`` as uint8, refusing values that do not fit (no silent wrap-around)."""
    if images.dtype == np.uint8:
        return images
    if not (np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_):
        raise ValueError(f"{source}: pixel values must be integers in [0, 255] (uint8), got dtype {images.dtype}")
    if images.size:
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise ValueError(f"{source}: pixel values must fit uint8 [0, 255], found {low}..{high}")
    return images.astype(np.uint8)


def _labels(labels: np.ndarray, n: int, num_classes: int, source: Path) -> np.ndarray:
    """``labels`` as int64 (n,), every one in ``[0, num_classes)``; else a ``ValueError`` naming ``source``."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.size != n:
        raise ValueError(f"{source}: expected {n} integer labels, got {labels.size} of dtype {labels.dtype}")
    labels = labels.reshape(-1).astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source}: {int(bad.sum())} label(s) outside [0, {num_classes}) (the first: {int(labels[i])} at row {i})"
        )
    return labels


def _dataset(images: np.ndarray, labels: np.ndarray | None, num_classes: int, name: str, source: Path) -> ImageDataset:
    """Checked uint8 images and labels (None: unlabeled, every label -1) read from ``source``."""
    images = np.ascontiguousarray(_pixels(np.asarray(images), source))
    if not images.flags.writeable:  # e.g. np.frombuffer over an idx file's bytes
        images = images.copy()
    n = images.shape[0]
    labels = np.full(n, -1, dtype=np.int64) if labels is None else _labels(labels, n, num_classes, source)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels.copy()), num_classes, name)


def _find_dir(path: Path, subdirs: Sequence[str], required: Sequence[str], name: str) -> Path:
    """``path`` or one of its known sub-folders that holds all ``required`` files."""
    for candidate in (path, *(path / s for s in subdirs)):
        if all((candidate / f).is_file() for f in required):
            return candidate
    where = " or ".join(str(p) for p in (path, *(path / s for s in subdirs)))
    raise FileNotFoundError(f"{name}: expected the files {', '.join(required)} in {where}")


# --------------------------------------------------------------------------------------------- digits


def load_digits(split: str = "train") -> ImageDataset:
    """scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes), no download.

    A fixed, stratified split (seed 0, independent of any user seed): 1437 train / 360 test.
    Pixel values 0..16 are scaled to 0..255. Images (N, 1, 8, 8).
    """
    _check_split("digits", split, ("train", "test"))
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    index = np.arange(len(bunch.target))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0, stratify=bunch.target)
    idx = np.sort(train_idx if split == "train" else test_idx)
    images, labels = np.ascontiguousarray(images[idx]), bunch.target[idx].astype(np.int64)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), 10, "digits")


# ---------------------------------------------------------------------------------------------- CIFAR


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays (plus builtin containers, which need no lookup)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_cifar_batch(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f, _parsing(path, "CIFAR batch (a pickled dict of arrays)"):
        raw = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a CIFAR batch (expected a pickled dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _cifar(
    path: Path, files: Sequence[str], subdirs: Sequence[str], label_key: str, name: str, classes: int
) -> ImageDataset:
    root = _find_dir(path, subdirs, files, name)
    parts = []
    for file in files:
        batch = _read_cifar_batch(root / file)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{root / file}: a {name} batch needs 'data' and {label_key!r} entries")
        data = np.asarray(batch["data"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{root / file}: 'data' must be (N, 3072), got {data.shape}")
        parts.append(_dataset(data.reshape(-1, 3, 32, 32), batch[label_key], classes, name, root / file))
    return ImageDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), classes, name)


def load_cifar10(path: Path, split: str = "train") -> ImageDataset:
    """CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``) in PATH or PATH/cifar-10-batches-py."""
    _check_split("cifar10", split, ("train", "test"))
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return _cifar(path, files, ("cifar-10-batches-py",), "labels", "cifar10", 10)


def load_cifar100(path: Path, split: str = "train", *, label: str = "fine") -> ImageDataset:
    """CIFAR-100 python files (``train``, ``test``) in PATH or PATH/cifar-100-python.

    ``label="fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
    """
    _check_split("cifar100", split, ("train", "test"))
    if label not in ("fine", "coarse"):
        raise ValueError(f"cifar100: label must be 'fine' or 'coarse', got {label!r}")
    return _cifar(path, [split], ("cifar-100-python",), f"{label}_labels", "cifar100", 100 if label == "fine" else 20)


# ----------------------------------------------------------------------------------------------- SVHN


def load_svhn(path: Path, split: str = "train") -> ImageDataset:
    """SVHN cropped digits (``{split}_32x32.mat``: X (32, 32, 3, N), y (N, 1) with 10 meaning digit 0)."""
    _check_split("svhn", split, ("train", "test", "extra"))
    from scipy.io import loadmat

    file = f"{split}_32x32.mat"
    root = _find_dir(path, (), (file,), "svhn")
    with _parsing(root / file, "MATLAB file"):
        mat = loadmat(str(root / file))
    if "X" not in mat or "y" not in mat or np.ndim(mat["X"]) != 4:
        raise ValueError(f"{root / file}: an SVHN file needs arrays 'X' (32, 32, 3, N) and 'y' (N, 1)")
    images = np.transpose(mat["X"], (3, 2, 0, 1))
    y = _labels(mat["y"], images.shape[0], 11, root / file)  # 1..10, 10 (or 0) meaning the digit 0
    return _dataset(images, y % 10, 10, "svhn", root / file)


# ---------------------------------------------------------------------------------------------- STL10


def load_stl10(path: Path, split: str = "train") -> ImageDataset:
    """STL-10 binaries (``{split}_X.bin``, ``{split}_y.bin``) in PATH or PATH/stl10_binary; 96x96 RGB.

    Splits ``train``, ``test`` and ``unlabeled`` (100,000 images, labels -1). Labels 1..10 become 0..9.
    The binaries store each image column-major, hence the H/W transpose.
    """
    _check_split("stl10", split, ("train", "test", "unlabeled"))
    files = [f"{split}_X.bin"] + ([] if split == "unlabeled" else [f"{split}_y.bin"])
    root = _find_dir(path, ("stl10_binary",), files, "stl10")
    raw = np.fromfile(root / files[0], dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise ValueError(f"{root / files[0]}: size {raw.size} is not a multiple of 3*96*96")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    if split == "unlabeled":
        return _dataset(images, None, 10, "stl10", root / files[0])
    labels = np.fromfile(root / files[1], dtype=np.uint8).astype(np.int64) - 1
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"stl10: {images.shape[0]} images but {labels.shape[0]} labels in {root}")
    return _dataset(images, labels, 10, "stl10", root / files[1])


# ------------------------------------------------------------------------------------ MNIST (idx files)


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (big-endian header: 2 zero bytes, dtype code, rank, dims), gzipped or not."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        with _parsing(path, "gzip file"):
            data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an idx file")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, rank = data[2], data[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown idx dtype code {code:#x}")
    if len(data) < 4 + 4 * rank:
        raise ValueError(f"{path}: not an idx file (its header is cut short)")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    arr = np.frombuffer(data, dtype=dtypes[code], offset=4 + 4 * rank)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} values")
    return arr.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path: Path, split: str = "train", *, name: str = "mnist") -> ImageDataset:
    """MNIST / Fashion-MNIST idx files (``train-images-idx3-ubyte`` etc., optionally ``.gz``), 28x28 grey.

    Looked for in PATH and PATH/raw.
    """
    _check_split(name, split, ("train", "test"))
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = [_idx_file(path, s) for s in stems]
    if any(f is None for f in found):
        raise FileNotFoundError(f"{name}: expected {stems[0]}[.gz] and {stems[1]}[.gz] in {path} or {path / 'raw'}")
    images = _read_idx(found[0])  # type: ignore[arg-type]
    labels = _read_idx(found[1])  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name}: image array {images.shape} does not match label array {labels.shape}")
    images = _pixels(images, found[0])  # type: ignore[arg-type]
    return _dataset(images[:, None], labels, 10, name, found[1])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ imagefolder


def load_imagefolder(
    path: Path, split: str = "train", *, size: int | None = None, follow_symlinks: bool = False
) -> ImageDataset:
    """A folder per class (``PATH/<class>/*.png``), or ``PATH/<split>/<class>/*`` when that exists.

    Classes are the sorted sub-folder names (label = position). Without a ``PATH/<split>`` folder the
    whole tree is the ``train`` split and other splits are an error (so a "test" set never silently
    equals the training set). Images are read with Pillow as RGB; they must share one size unless
    ``size`` is given (then each is resized to size x size, bilinear). A symbolic link (class folder
    or image) that leads outside PATH is refused unless ``follow_symlinks`` is True; a file Pillow
    cannot read is a ``ValueError`` naming it.
    """
    from PIL import Image

    if not path.is_dir():
        raise FileNotFoundError(f"imagefolder: {path} is not a directory (expected PATH/<class>/<image files>)")
    root = path / split
    if not root.is_dir():
        if split != "train":
            raise FileNotFoundError(f"imagefolder: split {split!r} needs a folder {root} of class folders")
        root = path
    inside = path.resolve()

    def check_link(p: Path) -> None:
        if not follow_symlinks and not p.resolve().is_relative_to(inside):
            raise ValueError(
                f"imagefolder: {p} leads outside {path} (to {p.resolve()}); pass follow_symlinks=True to read it"
            )

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = []
    for label, cls in enumerate(classes):
        check_link(root / cls)
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                check_link(f)
                files.append((f, label))
    if not files:
        raise FileNotFoundError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {root}")
    arrays = []
    for file, _ in files:
        with _parsing(file, "image"), Image.open(file) as im:
            im = im.convert("RGB")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(im, dtype=np.uint8))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"imagefolder: images in {root} have different sizes {sorted(shapes)}; pass size=N")
    images = np.stack(arrays).transpose(0, 3, 1, 2)
    return _dataset(images, np.array([label for _, label in files]), len(classes), "imagefolder", root)


# ------------------------------------------------------------------------------------------------ npz


def load_npz(path: Path, split: str = "train") -> ImageDataset:
    """A ``.npz`` with ``images`` (uint8, or float in [0, 1]; (N, C, H, W), (N, H, W, C) or (N, H, W))
    and optional ``labels`` (N,) and ``num_classes``. Keys ``{split}_images``/``{split}_labels`` take
    precedence; plain ``images`` serve only the ``train`` split. Without labels every label is -1.
    """
    if not path.is_file():
        raise FileNotFoundError(f"npz: expected a file {path} with arrays 'images' and (optional) 'labels'")
    with _parsing(path, "npz archive"):
        archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an npz archive (a single .npy array); save it with numpy.savez")
    with archive as f:
        keys = set(f.files)
        if f"{split}_images" in keys:
            img_key, lab_key = f"{split}_images", f"{split}_labels"
        elif "images" in keys and split == "train":
            img_key, lab_key = "images", "labels"
        else:
            raise ValueError(
                f"npz: {path} has no {split!r} images (found arrays {sorted(keys)}; expected "
                f"'{split}_images'" + (" or 'images'" if split == "train" else "") + ")"
            )
        with _parsing(path, "npz archive"):
            images = np.asarray(f[img_key])
            labels = np.asarray(f[lab_key]) if lab_key in keys else None
            classes = np.asarray(f["num_classes"]) if "num_classes" in keys else None
    images = _npz_images(images, path)
    if labels is not None and (labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"npz: labels must be integers of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}"
        )
    if classes is not None:
        if classes.ndim != 0 or not np.issubdtype(classes.dtype, np.integer) or int(classes) < 0:
            raise ValueError(f"{path}: 'num_classes' must be one integer >= 0, got {classes!r}")
        num_classes = int(classes)
    else:
        num_classes = int(labels.max()) + 1 if labels is not None and labels.size else 0
    return _dataset(images, labels, num_classes, "npz", path)


def _npz_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"npz: images in {path} must be (N, C, H, W), (N, H, W, C) or (N, H, W); got {images.shape}")
    if images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if images.size and (np.nanmin(images) < 0 or np.nanmax(images) > 1 or np.isnan(images).any()):
            raise ValueError(f"npz: float images in {path} must lie in [0, 1]")
        return np.rint(images * 255.0).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer):
        return _pixels(images, path)
    raise ValueError(f"npz: images in {path} must be uint8 or float in [0, 1], got {images.dtype}")
