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
