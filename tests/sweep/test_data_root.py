"""``{data_root}`` in a sweep file's paths: the ``data_root`` argument (``--data-root``), else ``[run] data_root``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sslsteal_fast.cli import main
from sslsteal_fast.sweep import load_config, parse_config
from tests.helpers import write_toy_npz

#: A sweep file reading its query and probe images from the data root.
TOML = """
[datasets.q]
spec = "npz:{data_root}/%s"
[victim]
onnx = "v.onnx"
[probe]
train = "q"
test = {spec = "npz:{data_root}/%s", split = "test"}
[grid]
losses = ["mse"]
budgets = [4]
query_datasets = ["q"]
"""


def raw(spec: str = "npz:{data_root}/toy.npz", run: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "datasets": {"q": {"spec": spec, "split": "train"}},
        "victim": {"onnx": "{data_root}/victim.onnx"},
        "probe": {"train": "q", "test": {"spec": spec, "split": "test"}},
        "grid": {"losses": ["mse"], "budgets": [4], "query_datasets": ["q"]},
        "run": run or {},
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    write_toy_npz(folder / "toy.npz", size=8, train=6, test=4)
    return folder


def test_data_root_replaces_the_placeholder_in_specs_and_paths(root: Path, tmp_path: Path) -> None:
    cfg = parse_config(raw(), base_dir=tmp_path / "elsewhere", data_root=root)
    assert cfg.grid.query_datasets[0].spec == f"npz:{root / 'toy.npz'}"
    assert cfg.probe.test.spec == f"npz:{root / 'toy.npz'}" and cfg.probe.test.split == "test"
    assert cfg.victim.onnx == root / "victim.onnx"
    assert cfg.run.data_root == str(root)


def test_run_data_root_is_relative_to_the_file_and_the_argument_overrides_it(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "configs" / "sweep.toml"
    config.parent.mkdir()
    config.write_text(TOML % ("toy.npz", "toy.npz") + '[run]\ndata_root = "../data"\n')
    assert load_config(config).run.data_root == str(root)  # from the file's folder, not the cwd

    other = tmp_path / "other"
    other.mkdir()
    write_toy_npz(other / "toy.npz", size=8, train=6, test=4, seed=1)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config, data_root="other")  # the argument wins; relative to the current directory
    assert cfg.run.data_root == str(other)
    assert cfg.grid.query_datasets[0].spec == f"npz:{other / 'toy.npz'}"


def test_a_config_without_the_placeholder_ignores_the_root(root: Path, tmp_path: Path) -> None:
    write_toy_npz(tmp_path / "local.npz", size=8, train=6, test=4)
    cfg = parse_config(raw("npz:local.npz"), base_dir=tmp_path, data_root=root)
    assert cfg.grid.query_datasets[0].spec == f"npz:{tmp_path / 'local.npz'}"  # still the config's folder


def test_placeholder_without_a_root_is_one_error_naming_the_key(tmp_path: Path) -> None:
    message = r"^datasets\.q\.spec: 'npz:\{data_root\}/toy\.npz' is under \{data_root\}, but no data root is given"
    with pytest.raises(ValueError, match=message + r".*--data-root DIR.*\[run\] data_root"):
        parse_config(raw(), base_dir=tmp_path)


@pytest.mark.parametrize("bad", [3, "", "{data_root}/x"])
def test_run_data_root_must_be_a_path_string(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"run\.data_root: expected a folder path string"):
        parse_config(raw(run={"data_root": bad}), base_dir=tmp_path)


def test_data_root_that_is_not_a_folder(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"the data root: {tmp_path / 'nope'} does not exist"):
        parse_config(raw(), base_dir=tmp_path, data_root=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"run\.data_root: .*toy\.npz is not a folder"):
        parse_config(raw(run={"data_root": str(root / "toy.npz")}), base_dir=tmp_path)


def test_missing_dataset_under_the_root_names_the_path_and_the_root(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        parse_config(raw("npz:{data_root}/missing.npz"), base_dir=tmp_path, data_root=root)
    assert (
        str(err.value)
        == f"datasets.q.spec: npz data not found at {root / 'missing.npz'} ({{data_root}} is the data root {root})"
    )


def test_the_command_passes_data_root(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(TOML % ("missing.npz", "missing.npz"))
    assert main(["sweep", str(config), "--data-root", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"sslsteal sweep: error: datasets.q.spec: npz data not found at {root / 'missing.npz'} ({{data_root}} is the data root {root})"
    )


def test_a_local_file_wins_over_a_packaged_config_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "cifar10-resnet18.toml").write_text("not = [valid")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "paper/cifar10-resnet18.toml", "--out", str(tmp_path / "out")]) == 2
    assert "paper/cifar10-resnet18.toml: not valid TOML" in capsys.readouterr().err
    assert main(["sweep", "paper/no-such.toml", "--out", str(tmp_path / "out")]) == 2
    assert "sweep config 'paper/no-such.toml' does not exist" in capsys.readouterr().err
