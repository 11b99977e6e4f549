"""The later attacks through steal(): exact billing (views billed, caches honoured, budgets all-or-nothing),
what each trains on, and the configurations they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslsteal_fast.attacks import (
    ATTACKS,
    LabelVictim,
    LinearHead,
    LocalVictim,
    StealConfig,
    make_attack,
    query_victim,
    steal,
)
from sslsteal_fast.attacks.views import seeded_views, view_augment
from sslsteal_fast.config import ATTACK_SPECS
from sslsteal_fast.victim import OnnxVictim
from tests.helpers import calibrated_encoder, linear_onnx, uint8_images

SIZE = 4


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served encoder of (N, 3, 4, 4) images -> (N, 16)."""
    return linear_onnx(tmp_path_factory.mktemp("attacks") / "victim.onnx", dim=16)


def _served(path: Path, budget: int | None = None) -> OnnxVictim:
    return OnnxVictim(path, budget=budget, providers=["CPUExecutionProvider"], intra_op_threads=1)


def _cfg(attack: str, **kw) -> StealConfig:
    base = dict(attack=attack, loss="mse", budget=12, epochs=2, batch_size=4, augment=False)
    if ATTACK_SPECS[attack].loss is not None:
        base.pop("loss")
    base.update(kw)
    return StealConfig(**base)


def _queries(n: int = 20) -> torch.Tensor:
    return uint8_images(n, size=SIZE)


def _head(dim: int = 16, classes: int = 3, seed: int = 0) -> LinearHead:
    g = torch.Generator().manual_seed(seed)
    return LinearHead(torch.zeros(dim), torch.ones(dim), torch.randn(classes, dim, generator=g), torch.zeros(classes))


def _victim_for(attack: str, path: Path, budget: int | None = None):
    victim = _served(path, budget)
    return LabelVictim(victim, _head()) if attack == "label_only" else victim


#: What each attack bills for _cfg(attack): budget 12 (prototype: x views 3), nothing per epoch.
BILLS = {"direct": 12, "prototype": 36, "consistency": 12, "cont_steal": 12, "label_only": 12}


def test_every_attack_has_a_bill() -> None:
    assert set(BILLS) == set(ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS)
def test_billing_is_exact_and_measured(attack: str, onnx_path: Path) -> None:
    victim = _victim_for(attack, onnx_path)
    result = steal(victim, _queries(), _cfg(attack, views=3), progress=False)
    assert result.billed_queries == victim.queries_used == BILLS[attack]
    assert result.victim_forward_passes == victim.forward_passes == BILLS[attack]
    assert result.answers_used == BILLS[attack]
    assert result.config["attack"] == attack and result.provenance()["attack"] == attack
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(result.history)))


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_budget_that_cannot_pay_is_refused_before_anything_is_billed(attack: str, onnx_path: Path) -> None:
    victim = _victim_for(attack, onnx_path, budget=BILLS[attack] - 1)
    with pytest.raises(ValueError, match=f"needs {BILLS[attack]} queries .* nothing was billed"):
        steal(victim, _queries(), _cfg(attack, views=3), progress=False)
    assert victim.queries_used == 0 and victim.forward_passes == 0
    victim = _victim_for(attack, onnx_path, budget=BILLS[attack])  # exactly what it needs
    assert steal(victim, _queries(), _cfg(attack, views=3), progress=False).billed_queries == BILLS[attack]


def test_prototype_views_are_billed_and_the_response_cache_answers_a_repeat(onnx_path: Path) -> None:
    victim = _served(onnx_path)
    first = steal(victim, _queries(), _cfg("prototype", views=3, seed=0), progress=False)
    # Another thief seed sends the very same views (they belong to the images): billed again, not run.
    second = steal(victim, _queries(), _cfg("prototype", views=3, seed=1), progress=False)
    assert first.billed_queries == second.billed_queries == 36
    assert first.victim_forward_passes == 36 and second.victim_forward_passes == 0
    assert victim.cache_hits == 36


def test_prototypes_are_the_mean_answer_over_the_seeded_views(onnx_path: Path) -> None:
    victim = LocalVictim(calibrated_encoder(3, size=SIZE), input_shape=(3, SIZE, SIZE))
    images = _queries(6)
    cfg = _cfg("prototype", budget=6, views=4, epochs=1).resolved()
    sent = seeded_views(view_augment(cfg, SIZE), images.float() / 255, torch.arange(6), 4)
    want = victim.query(sent).reshape(6, 4, -1).mean(1)
    seen: list[torch.Tensor] = []

    def spy(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(target)
        return ((stolen - target) ** 2).mean()

    steal(victim, images, cfg, loss=spy, progress=False)
    got = torch.cat(seen[1:])  # the first call is the dry check on the thief's own outputs
    assert got.shape == (6, victim.output_dim)
    assert any(torch.allclose(got[i], want[j], atol=1e-5) for i in range(6) for j in range(6))
    torch.testing.assert_close(got.sort(0).values, want.sort(0).values, atol=1e-5, rtol=1e-5)


def test_seeded_views_depend_on_the_row_alone() -> None:
    augment = view_augment(StealConfig(), 8)
    images = torch.rand(3, 3, 8, 8)
    a = seeded_views(augment, images, torch.tensor([5, 6, 7]), 2)
    torch.manual_seed(123)  # the global stream does not matter, nor does the batch an image is in
    b = torch.cat([seeded_views(augment, images[i : i + 1], torch.tensor([5 + i]), 2) for i in range(3)])
    torch.testing.assert_close(a, b)
    assert not torch.allclose(seeded_views(augment, images[:1], torch.tensor([0]), 2), a[:2])
    assert not torch.allclose(a[0], a[1])  # an image's views differ from one another


def test_consistency_trains_the_clean_image_and_a_view_against_one_answer() -> None:
    victim = LocalVictim(calibrated_encoder(4, size=SIZE), input_shape=(3, SIZE, SIZE))
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append((stolen.detach(), target))
        return ((stolen - target) ** 2).mean()

    cfg = _cfg("consistency", budget=8, batch_size=8, epochs=1, consistency_weight=0.5)
    result = steal(victim, _queries(8), cfg, loss=spy, progress=False)
    assert result.billed_queries == 8  # each clean image once; the views are local
    clean, view = calls[1], calls[2]
    assert torch.equal(clean[1], view[1])  # both terms pulled to the same victim answer
    assert not torch.allclose(clean[0], view[0])  # ... from different inputs


def test_cont_steal_memory_holds_other_images_only() -> None:
    victim = LocalVictim(calibrated_encoder(5, size=SIZE), input_shape=(3, SIZE, SIZE))
    attack = make_attack("cont_steal")
    cfg = _cfg("cont_steal", budget=12, batch_size=4, memory=6, epochs=2)
    result = steal(victim, _queries(), cfg, progress=False)
    assert result.billed_queries == 12
    # Replay the attack's memory rule on index batches: never a batch's own row, at most `memory` rows.
    from sslsteal_fast.attacks.base import Run  # the attack's per-run state, driven by hand

    run = Run(victim, None, cfg.resolved(), None, None, None, None, torch.device("cpu"), 16, False)  # type: ignore[arg-type]
    run.targets = torch.randn(12, 16)
    seen = []
    run.stolen = lambda x: x  # type: ignore[assignment]
    run.loss_fn = lambda s, t, m: seen.append(m) or s.sum() * 0  # type: ignore[assignment]
    for batch in torch.arange(12).repeat(2).split(4):
        attack.batch_loss(run, batch, run.targets[batch])
        assert run.state["memory"].numel() <= 6
    assert seen[0].shape[0] == 0 and all(m.shape[0] <= 6 for m in seen)
    # In the second epoch, rows 0-3 come back: the memory (rows 6-11) has none of them as negatives.
    torch.testing.assert_close(seen[3], run.targets[6:12])


def test_label_only_sees_labels_and_bills_per_query(onnx_path: Path) -> None:
    served = _served(onnx_path)
    api = LabelVictim(served, _head(classes=4))
    labels = api.query(_queries(5))
    assert labels.dtype == torch.int64 and labels.shape == (5,) and served.queries_used == 5
    assert torch.equal(labels, _head(classes=4).predict(query_victim(_served(onnx_path), _queries(5))))
    result = steal(api, _queries(), _cfg("label_only"), progress=False)
    assert result.billed_queries == 12 and served.queries_used == 17
    assert result.head is None and result.stolen.rep_dim == result.encoder.rep_dim  # the thief's own space
    assert result.modules["classifier"].out_features == 4
    assert result.config["loss"] == "cross_entropy"


def test_label_only_needs_a_label_api_and_labels(onnx_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a victim that answers labels"):
        steal(_served(onnx_path), _queries(), _cfg("label_only"), progress=False)
    api = LabelVictim(_served(onnx_path), _head())
    with pytest.raises(ValueError, match="int64"):
        steal(api, _queries(), _cfg("label_only"), targets=torch.zeros(12, 16), progress=False)
    assert api.queries_used == 0


@pytest.mark.parametrize(
    "cfg, match",
    [
        (StealConfig(attack="rda"), "unknown attack 'rda'"),
        (StealConfig(attack="prototype", views=0), "StealConfig.views must be an int >= 1"),
        (StealConfig(attack="cont_steal", memory=-1), "StealConfig.memory must be an int >= 0"),
        (StealConfig(attack="label_only", loss="mse"), "label_only attack always trains with cross_entropy"),
        (StealConfig(attack="prototype", strategy="augmented"), "prototype attack supports query-once"),
        (StealConfig(arch="resnet9"), "unknown architecture 'resnet9'"),
        (StealConfig(crop_min_scale=0.0), r"StealConfig.crop_min_scale must be in \(0, 1\]"),
    ],
)
def test_bad_configurations_are_refused(cfg: StealConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cfg.resolved()


@pytest.mark.parametrize("attack", ["cont_steal", "label_only"])
def test_attacks_with_their_own_loss_refuse_a_loss_callable(attack: str, onnx_path: Path) -> None:
    victim = _victim_for(attack, onnx_path)
    with pytest.raises(ValueError, match=f"the {attack} attack trains with its own loss"):
        steal(victim, _queries(), _cfg(attack), loss=lambda s, t: (s - t).pow(2).mean(), progress=False)
    assert victim.queries_used == 0


def test_identity_keeps_attack_fields_to_their_attack() -> None:
    direct = StealConfig().identity()
    assert not {"attack", "views", "memory", "consistency_weight"} & set(direct)
    assert StealConfig(attack="prototype").identity()["views"] == 4
    assert "memory" not in StealConfig(attack="prototype").identity()
    assert StealConfig(attack="cont_steal", memory=8).identity()["memory"] == 8
    assert "crop_min_scale" not in direct and StealConfig(crop_min_scale=1.0).identity()["crop_min_scale"] == 1.0
