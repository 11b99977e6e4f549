"""``sslsteal steal`` end to end: ONNX victim -> stolen checkpoint (billing in metadata) -> ``sslsteal probe``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslsteal_fast.cli import main
from sslsteal_fast.models import StolenEncoder, build_encoder, load_checkpoint
from sslsteal_fast.util.files import file_sha256
from sslsteal_fast.victim import export_onnx
from tests.helpers import write_toy_npz

SIZE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("steal_cli")
    write_toy_npz(root / "toy.npz", size=SIZE, train=96, test=48, channel=0)
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
    assert meta["billed_queries"] == 64 and meta["steal"]["config"]["loss"] == "mse"
    assert len(meta["steal"]["history"]) == 2 and meta["arch"] == "small"
    assert meta["steal"]["budget"] == 64 and meta["steal"]["query_set"]["budget"] == 64
    assert meta["steal"]["victim_sha256"] == file_sha256(files["onnx"])
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


def test_a_thief_of_another_dimension_gets_a_head_and_loads_back(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["root"] / "resnet18-thief"
    rc = main([*_steal_args(files, out), "--arch", "resnet18"])  # 512-d thief of a 256-d victim
    assert rc == 0, capsys.readouterr().err
    model, meta = load_checkpoint(out)
    assert isinstance(model, StolenEncoder) and model.adapter is not None
    assert model.backbone_dim == 512 and model(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 256)
    assert meta["steal"]["billed_queries"] == 16


def test_missing_victim_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["steal", "--victim", str(tmp_path / "none.onnx"), "--queries", "shapes", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no such ONNX file" in capsys.readouterr().err


def _steal_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    spec = f"npz:{files['npz']}"
    base = ["steal", "--victim", str(files["onnx"]), "--queries", spec, "--budget", "16", "--epochs", "1"]
    return [*base, "--loss", "mse", "--out", str(out), "--quiet", "--json", *extra]


def test_steal_refuses_to_overwrite_without_overwrite(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["root"] / "kept"
    assert main(_steal_args(files, out)) == 0
    capsys.readouterr()
    before = out.with_suffix(".safetensors").read_bytes()
    assert main(_steal_args(files, out, "--seed", "5")) == 2
    assert "already exist; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.with_suffix(".safetensors").read_bytes() == before
    assert main(_steal_args(files, out, "--seed", "5", "--overwrite")) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 5
    assert out.with_suffix(".safetensors").read_bytes() != before


@pytest.mark.parametrize(
    "extra, smallest",
    [
        (["--loss", "info_nce", "--batch-size", "1"], 1),
        (["--loss", "soft_nn", "--budget", "3", "--batch-size", "2"], 1),
    ],
)
def test_contrastive_loss_needs_batches_of_two(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], smallest: int
) -> None:
    out = files["root"] / "never"
    assert main(_steal_args(files, out, *extra)) == 2
    err = capsys.readouterr().err
    assert "needs batches of at least 2" in err and f"gives a batch of {smallest}" in err
    assert not out.with_suffix(".json").exists()


def test_batch_of_one_is_fine_for_mse(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_steal_args(files, files["root"] / "mse-1", "--batch-size", "1", "--budget", "4")) == 0


def test_steal_through_a_defense(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    plain = files["root"] / "plain"
    assert main(_steal_args(files, plain)) == 0
    clean_loss = json.loads(capsys.readouterr().out)["final_loss"]
    defended = files["root"] / "defended"
    state = files["root"] / "defense-state.sqlite"
    args = _steal_args(files, defended, "--defense", "noise:sigma=100", "--defense", "quantize:decimals=1")
    assert main([*args, "--defense-state", str(state)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["defenses"] == ["noise:sigma=100", "quantize:decimals=1"] and summary["billed_queries"] == 16
    assert summary["final_loss"] > 100 * clean_loss  # the thief really trained on noisy answers
    _, meta = load_checkpoint(defended)
    assert meta["defenses"] == summary["defenses"]

    centred = _steal_args(files, files["root"] / "centred", "--defense", "detection:threshold=0.6")
    assert main([*centred, "--defense-center", f"npz:{files['npz']}"]) == 0
    assert json.loads(capsys.readouterr().out)["defenses"] == ["detection:threshold=0.6"]
    assert main([*centred, "--overwrite", "--defense", "bogus:x=1"]) == 2
    assert "unknown defense 'bogus'" in capsys.readouterr().err


def test_defense_options_need_defense(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = files["root"] / "stray"
    assert main(_steal_args(files, out, "--defense-center", "shapes")) == 2
    assert "--defense-center only applies with --defense" in capsys.readouterr().err
