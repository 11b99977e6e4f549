"""Files the command-line tests share: a tiny dataset, checkpoint and ONNX victim, and corrupt inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslsteal_fast.models import build_encoder, save_checkpoint
from sslsteal_fast.victim import export_onnx
from tests.helpers import write_toy_npz

#: Image size of the tiny victim and data.
SIZE = 16


@pytest.fixture(scope="session")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good inputs (``npz``, checkpoint prefix ``ckpt``, ``onnx``) and one corrupt file of each kind.

    Corrupt: ``bad_ckpt`` (a prefix whose .safetensors is garbage), ``bad_onnx``, ``bad_npz``,
    ``bad_folder`` (an imagefolder whose only image is not one), ``bad_cifar`` (CIFAR-10 batches that
    are not pickles); ``a_file``: a plain file where a folder or an output is expected.
    """
    root = tmp_path_factory.mktemp("cli_files")
    write_toy_npz(root / "toy.npz", size=SIZE, train=48, test=24)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        encoder = build_encoder("small").eval()
    save_checkpoint(root / "ckpt", encoder, {"image_size": SIZE, "dataset": "shapes", "count": 96})
    export_onnx(encoder, root / "victim.onnx", (3, SIZE, SIZE), exporter="torchscript")

    (root / "bad_ckpt.safetensors").write_bytes(b"\x08not a safetensors file")
    (root / "bad_ckpt.json").write_text((root / "ckpt.json").read_text())
    (root / "bad.onnx").write_bytes(b"not an onnx protobuf")
    (root / "bad.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    image_dir = root / "folder" / "train" / "cat"
    image_dir.mkdir(parents=True)
    (image_dir / "0.png").write_bytes(b"not a png")
    cifar = root / "cifar"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(b"\x80\x04 truncated pickle")
    (root / "a_file").write_text("in the way\n")
    return {
        "root": root,
        "npz": root / "toy.npz",
        "ckpt": root / "ckpt",
        "onnx": root / "victim.onnx",
        "bad_ckpt": root / "bad_ckpt",
        "bad_onnx": root / "bad.onnx",
        "bad_npz": root / "bad.npz",
        "bad_folder": root / "folder",
        "bad_cifar": cifar,
        "a_file": root / "a_file",
    }
