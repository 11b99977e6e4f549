"""steal() refuses, before anything is billed, what cannot work: a budget the victim cannot pay, one-row contrastive batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslsteal_fast.attacks import InfoNCELoss, LocalVictim, MSELoss, StealConfig, query_victim, steal
from sslsteal_fast.victim import OnnxVictim
from sslsteal_fast.victim.protocol import remaining_budget
from tests.helpers import calibrated_encoder, linear_onnx, uint8_images


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served encoder of (N, 3, 4, 4) images -> (N, 16)."""
    return linear_onnx(tmp_path_factory.mktemp("refusals") / "victim.onnx", dim=16)


def _victim(path: Path, budget: int | None) -> OnnxVictim:
    return OnnxVictim(path, budget=budget, providers=["CPUExecutionProvider"], intra_op_threads=1)


def _cfg(**kw) -> StealConfig:
    base = dict(loss="mse", epochs=1, batch_size=64, augment=False)
    base.update(kw)
    return StealConfig(**base)


def _queries(n: int) -> torch.Tensor:
    return uint8_images(n, size=4)


def test_budget_above_the_victims_remaining_is_refused_before_billing(onnx_path: Path) -> None:
    victim = _victim(onnx_path, budget=300)
    with pytest.raises(ValueError, match="needs 400 queries .* budget has 300 left; nothing was billed"):
        steal(victim, _queries(400), _cfg(budget=400), progress=False)
    assert victim.queries_used == 0 and victim.remaining == 300
    result = steal(victim, _queries(400), _cfg(budget=300), progress=False)  # exactly what is left
    assert result.billed_queries == 300 and victim.remaining == 0


def test_augmented_steal_needs_budget_times_epochs(onnx_path: Path) -> None:
    victim = _victim(onnx_path, budget=300)
    with pytest.raises(
        ValueError, match="needs 400 queries \\(200 images x 2 epochs .* lower the budget or the epochs"
    ):
        steal(victim, _queries(200), _cfg(budget=200, epochs=2, strategy="augmented"), progress=False)
    assert victim.queries_used == 0
    result = steal(victim, _queries(200), _cfg(budget=150, epochs=2, strategy="augmented"), progress=False)
    assert result.billed_queries == 300 and victim.remaining == 0


def test_the_budget_counts_what_others_already_spent(onnx_path: Path) -> None:
    victim = _victim(onnx_path, budget=300)
    query_victim(victim, _queries(250), client="honest")
    with pytest.raises(ValueError, match="has 50 left"):
        steal(victim, _queries(100), _cfg(budget=100), progress=False)
    assert victim.queries_used == 250


def test_reused_answers_need_no_budget(onnx_path: Path) -> None:
    answers = query_victim(_victim(onnx_path, budget=None), _queries(100))
    victim = _victim(onnx_path, budget=0)
    result = steal(victim, _queries(100), _cfg(budget=100), targets=answers, progress=False)
    assert result.billed_queries == 0 and result.answers_used == 100


def test_remaining_budget_of_any_victim(onnx_path: Path) -> None:
    assert remaining_budget(_victim(onnx_path, budget=None)) is None
    assert remaining_budget(_victim(onnx_path, budget=7)) == 7
    assert remaining_budget(LocalVictim(calibrated_encoder(0))) is None  # no budget attribute: unlimited

    class Odd:
        remaining = "lots"

    with pytest.raises(TypeError, match="victim.remaining must be an int or None"):
        remaining_budget(Odd())


@pytest.fixture(scope="module")
def local_victim_encoder() -> torch.nn.Module:
    return calibrated_encoder(7)


@pytest.mark.parametrize("loss", ["info_nce", "soft_nn"])
def test_contrastive_loss_with_a_batch_of_one_is_refused(local_victim_encoder: torch.nn.Module, loss: str) -> None:
    # 16x16 images: a one-row batch trains without any error (and without negatives) unless refused.
    victim = LocalVictim(local_victim_encoder)
    images = uint8_images(40, size=16)
    with pytest.raises(ValueError, match=f"the {loss} loss needs at least 2 rows per batch .* got batch_size 1"):
        steal(victim, images, _cfg(loss=loss, budget=40, batch_size=1), progress=False)
    with pytest.raises(ValueError, match="got budget 1 \\(the largest batch\\)"):
        steal(victim, images, _cfg(loss=loss, budget=1, batch_size=256), progress=False)
    assert victim.queries_used == 0


class _RecordingInfoNCE(InfoNCELoss):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.rows.append(int(stolen.shape[0]))
        return super().forward(stolen, target)


def test_contrastive_batches_never_hold_a_single_row(onnx_path: Path) -> None:
    loss = _RecordingInfoNCE()
    result = steal(
        _victim(onnx_path, None), _queries(5), _cfg(loss="info_nce", budget=5, batch_size=2, epochs=3), loss=loss
    )
    training = loss.rows[1:]  # after the check before billing
    assert min(training) >= 2 and sum(training) == 5 * 3
    assert result.config["loss"] == "info_nce"


def test_a_loss_declares_the_rows_it_needs(onnx_path: Path) -> None:
    class Needs4(MSELoss):
        min_batch = 4

    victim = _victim(onnx_path, None)
    with pytest.raises(ValueError, match="needs at least 4 rows per batch"):
        steal(victim, _queries(40), _cfg(budget=40, batch_size=3), loss=Needs4(), progress=False)

    class Broken(MSELoss):
        min_batch = 0

    with pytest.raises(ValueError, match="min_batch must be an int >= 1"):
        steal(victim, _queries(40), _cfg(budget=40), loss=Broken(), progress=False)
    assert victim.queries_used == 0
