"""The significance level of every ownership test is checked: alpha must lie in (0, 1)."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.ownership import Verdict, WatermarkHead, dataset_inference, verify_watermark
from sslsteal_fast.ownership.verdict import check_alpha, decide
from tests.helpers import TinyEncoder

BAD = [7, 1, 1.0, 0, 0.0, -0.5, float("nan"), float("inf")]


@pytest.mark.parametrize("alpha", BAD)
def test_decide_and_verdict_refuse_alpha_outside_0_1(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be a finite number in \(0, 1\)"):
        decide(0.5, alpha)
    with pytest.raises(ValueError, match="alpha"):
        Verdict(p_value=0.5, verdict="independent", alpha=alpha)


def test_alpha_type_and_good_values() -> None:
    with pytest.raises(TypeError):
        check_alpha("alpha", "0.01")
    with pytest.raises(TypeError):
        check_alpha("alpha", True)
    assert check_alpha("alpha", 0.05) == 0.05
    assert decide(0.001, 0.01) == "stolen" and decide(0.5, 0.01) == "independent"


@pytest.mark.parametrize("alpha", [7, 0.0])
def test_ownership_tests_refuse_alpha_before_computing(alpha: float) -> None:
    encoder = TinyEncoder().eval()
    images = torch.rand(8, 3, 8, 8)
    with pytest.raises(ValueError, match="verify_watermark: alpha"):
        verify_watermark(WatermarkHead(16, 4), encoder, images, alpha=alpha)
    with pytest.raises(ValueError, match="dataset_inference: alpha"):
        dataset_inference(encoder, images, images, images, n_components=1, alpha=alpha)
