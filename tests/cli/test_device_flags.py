"""--device: the same settings everywhere (auto by default), resolved by the one resolver."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.cli import build_parser
from sslsteal_fast.cli.common import UsageError, resolve_device


def test_sweep_takes_a_device_that_overrides_run_device():
    args = build_parser().parse_args(["sweep", "cfg.toml", "--out", "o", "--device", "cuda:1"])
    assert args.device == "cuda:1"
    assert build_parser().parse_args(["sweep", "cfg.toml", "--out", "o"]).device is None
    with pytest.raises(UsageError, match="invalid device 'gpu'"):
        build_parser().parse_args(["demo", "--out", "o", "--device", "gpu"])


@pytest.mark.parametrize("command", [["steal", "--victim", "v.onnx", "--queries", "q"], ["train-victim"]])
def test_stage_commands_default_to_auto(command):
    args = build_parser().parse_args([*command, "--out", "o"])
    assert args.device == "auto"


def test_cli_resolution_is_the_stages_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda"
    with pytest.raises(ValueError, match="^--device 'cuda:1': there are only 1 CUDA device"):
        resolve_device("cuda:1")
