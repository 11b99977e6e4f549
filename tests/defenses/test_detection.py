"""Similarity detection: flags augmented repeats not distinct queries, metrics, bank growth, restart, serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslsteal_fast.defenses import GrowingBank, SimilarityDetector, detection_metrics
from sslsteal_fast.testing import F32_ATOL
from sslsteal_fast.victim import OnnxVictim
from tests.helpers import images_for, linear_onnx, toy_stream

KEY = b"d" * 32


def _inputs(n: int) -> torch.Tensor:
    return torch.zeros(n, 1, 1, 1)


def test_detector_flags_repeats_not_distinct_queries():
    vectors, truth = toy_stream(300, 100)
    det = SimilarityDetector(threshold=0.6, policy="monitor", key=KEY)
    for chunk in torch.split(torch.arange(len(vectors)), 37):  # batch boundaries must not matter
        det(vectors[chunk], _inputs(len(chunk)), "thief")
    scores, flags = det.history("thief")
    assert flags[truth.numpy()].all()
    assert not flags[~truth.numpy()].any()
    m = detection_metrics(scores, flags, truth.numpy())
    assert m.precision == m.recall == m.f1 == m.roc_auc == 1.0
    # the same stream in one batch gives the same scores (no dependence on batching)
    one = SimilarityDetector(threshold=0.6, policy="monitor", key=KEY)
    one(vectors, _inputs(len(vectors)), "thief")
    assert np.allclose(one.history("thief")[0], scores, atol=F32_ATOL)


def test_clients_have_separate_banks_and_policies_replace_answers():
    v = torch.randn(4, 256)
    for policy in ("junk", "noise", "refuse"):
        det = SimilarityDetector(threshold=0.6, policy=policy, junk_mean=1000.0, key=KEY)
        det(v, _inputs(4), "a")
        again = det(v.clone(), _inputs(4), "a")  # exact repeats: flagged
        fresh = det(v.clone(), _inputs(4), "b")  # another client's first sight: not flagged
        assert torch.equal(fresh, v)
        assert det.history("a")[1][4:].all() and not det.history("b")[1].any()
        if policy == "junk":
            assert (again - 1000.0).abs().max() < 10
        elif policy == "refuse":
            assert torch.equal(again, torch.zeros_like(v))
        else:
            assert not torch.allclose(again, v)
    assert det.bills == {"a": 8, "b": 4}


def test_roc_auc_is_computed_right():
    rng = np.random.default_rng(0)
    scores = rng.random(60)
    truth = rng.random(60) < 0.4
    pos, neg = scores[truth], scores[~truth]
    mann_whitney = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    m = detection_metrics(scores, scores > 0.5, truth)
    assert m.roc_auc == pytest.approx(mann_whitney)
    tp = int(((scores > 0.5) & truth).sum())
    assert m.precision == pytest.approx(tp / (scores > 0.5).sum())
    assert m.recall == pytest.approx(tp / truth.sum())
    assert np.isnan(detection_metrics(scores, scores > 2, np.zeros(60, bool)).roc_auc)


def test_growing_bank_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(1)
    bank = GrowingBank(6, chunk_rows=1500)
    rows = torch.randn(3700, 6, generator=g)
    for part in torch.split(rows, 700):
        bank.append(part)
    assert len(bank) == 3700 and len(bank.views()) >= 3 and all(v.shape[0] <= 1500 for v in bank.views())
    q = torch.randn(9, 6, generator=g)
    expected = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(rows, dim=1).T
    assert torch.allclose(bank.max_cosine(q), expected.max(1).values, atol=F32_ATOL)
    assert torch.equal(GrowingBank(6).max_cosine(q), torch.full((9,), -1.0))


def test_detector_state_survives_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    v = torch.randn(5, 256)
    det = SimilarityDetector(threshold=0.6, policy="monitor", state=str(path))
    det(v, _inputs(5), "c")
    det.state.close()
    again = SimilarityDetector(threshold=0.6, policy="monitor", state=str(path))
    assert again.bank_size("c") == 5 and again.bills == {"c": 5}
    again(v[:2].clone(), _inputs(2), "c")
    scores, flags = again.history("c")
    assert len(scores) == 7 and flags[5:].all() and not flags[:5].any()


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 1.5}, {"policy": "shrug"}, {"feature": "both"}, {"junk_sigma": -1.0}, {"chunk_rows": 0}],
)
def test_bad_detector_params_raise(kwargs):
    with pytest.raises(ValueError):
        SimilarityDetector(**kwargs)


def test_served_through_onnx_victim(tmp_path):
    onnx_path = linear_onnx(tmp_path / "lin.onnx")
    det = SimilarityDetector(threshold=0.95, policy="refuse", feature="input", center=torch.full((48,), 0.5))
    victim = OnnxVictim(onnx_path, defenses=[det])
    x = images_for(20)
    first = victim.query(x, client="u")
    assert torch.count_nonzero(first.abs().sum(1)) == 20
    second = victim.query(x[:5], client="u")  # cache hits still pass the defense
    assert torch.equal(second, torch.zeros(5, 16))
    assert det.bills == {"u": 25} and victim.billed("u") == 25
