"""Builders the tests share: tiny PyTorch encoders, hand-built ("foreign") ONNX graphs, toy query streams,
and dataset files in the official on-disk formats (CIFAR pickles, SVHN .mat, STL-10 binaries).

Tolerances live in one table, :mod:`sslsteal_fast.testing`; pytest fixtures in the conftest files.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sslsteal_fast.models import build_encoder


class TinyEncoder(nn.Module):
    """conv-BN-ReLU, strided conv-ReLU, global average pool: (N, 3, 8, 8) -> (N, 16).

    The BatchNorm gets non-trivial running statistics so the export really has to fold them.
    """

    arch = "tiny"

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.rep_dim = 16
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        with torch.no_grad():
            bn = self.features[1]
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)


class TinySimCLR(nn.Module):
    """Duck-typed SimCLRModel: ``.encoder``, ``.head``; forward -> (rep, proj)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = TinyEncoder()
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.encoder(x)
        return rep, self.head(rep)


def save_graph(path: Path, graph: onnx.GraphProto, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hand-built")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_encoder(path: Path, weight: np.ndarray, batch: int | str = "n", out_rank4: bool = False) -> Path:
    """A foreign encoder ``y = flatten(x) @ weight`` with input (batch, 3, 4, 4), names unlike ours.

    ``weight`` is (48, D). With ``out_rank4`` the output is (N, D, 1, 1) instead of (N, D).
    """
    d = weight.shape[1]
    nodes = [
        helper.make_node("Flatten", ["input.1"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["feat" if not out_rank4 else "feat2d"]),
    ]
    out_shape: list[int | str] = [batch, d]
    if out_rank4:
        nodes.append(helper.make_node("Reshape", ["feat2d", "shape4"], ["feat"]))
        out_shape = [batch, d, 1, 1]
    inits = [numpy_helper.from_array(weight.astype(np.float32), "W")]
    if out_rank4:
        inits.append(numpy_helper.from_array(np.array([-1, d, 1, 1], dtype=np.int64), "shape4"))
    graph = helper.make_graph(
        nodes,
        "foreign_linear",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 4, 4])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    return save_graph(path, graph)


def pooled_encoder(path: Path) -> Path:
    """A foreign encoder with dynamic spatial dims and a symbolic feature dim: (N, 3, H, W) -> (N, 3) means."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], ["y"], axis=1),
        ],
        "foreign_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "d"])],
    )
    return save_graph(path, graph)


def two_output_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])],
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3, 4, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3, 4, 4]),
        ],
    )
    return save_graph(path, graph)


def linear_onnx(path: Path, dim: int = 16, seed: int = 0) -> Path:
    """An ONNX encoder ``flatten(x) @ W`` for (N, 3, 4, 4) float input -> (N, dim), W standard normal."""
    return linear_encoder(path, np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32))


def toy_stream(n_distinct: int, repeats: int, dim: int = 128, jitter: float = 0.05, seed: int = 0):
    """Distinct centred vectors, then ``repeats`` noisy copies ("augmented repeats") of random earlier ones.

    Returns ``(vectors (n, dim), truth bool (n,))`` with truth True for the repeats.
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_distinct, dim, generator=g)
    picks = torch.randint(0, n_distinct, (repeats,), generator=g)
    copies = base[picks] + jitter * torch.randn(repeats, dim, generator=g)
    vectors = torch.cat([base, copies])
    truth = torch.cat([torch.zeros(n_distinct, dtype=torch.bool), torch.ones(repeats, dtype=torch.bool)])
    return vectors, truth


def images_for(n: int, seed: int = 0) -> torch.Tensor:
    """Distinct float images (n, 3, 4, 4) in [0, 1]."""
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def write_toy_npz(path: Path, *, size: int, train: int, test: int, channel: int = 0, seed: int = 0) -> Path:
    """A 3-class ``npz`` dataset (``train_images``/``train_labels``/``test_*``) of noisy (N, 3, size, size)
    uint8 images whose class is written into the brightness of ``channel`` (easy to probe)."""
    g = torch.Generator().manual_seed(seed)
    data = {}
    for split, n in (("train", train), ("test", test)):
        labels = torch.randint(0, 3, (n,), generator=g)
        images = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
        images[:, channel] += (labels * 90).to(torch.uint8)[:, None, None]
        data[f"{split}_images"], data[f"{split}_labels"] = images.numpy(), labels.numpy()
    np.savez(path, **data, num_classes=np.int64(3))
    return path


def uint8_images(n: int, seed: int = 0, channels: int = 3, size: int = 16) -> torch.Tensor:
    """Random uint8 query images (n, channels, size, size)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def calibrated_encoder(seed: int, arch: str = "small", size: int = 16) -> nn.Module:
    """A random encoder (eval mode) whose BatchNorm running statistics match random images, as a trained one's do."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = build_encoder(arch)
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    enc.train()
    with torch.no_grad():
        enc(uint8_images(256, seed=99, size=size).float() / 255)
    return enc.eval()


class ConvThief(nn.Module):
    """A thief of no built-in architecture (no ``arch`` or ``in_channels``): conv-BN-ReLU, average pool.

    (B, 3, H, W) -> (B, dim). ``claimed``: a wrong ``rep_dim`` attribute, to show a dimension is
    measured, not read.
    """

    def __init__(self, dim: int = 24, claimed: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.bn = nn.BatchNorm2d(dim)
        if claimed is not None:
            self.rep_dim = claimed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


def add_keys(state: Path, **clients: dict) -> dict[str, str]:
    """API keys in the server state folder ``state``: ``{client: key}`` for clients given as
    ``name={"budget": N, "defenses": [...], "rate_limit": R}``."""
    from sslsteal_fast.serve import ServerState

    with ServerState(state) as s:
        return {
            name: s.add_key(name, spec.get("budget"), spec.get("defenses", ()), spec.get("rate_limit"))
            for name, spec in clients.items()
        }


# ------------------------------------------------------------------------ datasets in their on-disk formats


def write_cifar_batch(path: Path, images: np.ndarray, labels: dict[bytes, list[int]]) -> None:
    """A CIFAR python batch as published: a protocol-2 pickled dict with bytes keys, (N, 3072) uint8 data.

    ``images`` (N, 3, 32, 32) uint8; ``labels`` e.g. ``{b"labels": [...]}`` (CIFAR-10) or
    ``{b"fine_labels": [...], b"coarse_labels": [...]}`` (CIFAR-100).
    """
    entry = {b"batch_label": b"fixture", b"data": images.reshape(len(images), -1), b"filenames": []}
    entry.update(labels)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_svhn_mat(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """An SVHN ``{split}_32x32.mat`` file: ``X`` (32, 32, 3, N) from (N, 3, 32, 32) uint8 ``images``, ``y``
    (N, 1) from digit ``labels`` 0..9 (written as on disk, where the digit 0 is 10)."""
    from scipy.io import savemat

    y = np.where(np.asarray(labels) == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    savemat(path, {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": y})


def write_stl10_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray | None) -> None:
    """STL-10 ``{split}_X.bin`` (and ``{split}_y.bin`` unless ``labels`` is None) in ``folder``.

    ``images`` (N, 96, 96, 3) uint8 are stored as the official binaries do, each image column-major
    (C, W, H); ``labels`` 0..9 are written 1..10.
    """
    images.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
    if labels is not None:
        (np.asarray(labels) + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")


#: Folders of the official archives as they unpack, one per dataset (the layout under a data root).
DATASET_FOLDERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "svhn": "svhn",
    "stl10": "stl10_binary",
}


def write_dataset_root(root: Path, rows: dict[tuple[str, str], int], seed: int = 0) -> Path:
    """Random labelled images in the official formats, one folder per dataset (:data:`DATASET_FOLDERS`).

    ``rows[(dataset, split)]`` images for each of ``cifar10`` (train: five batches, so a multiple of 5;
    test), ``cifar100`` (train, test), ``svhn`` (train, test, extra) and ``stl10`` (train, test,
    unlabeled; 96 px). Returns ``root``.
    """
    rng = np.random.default_rng(seed)

    def images(n: int, size: int = 32) -> np.ndarray:
        return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)

    def labels(n: int, classes: int = 10) -> np.ndarray:
        return rng.integers(0, classes, n)

    for (name, split), n in sorted(rows.items()):
        folder = root / DATASET_FOLDERS[name]
        folder.mkdir(parents=True, exist_ok=True)
        if name == "cifar10" and split == "train":
            assert n % 5 == 0, "CIFAR-10 train is five batches: give a multiple of 5 rows"
            for i in range(5):
                write_cifar_batch(folder / f"data_batch_{i + 1}", images(n // 5), {b"labels": labels(n // 5).tolist()})
        elif name == "cifar10":
            write_cifar_batch(folder / "test_batch", images(n), {b"labels": labels(n).tolist()})
        elif name == "cifar100":
            fine = labels(n, 100)
            write_cifar_batch(
                folder / split, images(n), {b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}
            )
        elif name == "svhn":
            write_svhn_mat(folder / f"{split}_32x32.mat", images(n), labels(n))
        elif name == "stl10":
            write_stl10_split(
                folder, split, images(n, 96).transpose(0, 2, 3, 1), None if split == "unlabeled" else labels(n)
            )
        else:
            raise ValueError(f"write_dataset_root: no writer for {name!r}")
    return root
