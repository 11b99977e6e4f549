"""Which ONNX Runtime serves: the CUDA provider when present, a loud warning when a GPU is left unused, and
answers that stay on the GPU for a GPU thief (IO binding)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sslsteal_fast.testing import FOREIGN_ATOL
from sslsteal_fast.victim import OnnxVictim, serving
from tests.helpers import linear_encoder

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
D = 5
WEIGHT = np.random.default_rng(1).standard_normal((48, D)).astype(np.float32)
HAS_ORT_CUDA = torch.cuda.is_available() and CUDA in ort.get_available_providers()


@pytest.fixture(scope="module")
def linear_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_encoder(tmp_path_factory.mktemp("runtime") / "linear.onnx", WEIGHT)


@pytest.fixture
def gpu_machine(monkeypatch):
    """A visible GPU; ``installed`` says which onnxruntime distributions pip knows of."""

    def fake(providers: list[str], installed: tuple[str, ...]) -> None:
        monkeypatch.setattr(ort, "get_available_providers", lambda: providers)
        monkeypatch.setattr(serving, "_gpu_present", lambda: True)
        monkeypatch.setattr(serving, "_installed", lambda dist: dist in installed)
        monkeypatch.setattr(serving, "_RUNTIME_WARNED", False)

    return fake


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, 4, 4), dtype=np.float32)


def test_gpu_with_only_the_cpu_runtime_warns_once(linear_path, gpu_machine):
    gpu_machine([CPU], ("onnxruntime",))
    with pytest.warns(RuntimeWarning, match="GPU is visible.*only the CPU onnxruntime.*sslsteal_fast\\[gpu\\]"):
        v = OnnxVictim(linear_path)
    assert v.providers == [CPU]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxVictim(linear_path)  # once per process


def test_both_runtimes_installed_is_named(linear_path, gpu_machine):
    gpu_machine([CPU], ("onnxruntime", "onnxruntime-gpu"))
    with pytest.warns(RuntimeWarning, match="both onnxruntime and onnxruntime-gpu are installed.*pip uninstall"):
        OnnxVictim(linear_path)


def test_cuda_runtime_on_a_gpu_is_the_default(gpu_machine):
    gpu_machine([CUDA, CPU], ("onnxruntime-gpu",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert serving.default_providers() == [CUDA, CPU]


def test_no_gpu_no_warning(linear_path, monkeypatch):
    monkeypatch.setattr(serving, "_gpu_present", lambda: False)
    monkeypatch.setattr(serving, "_RUNTIME_WARNED", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert serving.default_providers() == [CPU]


def test_no_runtime_says_which_extra_to_install(linear_path, monkeypatch):
    monkeypatch.setattr(serving, "ort", None)
    with pytest.raises(ImportError, match="sslsteal_fast\\[cpu\\].*sslsteal_fast\\[gpu\\]"):
        OnnxVictim(linear_path)


def test_each_extra_installs_exactly_one_runtime():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtimes = ("onnxruntime", "onnxruntime-gpu")

    def names(reqs: list[str]) -> set[str]:
        return {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in reqs}

    assert not names(project["dependencies"]) & set(runtimes)
    extras = project["optional-dependencies"]
    assert names(extras["cpu"]) & set(runtimes) == {"onnxruntime"}
    assert names(extras["gpu"]) & set(runtimes) == {"onnxruntime-gpu"}
    assert not names(extras["test"]) & set(runtimes)
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[$(ORT_EXTRA),test]"' in makefile and "ORT_EXTRA ?=" in makefile


def test_cpu_answers_stay_on_the_cpu(linear_path):
    v = OnnxVictim(linear_path, providers=[CPU], cache_size=0)
    out = v.query(torch.from_numpy(images(3)))
    assert out.device.type == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs a GPU, CUDA torch and onnxruntime-gpu")
def test_cuda_queries_are_answered_on_the_gpu(linear_path):
    x = torch.from_numpy(images(7))
    want = x.reshape(7, 48).double() @ torch.from_numpy(WEIGHT).double()
    bound = OnnxVictim(linear_path, cache_size=0, batch_size=3)  # IO binding, three runs
    assert CUDA in bound.providers and bound._serves_on_device(x.cuda())
    out = bound.query(x.cuda(), client="thief")
    assert out.is_cuda and out.shape == (7, D)
    torch.testing.assert_close(out.cpu().double(), want, atol=FOREIGN_ATOL, rtol=1e-4)
    assert (bound.billed("thief"), bound.forward_passes) == (7, 7)
    u8 = bound.query((x * 255).round().to(torch.uint8).cuda())
    assert u8.is_cuda
    cached = OnnxVictim(linear_path)  # the response cache runs on the host: same answer, moved back
    again = cached.query(x.cuda())
    assert again.is_cuda
    torch.testing.assert_close(again, out, atol=FOREIGN_ATOL, rtol=1e-4)
    with pytest.raises(ValueError, match="NaN"):
        bound.query(torch.full((1, 3, 4, 4), float("nan"), device="cuda"))
    assert bound.billed("default") == 7  # the refused query billed nothing
