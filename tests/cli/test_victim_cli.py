"""The victim subcommands: export from a checkpoint, serve-bench, train-victim registration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsteal_fast.cli import victim as cli
from sslsteal_fast.testing import EXPORT_RTOL
from sslsteal_fast.victim import OnnxVictim, read_metadata
from tests.helpers import linear_encoder


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sslsteal")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_export_from_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = pytest.importorskip("sslsteal_fast.models")
    torch.manual_seed(0)
    model = models.SimCLRModel(models.build_encoder("small"))
    prefix = tmp_path / "victim"
    models.save_checkpoint(prefix, model, {"dataset": "shapes", "seed": 3, "image_size": 16})
    args = parse(["export", str(prefix), "--exporter", "torchscript"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    diff = float(out.rsplit(":", 1)[1])
    assert diff <= EXPORT_RTOL
    onnx_path = tmp_path / "victim.onnx"
    meta = read_metadata(onnx_path)
    assert meta["arch"] == "small" and meta["source_checkpoint"] == str(prefix)
    assert meta["input_shape"] == "[3, 16, 16]" and meta["output_dim"] == str(model.rep_dim)
    assert (meta["checkpoint.dataset"], meta["checkpoint.seed"]) == ("shapes", "3")
    victim = OnnxVictim(onnx_path)
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        ref = model.eval().encoder(x)
    torch.testing.assert_close(victim.query(x), ref, rtol=EXPORT_RTOL, atol=1e-5)


def test_export_missing_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("sslsteal_fast.models")
    args = parse(["export", str(tmp_path / "nothing")])
    with pytest.raises(FileNotFoundError, match="nothing"):
        args.func(args)


def test_serve_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = linear_encoder(tmp_path / "lin.onnx", np.ones((48, 2), np.float32))
    args = parse(["serve-bench", str(path), "--batch-sizes", "1", "4", "--repeats", "2"])
    assert args.func(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "batch" not in line]
    assert [line.split("|")[1].strip() for line in lines] == ["1", "4"]


def test_victim_stage_registers_its_commands() -> None:
    parser = argparse.ArgumentParser(prog="sslsteal")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    assert set(sub.choices) == {"train-victim", "export", "serve-bench"}


def test_train_victim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["train-victim", "--help"])
    assert "resumes" in capsys.readouterr().out
    out = tmp_path / "cli"
    args = parse(
        [
            "train-victim",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--count",
            "32",
            "--batch-size",
            "16",
            "--image-size",
            "12",
            "--device",
            "cpu",
            "--no-progress",
            "--seed",
            "3",
        ]
    )
    assert args.func(args) == 0
    assert "victim small (rep_dim 256) on shapes" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["seed"] == 3 and meta["image_size"] == 12 and meta["train_config"]["count"] == 32
