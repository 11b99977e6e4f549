"""``sslsteal probe`` on checkpoints: text and JSON output, fidelity against a second encoder, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslsteal_fast.cli import main
from sslsteal_fast.models import build_encoder, save_checkpoint
from tests.helpers import write_toy_npz


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe_cli")
    write_toy_npz(root / "toy.npz", size=8, train=60, test=30, channel=1)
    for name, seed in (("a", 0), ("b", 1)):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            save_checkpoint(root / name, build_encoder("small"), {"image_size": 8, "seed": seed})
    return {"npz": root / "toy.npz", "a": root / "a", "b": root / "b"}


def test_probe_prints_accuracies(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"npz:{files['npz']}"
    assert main(["probe", "--encoder", str(files["a"]), "--train", spec, "--test", spec, "--knn-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "linear probe" in out and "top-1" in out and "kNN (k=  5)" in out


def test_probe_json_with_victim(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"npz:{files['npz']}"
    args = ["probe", "--encoder", str(files["a"]), "--train", spec, "--test", spec, "--victim", str(files["b"])]
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0.0 <= res["probe_top1"] <= 1.0 and res["knn_k"] == 60 and res["train_size"] == 60
    assert -1.0 <= res["fidelity_cosine"] <= 1.0 and res["fidelity_l2"] >= 0.0
    assert main([*args[:-2], "--victim", str(files["a"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fidelity_cosine"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--knn-k", "0"], "knn_k must be an int >= 1"),
        (["--encoder", "/nonexistent/model.onnx"], "no such ONNX file"),
        (["--encoder", "/nonexistent/prefix"], "missing"),
    ],
)
def test_probe_errors(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    spec = f"npz:{files['npz']}"
    assert main(["probe", "--encoder", str(files["a"]), "--train", spec, "--test", spec, *extra]) == 2
    assert message in capsys.readouterr().err
