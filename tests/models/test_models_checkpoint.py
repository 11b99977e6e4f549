"""save_checkpoint / load_checkpoint: bitwise round trip, metadata, no pickle, ONNX-exportable layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sslsteal_fast.models import (
    SimCLRModel,
    StolenEncoder,
    build_encoder,
    checkpoint_paths,
    load_checkpoint,
    save_checkpoint,
)
from tests.helpers import ConvThief


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm buffers non-default values so the round trip has to carry them."""
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 8, 8))
    return model.eval()


@pytest.mark.parametrize("arch", ["small", "resnet50"])
def test_encoder_round_trip_is_bitwise(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    enc = _trained_looking(build_encoder(arch))
    save_checkpoint(tmp_path / "enc", enc, {"dataset": "shapes", "seed": 0, "image_size": 8})
    loaded, meta = load_checkpoint(tmp_path / "enc")
    assert meta["model"] == "encoder" and meta["arch"] == arch and meta["rep_dim"] == enc.rep_dim
    assert meta["dataset"] == "shapes" and meta["image_size"] == 8
    assert not loaded.training
    ref, got = enc.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert ref[key].dtype == got[key].dtype and torch.equal(ref[key], got[key]), key
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(enc(x), loaded(x))


def test_simclr_round_trip_and_files(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = SimCLRModel(build_encoder("small", in_channels=1), proj_dim=16, hidden_dim=64)
    save_checkpoint(tmp_path / "sub" / "victim", model, {"epochs": 3})
    weights, meta_path = checkpoint_paths(tmp_path / "sub" / "victim")
    assert weights.name == "victim.safetensors" and meta_path.name == "victim.json"
    meta = json.loads(meta_path.read_text())
    assert {k: meta[k] for k in ("model", "arch", "in_channels", "rep_dim", "proj_dim", "hidden_dim", "epochs")} == {
        "model": "simclr",
        "arch": "small",
        "in_channels": 1,
        "rep_dim": 256,
        "proj_dim": 16,
        "hidden_dim": 64,
        "epochs": 3,
    }
    with safe_open(str(weights), framework="pt") as f:  # the weights file describes itself too
        assert json.loads(f.metadata()["sslsteal_fast"]) == meta
    loaded, _ = load_checkpoint(str(weights))  # a path with the suffix works as a prefix
    assert isinstance(loaded, SimCLRModel)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_no_pickle_anywhere(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", build_encoder("small"), {})
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"\x80\x02" not in data[:2] and b"\x80\x04" not in data[:2] and not data.startswith(b"PK")
    json.loads((tmp_path / "m.json").read_text())


def test_metadata_errors(tmp_path: Path) -> None:
    enc = build_encoder("small")
    with pytest.raises(ValueError, match="rep_dim"):
        save_checkpoint(tmp_path / "m", enc, {"rep_dim": 512})
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "m", enc, {"when": object()})
    with pytest.raises(ValueError, match="describe"):
        save_checkpoint(tmp_path / "m", torch.nn.Linear(2, 2), {})
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(FileNotFoundError, match=r"m\.safetensors and m\.json"):
        load_checkpoint(tmp_path / "m")


def test_onnx_exportable_ops_only() -> None:
    """Only layers with a direct ONNX mapping (the serving helper exports these with opset 17)."""
    allowed = (
        torch.nn.Conv2d,
        torch.nn.BatchNorm2d,
        torch.nn.ReLU,
        torch.nn.AdaptiveAvgPool2d,
        torch.nn.Sequential,
        torch.nn.Identity,
        torch.nn.Linear,
    )
    for arch in ("small", "resnet18", "resnet50"):
        enc = build_encoder(arch)
        for m in enc.modules():
            if not list(m.children()):
                assert isinstance(m, allowed), (arch, type(m))
        for m in enc.modules():
            if isinstance(m, torch.nn.AdaptiveAvgPool2d):
                assert m.output_size in (1, (1, 1))  # -> GlobalAveragePool


def _assert_same_module(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ref, got = a.state_dict(), b.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert ref[key].dtype == got[key].dtype and torch.equal(ref[key], got[key]), key
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("out_dim", [256, 128])  # without and with the linear head
def test_stolen_encoder_round_trip(tmp_path: Path, out_dim: int) -> None:
    torch.manual_seed(2)
    stolen = _trained_looking(StolenEncoder(build_encoder("small"), out_dim))
    stolen.provenance = {"victim_sha256": "ab" * 32, "loss": "mse", "budget": 100}
    save_checkpoint(tmp_path / "stolen", stolen, {})
    loaded, meta = load_checkpoint(tmp_path / "stolen")
    assert isinstance(loaded, StolenEncoder) and not loaded.training
    assert (loaded.adapter is None) == (out_dim == 256)
    assert (meta["model"], meta["arch"], meta["backbone_dim"], meta["rep_dim"]) == ("stolen", "small", 256, out_dim)
    assert meta["steal"] == stolen.provenance and loaded.provenance == stolen.provenance
    _assert_same_module(stolen, loaded)


def test_stolen_encoder_of_a_custom_architecture(tmp_path: Path) -> None:
    torch.manual_seed(3)
    stolen = _trained_looking(StolenEncoder(ConvThief(), 256, backbone_dim=24, in_channels=3))
    save_checkpoint(tmp_path / "thief", stolen, {"note": "custom"})
    meta = json.loads((tmp_path / "thief.json").read_text())
    assert meta["arch"] == "custom" and meta["encoder_class"].endswith("ConvThief") and meta["backbone_dim"] == 24
    with pytest.raises(ValueError, match=r"thief\.json.*custom.*encoder="):
        load_checkpoint(tmp_path / "thief")
    module = ConvThief()
    loaded, meta = load_checkpoint(tmp_path / "thief", encoder=module)
    assert loaded.encoder is module and loaded.adapter is not None and meta["note"] == "custom"
    _assert_same_module(stolen, loaded)
    with pytest.raises(ValueError, match=r"thief\.safetensors do not fit.*missing"):
        load_checkpoint(tmp_path / "thief", encoder=torch.nn.Sequential(torch.nn.Conv2d(3, 5, 1)))


def test_unloadable_encoders_are_refused_at_save(tmp_path: Path) -> None:
    from sslsteal_fast.models import SmallEncoder

    with pytest.raises(ValueError, match="cannot describe a SmallEncoder"):
        save_checkpoint(tmp_path / "m", SmallEncoder(widths=(8, 8, 8, 8)), {})
    assert not list(tmp_path.iterdir())
