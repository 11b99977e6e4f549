"""Sweep config validation: every mistake is a ValueError that names the offending key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sslsteal_fast.sweep import demo_config, load_config, parse_config, run_sweep


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


# ------------------------------------------------------------------------------ the probe's splits


def test_plain_probe_test_name_reads_the_test_split() -> None:
    # `test = "digits"` used to read the train split: probes fitted and scored on the same images.
    raw = copy.deepcopy(base())
    raw["probe"] = {"train": "digits", "test": "digits"}
    probe = parse_config(raw).probe
    assert (probe.train.split, probe.test.split) == ("train", "test")
    raw["probe"] = {"train": "digits", "test": {"spec": "digits", "size": 8}}
    assert parse_config(raw).probe.test.split == "test"
    raw["probe"] = {"train": "digits", "test": {"spec": "digits", "split": "train"}}
    with pytest.raises(ValueError, match="probe.test: the same images as probe.train"):
        parse_config(raw)
    raw["datasets"]["t"] = {"spec": "digits"}  # a [datasets] table keeps its own split (default train)
    raw["probe"] = {"train": "digits", "test": "t"}
    with pytest.raises(ValueError, match="probe.test: the same images as probe.train"):
        parse_config(raw)


def test_probe_sets_sharing_images_stop_the_sweep_before_the_victim(tmp_path: Path) -> None:
    raw = copy.deepcopy(base())
    raw["datasets"]["a"] = {"spec": "shapes", "count": 30, "size": 16, "slice": [0, 20]}
    raw["datasets"]["b"] = {"spec": "shapes", "count": 30, "size": 16, "slice": [10, 30]}
    raw["probe"] = {"train": "a", "test": "b"}  # different tables, 10 shared images
    cfg = parse_config(raw, base_dir=tmp_path)  # its victim.onnx does not even exist
    with pytest.raises(
        ValueError, match=r"probe.train 'a' .* and test set probe.test 'b' .* share 10 of the test set's 20"
    ):
        run_sweep(cfg, tmp_path / "out", progress=False, log=lambda _: None)
    assert not (tmp_path / "out" / "victim").exists()


# --------------------------------------------------------------------- mistakes caught at load


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # a temperature for a loss that has none (any loss of the grid)
        ("steal.temperature", 0.5, "steal: loss 'mse' has no temperature"),
        # seeds past what SQLite (signed 64-bit) and torch both take
        ("grid.seeds", [0, 2**63], r"grid.seeds\[1\] must be an int >= 0 and <= 2\*\*63 - 1"),
        ("probe.seed", 2**64, r"probe.seed must be an int >= 0 and <= 2\*\*63 - 1"),
        ("datasets.q.seed", 2**63, r"datasets.q: shapes: option seed must be an int >= 0 and <= 2\*\*63 - 1"),
        # sizes and counts no machine holds in memory
        ("datasets.q.count", 10**12, "datasets.q: shapes: option count = 1,000,000,000,000 is too large: at most"),
        ("datasets.q.size", 100_000, "datasets.q: shapes: option size = 100000 is too large: at most 1024 px"),
        ("datasets.q.slice", [0, 10**9], "datasets.q.slice: stop = 1,000,000,000 is past"),
        ("datasets.q.slice", [0, 60], r"datasets.q.slice: \[0, 60\) goes past its 50 images"),
        ("datasets.q.colour", "red", "datasets.q: shapes: unknown option"),
        ("datasets.q.split", "val", "datasets.q: shapes: unknown split 'val'"),
        ("grid.budgets", [10, 10**9], r"grid.budgets\[1\] = 1,000,000,000 is too large"),
        ("grid.budgets", [10, 60], r"grid.query_datasets\[0\]: 'q' has 50 images but the largest budget is 60"),
        (
            "probe.test",
            {"spec": "shapes", "count": 5_000_000, "size": 128},
            "probe.test: shapes: count = 5,000,000 .* 229 GiB",
        ),
    ],
)
def test_mistakes_fail_at_load(key: str, value: Any, message: str) -> None:
    raw = copy.deepcopy(base())
    raw["grid"]["losses"] = ["info_nce", "mse"]
    _set(raw, key, value)
    with pytest.raises(ValueError, match=message):
        parse_config(raw)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"count": 10**9}, "victim.train: shapes: option count = 1,000,000,000 is too large"),
        ({"image_size": 5000}, "victim.train: shapes: option size = 5000 is too large"),
        ({"seed": 2**63}, r"victim.train.seed must be an int >= 0 and <= 2\*\*63 - 1"),
        ({"watermark": {"dataset": "digits", "count": 10**9}}, "victim.train.watermark: digits: option count"),
    ],
)
def test_victim_train_mistakes_fail_at_load(train: dict[str, Any], message: str) -> None:
    raw = copy.deepcopy(base())
    raw["victim"] = {"train": {"dataset": "shapes", **train}}
    with pytest.raises(ValueError, match=message):
        parse_config(raw)


def test_the_seed_bound_is_what_the_store_and_torch_take(tmp_path: Path) -> None:
    import sqlite3

    import torch

    from sslsteal_fast.config import MAX_SEED

    raw = copy.deepcopy(base())
    raw["grid"]["seeds"] = [MAX_SEED]
    assert parse_config(raw).grid.seeds == (MAX_SEED,)
    torch.Generator().manual_seed(MAX_SEED)
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        conn.execute("CREATE TABLE t (seed INTEGER NOT NULL)")
        conn.execute("INSERT INTO t VALUES (?)", (MAX_SEED,))
        with pytest.raises(OverflowError):
            conn.execute("INSERT INTO t VALUES (?)", (MAX_SEED + 1,))


def test_dataset_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    folder = tmp_path / "experiment"
    (folder / "data").mkdir(parents=True)
    np.savez(folder / "data" / "toy.npz", images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.arange(4) % 2)
    config = folder / "sweep.toml"
    config.write_text(
        'victim.onnx = "victim.onnx"\n'
        'probe = { train = "npz:data/toy.npz", test = "shapes" }\n'
        '[datasets.q]\nspec = "npz:data/toy.npz"\n'
        '[grid]\nlosses = ["mse"]\nbudgets = [2]\nquery_datasets = ["q", "npz:./data/toy.npz"]\n'
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder: paths still start there, like victim.onnx's
    cfg = load_config(Path("experiment") / "sweep.toml")
    expected = f"npz:{(folder / 'data' / 'toy.npz').absolute()}"
    assert cfg.probe.train.spec == expected
    assert [q.spec for q in cfg.grid.query_datasets] == [expected, f"npz:{folder.absolute() / 'data' / 'toy.npz'}"]
    assert cfg.victim.onnx == Path("experiment") / "victim.onnx"
    assert len(cfg.grid.query_datasets[0].load()) == 4

    config.write_text(config.read_text().replace('spec = "npz:data/toy.npz"', 'spec = "npz:toy.npz"'))
    with pytest.raises(FileNotFoundError, match=r"datasets.q.spec: npz data not found at .*experiment/toy.npz"):
        load_config(config)
