"""load_checkpoint trusts nothing it reads: the JSON and the safetensors header are checked before any allocation.

Every corrupt or inconsistent checkpoint is a ``ValueError`` that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslsteal_fast.models import (
    SimCLRModel,
    StolenEncoder,
    build_encoder,
    checkpoint,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def simclr(tmp_path: Path) -> Path:
    """A saved small SimCLR model (proj 16, hidden 64); returns its prefix."""
    save_checkpoint(tmp_path / "m", SimCLRModel(build_encoder("small"), proj_dim=16, hidden_dim=64), {"seed": 0})
    return tmp_path / "m"


def _edit_json(prefix: Path, **fields: object) -> Path:
    path = prefix.with_name(prefix.name + ".json")
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))
    return path


@pytest.fixture
def no_real_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every module the checkpoint loader builds off the ``meta`` device (where memory is allocated)."""
    real: list[str] = []
    original = checkpoint.build_encoder

    def spy(arch: str, in_channels: int = 3) -> torch.nn.Module:
        if torch.get_default_device().type != "meta":
            real.append(arch)
        return original(arch, in_channels)

    monkeypatch.setattr(checkpoint, "build_encoder", spy)
    return real


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(hidden_dim=1e9), "hidden_dim must be an int"),  # used to allocate a 1 TB head
        (dict(hidden_dim=10**9), "hidden_dim must be an int in \\[1, 32768\\]"),
        (dict(proj_dim=0), "proj_dim must be an int in"),
        (dict(proj_dim="16"), "proj_dim must be an int"),
        (dict(proj_dim=None), "proj_dim must be an int"),
        (dict(in_channels=True), "in_channels must be an int"),
        (dict(in_channels=4096), "in_channels must be an int in \\[1, 64\\]"),
        (dict(arch="resnet1000"), "unknown architecture 'resnet1000'"),
        (dict(arch=["small"]), "unknown architecture"),
        (dict(model="transformer"), "unknown model kind 'transformer'"),
        (dict(rep_dim=512), "rep_dim is 512 but a small encoder has 256"),
        (dict(format="other/9"), "unknown format 'other/9'"),
    ],
)
def test_bad_metadata_is_refused_before_building(
    simclr: Path, no_real_build: list[str], fields: dict, match: str
) -> None:
    json_path = _edit_json(simclr, **fields)
    with pytest.raises(ValueError, match=match) as info:
        load_checkpoint(simclr)
    assert str(json_path) in str(info.value)
    assert no_real_build == []


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2, 3]", b"null", b"\xff\xfe\x00garbage"])
def test_unreadable_json_names_the_file(simclr: Path, data: bytes) -> None:
    simclr.with_name("m.json").write_bytes(data)
    with pytest.raises(ValueError, match="m\\.json") as info:
        load_checkpoint(simclr)
    assert not isinstance(info.value, json.JSONDecodeError)  # our message, not the parser's


@pytest.mark.parametrize("keep", [0, 7, 100, -1000])
def test_truncated_or_garbage_safetensors_names_the_file(simclr: Path, keep: int) -> None:
    weights = simclr.with_name("m.safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="m\\.safetensors.*not a valid safetensors file"):
        load_checkpoint(simclr)


def test_header_shapes_checked_against_the_architecture_before_allocating(
    simclr: Path, no_real_build: list[str]
) -> None:
    # In range for the metadata check, but the file holds a 64-wide head: caught from the header alone.
    _edit_json(simclr, hidden_dim=30000, proj_dim=30000)
    with pytest.raises(
        ValueError, match=r"m\.safetensors do not fit the simclr model \(small\) of its metadata.*head\.net\.0\.weight"
    ):
        load_checkpoint(simclr)
    assert no_real_build == []


def test_wrong_architecture_or_channels_named(tmp_path: Path, no_real_build: list[str]) -> None:
    save_checkpoint(tmp_path / "enc", build_encoder("small", in_channels=1))
    _edit_json(tmp_path / "enc", in_channels=3)
    with pytest.raises(ValueError, match=r"enc\.safetensors.*features\.0\.0\.weight has shape \[32, 1, 3, 3\]"):
        load_checkpoint(tmp_path / "enc")
    _edit_json(tmp_path / "enc", arch="resnet18", rep_dim=512)
    with pytest.raises(ValueError, match=r"enc\.safetensors.*tensors missing.*unexpected tensors"):
        load_checkpoint(tmp_path / "enc")
    assert no_real_build == []


def test_dtype_kind_checked(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    enc = build_encoder("small")
    save_checkpoint(tmp_path / "enc", enc)
    state = {k: v.to(torch.int32) if k.endswith("running_mean") else v for k, v in enc.state_dict().items()}
    save_file(state, str(tmp_path / "enc.safetensors"))
    with pytest.raises(ValueError, match="running_mean has dtype I32"):
        load_checkpoint(tmp_path / "enc")


def test_valid_checkpoints_still_load(simclr: Path) -> None:
    model, meta = load_checkpoint(simclr)
    assert isinstance(model, SimCLRModel) and meta["seed"] == 0 and model.head.hidden_dim == 64


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(backbone_dim=512), "backbone_dim is 512 but a small encoder has 256"),
        (dict(backbone_dim=0), "backbone_dim must be an int in"),
        (dict(rep_dim=10**6), "rep_dim must be an int in \\[1, 32768\\]"),
        (dict(rep_dim=128.0), "rep_dim must be an int"),
        (dict(steal=[1]), "steal must be a JSON object"),
        (dict(arch="custom", encoder_class=3), "encoder_class must be a string"),
    ],
)
def test_bad_stolen_metadata_is_refused(tmp_path: Path, no_real_build: list[str], fields: dict, match: str) -> None:
    save_checkpoint(tmp_path / "s", StolenEncoder(build_encoder("small"), 128), {})
    json_path = _edit_json(tmp_path / "s", **fields)
    with pytest.raises(ValueError, match=match) as info:
        load_checkpoint(tmp_path / "s")
    assert str(json_path) in str(info.value) and no_real_build == []
