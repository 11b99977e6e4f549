"""Sweep config validation: every mistake is a ValueError that names the offending key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sslsteal_fast.sweep import demo_config, load_config, parse_config


def base() -> dict[str, Any]:
    return {
        "name": "t",
        "datasets": {"q": {"spec": "shapes", "seed": 1, "count": 50}},
        "victim": {"onnx": "victim.onnx"},
        "probe": {"train": "shapes", "test": {"spec": "shapes", "split": "test"}},
        "grid": {"losses": ["mse"], "budgets": [20, 10], "query_datasets": ["q", "shapes-ood"]},
    }


def test_minimal_config_defaults(tmp_path: Path) -> None:
    cfg = parse_config(base(), base_dir=tmp_path)
    assert cfg.victim.onnx == tmp_path / "victim.onnx"
    assert cfg.grid.budgets == (10, 20)  # sorted
    assert cfg.grid.seeds == (0,)
    assert cfg.grid.defenses == ("none",)
    assert cfg.grid.size == 1 * 2 * 2
    q, ood = cfg.grid.query_datasets
    assert (q.name, q.spec, q.options) == ("q", "shapes", {"seed": 1, "count": 50})
    assert (ood.name, ood.spec, ood.split) == ("shapes-ood", "shapes-ood", "train")
    assert cfg.probe.test.split == "test"
    assert cfg.steal.strategy == "query-once"
    assert cfg.run.workers == 1
    assert cfg.with_workers(3).run.workers == 3


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("typo", 1, "typo: unknown key"),
        ("grid", _DELETE, "missing table [grid]"),
        ("grid.losses", ["mse", "l2"], "unknown grid.losses[1] 'l2'"),
        ("grid.losses", [], "grid.losses: expected a non-empty list"),
        ("grid.losses", ["mse", "mse"], "grid.losses: contains duplicates"),
        ("grid.budgets", [10, 0], "grid.budgets[1] must be an int >= 1"),
        ("grid.budgets", [10, 2.5], "grid.budgets[1] must be an int >= 1, got 2.5"),
        ("grid.budgets", _DELETE, "grid.budgets: required"),
        ("grid.seeds", [-1], "grid.seeds[0] must be an int >= 0"),
        ("grid.defenses", ["bogus"], "grid.defenses[0]: unknown defense 'bogus'"),
        ("grid.defenses", ["none", "noise:sigma=-1"], "grid.defenses[1]: "),
        ("grid.query_datasets", [3], "grid.query_datasets[0]: expected a dataset name"),
        ("grid.extra", 1, "grid.extra: unknown key"),
        ("datasets.q", {"count": 5}, "datasets.q.spec: required"),
        ("datasets.q.slice", [5, 2], "datasets.q.slice: expected [start, stop]"),
        ("datasets.q.split", 3, "datasets.q.split: expected a split name"),
        ("victim", {}, "victim: give exactly one of"),
        ("victim.checkpoint", "ckpt", "victim: give exactly one of"),
        ("victim.batch_size", 0, "victim.batch_size must be an int >= 1"),
        ("victim.train_size", "many", "victim.train_size must be an int >= 1, got 'many'"),
        ("probe.train", _DELETE, "probe.train: required"),
        ("probe.epochs", 0, "probe.epochs must be an int >= 1"),
        ("probe.knn_k", True, "probe.knn_k must be an int >= 1, got True"),
        ("probe.lr", -1.0, "probe.lr must be a finite number > 0"),
        ("steal.strategy", "twice", "steal: unknown strategy 'twice'"),
        ("steal.arch", "vgg", "steal: unknown architecture 'vgg'"),
        ("steal.augment", "yes", "steal.augment must be true or false"),
        ("steal.lr", 0, "steal.lr must be a finite number > 0"),
        ("steal.bogus", 1, "steal.bogus: unknown key"),
        ("run.workers", 0, "run.workers must be an int >= 1"),
        ("run.save_encoders", 1, "run.save_encoders must be true or false"),
        ("name", "", "name: expected a non-empty string"),
    ],
)
def test_errors_name_the_key(key: str, value: Any, message: str) -> None:
    raw = copy.deepcopy(base())
    _set(raw, key, value)
    with pytest.raises(ValueError) as info:
        parse_config(raw)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({}, "victim.train.dataset: required"),
        ({"dataset": "shapes", "epochs": 0}, "victim.train.epochs must be an int >= 1"),
        ({"dataset": "shapes", "arch": "vit"}, "victim.train: unknown arch 'vit'"),
        ({"dataset": "shapes", "loss": "mse"}, "victim.train: unknown loss 'mse'"),
        ({"dataset": "shapes", "epoch": 3}, "victim.train.epoch: unknown key"),
        ({"dataset": "shapes", "out": "x"}, "victim.train.out: unknown key"),
    ],
)
def test_victim_train_errors(train: dict[str, Any], message: str) -> None:
    raw = copy.deepcopy(base())
    raw["victim"] = {"train": train}
    with pytest.raises(ValueError, match="victim") as info:
        parse_config(raw)
    assert message in str(info.value)


def test_victim_train_spec() -> None:
    raw = copy.deepcopy(base())
    raw["victim"] = {"train": {"dataset": "shapes", "count": 300, "image_size": 16, "epochs": 2}}
    victim = parse_config(raw).victim
    spec = victim.train
    assert spec is not None and (spec.count, spec.image_size, spec.epochs, spec.arch) == (300, 16, 2, "small")
    ref = victim.train_data()
    assert ref is not None
    assert (ref.spec, ref.split, ref.options) == ("shapes", "train", {"size": 16, "seed": 0, "count": 300})


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\nlosses = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("quick", [False, True])
def test_packaged_demo_configs_parse(quick: bool) -> None:
    cfg = demo_config(quick)
    assert set(cfg.grid.losses) == {"mse", "info_nce", "soft_nn", "wasserstein"}
    assert len(cfg.grid.budgets) >= 3
    assert [q.name for q in cfg.grid.query_datasets] == ["shapes", "shapes-ood"]
    train = cfg.victim.train
    assert train is not None and train.count is not None
    # The paper's headline regime: the smallest budget is at most a fifth of the victim's training set.
    assert min(cfg.grid.budgets) <= train.count / 5
    # Queries come from a generation stream the victim never trained on.
    assert all(q.options.get("seed", 0) != train.data_seed for q in cfg.grid.query_datasets)


def test_defense_specs_are_accepted_as_an_axis() -> None:
    raw = copy.deepcopy(base())
    _set(raw, "grid.defenses", ["none", "noise:sigma=0.5", "detection:threshold=0.6"])
    assert parse_config(raw).grid.defenses == ("none", "noise:sigma=0.5", "detection:threshold=0.6")
