"""OnnxVictim refuses before it serves: bad model files, unknown providers, masked arrays, client ids
that cannot be stored, and non-finite answers (from the model or a defense) are errors that bill nothing."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sslsteal_fast.defenses import DefenseState, GaussianNoise, SimilarityDetector, make_defense
from sslsteal_fast.util.files import file_sha256
from sslsteal_fast.victim import OnnxVictim, check_client, read_metadata
from sslsteal_fast.victim.protocol import victim_sha256
from tests.helpers import images_for, linear_encoder, linear_onnx

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_onnx(tmp_path_factory.mktemp("checks") / "lin.onnx")


def accounts(v: OnnxVictim) -> tuple:
    return (v.queries_used, v.forward_passes, v.cache_hits, v.bills)


class Recorder:
    """A defense that records that it ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        self.calls += 1
        return outputs


# ---------------------------------------------------------------- model files
@pytest.mark.parametrize("content", [b"this is not an ONNX model \x00\x01\x02", b"", b"\x08\x07"])
def test_corrupt_model_file_is_a_value_error_naming_it(tmp_path, content):
    bad = tmp_path / "victim.onnx"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="victim.onnx") as info:
        OnnxVictim(bad)
    assert "Traceback" not in str(info.value)
    with pytest.raises(ValueError, match="victim.onnx"):
        read_metadata(bad)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.onnx"):
        OnnxVictim(tmp_path / "gone.onnx")
    with pytest.raises(FileNotFoundError, match="gone.onnx"):
        read_metadata(tmp_path / "gone.onnx")


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        OnnxVictim(tmp_path)


def test_corrupt_state_file_is_a_value_error_naming_it(tmp_path):
    bad = tmp_path / "state.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(ValueError, match="state.sqlite"):
        DefenseState(bad)
    with pytest.raises(ValueError, match="state.sqlite"):
        make_defense("detection", state=str(bad))


# ---------------------------------------------------------------- execution providers
@pytest.mark.parametrize("providers", [["Bogus"], ["cuda"], ["CPUExecutionProvider", "CUDAExecutionProviderr"]])
def test_unknown_provider_raises_listing_the_available_ones(onnx_path, providers):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either: an error
        with pytest.raises(ValueError, match="unknown ONNX Runtime execution provider") as info:
            OnnxVictim(onnx_path, providers=providers)
    for name in ort.get_available_providers():
        assert name in str(info.value)


@pytest.mark.parametrize("providers", [[42], [("CPUExecutionProvider",)], [(CPU, "threads")]])
def test_malformed_provider_spec(onnx_path, providers):
    with pytest.raises(TypeError, match="provider"):
        OnnxVictim(onnx_path, providers=providers)


def test_cuda_alone_without_a_cuda_build_raises_clearly(onnx_path):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ValueError, match="no CUDA provider.*onnxruntime-gpu"):
        OnnxVictim(onnx_path, providers=[CUDA])
    with pytest.warns(RuntimeWarning, match="no CUDA provider.*onnxruntime-gpu"):
        v = OnnxVictim(onnx_path, providers=[CUDA, CPU])  # an explicit fallback is honoured, loudly
    assert v.providers == [CPU]


# ---------------------------------------------------------------- masked arrays
@pytest.mark.parametrize(
    "masked",
    [
        np.ma.array(np.full((2, 3, 4, 4), np.nan, np.float32), mask=True),  # NaN hidden under the mask
        np.ma.array(np.zeros((2, 3, 4, 4), np.float32), mask=False),  # nothing masked: still refused
        np.ma.array(np.zeros((2, 3, 4, 4), np.uint8), mask=False),
    ],
)
def test_masked_arrays_are_refused(onnx_path, masked):
    rec = Recorder()
    v = OnnxVictim(onnx_path, defenses=[rec])
    with pytest.raises(TypeError, match="masked array"):
        v.query(masked)
    assert accounts(v) == (0, 0, 0, {}) and rec.calls == 0


# ---------------------------------------------------------------- client ids
@pytest.mark.parametrize("client", ["\ud800", "a\udfffb", "nul\x00inside", "", 7, None])
def test_bad_client_id_is_refused_before_anything_runs(tmp_path, onnx_path, client):
    state = DefenseState(tmp_path / "s.sqlite")
    rec = Recorder()
    det = SimilarityDetector(state=state)
    v = OnnxVictim(onnx_path, defenses=[rec, det])
    with pytest.raises(ValueError, match="client"):
        v.query(images_for(3), client=client)
    assert accounts(v) == (0, 0, 0, {}) and rec.calls == 0
    with pytest.raises(ValueError, match="client"):
        det(torch.zeros(3, 16), images_for(3), client)  # a defense called on its own checks it too
    with pytest.raises(ValueError, match="client"):
        GaussianNoise(sigma=1.0)(torch.zeros(3, 16), images_for(3), client)
    with sqlite3.connect(str(tmp_path / "s.sqlite")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM bank").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM bills").fetchone()[0] == 0


def test_good_client_ids_pass():
    for client in ("alice", "émile", "客户", "a b-c_d.e@f", "🙂"):
        assert check_client(client) == client


# ---------------------------------------------------------------- non-finite answers
@pytest.mark.parametrize(
    "spec",
    [
        "quantize:decimals=39",
        "quantize:decimals=400",
        "quantize:decimals=-39",
        {"name": "quantize", "levels": 10**40},
        {"name": "quantize", "decimals": -(10**6)},
    ],
)
def test_quantize_specs_that_would_produce_nan_are_refused(spec):
    with pytest.raises(ValueError, match="Quantize"):
        make_defense(spec)


@pytest.mark.parametrize("decimals", [-38, -5, 0, 3, 38])
def test_quantize_answers_stay_finite_over_its_whole_range(decimals):
    out = torch.randn(64, 32) * torch.logspace(-30, 30, 32)
    q = make_defense(f"quantize:decimals={decimals}")(out.clone(), images_for(64), "c")
    assert torch.isfinite(q).all()
    error = (q.double() - out.double()).abs()
    assert (error <= 0.5 * 10.0**-decimals + out.double().abs() * 2.0**-23).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_defended_answer_is_refused_and_not_billed(onnx_path, bad):
    def poison(outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        outputs[1, 2] = bad
        return outputs

    v = OnnxVictim(onnx_path, budget=10, defenses=[poison])
    with pytest.raises(ValueError, match="poison.*non-finite"):
        v.query(images_for(3))
    assert (v.queries_used, v.remaining, v.bills) == (0, 10, {})


def test_non_finite_model_output_is_refused_and_not_billed(tmp_path):
    huge = linear_encoder(tmp_path / "huge.onnx", np.full((48, 4), 3e38, np.float32))  # overflows to inf
    v = OnnxVictim(huge, budget=10)
    with pytest.raises(ValueError, match="non-finite"):
        v.query(images_for(2))
    assert (v.queries_used, v.remaining, v.bills) == (0, 10, {})


def test_sha256_is_the_served_files(tmp_path: Path) -> None:
    path = linear_onnx(tmp_path / "m.onnx")
    victim = OnnxVictim(path)
    assert victim.sha256 == file_sha256(path) == victim_sha256(victim)
