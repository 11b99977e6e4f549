"""Loaders check what they return: labels in range, uint8 pixels, no links out of an image folder, and
corrupt files as one ValueError naming the file."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsteal_fast.config import MAX_IMAGE_SIZE, MAX_IMAGES
from sslsteal_fast.data import ImageDataset, check_dataset, image_digests, load_dataset


def _raises_naming(path: Path, match: str = "") -> pytest.RaisesContext:
    """``pytest.raises`` for a plain ValueError whose message names ``path`` (and matches ``match``)."""
    return pytest.raises(ValueError, match=f"{str(path)!s}.*{match}" if match else str(path))


def _cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    with open(path, "wb") as f:
        pickle.dump({b"data": data.reshape(len(data), -1), b"labels": labels}, f, protocol=2)


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    body = array.astype({0x08: ">u1", 0x0B: ">i2"}[code]).tobytes()
    return b"\x00\x00" + bytes([code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + body


def _png(path: Path, seed: int = 0) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------- labels


def test_npz_label_outside_num_classes_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    np.savez(path, images=np.zeros((3, 3, 4, 4), np.uint8), labels=np.array([0, 1, 5]), num_classes=np.int64(3))
    with _raises_naming(path, r"outside \[0, 3\)"):
        load_dataset(f"npz:{path}")
    np.savez(path, images=np.zeros((2, 3, 4, 4), np.uint8), labels=np.array([-3, 1]))
    with _raises_naming(path, "outside"):
        load_dataset(f"npz:{path}")


def test_cifar_and_mnist_labels_outside_range(tmp_path: Path) -> None:
    _cifar_batch(tmp_path / "test_batch", np.zeros((2, 3, 32, 32), np.uint8), [3, 10])
    with _raises_naming(tmp_path / "test_batch", r"outside \[0, 10\)"):
        load_dataset(f"cifar10:{tmp_path}", "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((2, 28, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 12], np.uint8)))
    with _raises_naming(tmp_path / "t10k-labels-idx1-ubyte", "outside"):
        load_dataset(f"mnist:{tmp_path}", "test")


def test_stl10_label_zero_is_out_of_range(tmp_path: Path) -> None:
    np.zeros((2, 3, 96, 96), np.uint8).tofile(tmp_path / "test_X.bin")
    np.array([1, 0], np.uint8).tofile(tmp_path / "test_y.bin")  # labels are 1..10 on disk
    with _raises_naming(tmp_path / "test_y.bin", "outside"):
        load_dataset(f"stl10:{tmp_path}", "test")


def test_image_dataset_checks_its_labels() -> None:
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        ImageDataset(images, torch.tensor([0, 4, 1]), 4, "toy")
    with pytest.raises(ValueError, match="found -2..1"):
        ImageDataset(images, torch.tensor([0, -2, 1]), 4, "toy")
    assert ImageDataset(images, torch.tensor([0, -1, 3]), 4, "toy").labels.tolist() == [0, -1, 3]


# ------------------------------------------------------------------------------------------- pixels


def test_pixels_must_fit_uint8(tmp_path: Path) -> None:
    path = tmp_path / "wide.npz"
    np.savez(path, images=np.array([0, 100, 300]).repeat(48).reshape(3, 3, 4, 4), labels=np.arange(3))
    with _raises_naming(path, r"fit uint8 \[0, 255\], found 0..300"):
        load_dataset(f"npz:{path}")
    np.savez(path, images=np.full((1, 3, 4, 4), 200, dtype=np.int64))  # wide integers that do fit are fine
    assert load_dataset(f"npz:{path}").images.unique().tolist() == [200]

    _cifar_batch(tmp_path / "test_batch", np.full((1, 3, 32, 32), 256, np.int64), [0])
    with _raises_naming(tmp_path / "test_batch", "fit uint8"):
        load_dataset(f"cifar10:{tmp_path}", "test")

    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.full((1, 28, 28), 300), code=0x0B))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([1], np.uint8)))
    with _raises_naming(tmp_path / "t10k-images-idx3-ubyte", "fit uint8"):
        load_dataset(f"mnist:{tmp_path}", "test")


# ------------------------------------------------------------------------------------ image folders


def test_imagefolder_refuses_links_out_of_its_folder(tmp_path: Path) -> None:
    outside = _png(tmp_path / "elsewhere" / "secret.png")
    root = tmp_path / "data"
    _png(root / "a" / "0.png")
    _png(root / "b" / "0.png", seed=1)
    (root / "a" / "1.png").symlink_to(outside)
    with pytest.raises(ValueError, match=r"1\.png leads outside .*follow_symlinks=True"):
        load_dataset(f"imagefolder:{root}")
    ds = load_dataset(f"imagefolder:{root}", follow_symlinks=True)
    assert len(ds) == 3

    (root / "a" / "1.png").unlink()
    (root / "a" / "2.png").symlink_to(root / "b" / "0.png")  # a link inside the folder is fine
    assert len(load_dataset(f"imagefolder:{root}")) == 3
    (root / "c").symlink_to(outside.parent, target_is_directory=True)  # so is no class folder outside it
    with pytest.raises(ValueError, match="leads outside"):
        load_dataset(f"imagefolder:{root}")
    with pytest.raises(ValueError, match="follow_symlinks must be true or false"):
        load_dataset(f"imagefolder:{root}", follow_symlinks="yes")


# ------------------------------------------------------------------------------------ corrupt files


def test_corrupt_image_is_one_value_error(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "good.png")
    bad = tmp_path / "a" / "bad.png"
    bad.write_bytes(b"not a png at all")
    with _raises_naming(bad, "not a readable image") as info:
        load_dataset(f"imagefolder:{tmp_path}")
    assert type(info.value) is ValueError and info.value.__cause__ is None
    truncated = _png(tmp_path / "a" / "bad.png", seed=3).read_bytes()
    bad.write_bytes(truncated[: len(truncated) // 2])
    with _raises_naming(bad, "not a readable image"):
        load_dataset(f"imagefolder:{tmp_path}")


@pytest.mark.parametrize("content", [b"garbage bytes", b"PK\x03\x04 a cut zip", "cut"])
def test_corrupt_npz_is_one_value_error(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "data.npz"
    if content == "cut":
        np.savez(path, images=np.zeros((50, 3, 8, 8), np.uint8))
        path.write_bytes(path.read_bytes()[:-300])
    else:
        path.write_bytes(content)
    with _raises_naming(path) as info:
        load_dataset(f"npz:{path}")
    assert type(info.value) is ValueError


def test_npy_instead_of_npz(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((2, 3, 4, 4), np.uint8))
    with _raises_naming(path, "not an npz archive"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("cut", [1, 40])
def test_corrupt_pickle_is_one_value_error(tmp_path: Path, cut: int) -> None:
    _cifar_batch(tmp_path / "test_batch", np.zeros((2, 3, 32, 32), np.uint8), [0, 1])
    raw = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(raw[:cut])
    with _raises_naming(tmp_path / "test_batch", "not a readable CIFAR batch") as info:
        load_dataset(f"cifar10:{tmp_path}", "test")
    assert type(info.value) is ValueError


def test_corrupt_gzip_and_mat_name_the_file(tmp_path: Path) -> None:
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(_idx(np.zeros((2, 28, 28), np.uint8)))[:30])
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 2], np.uint8)))
    with _raises_naming(images):
        load_dataset(f"mnist:{tmp_path}", "test")
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut")
    with _raises_naming(tmp_path / "test_32x32.mat", "not a readable MATLAB file"):
        load_dataset(f"svhn:{tmp_path}", "test")


def test_missing_file_is_still_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


# ---------------------------------------------------------------------------- bounds and digests


def test_absurd_sizes_and_counts_fail_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"size = {MAX_IMAGE_SIZE + 1} is too large"):
        check_dataset("shapes", size=MAX_IMAGE_SIZE + 1)
    with pytest.raises(ValueError, match="count = 10,000,000,000 is too large"):
        load_dataset("shapes", count=10**10)  # would otherwise start drawing ten billion images
    with pytest.raises(ValueError, match="would take 458 GiB"):
        check_dataset(f"npz:{tmp_path / 'absent.npz'}", count=MAX_IMAGES, size=128)  # checked before the file
    with pytest.raises(ValueError, match=r"seed must be an int >= 0 and <= 2\*\*63 - 1"):
        check_dataset("shapes", seed=2**63)
    check_dataset("shapes", "test", count=10, size=16, seed=2**63 - 1)


def test_image_digests_find_equal_images() -> None:
    a = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    digests = image_digests(a)
    assert len(set(digests)) == 5 and image_digests(a[[3, 1]]) == [digests[3], digests[1]]
    b = a.clone()
    b[2, 0, 0, 0] ^= 1
    assert image_digests(b)[2] != digests[2] and image_digests(b)[:2] == digests[:2]
