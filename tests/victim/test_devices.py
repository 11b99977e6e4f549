"""The one device resolver: ``auto`` picks CUDA whenever torch sees a GPU, and says so when torch cannot."""

from __future__ import annotations

import warnings

import pytest
import torch

from sslsteal_fast.attacks import steal
from sslsteal_fast.config import StealConfig, VictimTrainConfig
from sslsteal_fast.victim import train as train_mod
from sslsteal_fast.victim.train import resolve_device
from tests.helpers import uint8_images


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend torch sees ``n`` GPUs (no CUDA call is made by the resolver beyond these two)."""

    def fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return fake


def test_auto_is_cuda_when_torch_sees_a_gpu(fake_gpus):
    fake_gpus(2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_is_cpu_without_a_gpu(fake_gpus, monkeypatch):
    fake_gpus(0)
    monkeypatch.setattr(train_mod, "gpu_visible", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("auto") == torch.device("cpu")


def test_missing_cuda_devices_are_errors(fake_gpus):
    fake_gpus(0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    fake_gpus(2)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")
    for bad in ("gpu", "cuda:x", "CPU", 3):
        with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
            resolve_device(bad)


def test_cpu_torch_on_a_gpu_machine_warns_once(fake_gpus, monkeypatch):
    fake_gpus(0)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(train_mod, "gpu_visible", lambda: True)
    monkeypatch.setattr(train_mod, "_CPU_TORCH_WARNED", False)
    with pytest.warns(RuntimeWarning, match="CPU-only build.*Install a CUDA build of torch"):
        assert resolve_device("auto") == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_device("auto")  # once per process


def test_cuda_torch_that_cannot_reach_the_gpu_warns(fake_gpus, monkeypatch):
    fake_gpus(0)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(train_mod, "gpu_visible", lambda: True)
    monkeypatch.setattr(train_mod, "_CPU_TORCH_WARNED", False)
    with pytest.warns(RuntimeWarning, match="cannot use it.*driver older"):
        assert resolve_device("auto") == torch.device("cpu")


def test_gpu_visible_respects_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert train_mod.gpu_visible() is False


def test_every_stage_defaults_to_auto():
    assert StealConfig().device == "auto"
    assert VictimTrainConfig().device == "auto"
    with pytest.raises(ValueError, match="StealConfig.device"):
        StealConfig(device="gpu").resolved()
    with pytest.raises(ValueError, match="VictimTrainConfig.device"):
        VictimTrainConfig(device="gpu")


class _Answers:
    input_shape = (3, 16, 16)
    output_dim = 8
    sha256 = None
    remaining = None
    queries_used = 0
    forward_passes = 0

    def query(self, x, client="default"):
        raise AssertionError("not queried")


def test_steal_resolves_its_device(fake_gpus, monkeypatch):
    """steal() goes through the resolver: a CUDA request without CUDA is a clear ValueError, not a torch crash."""
    fake_gpus(0)
    images = uint8_images(8)
    cfg = StealConfig(loss="mse", budget=8, epochs=1, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        steal(_Answers(), images, cfg, targets=torch.randn(8, 8), progress=False)
