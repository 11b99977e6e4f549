"""The victim cache: trained once per configuration, reused after, and its identity independent of the cache's place."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.ownership import WatermarkConfig, WatermarkHook
from sslsteal_fast.victim import trained_victim
from sslsteal_fast.victim.cache import cache_folder

TINY = VictimTrainConfig(
    dataset="shapes", count=32, epochs=1, batch_size=16, image_size=12, device="cpu", progress=False
)


def test_trained_once_then_reused_with_the_same_identity_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = dict(log=lambda _: None)
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "a"))
    first = trained_victim(TINY, **quiet)
    again = trained_victim(TINY, **quiet)
    assert first.trained_now and not again.trained_now
    assert again.sha256 == first.sha256 and again.onnx == first.onnx
    # Another cache root trains the same bytes: experiment ids and derived secrets do not depend on it.
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "b"))
    elsewhere = trained_victim(TINY, **quiet)
    assert elsewhere.trained_now and elsewhere.sha256 == first.sha256


def test_hooks_and_results_key_the_entry_but_out_and_progress_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path))
    wm = [WatermarkHook(WatermarkConfig(dataset="digits", count=16, batch_size=8, hidden=4))]
    base = cache_folder(TINY)
    assert cache_folder(VictimTrainConfig(**{**TINY.__dict__, "out": "elsewhere", "progress": True})) == base
    assert cache_folder(TINY, wm) != base
    assert cache_folder(VictimTrainConfig(**{**TINY.__dict__, "seed": 1})) != base


def test_bad_config_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path))
    with pytest.raises(TypeError, match="cfg must be a VictimTrainConfig"):
        trained_victim({"dataset": "shapes"}, log=lambda _: None)  # type: ignore[arg-type]
