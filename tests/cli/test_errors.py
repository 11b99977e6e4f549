"""Expected failures of every subcommand are one line on stderr and exit status 2; bugs keep their traceback."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
import torch

from sslsteal_fast.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from sslsteal_fast.cli.errors import expected_error, one_line

Files = dict[str, Path]


def _demo_toml() -> str:
    return str(resources.files("sslsteal_fast.sweep").joinpath("configs", "demo-quick.toml"))


def _steal(f: Files, *extra: str, victim: str = "onnx", queries: str | None = None) -> list[str]:
    spec = queries or f"npz:{f['npz']}"
    base = ["steal", "--victim", str(f[victim]), "--queries", spec, "--budget", "8", "--epochs", "1", "--loss", "mse"]
    return [*base, "--quiet", *extra] if "--out" in extra else [*base, "--quiet", "--out", str(f["root"] / "o"), *extra]


def _probe(f: Files, encoder: str = "ckpt", data: str = "npz", *extra: str) -> list[str]:
    spec = f"npz:{f[data]}"
    return ["probe", "--encoder", str(f[encoder]), "--train", spec, "--test", spec, "--quiet", *extra]


def _train(f: Files, *extra: str) -> list[str]:
    out = ["--out", str(f["root"] / "victim")] if "--out" not in extra else []
    small = ["--epochs", "1", "--count", "8", "--batch-size", "4", "--image-size", "8", "--quiet"]
    return ["train-victim", *small, *out, *extra]


def _verify(f: Files, suspect: str, *extra: str) -> list[str]:
    return ["verify", "--method", "dataset-inference", "--victim", str(f["ckpt"]), "--suspect", str(f[suspect]), *extra]


# (case id, argv builder); CUDA is made to look absent in every case.
CASES: list[tuple[str, Callable[[Files], list[str]]]] = [
    # A corrupt checkpoint.
    ("corrupt-checkpoint-export", lambda f: ["export", str(f["bad_ckpt"]), "-o", str(f["root"] / "x.onnx")]),
    ("corrupt-checkpoint-probe", lambda f: _probe(f, "bad_ckpt")),
    ("corrupt-checkpoint-verify", lambda f: _verify(f, "bad_ckpt")),
    # A corrupt ONNX file.
    ("corrupt-onnx-steal", lambda f: _steal(f, victim="bad_onnx")),
    ("corrupt-onnx-probe", lambda f: _probe(f, "bad_onnx")),
    ("corrupt-onnx-serve-bench", lambda f: ["serve-bench", str(f["bad_onnx"])]),
    ("corrupt-onnx-verify", lambda f: _verify(f, "bad_onnx")),
    # A corrupt image folder, npz or pickle (CIFAR batch).
    ("corrupt-imagefolder-steal", lambda f: _steal(f, queries=f"imagefolder:{f['bad_folder']}")),
    ("corrupt-imagefolder-train", lambda f: _train(f, "--dataset", f"imagefolder:{f['bad_folder']}")),
    ("corrupt-npz-train", lambda f: _train(f, "--dataset", f"npz:{f['bad_npz']}")),
    ("corrupt-npz-probe", lambda f: _probe(f, "ckpt", "bad_npz")),
    ("corrupt-pickle-steal", lambda f: _steal(f, queries=f"cifar10:{f['bad_cifar']}")),
    # --out where a file is in the way.
    ("out-under-file-train", lambda f: _train(f, "--out", str(f["a_file"] / "victim"))),
    ("out-under-file-steal", lambda f: _steal(f, "--out", str(f["a_file"] / "stolen"))),
    ("out-existing-export", lambda f: ["export", str(f["ckpt"]), "-o", str(f["a_file"])]),
    ("out-is-file-sweep", lambda f: ["sweep", _demo_toml(), "--out", str(f["a_file"])]),
    ("out-is-file-demo", lambda f: ["demo", "--quick", "--out", str(f["a_file"])]),
    # A device that is not there, or not a device.
    ("device-bogus-steal", lambda f: _steal(f, "--device", "bogus")),
    ("device-bogus-probe", lambda f: _probe(f, "ckpt", "npz", "--device", "bogus")),
    ("device-bogus-train", lambda f: _train(f, "--device", "bogus")),
    ("device-bogus-verify", lambda f: _verify(f, "ckpt", "--device", "bogus")),
    ("device-cuda-steal", lambda f: _steal(f, "--device", "cuda")),
    ("device-cuda-probe", lambda f: _probe(f, "ckpt", "npz", "--device", "cuda")),
    ("device-cuda-train", lambda f: _train(f, "--device", "cuda")),
]


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"sslsteal {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("build", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_expected_failures_are_one_line_and_exit_2(
    build: Callable[[Files], list[str]],
    cli_files: Files,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    argv = build(cli_files)
    assert main(argv) == EXIT_ERROR
    captured = capsys.readouterr()
    _one_error_line(captured.err, argv[0])
    assert "Traceback" not in captured.err + captured.out


def test_messages_say_what_is_wrong(cli_files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    f = cli_files
    assert main(_steal(f, "--out", str(f["a_file"] / "stolen"))) == EXIT_ERROR
    assert f"{f['a_file']} is a file, not a folder" in capsys.readouterr().err
    assert main(_steal(f, "--device", "bogus")) == EXIT_ERROR
    assert "invalid device 'bogus': choose auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert main(["export", str(f["ckpt"]), "-o", str(f["a_file"])]) == EXIT_ERROR
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["steal", "--budget", "3"]) == EXIT_ERROR  # --victim, --queries, --out missing
    line = _one_error_line(capsys.readouterr().err, "steal")
    assert "the following arguments are required: --victim, --queries, --out" in line
    assert main(["no-such-command"]) == EXIT_ERROR
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ctrl_c_is_one_line_and_exit_130(
    cli_files: Files, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("sslsteal_fast.data.load_dataset", interrupted)
    assert main(_steal(cli_files)) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.strip().splitlines() == ["sslsteal steal: interrupted"]


def test_bugs_keep_their_traceback(cli_files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the package")

    monkeypatch.setattr("sslsteal_fast.data.load_dataset", broken)
    with pytest.raises(RuntimeError, match="a bug in the package"):
        main(_steal(cli_files))


def test_debug_shows_the_traceback_of_expected_errors(cli_files: Files) -> None:
    argv = _steal(cli_files, victim="bad_onnx")
    assert main(argv) == EXIT_ERROR
    with pytest.raises(Exception, match="INVALID_PROTOBUF|bad.onnx"):
        main([*argv, "--debug"])


def test_expected_error_classification() -> None:
    assert expected_error(ValueError("bad\n  value")) == "bad; value"
    assert expected_error(FileExistsError(17, "File exists", "/x")) == "/x: File exists"
    assert expected_error(EOFError("Ran out of input")) == "EOFError: Ran out of input"
    assert expected_error(RuntimeError("bug")) is None
    assert expected_error(TypeError("f() takes 1 argument")) is None  # a wrong call is a bug
    assert one_line("a\n\n b \n") == "a; b"
