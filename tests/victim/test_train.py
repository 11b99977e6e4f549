"""train_victim: a tiny SimCLR run, metadata, exact resume after interruption, CLI registration."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsteal_fast.models import SimCLRModel, load_checkpoint
from sslsteal_fast.victim.train import (
    VictimTrainConfig,
    _cosine_lr,
    state_path,
    train_victim,
)


def _cfg(out: Path, **kw: object) -> VictimTrainConfig:
    base: dict[str, object] = dict(
        dataset="shapes",
        out=str(out),
        arch="small",
        epochs=2,
        batch_size=32,
        count=64,
        image_size=16,
        seed=7,
        device="cpu",
        progress=False,
    )
    base.update(kw)
    return VictimTrainConfig(**base)  # type: ignore[arg-type]


class Interrupt(RuntimeError):
    pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("victim") / "full"
    assert train_victim(_cfg(out)) == out
    return out


def test_checkpoint_and_metadata(finished: Path) -> None:
    model, meta = load_checkpoint(finished)
    assert isinstance(model, SimCLRModel)
    for key, value in {
        "model": "simclr",
        "arch": "small",
        "in_channels": 3,
        "rep_dim": 256,
        "proj_dim": 128,
        "dataset": "shapes",
        "seed": 7,
        "epochs": 2,
        "train_size": 64,
        "image_size": 16,
        "loss": "info_nce",
        "temperature": 0.07,
        "batch_size": 32,
        "steps": 4,
    }.items():
        assert meta[key] == value, key
    assert len(meta["epoch_losses"]) == 2 and all(math.isfinite(v) for v in meta["epoch_losses"])
    assert not state_path(finished).exists()  # the per-epoch state is cleaned up
    with torch.no_grad():
        rep, proj = model(torch.rand(2, 3, 16, 16))
    assert rep.shape == (2, 256) and proj.shape == (2, 128)


def test_finished_run_returns_immediately(finished: Path) -> None:
    before = finished.with_suffix(".safetensors").stat().st_mtime_ns
    calls: list[int] = []
    assert train_victim(_cfg(finished), on_epoch_end=lambda e, loss: calls.append(e)) == finished
    assert calls == [] and finished.with_suffix(".safetensors").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="epochs: 2 there vs 3 now"):
        train_victim(_cfg(finished, epochs=3))


def test_resume_after_interruption_is_exact(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"

    def stop_after_first(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_victim(_cfg(out), on_epoch_end=stop_after_first)
    assert state_path(out).is_file() and not out.with_suffix(".json").exists()
    with pytest.raises(ValueError, match="seed"):
        train_victim(_cfg(out, seed=8))  # a different run must not pick up this state
    seen: list[int] = []
    train_victim(_cfg(out), on_epoch_end=lambda e, loss: seen.append(e))
    assert seen == [2]  # only the unfinished epoch ran
    a, meta_a = load_checkpoint(finished)
    b, meta_b = load_checkpoint(out)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert meta_a["epoch_losses"] == meta_b["epoch_losses"]


def test_soft_nn_loss_on_one_channel_npz(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", images=grey, labels=np.arange(40) % 4)
    cfg = _cfg(tmp_path / "snn", loss="soft_nn", epochs=1, dataset=f"npz:{tmp_path / 'grey.npz'}", image_size=8)
    model, meta = load_checkpoint(train_victim(dataclasses.replace(cfg, count=None)))
    assert meta["loss"] == "soft_nn" and meta["temperature"] == 100.0 and meta["in_channels"] == 1
    assert meta["batch_size"] == 32 and meta["steps"] == 1 and meta["train_size"] == 40
    assert all(math.isfinite(v) for v in meta["epoch_losses"])
    assert model.encoder(torch.rand(2, 1, 8, 8)).shape == (2, 256)


def test_cosine_schedule_never_wraps() -> None:
    assert _cosine_lr(1.0, 0, 10) == 1.0
    assert _cosine_lr(1.0, 5, 10) == pytest.approx(0.5)
    assert _cosine_lr(1.0, 10, 10) == pytest.approx(0.0)
    assert _cosine_lr(1.0, 15, 10) == pytest.approx(0.0)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="arch"):
        VictimTrainConfig(arch="vgg")
    with pytest.raises(ValueError, match="loss"):
        VictimTrainConfig(loss="mse")
    with pytest.raises(ValueError, match="batch_size"):
        VictimTrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="temperature"):
        VictimTrainConfig(temperature=0.0)
    with pytest.raises(ValueError, match="crop_min_scale"):
        VictimTrainConfig(crop_min_scale=1.5)


def test_bad_config_and_hooks_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cfg must be a VictimTrainConfig"):
        train_victim({"dataset": "shapes"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hooks must be TrainHook objects"):
        train_victim(_cfg(tmp_path / "v"), [object()])  # type: ignore[list-item]


def test_pose_fields_keep_old_identities_at_their_defaults() -> None:
    """Fields added later are left out of a run's identity at their default (old caches keep their key)."""
    from sslsteal_fast.config import VictimTrainConfig

    base = VictimTrainConfig().identity()
    assert not {"rotation", "translate", "min_zoom", "grayscale_p"} & set(base)
    posed = VictimTrainConfig(rotation=180.0, translate=0.1, min_zoom=0.8, grayscale_p=0.8).identity()
    assert {k: posed[k] for k in ("rotation", "translate", "min_zoom", "grayscale_p")} == {
        "rotation": 180.0,
        "translate": 0.1,
        "min_zoom": 0.8,
        "grayscale_p": 0.8,
    }
    for bad in ({"rotation": 200}, {"translate": -0.1}, {"min_zoom": 0}, {"grayscale_p": 1.5}):
        with pytest.raises(ValueError, match="VictimTrainConfig"):
            VictimTrainConfig(**bad)
