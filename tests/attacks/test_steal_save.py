"""A stolen encoder saves and loads, head included, and its checkpoint says what was stolen from whom and how."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslsteal_fast.attacks import LocalVictim, QuerySet, StealConfig, StolenEncoder, steal
from sslsteal_fast.data import ImageDataset
from sslsteal_fast.models import load_checkpoint, save_checkpoint
from sslsteal_fast.util.files import file_sha256
from sslsteal_fast.victim import OnnxVictim
from tests.helpers import ConvThief, calibrated_encoder, linear_onnx, uint8_images


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served encoder of (N, 3, 4, 4) images -> (N, 16): a 256-d small thief needs a head."""
    return linear_onnx(tmp_path_factory.mktemp("save") / "victim.onnx", dim=16)


def _queries() -> ImageDataset:
    images = uint8_images(40, size=4)
    return ImageDataset(images, torch.zeros(40, dtype=torch.int64), 1, "toy")


def _steal(victim, **kw):
    cfg = StealConfig(loss="mse", budget=24, epochs=1, batch_size=8, augment=False)
    return steal(victim, _queries(), cfg, progress=False, **kw)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, channels: int = 3, size: int = 4) -> None:
    x = torch.rand(3, channels, size, size)
    with torch.no_grad():
        assert torch.equal(a.cpu().eval()(x), b.eval()(x))


def test_result_save_round_trip_with_head_and_provenance(tmp_path: Path, onnx_path: Path) -> None:
    victim = OnnxVictim(onnx_path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    result = _steal(victim)
    assert result.head is not None
    result.save(tmp_path / "stolen", {"note": "first try"})
    model, meta = load_checkpoint(tmp_path / "stolen")
    assert isinstance(model, StolenEncoder) and model.adapter is not None and model.rep_dim == 16
    _same_outputs(result.stolen, model)
    provenance = meta["steal"]
    assert provenance["victim_sha256"] == file_sha256(onnx_path) == result.victim_sha256
    assert (provenance["loss"], provenance["budget"], provenance["strategy"]) == ("mse", 24, "query-once")
    assert provenance["query_set"] == {"name": "toy", "budget": 24, "sha256": QuerySet(_queries(), 24).sha256()}
    assert provenance["billed_queries"] == 24 and len(provenance["history"]) == 1
    assert meta["note"] == "first try" and model.provenance == provenance
    assert json.loads((tmp_path / "stolen.json").read_text())["steal"] == provenance


def test_save_checkpoint_of_the_stolen_model_loads(tmp_path: Path, onnx_path: Path) -> None:
    """``save_checkpoint(prefix, result.stolen, ...)`` used to write a checkpoint that did not load."""
    result = _steal(OnnxVictim(onnx_path, providers=["CPUExecutionProvider"], intra_op_threads=1))
    save_checkpoint(tmp_path / "plain", result.stolen, {})
    model, meta = load_checkpoint(tmp_path / "plain")
    _same_outputs(result.stolen, model)
    assert meta["steal"]["victim_sha256"] == file_sha256(onnx_path)  # the module carries its provenance


def test_custom_thief_round_trip(tmp_path: Path) -> None:
    victim = LocalVictim(calibrated_encoder(3, size=4))
    result = _steal(victim, thief=ConvThief(24))
    result.save(tmp_path / "custom")
    with pytest.raises(ValueError, match="custom.*encoder="):
        load_checkpoint(tmp_path / "custom")
    model, meta = load_checkpoint(tmp_path / "custom", encoder=ConvThief(24))
    assert meta["steal"]["victim_sha256"] is None  # an in-process victim has no file
    assert meta["encoder_class"].endswith("ConvThief") and model.backbone_dim == 24 and model.adapter is not None
    _same_outputs(result.stolen, model)
