"""steal() with the researcher's own thief (any architecture, a measured linear head) and own loss callable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslsteal_fast.attacks import InfoNCELoss, LocalVictim, MSELoss, StealConfig, StolenEncoder, steal
from sslsteal_fast.models import build_encoder
from tests.helpers import ConvThief, calibrated_encoder, uint8_images

SIZE = 16


def _victim() -> LocalVictim:
    return LocalVictim(calibrated_encoder(123, size=SIZE))  # answers in 256-d


def _cfg(**kw) -> StealConfig:
    base = dict(loss="mse", budget=32, epochs=3, batch_size=8, augment=False)
    base.update(kw)
    return StealConfig(**base)


def test_thief_of_another_dimension_gets_a_trained_linear_head() -> None:
    thief = ConvThief(24, claimed=999)
    result = steal(_victim(), uint8_images(32, size=SIZE), _cfg(), thief=thief, progress=False)
    assert isinstance(result.stolen, StolenEncoder) and result.encoder is thief and result.stolen.encoder is thief
    assert isinstance(result.head, nn.Linear) and (result.head.in_features, result.head.out_features) == (24, 256)
    assert result.stolen.backbone_dim == 24 and result.stolen.rep_dim == 256
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert result.stolen(x).shape == (2, 256)  # with the head: the victim's space
        assert result.encoder(x).shape == (2, 24)  # without: the thief's own
    # Both the thief (trained in place) and the head were trained.
    assert result.head.weight.grad is not None and thief.conv.weight.grad is not None
    assert result.history[-1] < result.history[0]
    assert result.config["arch"] == "ConvThief" and not thief.training


def test_thief_of_the_victims_dimension_has_no_head() -> None:
    thief = ConvThief(256)
    result = steal(_victim(), uint8_images(32, size=SIZE), _cfg(epochs=1), thief=thief, progress=False)
    assert result.head is None and result.encoder is thief


def test_built_in_thief_for_a_wider_victim() -> None:
    """The paper's setting: a thief narrower than the victim (here 256-d small encoder -> 512-d answers)."""
    wide = nn.Sequential(calibrated_encoder(5, size=SIZE), nn.Linear(256, 512))
    victim = LocalVictim(wide, input_shape=(3, None, None))
    thief = build_encoder("small")
    result = steal(victim, uint8_images(32, size=SIZE), _cfg(epochs=1), thief=thief, progress=False)
    assert result.head is not None and (result.head.in_features, result.head.out_features) == (256, 512)
    assert result.config["arch"] == "small" and victim.queries_used == 32


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = ConvThief(8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.enc(x)
        return rep, rep


class _FeatureMap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "thief, match",
    [
        (_TwoOutputs(), "one float \\(B, D\\) tensor; on one query image it returned tuple"),
        (_FeatureMap(), "returned torch.float32 \\(1, 4, 16, 16\\)"),
        (nn.Conv2d(1, 4, 3), "the thief failed on one query image of shape \\(1, 3, 16, 16\\)"),
        ("resnet18", "thief must be an nn.Module"),
    ],
)
def test_bad_thieves_are_refused_before_billing(thief: object, match: str) -> None:
    victim = _victim()
    with pytest.raises(ValueError, match=match):
        steal(victim, uint8_images(32, size=SIZE), _cfg(), thief=thief, progress=False)
    assert victim.queries_used == 0


def test_loss_callable_trains_and_is_named() -> None:
    calls: list[int] = []

    def l1(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(stolen.shape[0])
        return (stolen - target).abs().mean()

    result = steal(_victim(), uint8_images(32, size=SIZE), _cfg(), loss=l1, progress=False)
    assert result.history[-1] < result.history[0]
    assert result.config["loss"].startswith("custom:") and result.config["loss"].endswith("l1")
    assert result.config["temperature"] is None
    assert len(calls) == 1 + 3 * 4  # the check before billing, then 3 epochs of 4 batches
    assert result.billed_queries == 32


def test_loss_modules_as_callables_match_the_named_losses() -> None:
    images = uint8_images(32, size=SIZE)
    named = steal(_victim(), images, _cfg(), progress=False)
    given = steal(_victim(), images, _cfg(), loss=MSELoss(), progress=False)
    assert given.history == named.history and given.config["loss"] == "mse"
    cfg = _cfg(loss="info_nce", lr=3e-4)
    named = steal(_victim(), images, StealConfig(**{**vars(cfg), "temperature": 0.5}), progress=False)
    given = steal(_victim(), images, cfg, loss=InfoNCELoss(0.5), progress=False)
    assert given.history == named.history
    assert (given.config["loss"], given.config["temperature"]) == ("info_nce", 0.5)


@pytest.mark.parametrize(
    "loss, match",
    [
        ("mse", "loss must be a callable"),
        (lambda s, t: 0.5, "floating-point scalar tensor, got float"),
        (lambda s, t: (s > t).sum(), "floating-point scalar tensor, got a torch.int64 tensor"),
        (lambda s, t: ((s - t) ** 2).mean(dim=1), "scalar \\(0-dim\\) tensor, got shape \\(2,\\)"),
        (lambda s, t: ((s - t) ** 2).mean().detach(), "without grad"),
        (lambda s, t: s.sum() * float("nan"), "returned nan .* it must be finite"),
        (lambda s, t: s @ t, "failed on a \\(2, 256\\) pair"),
    ],
)
def test_bad_loss_callables_are_refused_before_billing(loss: object, match: str) -> None:
    victim = _victim()
    with pytest.raises(ValueError, match=match):
        steal(victim, uint8_images(32, size=SIZE), _cfg(), loss=loss, progress=False)
    assert victim.queries_used == 0


def test_temperature_is_for_named_losses_only() -> None:
    victim = _victim()
    with pytest.raises(ValueError, match="temperature applies to the named losses only"):
        steal(victim, uint8_images(32, size=SIZE), _cfg(loss="info_nce", temperature=0.1), loss=MSELoss())
    assert victim.queries_used == 0


def test_loss_that_diverges_in_training_still_stops() -> None:
    calls = [0]

    def flaky(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        value = F.mse_loss(stolen, target)
        return value * float("inf") if calls[0] > 3 else value

    with pytest.raises(FloatingPointError, match="loss became inf in epoch 1"):
        steal(_victim(), uint8_images(32, size=SIZE), _cfg(), loss=flaky, progress=False)


class _DivergingThief(nn.Module):
    """A thief whose output gets one NaN row (a diverged activation) from its ``after``-th forward on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = ConvThief(256), after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.inner(x)
        if self.calls >= self.after:
            out = out.clone()
            out[0, 0] = float("nan")
        return out


@pytest.mark.parametrize("loss", ["info_nce", "soft_nn", "mse"])
def test_a_diverging_thief_is_caught_by_the_named_losses(loss: str) -> None:
    # The contrastive losses run the native ops; a NaN in one row must reach the loss, not vanish into it.
    with pytest.raises(FloatingPointError, match=f"the {loss} loss became nan"):
        steal(_victim(), uint8_images(32, size=SIZE), _cfg(loss=loss), thief=_DivergingThief(after=4), progress=False)


def test_a_thief_does_not_start_from_the_weights_of_a_victim_with_the_same_seed() -> None:
    """Victim and thief both seeded 0, same architecture: the thief must not inherit the victim's init.

    A victim initialised under ``torch.manual_seed(0)`` (as train_victim does for seed 0); a thief
    trained for one step at a negligible learning rate keeps its initial weights, which must differ.
    """
    torch.manual_seed(0)
    victim_init = build_encoder("small")
    result = steal(
        LocalVictim(calibrated_encoder(7, size=SIZE)),
        uint8_images(8, size=SIZE),
        _cfg(budget=8, epochs=1, batch_size=8, lr=1e-12, seed=0),
        progress=False,
    )
    thief = result.encoder.state_dict()
    conv = "features.0.0.weight"
    assert not torch.allclose(thief[conv], victim_init.state_dict()[conv])
    # ...and the thief's start is still a pure function of its seed.
    again = steal(
        LocalVictim(calibrated_encoder(7, size=SIZE)),
        uint8_images(8, size=SIZE),
        _cfg(budget=8, epochs=1, batch_size=8, lr=1e-12, seed=0),
        progress=False,
    )
    assert torch.equal(again.encoder.state_dict()[conv], thief[conv])
