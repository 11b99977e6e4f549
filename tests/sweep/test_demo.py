"""``sslsteal demo --quick``: the whole built-in pipeline (victim training included) at toy scale."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sslsteal_fast.cli import main
from sslsteal_fast.sweep import demo_config
from sslsteal_fast.sweep.artifacts import prepare_victim


def test_quick_demo_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| shapes-ood | soft_nn |" in printed and "victim forward passes" in printed

    cfg = demo_config(quick=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["victim"]["source"] == "trained"
    assert summary["victim"]["train_size"] == cfg.victim.train.count  # type: ignore[union-attr]
    largest = max(cfg.grid.budgets)
    assert summary["victim_forward_passes"] == summary["unique_queries"] == 2 * largest
    # The in-domain query images are disjoint from the victim's training images.
    assert all(q["overlap_with_victim_train"] == 0 for q in summary["query_sets"])
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == cfg.grid.size
    assert {r["loss"] for r in rows} == {"mse", "info_nce", "soft_nn", "wasserstein"}
    assert (out / "probe_vs_queries.png").read_bytes().startswith(b"\x89PNG")

    # The victim is cached under $SSLSTEAL_CACHE, keyed by its config: the next run reuses it.
    again = prepare_victim(cfg.victim, out, progress=False, log=lambda _: None)
    assert again.source == "cache" and str(again.onnx).startswith(str(tmp_path / "cache"))
    assert again.sha256 == summary["victim"]["sha256"]
