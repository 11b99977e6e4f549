"""export_onnx: parity with PyTorch, dynamic batch, metadata, argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sslsteal_fast.testing import EXPORT_RTOL
from sslsteal_fast.victim import OnnxVictim, export, export_onnx, max_relative_difference, read_metadata
from tests.helpers import TinyEncoder, TinySimCLR


@pytest.fixture(scope="module")
def tiny() -> TinyEncoder:
    torch.manual_seed(0)
    return TinyEncoder().eval()


@pytest.fixture(scope="module")
def exported(tiny: TinyEncoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    diff = export_onnx(tiny, path, (3, 8, 8), source_checkpoint="runs/tiny", metadata={"note": "test"})
    return path, diff


def _ort(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_parity_and_dynamic_batch(tiny: TinyEncoder, exported: tuple[Path, float]) -> None:
    path, diff = exported
    assert 0.0 <= diff <= EXPORT_RTOL
    gen = torch.Generator().manual_seed(1)
    for n in (1, 2, 17):
        x = torch.rand((n, 3, 8, 8), generator=gen)
        with torch.inference_mode():
            ref = tiny(x).numpy()
        got = _ort(path, x)
        assert got.shape == (n, 16)
        assert max_relative_difference(got, ref) <= EXPORT_RTOL


def test_graph_has_dynamic_batch_and_opset(exported: tuple[Path, float]) -> None:
    proto = onnx.load(str(exported[0]))
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [3, 8, 8]
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded in eval mode


def test_metadata(exported: tuple[Path, float]) -> None:
    path, diff = exported
    meta = read_metadata(path)
    assert meta["output"] == "representation"
    assert meta["output_dim"] == "16"
    assert json.loads(meta["input_shape"]) == [3, 8, 8]
    assert meta["arch"] == "tiny"
    assert meta["source_checkpoint"] == "runs/tiny"
    assert meta["note"] == "test"
    assert meta["exporter"] in ("dynamo", "torchscript")
    assert int(meta["opset"]) >= 17
    assert float(meta["max_rel_diff"]) == pytest.approx(diff, rel=1e-5, abs=1e-12)
    assert set(export.METADATA_KEYS) <= set(meta)


def test_served_by_onnx_victim(tiny: TinyEncoder, exported: tuple[Path, float]) -> None:
    victim = OnnxVictim(exported[0])
    assert victim.input_shape == (3, 8, 8)
    assert victim.output_dim == 16
    x = torch.rand(5, 3, 8, 8)
    with torch.inference_mode():
        ref = tiny(x).numpy()
    assert max_relative_difference(victim.query(x).numpy(), ref) <= EXPORT_RTOL


def test_projection_output_and_caller_model_untouched(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinySimCLR().train()
    diff = export_onnx(model, tmp_path / "proj.onnx", (3, 8, 8), output="projection", exporter="torchscript")
    assert diff <= EXPORT_RTOL
    assert model.training  # the export worked on a copy
    meta = read_metadata(tmp_path / "proj.onnx")
    assert (meta["output"], meta["output_dim"], meta["arch"], meta["opset"]) == ("projection", "4", "tiny", "17")
    x = torch.rand(3, 3, 8, 8)
    with torch.inference_mode():
        ref = model.eval()(x)[1].numpy()
    assert max_relative_difference(_ort(tmp_path / "proj.onnx", x), ref) <= EXPORT_RTOL


def test_simclr_representation_serves_the_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinySimCLR().eval()
    export_onnx(model, tmp_path / "rep.onnx", (3, 8, 8), exporter="torchscript")
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        ref = model.encoder(x).numpy()
    assert _ort(tmp_path / "rep.onnx", x).shape == (2, 16)
    assert max_relative_difference(_ort(tmp_path / "rep.onnx", x), ref) <= EXPORT_RTOL


def test_parity_failure_raises_and_removes_file(
    tiny: TinyEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # any difference, even 0, now "fails"
    with pytest.raises(ValueError, match="differs from PyTorch"):
        export_onnx(tiny, tmp_path / "bad.onnx", (3, 8, 8), exporter="torchscript")
    assert not (tmp_path / "bad.onnx").exists()


def test_auto_falls_back_to_torchscript(tiny: TinyEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export._export_graph

    def dynamo_fails(net: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, which: str) -> None:
        if which == "dynamo":
            raise RuntimeError("cannot trace")
        real(net, example, path, opset, which)

    monkeypatch.setattr(export, "_pick_exporter", lambda exporter: "dynamo")
    monkeypatch.setattr(export, "_export_graph", dynamo_fails)
    with pytest.warns(RuntimeWarning, match="retrying with the TorchScript exporter"):
        assert export_onnx(tiny, tmp_path / "fb.onnx", (3, 8, 8)) <= EXPORT_RTOL
    assert read_metadata(tmp_path / "fb.onnx")["exporter"] == "torchscript"
    with pytest.raises(RuntimeError, match="cannot trace"):  # a forced exporter never falls back
        export_onnx(tiny, tmp_path / "fb2.onnx", (3, 8, 8), exporter="dynamo")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"opset": 16}, "opset"),
        ({"output": "projection"}, "SimCLRModel"),
        ({"output": "logits"}, "output"),
        ({"input_shape": (3, 8)}, "input_shape"),
        ({"exporter": "jit"}, "exporter"),
        ({"metadata": {"arch": "x"}}, "override"),
    ],
)
def test_bad_arguments(tiny: TinyEncoder, tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"input_shape": (3, 8, 8)} | kwargs
    with pytest.raises(ValueError, match=match):
        export_onnx(tiny, tmp_path / "x.onnx", **args)


def test_max_relative_difference_ignores_exact_zeros() -> None:
    ref = np.array([[0.0, 2.0], [1.0, 0.0]], dtype=np.float32)
    got = ref + np.array([[1e-7, 0.0], [0.0, -2e-7]], dtype=np.float32)
    assert max_relative_difference(got, ref) == pytest.approx(2e-7, rel=1e-3)
    assert max_relative_difference(np.full((1, 2), np.nan), ref[:1]) == float("inf")
    # an all-zero reference row is judged against the batch's scale, not against ~0
    zero_row = np.array([[0.0, 0.0], [4.0, 1.0]])
    assert max_relative_difference(zero_row + [[1e-6, 0.0], [0.0, 0.0]], zero_row) == pytest.approx(2.5e-7)
