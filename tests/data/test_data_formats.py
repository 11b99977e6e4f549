"""On-disk dataset readers on tiny fixture files written in each official format, and spec errors."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsteal_fast.data import DATASETS, ImageDataset, load_dataset
from tests.helpers import write_cifar_batch, write_stl10_split, write_svhn_mat


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check(ds: ImageDataset, n: int, shape: tuple[int, int, int], num_classes: int) -> None:
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert tuple(ds.images.shape) == (n, *shape)
    assert ds.labels.shape == (n,)
    assert ds.num_classes == num_classes
    assert len(ds) == n


# ---------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_train_test_and_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = _rng()
    batches = [rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8) for _ in range(6)]
    for i in range(5):
        write_cifar_batch(root / f"data_batch_{i + 1}", batches[i], {b"labels": [i, i + 1, 9]})
    write_cifar_batch(root / "test_batch", batches[5], {b"labels": [7, 8, 9]})
    train = load_dataset(f"cifar10:{tmp_path}", "train")  # finds the official sub-folder
    _check(train, 15, (3, 32, 32), 10)
    assert torch.equal(train.images[:3], torch.from_numpy(batches[0]))
    assert train.labels[:6].tolist() == [0, 1, 9, 1, 2, 9]
    test = load_dataset(f"cifar10:{root}", "test")
    assert test.labels.tolist() == [7, 8, 9]
    assert torch.equal(test.images, torch.from_numpy(batches[5]))


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    images = _rng(1).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    labels = {b"fine_labels": [5, 99, 0, 42], b"coarse_labels": [1, 19, 0, 3]}
    for split in ("train", "test"):
        write_cifar_batch(tmp_path / split, images, labels)
    fine = load_dataset(f"cifar100:{tmp_path}", "test")
    _check(fine, 4, (3, 32, 32), 100)
    assert fine.labels.tolist() == [5, 99, 0, 42]
    coarse = load_dataset(f"cifar100:{tmp_path}", "train", label="coarse")
    assert coarse.num_classes == 20 and coarse.labels.tolist() == [1, 19, 0, 3]


def test_cifar_refuses_code_in_pickles(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch: .*refusing to load"):
        load_dataset(f"cifar10:{tmp_path}", "test")


# ----------------------------------------------------------------------------------------- SVHN, STL10


def test_svhn_mat(tmp_path: Path) -> None:
    from scipy.io import loadmat

    images = _rng(2).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    write_svhn_mat(tmp_path / "test_32x32.mat", images, np.array([1, 0, 3, 0, 9]))
    mat = loadmat(tmp_path / "test_32x32.mat")  # the official layout: X (32, 32, 3, N), y (N, 1), 10 for 0
    assert mat["X"].shape == (32, 32, 3, 5) and mat["y"].ravel().tolist() == [1, 10, 3, 10, 9]
    assert np.array_equal(mat["X"][..., 2], images[2].transpose(1, 2, 0))
    ds = load_dataset(f"svhn:{tmp_path}", "test")
    _check(ds, 5, (3, 32, 32), 10)
    assert ds.labels.tolist() == [1, 0, 3, 0, 9]  # 10 means the digit 0
    assert torch.equal(ds.images, torch.from_numpy(images))


def test_stl10_binary_with_unlabeled(tmp_path: Path) -> None:
    root = tmp_path / "stl10_binary"
    root.mkdir()
    hwc = _rng(3).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    write_stl10_split(root, "train", hwc, np.array([0, 9]))
    write_stl10_split(root, "unlabeled", hwc[:1], None)
    # Official layout: each image stored column-major, i.e. as (C, W, H); labels 1..10.
    assert (root / "train_X.bin").read_bytes() == hwc.transpose(0, 3, 2, 1).tobytes()
    assert (root / "train_y.bin").read_bytes() == bytes([1, 10])
    ds = load_dataset(f"stl10:{tmp_path}", "train")
    _check(ds, 2, (3, 96, 96), 10)
    assert ds.labels.tolist() == [0, 9]
    assert torch.equal(ds.images.permute(0, 2, 3, 1), torch.from_numpy(hwc))
    unl = load_dataset(f"stl10:{root}", "unlabeled", size=32)
    _check(unl, 1, (3, 32, 32), 10)
    assert unl.labels.tolist() == [-1]


# ------------------------------------------------------------------------------------------- MNIST idx


def _idx(array: np.ndarray) -> bytes:
    return b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_idx(tmp_path: Path, gz: bool, name: str) -> None:
    images = _rng(4).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([4, 0, 9], dtype=np.uint8)
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem, array in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        data = _idx(array)
        (raw / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    ds = load_dataset(f"{name}:{tmp_path}", "test")
    _check(ds, 3, (1, 28, 28), 10)
    assert ds.name == name
    assert ds.labels.tolist() == [4, 0, 9]
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    rgb = load_dataset(f"{name}:{tmp_path}", "test", size=32, channels=3)
    _check(rgb, 3, (3, 32, 32), 10)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])


def test_idx_header_mismatch(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((2, 28, 28), np.uint8))[:-5])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match="header"):
        load_dataset(f"mnist:{tmp_path}")


# ------------------------------------------------------------------------------------ imagefolder, npz


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    rng = _rng(5)
    for split in ("train", "test"):
        for cls in ("cat", "ant"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"imagefolder:{tmp_path}", "train")
    _check(ds, 4, (3, 12, 10), 2)
    assert ds.labels.tolist() == [0, 0, 1, 1]  # sorted class names: ant, cat
    first = np.asarray(Image.open(tmp_path / "train" / "ant" / "0.png"))
    assert torch.equal(ds.images[0].permute(1, 2, 0), torch.from_numpy(first))
    small = load_dataset(f"imagefolder:{tmp_path}", "test", size=8, channels=1)
    _check(small, 4, (1, 8, 8), 2)


def test_imagefolder_without_split_folders(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a" / "x.png")  # grey -> RGB
    Image.fromarray(np.zeros((7, 6, 3), np.uint8)).save(tmp_path / "a" / "y.png")
    with pytest.raises(ValueError, match="size"):
        load_dataset(f"imagefolder:{tmp_path}")
    ds = load_dataset(f"imagefolder:{tmp_path}", size=6)
    _check(ds, 2, (3, 6, 6), 1)
    with pytest.raises(FileNotFoundError, match="test"):
        load_dataset(f"imagefolder:{tmp_path}", "test")


def test_npz_layouts(tmp_path: Path) -> None:
    nhwc = _rng(6).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=nhwc, labels=np.array([0, 1, 2, 1]))
    ds = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    _check(ds, 4, (3, 8, 8), 3)
    assert torch.equal(ds.images.permute(0, 2, 3, 1), torch.from_numpy(nhwc))
    with pytest.raises(ValueError, match="test"):
        load_dataset(f"npz:{tmp_path / 'a.npz'}", "test")

    floats = _rng(7).random((2, 1, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "b.npz", test_images=floats, num_classes=np.array(7))
    unlabeled = load_dataset(f"npz:{tmp_path / 'b.npz'}", "test")
    _check(unlabeled, 2, (1, 5, 5), 7)
    assert unlabeled.labels.tolist() == [-1, -1]
    assert torch.equal(unlabeled.images, torch.from_numpy(np.rint(floats * 255).astype(np.uint8)))

    np.savez(tmp_path / "c.npz", images=np.full((1, 3, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")


def test_count_subset_is_seeded_and_ordered(tmp_path: Path) -> None:
    images = np.arange(10, dtype=np.uint8)[:, None, None, None].repeat(3, 1).repeat(4, 2).repeat(4, 3)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(10) % 2)
    a = load_dataset(f"npz:{tmp_path / 'd.npz'}", count=4, seed=1)
    b = load_dataset(f"npz:{tmp_path / 'd.npz'}", count=4, seed=1)
    order = a.images[:, 0, 0, 0].tolist()
    assert torch.equal(a.images, b.images) and order == sorted(order) and len(set(order)) == 4
    with pytest.raises(ValueError, match="only 10"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}", count=11)


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "data_batch_1"),
        ("cifar100", "train"),
        ("svhn", "train_32x32.mat"),
        ("stl10", "train_X.bin"),
        ("mnist", "train-images-idx3-ubyte"),
        ("fashion-mnist", "train-labels-idx1-ubyte"),
        ("imagefolder", "class"),
        ("npz", "images"),
    ],
)
def test_wrong_path_names_expected_files(tmp_path: Path, name: str, expected: str) -> None:
    target = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset(f"{name}:{target}")


def test_spec_and_option_errors() -> None:
    with pytest.raises(ValueError, match="valid: digits, shapes, shapes-ood, cifar10:PATH"):
        load_dataset("imagenet:/data")
    assert "npz:PATH" in DATASETS
    with pytest.raises(ValueError, match="cifar10:PATH"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset("shapes:/tmp")
    with pytest.raises(ValueError, match="valid: train, test"):
        load_dataset("digits", "unlabeled")
    with pytest.raises(ValueError, match="unknown option.*colour"):
        load_dataset("shapes", count=10, colour="red")
    with pytest.raises(ValueError, match="channels"):
        load_dataset("digits", channels=2)
    with pytest.raises(ValueError, match="count"):
        load_dataset("shapes", count=0)
