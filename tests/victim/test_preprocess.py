"""OnnxVictim's optional preprocessing (resize, mean/std normalisation) against the same transform by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslsteal_fast.testing import FOREIGN_ATOL
from sslsteal_fast.victim import OnnxVictim, Preprocess
from tests.helpers import linear_encoder, pooled_encoder

WEIGHT = np.random.default_rng(4).standard_normal((48, 6)).astype(np.float32)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def linear_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_encoder(tmp_path_factory.mktemp("pre") / "linear.onnx", WEIGHT)


def by_hand(
    x: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """uint8 -> [0, 1], resize, normalise: what the graph would have started with."""
    f = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if size is not None and tuple(f.shape[2:]) != size:
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        f = F.interpolate(f, size=size, mode=mode, antialias=antialias, **kwargs)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (f - mean) / std


def model(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), 48).double().numpy() @ WEIGHT.astype(np.float64)


def uint8_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (13, 7), (4, 4), (2, 3)])
@pytest.mark.parametrize(("mode", "antialias"), [("bilinear", True), ("bicubic", False), ("area", False)])
def test_resize_and_normalise_match_the_transform_by_hand(linear_path, h, w, mode, antialias):
    pre = Preprocess(mean=MEAN, std=STD, size="model", mode=mode, antialias=antialias)
    v = OnnxVictim(linear_path, preprocess=pre)
    assert v.model_input_shape == (3, 4, 4) and v.input_shape == (3, None, None)
    x = uint8_images(5, h, w)
    want = model(by_hand(x, (4, 4), mode, antialias))
    np.testing.assert_allclose(v.query(x).numpy(), want, atol=4 * FOREIGN_ATOL, rtol=1e-5)
    floats = x.float() / 255  # a float query is the uint8 one scaled, as without preprocessing
    np.testing.assert_allclose(v.query(floats).numpy(), want, atol=4 * FOREIGN_ATOL, rtol=1e-5)


def test_normalise_only_keeps_the_model_input_shape(linear_path):
    v = OnnxVictim(linear_path, preprocess=Preprocess(mean=MEAN, std=STD))
    assert v.input_shape == v.model_input_shape == (3, 4, 4)
    x = uint8_images(3, 4, 4)
    np.testing.assert_allclose(v.query(x).numpy(), model(by_hand(x, None)), atol=4 * FOREIGN_ATOL, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 3, 4, 4\)"):
        v.query(uint8_images(1, 5, 5))


def test_scalar_mean_std_and_explicit_size_on_a_dynamic_model(tmp_path):
    v = OnnxVictim(pooled_encoder(tmp_path / "pool.onnx"), preprocess=Preprocess(mean=0.5, std=0.25, size=(6, 2)))
    assert v.model_input_shape == (3, None, None) and v.input_shape == (3, None, None)
    x = torch.rand(2, 3, 9, 5, generator=torch.Generator().manual_seed(1))
    want = (F.interpolate(x, size=(6, 2), mode="bilinear", antialias=True, align_corners=False) - 0.5) / 0.25
    np.testing.assert_allclose(v.query(x).numpy(), want.mean(dim=(2, 3)).numpy(), atol=FOREIGN_ATOL)


def test_defenses_see_the_preprocessed_inputs_and_billing_is_unchanged(linear_path):
    seen: list[torch.Tensor] = []

    def spy(outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        seen.append(inputs.clone())
        return outputs

    v = OnnxVictim(linear_path, budget=20, defenses=[spy], preprocess=Preprocess(mean=MEAN, std=STD, size=4))
    x = uint8_images(4, 9, 9)
    v.query(x, client="a")
    v.query(x[:2], client="a")  # cache hits: same raw images, same model inputs
    torch.testing.assert_close(seen[0], by_hand(x, (4, 4)), rtol=0, atol=1e-6)
    assert seen[0].shape == (4, 3, 4, 4)
    assert (v.queries_used, v.forward_passes, v.cache_hits, v.remaining, v.bills) == (6, 4, 2, 14, {"a": 6})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"std": 0.0}, ValueError, "std"),
        ({"std": (0.2, -0.1, 0.3)}, ValueError, "std"),
        ({"std": 1e-50}, ValueError, "std"),
        ({"mean": float("nan")}, ValueError, "mean"),
        ({"mean": (0.1, 0.2)}, ValueError, "mean"),  # 2 entries for a 3-channel model (checked by the victim)
        ({"mean": (0.1, 0.2, 0.3), "std": (1.0, 2.0)}, ValueError, "entries"),
        ({"mean": ()}, ValueError, "mean"),
        ({"mean": "0.5"}, TypeError, "mean"),
        ({"mean": np.ma.array([0.5, np.nan, 0.5], mask=[False, True, False])}, TypeError, "masked"),
        ({"size": 0}, ValueError, "size"),
        ({"size": (4, 4, 4)}, ValueError, "size"),
        ({"size": (4.0, 4)}, TypeError, "size"),
        ({"size": "big"}, ValueError, "size"),
        ({"size": 4, "mode": "lanczos"}, ValueError, "mode"),
        ({"size": 4, "mode": "nearest-exact"}, ValueError, "antialias"),
        ({"size": 4, "antialias": "yes"}, TypeError, "antialias"),
        ({"mode": "bicubic"}, ValueError, "size"),  # a resize mode without a size means nothing
    ],
)
def test_bad_preprocess_arguments(linear_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        OnnxVictim(linear_path, preprocess=Preprocess(**kwargs))


def test_resize_to_model_size_needs_a_fixed_size_model(tmp_path):
    with pytest.raises(ValueError, match="size='model'"):
        OnnxVictim(pooled_encoder(tmp_path / "pool.onnx"), preprocess=Preprocess(size="model"))


def test_preprocess_must_be_a_preprocess(linear_path):
    with pytest.raises(TypeError, match="Preprocess"):
        OnnxVictim(linear_path, preprocess={"mean": 0.5})  # type: ignore[arg-type]


def test_preprocessing_that_overflows_is_refused(linear_path):
    v = OnnxVictim(linear_path, budget=5, preprocess=Preprocess(mean=0.0, std=1e-38))
    with pytest.raises(ValueError, match="non-finite"):
        v.query(torch.full((1, 3, 4, 4), 1e3))
    assert v.queries_used == 0
