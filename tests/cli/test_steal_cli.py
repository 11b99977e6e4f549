"""``sslsteal steal`` end to end: ONNX victim -> stolen checkpoint (billing in metadata) -> ``sslsteal probe``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsteal_fast.cli import main
from sslsteal_fast.models import build_encoder, load_checkpoint
from sslsteal_fast.victim import export_onnx

SIZE = 16


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("steal_cli")
    g = torch.Generator().manual_seed(0)
    data = {}
    for split, n in (("train", 96), ("test", 48)):
        labels = torch.randint(0, 3, (n,), generator=g)
        images = torch.randint(0, 60, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
        images[:, 0] += (labels * 90).to(torch.uint8)[:, None, None]
        data[f"{split}_images"], data[f"{split}_labels"] = images.numpy(), labels.numpy()
    np.savez(root / "toy.npz", **data, num_classes=np.int64(3))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        victim = build_encoder("small").eval()
    onnx_path = root / "victim.onnx"
    export_onnx(victim, onnx_path, (3, SIZE, SIZE), exporter="torchscript")  # seconds faster than dynamo
    return {"root": root, "npz": root / "toy.npz", "onnx": onnx_path}


def test_steal_then_probe(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = files["root"] / "stolen"
    spec = f"npz:{files['npz']}"
    args = ["steal", "--victim", str(files["onnx"]), "--queries", spec, "--budget", "64", "--loss", "mse"]
    rc = main([*args, "--epochs", "2", "--out", str(out), "--quiet", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["billed_queries"] == 64 and summary["victim_forward_passes"] == 64
    model, meta = load_checkpoint(out)
    assert meta["billed_queries"] == 64 and meta["steal_config"]["loss"] == "mse"
    assert len(meta["loss_history"]) == 2 and meta["arch"] == "small"
    assert model(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 256)

    rc = main(
        ["probe", "--encoder", str(out), "--train", spec, "--test", spec, "--victim", str(files["onnx"]), "--json"]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("probe_top1", "probe_top5", "knn_top1", "fidelity_cosine", "agreement", "victim_probe_top1"):
        assert key in res and res[key] is not None
    assert res["knn_k"] == 96


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "500"], "budget 500 exceeds the 96 available query images"),
        (["--arch", "resnet18"], "choose an architecture with rep_dim 256"),
        (["--budget", "0"], "budget must be an int >= 1"),
    ],
)
def test_steal_errors_say_what_to_fix(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    base = ["steal", "--victim", str(files["onnx"]), "--queries", f"npz:{files['npz']}", "--epochs", "1"]
    rc = main([*base, "--out", str(files["root"] / "x"), "--quiet", "--budget", "8", *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_victim_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["steal", "--victim", str(tmp_path / "none.onnx"), "--queries", "shapes", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no such ONNX file" in capsys.readouterr().err
