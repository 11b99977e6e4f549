"""The packaged paper-scale sweeps (``sweep/configs/paper/*.toml``, every file found by glob).

Each config is checked three ways: it parses against a data root laid out as the datasets are
published; its slices, counts and budgets fit the real datasets' sizes and its settings are the
paper's; and it runs end to end, one step of everything, on tiny datasets written in the official
on-disk formats (CIFAR pickles, SVHN .mat, STL-10 binaries). The run shrinks sizes only (rows,
epochs, budgets) and runs one loss per config, so a wrong key, loader, split or dataset reference
fails here as it would on the real data.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sslsteal_fast.sweep
from sslsteal_fast.cli import main
from sslsteal_fast.data import parse_spec
from sslsteal_fast.sweep import SweepConfig, load_config, parse_config, run_sweep
from sslsteal_fast.sweep.config import DatasetRef
from tests.helpers import DATASET_FOLDERS, write_dataset_root

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PAPER_DIR = Path(sslsteal_fast.sweep.__file__).parent / "configs" / "paper"
CONFIGS = sorted(PAPER_DIR.glob("*.toml"))

#: Images in each split of the real datasets: what the configs' slices, counts and budgets must fit.
REAL_ROWS = {
    ("cifar10", "train"): 50_000,
    ("cifar10", "test"): 10_000,
    ("cifar100", "train"): 50_000,
    ("cifar100", "test"): 10_000,
    ("svhn", "train"): 73_257,
    ("svhn", "test"): 26_032,
    ("svhn", "extra"): 531_131,
    ("stl10", "train"): 5_000,
    ("stl10", "test"): 8_000,
    ("stl10", "unlabeled"): 100_000,
}
#: Rows of the fixture datasets. A config's slices and counts are scaled by fixture / real rows, so
#: a held-out slice such as CIFAR-10 test [9000, 10000) keeps a few images (here 4 of 40).
FIXTURE_ROWS = {
    ("cifar10", "train"): 10,
    ("cifar10", "test"): 40,
    ("cifar100", "train"): 20,
    ("cifar100", "test"): 10,
    ("svhn", "train"): 15,
    ("svhn", "test"): 104,
    ("svhn", "extra"): 10,
    ("stl10", "train"): 5,
    ("stl10", "test"): 8,
    ("stl10", "unlabeled"): 20,
}
#: The budget every shrunk query set can supply.
FIXTURE_BUDGET = 4

#: The paper's SimCLR victim recipe (Dziedzic et al. 2022, App. C).
PAPER_VICTIM = {
    "epochs": 200,
    "batch_size": 256,
    "lr": 3e-4,
    "weight_decay": 1e-4,
    "loss": "info_nce",
    "resolved_temperature": 0.07,
    "crop_min_scale": 0.08,
    "image_size": 32,
    "proj_dim": 128,
}
#: The paper's stealing settings per loss: (Adam lr, batch size, temperature).
PAPER_STEAL = {
    "mse": (1e-3, 64, None),
    "info_nce": (3e-4, 256, 0.07),
    "soft_nn": (1e-3, 256, 100.0),
    "wasserstein": (1e-3, 64, None),
}
#: Budgets the configs may use: the paper sweeps 500 to 50,000 queries; 9,000 is its default (and where a
#: victim's own CIFAR-10 test set stops, its last 1,000 images being the probe's).
PAPER_BUDGETS = {500, 1000, 5000, 9000, 10_000, 20_000, 50_000}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dataset a paper config may read, tiny, in its official format and folder."""
    return write_dataset_root(tmp_path_factory.mktemp("data"), FIXTURE_ROWS)


@pytest.fixture(scope="module")
def victim_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One victim cache for the module: a victim's two configs train it once, as on a real machine."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSLSTEAL_CACHE", str(folder))
        yield folder


def _refs(cfg: SweepConfig) -> list[tuple[str, DatasetRef]]:
    refs = [("probe.train", cfg.probe.train), ("probe.test", cfg.probe.test)]
    refs += [(f"grid.query_datasets[{i}]", q) for i, q in enumerate(cfg.grid.query_datasets)]
    victim = cfg.victim.train_data()
    return refs + ([("victim.train", victim)] if victim is not None else [])


def _real_rows(ref: DatasetRef) -> int:
    """How many images ``ref`` holds on the real dataset (its slice, else its count, else the split)."""
    name, _ = parse_spec(ref.spec)
    real = REAL_ROWS[(name, ref.split)]
    if ref.slice is not None:
        return ref.slice[1] - ref.slice[0]
    count = ref.options.get("count")
    return count if isinstance(count, int) else real


def test_every_paper_setup_is_there() -> None:
    names = {p.stem for p in CONFIGS}
    for victim in ("cifar10", "svhn"):
        for arch in ("resnet18", "resnet34"):
            assert {f"{victim}-{arch}", f"{victim}-{arch}-ood"} <= names, names
    for path in CONFIGS:
        assert tomllib.loads(path.read_text())["name"] == path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_fits_the_real_datasets_and_keeps_the_paper_settings(path: Path, data_root: Path) -> None:
    cfg = load_config(path, data_root=data_root)
    assert cfg.run.data_root == str(data_root)

    for where, ref in _refs(cfg):
        name, folder = parse_spec(ref.spec)
        assert folder == data_root / DATASET_FOLDERS[name], f"{where}: {ref.spec} is not read from the data root"
        real = REAL_ROWS[(name, ref.split)]
        if ref.slice is not None:
            assert ref.slice[1] <= real, f"{where}: slice {ref.slice} goes past the {real:,} images of {name}"
        if isinstance(ref.options.get("count"), int):
            assert ref.options["count"] <= real, f"{where}: count past the {real:,} images of {name}"
        if name == "stl10":
            assert ref.options.get("size") == 32, f"{where}: STL-10 must be resized to the victim's 32 px"
    for q in cfg.grid.query_datasets:
        assert max(cfg.grid.budgets) <= _real_rows(q), f"{q.name}: the largest budget exceeds its images"
        probe_test = cfg.probe.test
        if (q.spec, q.split) == (probe_test.spec, probe_test.split):  # queries and probe test from one split
            assert q.slice is not None and probe_test.slice is not None, f"{q.name}: slice it apart from probe.test"
            assert q.slice[1] <= probe_test.slice[0] or probe_test.slice[1] <= q.slice[0], (
                f"{q.name} shares images with probe.test"
            )

    train = cfg.victim.train
    assert train is not None, "a paper config trains its victim (SimCLR)"
    assert {k: getattr(train, k) for k in PAPER_VICTIM} == PAPER_VICTIM
    assert train.count is None, "the victim trains on its whole training set"
    assert path.stem.startswith(f"{parse_spec(train.dataset)[0]}-{train.arch}")
    assert cfg.steal.arch == train.arch, "the thief has the victim's architecture"
    assert cfg.probe.train.spec == train.dataset and cfg.probe.train.split == "train"

    assert cfg.grid.losses == ("mse", "info_nce", "soft_nn", "wasserstein")
    assert set(cfg.grid.budgets) <= PAPER_BUDGETS
    assert cfg.grid.defenses == ("none",)
    assert cfg.steal.epochs == 100
    for loss, (lr, batch, temperature) in PAPER_STEAL.items():
        resolved = cfg.cell_steal(loss, max(cfg.grid.budgets), 0).resolved()
        assert (resolved.lr, resolved.batch_size, resolved.temperature) == (lr, batch, temperature), loss

    text = path.read_text()
    assert f"sslsteal sweep paper/{path.name} --data-root DATA --out OUT" in text
    assert "GPU time" in text and "Departures from the paper" in text


# --------------------------------------------------------------------------------------- end to end


def _shrink_dataset(where: str, table: dict[str, Any], default_split: str) -> None:
    """Scale ``table``'s slice and count by the fixture's share of the real split's rows."""
    name, _ = parse_spec(table["spec"])
    key = (name, table.get("split", default_split))
    assert key in FIXTURE_ROWS, f"{where}: no fixture for {key}; add it to FIXTURE_ROWS"
    share = FIXTURE_ROWS[key] / REAL_ROWS[key]
    if "slice" in table:
        start, stop = (round(x * share) for x in table["slice"])
        assert start < stop, f"{where}: slice {table['slice']} is empty at fixture scale; enlarge FIXTURE_ROWS"
        table["slice"] = [start, stop]
    if isinstance(table.get("count"), int):
        table["count"] = max(1, round(table["count"] * share))


def shrink(raw: dict[str, Any], loss: str) -> dict[str, Any]:
    """``raw`` at fixture scale: rows scaled (see :data:`FIXTURE_ROWS`), one epoch of everything, on the CPU,
    and only ``loss`` of its losses (each loss's settings are checked in every config at parse time).

    Every key, dataset, split and architecture stays the config's.
    """
    small = copy.deepcopy(raw)
    assert loss in small["grid"]["losses"]
    small["grid"]["losses"] = [loss]
    for key, table in small.get("datasets", {}).items():
        _shrink_dataset(f"datasets.{key}", table, "train")
    for where, default_split in (("train", "train"), ("test", "test")):
        if isinstance(small["probe"].get(where), dict):
            _shrink_dataset(f"probe.{where}", small["probe"][where], default_split)
    for i, q in enumerate(small["grid"]["query_datasets"]):
        if isinstance(q, dict):
            _shrink_dataset(f"grid.query_datasets[{i}]", q, "train")
    small["victim"]["train"]["epochs"] = 1
    small["grid"]["budgets"] = [FIXTURE_BUDGET]
    small["steal"]["epochs"] = 1
    small["probe"].update(epochs=3, knn_k=3)
    small["run"] = {**small.get("run", {}), "device": "cpu", "workers": 1, "threads": 1}
    return small


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_runs_end_to_end_on_fixture_data(
    path: Path, data_root: Path, victim_cache: Path, tmp_path: Path
) -> None:
    raw = tomllib.loads(path.read_text())
    # One loss per config, in turn (two minutes of ResNet cells on two cores otherwise): across the
    # configs every loss runs, on both victim datasets.
    loss = raw["grid"]["losses"][CONFIGS.index(path) % len(raw["grid"]["losses"])]
    cfg = parse_config(shrink(raw, loss), base_dir=path.parent, source=path, data_root=data_root)
    assert cfg.victim.train is not None and cfg.victim.train.arch == raw["victim"]["train"]["arch"]

    run = run_sweep(cfg, tmp_path / "out", progress=False, log=lambda message: None)

    assert not run.failed
    assert run.ran == cfg.grid.size == len(raw["grid"]["query_datasets"])
    assert run.victim.source in ("trained", "cache")
    assert run.victim_eval["probe_test_size"] == cfg.probe.test.rows
    assert run.overlap == {q.name: 0 for q in cfg.grid.query_datasets}  # no query is a victim training image


# ------------------------------------------------------------------------------------ missing data


def test_the_command_runs_a_packaged_config_by_name_and_names_missing_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no paper/ folder here: the name means the packaged config
    empty = tmp_path / "data"
    empty.mkdir()
    sweep = ["sweep", "paper/cifar10-resnet18.toml", "--out", str(tmp_path / "out")]

    assert main([*sweep, "--data-root", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cifar10 data not found at {empty / 'cifar-10-batches-py'}" in err

    assert main(sweep) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no data root is given" in err and "--data-root DIR" in err


def test_missing_files_stop_the_sweep_before_the_victim_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)  # the folder is there, its files are not
    config = PAPER_DIR / "cifar10-resnet18.toml"
    assert main(["sweep", str(config), "--data-root", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "expected the files data_batch_1" in err and str(root / "cifar-10-batches-py") in err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
