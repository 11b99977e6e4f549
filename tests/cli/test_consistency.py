"""``--quiet``, ``--json``, ``--device`` and ``--out`` mean the same on every subcommand; ``--epochs`` one thing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sslsteal_fast.cli import build_parser, main
from sslsteal_fast.cli.common import device_spec

Files = dict[str, Path]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


def test_every_command_has_the_output_options() -> None:
    for name, p in _commands().items():
        opts = _options(p)
        for flag in ("--quiet", "--json", "--debug"):
            assert flag in opts and opts[flag].default is False, (name, flag)
        assert opts["--no-progress"].dest == "quiet", name  # the old spelling still works


def test_device_means_the_same_everywhere() -> None:
    with_device = {name for name, p in _commands().items() if "--device" in _options(p)}
    assert with_device == {"train-victim", "steal", "probe", "verify", "sweep", "demo"}
    for name in with_device:
        action = _options(_commands()[name])["--device"]
        default = None if name in ("sweep", "demo") else "auto"  # sweeps: the config's run.device (auto)
        assert (action.default, action.type, action.metavar) == (default, device_spec, "{auto,cpu,cuda}"), name
    for good in ("auto", "cpu", "cuda", "cuda:1"):
        assert device_spec(good) == good
    for bad in ("bogus", "gpu", "cuda:", "CPU"):
        with pytest.raises(argparse.ArgumentTypeError):
            device_spec(bad)


def test_out_is_where_the_result_goes() -> None:
    commands = _commands()
    kinds = {name: _options(p)["--out"].metavar for name, p in commands.items() if "--out" in _options(p)}
    assert kinds == {"train-victim": "PREFIX", "export": "FILE", "steal": "PREFIX", "sweep": "DIR", "demo": "DIR"}
    assert {name for name, p in commands.items() if "--overwrite" in _options(p)} == {"export", "steal"}


def test_epochs_is_one_thing() -> None:
    commands = _commands()
    train, steal, probe = (_options(commands[n]) for n in ("train-victim", "steal", "probe"))
    assert "passes over the training images" in train["--epochs"].help
    assert "passes over the BUDGET query images" in steal["--epochs"].help
    assert probe["--epochs"].help == argparse.SUPPRESS  # deprecated: it counted L-BFGS iterations
    assert "iterations of the linear probe" in probe["--linear-iters"].help
    parse = build_parser().parse_args
    base = ["probe", "--encoder", "e", "--train", "t", "--test", "t"]
    assert parse(base).linear_iters == 100
    assert parse([*base, "--linear-iters", "7"]).linear_iters == 7
    assert parse([*base, "--epochs", "9"]).linear_iters == 9


def _tiny_sweep(root: Path, victim: Path) -> Path:
    path = root / "tiny-sweep.toml"
    path.write_text(
        f"""
name = "tiny"
[datasets.q]
spec = "shapes"
seed = 1
count = 16
size = 16
[datasets.probe-train]
spec = "shapes"
seed = 2
count = 40
size = 16
[datasets.probe-test]
spec = "shapes"
split = "test"
count = 20
size = 16
[victim]
onnx = "{victim}"
[probe]
train = "probe-train"
test = "probe-test"
epochs = 5
knn_k = 5
[grid]
losses = ["mse"]
budgets = [8]
query_datasets = ["q"]
[steal]
epochs = 1
[run]
workers = 1
threads = 1
"""
    )
    return path


def _json_cases(f: Files) -> dict[str, list[str]]:
    root, spec = f["root"], f"npz:{f['npz']}"
    return {
        "train-victim": ["train-victim", "--out", str(root / "json-victim"), "--epochs", "1", "--count", "16"]
        + ["--batch-size", "8", "--image-size", "8", "--device", "cpu"],
        "export": ["export", str(f["ckpt"]), "-o", str(root / "json-export.onnx"), "--exporter", "torchscript"],
        "serve-bench": ["serve-bench", str(f["onnx"]), "--batch-sizes", "1", "2", "--repeats", "1"],
        "steal": ["steal", "--victim", str(f["onnx"]), "--queries", spec, "--budget", "8", "--epochs", "1"]
        + ["--loss", "mse", "--out", str(root / "json-stolen")],
        "probe": ["probe", "--encoder", str(f["ckpt"]), "--train", spec, "--test", spec, "--linear-iters", "5"],
        "verify": ["verify", "--method", "dataset-inference", "--victim", str(f["ckpt"]), "--suspect", str(f["ckpt"])]
        + ["--count", "20", "--components", "2"],
        "sweep": ["sweep", str(_tiny_sweep(root, f["onnx"])), "--out", str(root / "json-sweep")],
    }


@pytest.mark.parametrize("command", ["train-victim", "export", "serve-bench", "steal", "probe", "verify", "sweep"])
def test_json_is_one_object_on_stdout(command: str, cli_files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_json_cases(cli_files)[command], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # nothing else on stdout
    assert isinstance(result, dict)
    expected = {
        "train-victim": "final_loss",
        "export": "max_relative_difference",
        "serve-bench": "rows",
        "steal": "billed_queries",
        "probe": "probe_top1",
        "verify": "p_value",
        "sweep": "victim_forward_passes",
    }[command]
    assert expected in result


def test_quiet_silences_progress_and_info(cli_files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["steal", "--victim", str(cli_files["onnx"]), "--queries", f"npz:{cli_files['npz']}", "--budget", "8"]
    argv += ["--epochs", "2", "--loss", "mse", "--defense", "noise:sigma=0.1", "--out", str(cli_files["root"] / "q")]
    assert main(argv) == 0
    loud = capsys.readouterr()
    assert "serving" in loud.err and "2/2 epoch" in loud.err
    assert main([*argv, "--overwrite", "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out.startswith("stole ")
