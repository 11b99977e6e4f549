"""Packaged pretrained victims: installed into the cache sha256-checked, retrained and compared by --recipe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sslsteal_fast.cli import main
from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.util.files import load_tensors, save_tensors
from sslsteal_fast.victim import pretrained, trained_victim
from sslsteal_fast.victim.cache import cache_folder

TINY = VictimTrainConfig(
    dataset="shapes", count=32, epochs=1, batch_size=16, image_size=12, device="cpu", progress=False
)
RECIPE = {k: v for k, v in dataclasses.asdict(TINY).items() if k not in ("out", "device", "progress")}
PROBE = {
    "train": {"spec": "shapes", "split": "train", "seed": 2, "count": 40, "size": 12},
    "test": {"spec": "shapes", "split": "test", "count": 40, "size": 12},
    "epochs": 5,
}
QUIET = dict(log=lambda _: None)


@pytest.fixture()
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pretrained.PackagedVictim:
    """TINY trained once (in its own cache) and packaged under a temporary root the package reads."""
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "maker"))
    made = trained_victim(TINY, **QUIET)
    root = tmp_path / "pretrained"
    entry = pretrained.write_packaged(
        root,
        "tiny",
        source_folder=made.prefix.parent,
        files=["victim.safetensors", "victim.json"],
        recipe=RECIPE,
        cache_entry=made.prefix.parent.name,
        description="a tiny test victim",
        measured={"probe": PROBE, "probe_top1": 0.5, "tolerance_points": 2.0},
    )
    monkeypatch.setattr(pretrained, "_root", lambda: root)
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "user"))
    return entry


def test_a_packaged_configuration_is_installed_not_trained(packaged: pretrained.PackagedVictim, tmp_path: Path) -> None:
    got = trained_victim(TINY, **QUIET)
    assert not got.trained_now and got.prefix.parent == cache_folder(TINY)
    assert got.prefix.parent.name == packaged.cache_entry
    made = tmp_path / "maker" / "victims" / packaged.cache_entry
    assert (got.prefix.parent / "victim.safetensors").read_bytes() == (made / "victim.safetensors").read_bytes()
    assert got.sha256 == trained_victim(TINY, **QUIET).sha256  # the ONNX export is reproducible too
    assert got.onnx.read_bytes() == (made / "victim.onnx").read_bytes()


def test_other_configurations_and_opting_out_still_train(
    packaged: pretrained.PackagedVictim, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert trained_victim(dataclasses.replace(TINY, seed=1), **QUIET).trained_now
    monkeypatch.setenv("SSLSTEAL_PRETRAINED", "0")
    assert trained_victim(TINY, **QUIET).trained_now


def test_a_corrupt_packaged_file_is_refused_by_name(packaged: pretrained.PackagedVictim) -> None:
    weights = packaged.folder / "victim.safetensors"
    tensors, meta = load_tensors(weights, header="sslsteal_fast")
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_tensors(weights, tensors, meta, header="sslsteal_fast")
    with pytest.raises(ValueError, match=r"victim\.safetensors has sha256 .* corrupt"):
        trained_victim(TINY, **QUIET)
    weights.unlink()
    with pytest.raises(ValueError, match=r"victim\.safetensors is missing"):
        trained_victim(TINY, **QUIET)


def test_a_malformed_manifest_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json: not a valid manifest"):
        pretrained.packaged_victims(root)
    (root / "manifest.json").write_text(json.dumps({"format": pretrained.MANIFEST_FORMAT, "victims": {"x": {}}}))
    with pytest.raises(ValueError, match="entry 'x' is malformed"):
        pretrained.packaged_victims(root)


def test_recipe_retrains_bit_for_bit(packaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again" / "victim"
    assert main(["train-victim", "--recipe", "tiny", "--out", str(out), "--device", "cpu", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["identical"] and result["within_tolerance"] and result["max_abs_weight_difference"] == 0.0


def test_recipe_compares_by_probe_when_weights_differ(packaged, tmp_path: Path, capsys) -> None:
    # Pretend the package was made elsewhere: other weights, a recorded probe accuracy far from ours.
    weights = packaged.folder / "victim.safetensors"
    tensors, meta = load_tensors(weights, header="sslsteal_fast")
    save_tensors(
        weights, {k: v + 1e-3 if v.is_floating_point() else v for k, v in tensors.items()}, meta, header="sslsteal_fast"
    )
    manifest = json.loads((packaged.folder.parent / "manifest.json").read_text())
    manifest["victims"]["tiny"]["files"]["victim.safetensors"] = pretrained.file_sha256(weights)
    manifest["victims"]["tiny"]["measured"]["probe_top1"] = 0.0
    (packaged.folder.parent / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "again" / "victim"
    code = main(["train-victim", "--recipe", "tiny", "--out", str(out), "--device", "cpu", "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert not result["identical"] and result["max_abs_weight_difference"] == pytest.approx(1e-3, rel=1e-2)
    assert result["probe_top1"] > 0.05 and code == 1 and not result["within_tolerance"]


def test_recipe_refuses_other_training_options(packaged, tmp_path: Path, capsys) -> None:
    code = main(["train-victim", "--recipe", "tiny", "--epochs", "3", "--out", str(tmp_path / "v")])
    assert code == 2 and "--epochs only applies with a hand-written recipe" in capsys.readouterr().err
    code = main(["train-victim", "--recipe", "nope", "--out", str(tmp_path / "v")])
    assert code == 2 and "unknown recipe 'nope'; packaged recipes: tiny" in capsys.readouterr().err
