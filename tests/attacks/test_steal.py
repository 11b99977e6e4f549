"""steal(): exact billing for both strategies, learning on a toy victim, reproducibility, errors."""

from __future__ import annotations

import pytest
import torch

from sslsteal_fast.attacks import LocalVictim, StealConfig, StolenEncoder, query_victim, steal
from sslsteal_fast.models import build_encoder
from sslsteal_fast.probes import extract_features, fidelity
from tests.helpers import calibrated_encoder, uint8_images

SIZE = 16  # small images keep every steal here well under a second per epoch on one core


@pytest.fixture(autouse=True)
def _one_thread_and_rng():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)
    torch.set_num_threads(threads)


def _images(n: int, seed: int = 0, channels: int = 3, size: int = SIZE) -> torch.Tensor:
    return uint8_images(n, seed=seed, channels=channels, size=size)


def _calibrated(seed: int, arch: str = "small") -> torch.nn.Module:
    return calibrated_encoder(seed, arch, size=SIZE)


def _victim(seed: int = 123, arch: str = "small") -> LocalVictim:
    return LocalVictim(_calibrated(seed, arch))


def _tiny(**kw) -> StealConfig:
    base = dict(loss="mse", budget=24, epochs=2, batch_size=8)
    base.update(kw)
    return StealConfig(**base)


def test_query_once_bills_exactly_the_budget() -> None:
    victim = _victim()
    result = steal(victim, _images(40), _tiny(epochs=3), progress=False)
    assert result.billed_queries == 24
    assert result.victim_forward_passes == 24
    assert result.answers_used == 24
    assert victim.queries_used == 24 and victim.forward_passes == 24
    assert len(result.history) == 3
    assert result.seed == 0 and result.config["budget"] == 24 and result.wall_time_s > 0


def test_augmented_bills_budget_times_epochs() -> None:
    victim = _victim()
    result = steal(victim, _images(40), _tiny(epochs=3, strategy="augmented"), progress=False)
    assert result.billed_queries == 24 * 3
    assert result.victim_forward_passes == 24 * 3
    assert result.answers_used == 24 * 3


def test_reused_targets_bill_nothing_and_use_the_prefix() -> None:
    victim = _victim()
    images = _images(40)
    cache = query_victim(victim, images[:30])  # the sweep's cache for its largest budget
    assert victim.queries_used == 30
    result = steal(victim, images, _tiny(), targets=cache, progress=False)
    assert result.billed_queries == 0 and result.victim_forward_passes == 0
    assert result.answers_used == 24
    assert victim.queries_used == 30


def test_same_seed_same_run_and_caller_rng_untouched() -> None:
    victim = _victim()
    images = _images(40)
    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    a = steal(victim, images, _tiny(seed=5), progress=False)
    after = torch.rand(3)
    b = steal(victim, images, _tiny(seed=5), progress=False)
    c = steal(victim, images, _tiny(seed=6), progress=False)
    torch.testing.assert_close(before, after)  # steal() forks the global RNG
    assert a.history == b.history
    assert a.history != c.history


def test_steal_reduces_loss_and_raises_fidelity() -> None:
    victim = _victim()
    queries, held_out = _images(128, seed=1), _images(64, seed=2)
    # 48 optimiser steps: enough for BatchNorm's running statistics (used in eval mode) to catch up.
    cfg = StealConfig(loss="mse", budget=128, epochs=6, batch_size=16, augment=False)
    result = steal(victim, queries, cfg, progress=False)
    assert result.history[-1] < 0.7 * result.history[0]
    victim_x = extract_features(victim.encoder, held_out)
    before = fidelity(extract_features(_calibrated(seed=0), held_out), victim_x)
    after = fidelity(extract_features(result.stolen, held_out), victim_x)
    assert after.cosine > before.cosine + 0.05
    assert after.l2 < before.l2
    assert not result.stolen.training


@pytest.mark.parametrize("loss", ["info_nce", "soft_nn", "wasserstein", "cosine"])
def test_every_loss_trains(loss: str) -> None:
    # No augmentation: crops of noise images look nothing like the noise the victim answered for.
    cfg = _tiny(loss=loss, budget=32, epochs=4, batch_size=16, lr=3e-4, augment=False)
    result = steal(_victim(), _images(32), cfg, progress=False)
    assert all(torch.isfinite(torch.tensor(result.history)))
    assert result.history[-1] < result.history[0]


def test_defaults_resolved_and_recorded() -> None:
    cfg = StealConfig(loss="info_nce").resolved()
    assert (cfg.batch_size, cfg.lr, cfg.temperature) == (256, 3e-4, 0.07)
    cfg = StealConfig(loss="mse").resolved()
    assert (cfg.batch_size, cfg.lr, cfg.temperature) == (64, 1e-3, None)
    cfg = StealConfig(loss="soft_nn").resolved()
    assert (cfg.batch_size, cfg.lr, cfg.temperature) == (256, 1e-3, 100.0)
    result = steal(_victim(), _images(24), _tiny(batch_size=None, epochs=1), progress=False)
    assert result.config["batch_size"] == 64 and result.config["lr"] == 1e-3


def test_output_layer_only_when_dimensions_differ() -> None:
    same = StolenEncoder(build_encoder("small"), 256)
    assert same.adapter is None and same.rep_dim == 256
    other = StolenEncoder(build_encoder("small"), 128)
    assert other.adapter is not None and other.rep_dim == 128 and other.backbone_dim == 256
    assert other(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 128)
    # A victim answering in 128-d (e.g. its projection head) is stolen into 128-d.
    head = torch.nn.Sequential(build_encoder("small"), torch.nn.Linear(256, 128))
    result = steal(LocalVictim(head, input_shape=(3, None, None)), _images(24), _tiny(epochs=1), progress=False)
    assert result.stolen.rep_dim == 128
    assert result.stolen(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 128)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loss="l2"), "unknown loss 'l2'"),
        (dict(strategy="twice"), "unknown strategy 'twice'"),
        (dict(arch="vit"), "unknown architecture 'vit'"),
        (dict(budget=0), "budget must be an int >= 1"),
        (dict(budget=41), "budget 41 exceeds the 40 available query images"),
        (dict(epochs=0), "epochs must be an int >= 1"),
        (dict(lr=-1.0), "lr must be a finite number > 0"),
        (dict(loss="mse", temperature=0.1), "has no temperature"),
    ],
)
def test_bad_config_says_what_to_fix(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        steal(_victim(), _images(40), _tiny(**kwargs), progress=False)


def test_bad_inputs_say_what_to_fix() -> None:
    victim = _victim()
    with pytest.raises(ValueError, match="targets have dimension 10 but the victim answers with 256"):
        steal(victim, _images(40), _tiny(), targets=torch.zeros(40, 10), progress=False)
    with pytest.raises(ValueError, match="targets must be a"):
        steal(victim, _images(40), _tiny(), targets=torch.zeros(10, 256), progress=False)
    with pytest.raises(ValueError, match="only be reused with strategy='query-once'"):
        steal(victim, _images(40), _tiny(strategy="augmented"), targets=torch.zeros(40, 256), progress=False)
    with pytest.raises(ValueError, match="takes 3-channel images but the queries have 1"):
        steal(victim, _images(40, channels=1), _tiny(), progress=False)
    fixed = LocalVictim(victim.encoder, input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="takes 32x32 images but the queries are 16x16"):
        steal(fixed, _images(40), _tiny(), progress=False)
    with pytest.raises(ValueError, match="uint8 or float in \\[0, 1\\], got a torch.int64 tensor"):
        steal(victim, _images(40).long(), _tiny(), progress=False)
    with pytest.raises(ValueError, match="float query images must be finite and in \\[0, 1\\]"):
        steal(victim, _images(40).float(), _tiny(), progress=False)  # 0-255 floats, not scaled
    assert victim.queries_used == 0  # nothing billed for rejected calls


class _LyingVictim(LocalVictim):
    """Advertises one dimension, answers with another."""

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor:
        return super().query(x, client)[:, :7]


def test_victim_answer_dimension_mismatch() -> None:
    liar = _LyingVictim(build_encoder("small"))
    with pytest.raises(ValueError, match="advertises output_dim 256 but answered"):
        steal(liar, _images(40), _tiny(), progress=False)


def test_local_victim_accounting_and_eval_mode() -> None:
    enc = build_encoder("small")
    enc.train()
    victim = LocalVictim(enc, batch_size=5)
    stats = enc.features[0][1].running_mean.clone()
    out = victim.query(_images(12))
    assert out.shape == (12, 256) and out.dtype == torch.float32
    assert victim.queries_used == victim.forward_passes == 12
    torch.testing.assert_close(enc.features[0][1].running_mean, stats)
    torch.testing.assert_close(victim.query(_images(12)), out)
    torch.testing.assert_close(victim.query(_images(12).float() / 255), out)
