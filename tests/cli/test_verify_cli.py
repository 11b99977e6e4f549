"""``sslsteal verify --json`` on a tiny watermarked victim (trained here in seconds)."""

from __future__ import annotations

import json

import pytest

from sslsteal_fast.cli import main
from sslsteal_fast.ownership import WatermarkConfig, head_paths, load_head, train_watermarked_victim
from sslsteal_fast.victim.train import VictimTrainConfig


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    out = tmp_path_factory.mktemp("wm") / "victim"
    cfg = VictimTrainConfig(
        dataset="shapes", out=str(out), epochs=1, batch_size=32, image_size=16, count=96, device="cpu", progress=False
    )
    train_watermarked_victim(cfg, WatermarkConfig(dataset="digits", count=64, batch_size=16, hidden=8))
    return out


def test_watermarked_victim_files_and_cache(victim):
    assert all(p.is_file() for p in head_paths(victim))
    head, meta = load_head(victim)
    assert head.rep_dim == 256 and meta["watermark"]["dataset"] == "digits"
    before = victim.with_suffix(".safetensors").stat().st_mtime_ns
    cfg = VictimTrainConfig(
        dataset="shapes",
        out=str(victim),
        epochs=1,
        batch_size=32,
        image_size=16,
        count=96,
        device="cpu",
        progress=False,
    )
    train_watermarked_victim(cfg, WatermarkConfig(dataset="digits", count=64, batch_size=16, hidden=8))
    assert victim.with_suffix(".safetensors").stat().st_mtime_ns == before  # reused, not retrained


@pytest.mark.parametrize("method", ["watermark", "dataset-inference"])
def test_verify_cli_json(victim, method, capsys):
    code = main(
        [
            "verify",
            "--method",
            method,
            "--victim",
            str(victim),
            "--suspect",
            str(victim),
            "--count",
            "30",
            "--components",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alpha"] == 0.01
    assert report["verdict"] in ("stolen", "independent") and 0.0 <= report["p_value"] <= 1.0
    assert report["method"] == method and "statistic" in report


def test_verify_cli_errors(tmp_path, victim, capsys):
    assert main(["verify", "--method", "watermark", "--victim", str(tmp_path / "nope"), "--suspect", "x"]) == 2
    assert (
        main(
            [
                "verify",
                "--method",
                "dataset-inference",
                "--victim",
                str(victim),
                "--suspect",
                str(victim),
                "--count",
                "500",
            ]
        )
        == 2
    )
    assert "lower --count" in capsys.readouterr().err


def test_train_victim_watermark_then_verify(tmp_path, capsys):
    out = tmp_path / "wm-cli"
    argv = ["train-victim", "--out", str(out), "--epochs", "1", "--count", "32", "--batch-size", "16"]
    argv += ["--image-size", "16", "--device", "cpu", "--quiet", "--json", "--watermark"]
    argv += ["--watermark-dataset", "digits", "--watermark-count", "32", "--watermark-batch-size", "8"]
    assert main([*argv, "--watermark-hidden", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["watermark"]["dataset"] == "digits" and 0.0 <= result["watermark"]["rotation_accuracy"] <= 1.0
    assert all(p.is_file() for p in head_paths(out))
    head, meta = load_head(out)
    assert head.hidden == 8 and meta["watermark"]["count"] == 32
    code = main(["verify", "--method", "watermark", "--victim", str(out), "--suspect", str(out), "--count", "30"])
    assert code == 0
    assert capsys.readouterr().out.startswith("watermark: ")


def test_watermark_options_need_watermark(tmp_path, capsys):
    argv = ["train-victim", "--out", str(tmp_path / "v"), "--watermark-dataset", "digits", "--device", "cpu"]
    assert main(argv) == 2
    assert "--watermark-dataset only applies with --watermark" in capsys.readouterr().err
    assert not (tmp_path / "v.json").exists()


@pytest.mark.parametrize("alpha", ["7", "1", "0", "-0.01", "nan", "inf", "abc"])
def test_verify_alpha_must_be_in_0_1(victim, alpha, capsys):
    argv = ["verify", "--method", "watermark", "--victim", str(victim), "--suspect", str(victim), "--alpha", alpha]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sslsteal verify: error: argument --alpha")


def test_verify_dataset_inference_by_view_alignment(victim, capsys):
    """--statistic alignment compares the suspect's agreement on the victim's own training views."""
    args = ["verify", "--method", "dataset-inference", "--victim", str(victim), "--suspect", str(victim)]
    code = main([*args, "--count", "30", "--statistic", "alignment", "--views", "3", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["statistic_kind"] == "alignment" and report["n_private"] == 30 and report["n_unseen"] == 30
    assert 0.0 < report["ll_private"] <= 1.0 and 0.0 <= report["p_value"] <= 1.0
    assert main([*args, "--count", "30", "--statistic", "alignment", "--views", "1"]) == 2
    assert "views must be at least 2" in capsys.readouterr().err
