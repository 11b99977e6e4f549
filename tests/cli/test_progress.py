"""Progress goes to stderr: a tqdm bar on a terminal, a few plain lines (no ``\\r``, no escapes) elsewhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from tqdm import tqdm

from sslsteal_fast.cli import main
from sslsteal_fast.util.progress import LineProgress, progress_bar, progress_write

Files = dict[str, Path]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _plain(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, repr(text[:200])


def test_a_log_gets_a_few_plain_lines() -> None:
    log = io.StringIO()
    bar = progress_bar(range(40), desc="steal mse", unit="epoch", file=log)
    assert isinstance(bar, LineProgress)
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    _plain(log.getvalue())
    lines = log.getvalue().splitlines()
    assert len(lines) == 10  # one per tenth; the last is the end
    assert lines[0].startswith("steal mse: 4/40 epoch (10%), 00:00") and lines[0].endswith("loss=0.250")
    assert lines[-1].startswith("steal mse: 40/40 epoch (100%)")


def test_a_transient_bar_is_silent_unless_it_runs_long(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    for _ in progress_bar(range(100), desc="querying victim", leave=False, file=log):
        pass
    assert log.getvalue() == ""
    slow = LineProgress(total=3, desc="features", unit="batch", leave=False, file=log, interval=0.0)
    slow.update()
    slow.close()
    assert log.getvalue().splitlines() == ["features: 1/3 batch (33%), 00:00"]


def test_a_terminal_gets_a_tqdm_bar_and_quiet_gets_nothing() -> None:
    term = _Terminal()
    bar = progress_bar(range(3), desc="x", file=term)
    assert isinstance(bar, tqdm)
    list(bar)
    assert "\r" in term.getvalue()  # a live bar
    log = io.StringIO()
    list(progress_bar(range(3), desc="x", file=log, disable=True))
    progress_write("epoch 1/1: loss 0.5", file=log)
    assert log.getvalue() == "epoch 1/1: loss 0.5\n"


def test_steal_progress_on_stderr_as_plain_lines(cli_files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli_files["root"] / "progress-stolen"
    spec = f"npz:{cli_files['npz']}"
    argv = ["steal", "--victim", str(cli_files["onnx"]), "--queries", spec, "--budget", "16", "--loss", "mse"]
    assert main([*argv, "--epochs", "3", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    _plain(captured.err)
    lines = captured.err.splitlines()
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == [
        "1/3 epoch (33%)",
        "2/3 epoch (66%)",
        "3/3 epoch (100%)",
    ]
    assert all(line.startswith("steal mse (query-once, 16 queries): ") for line in lines)
    assert json.loads(captured.out)["billed_queries"] == 16  # stdout holds only the result


def test_train_victim_progress_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train-victim", "--out", str(tmp_path / "v"), "--epochs", "2", "--count", "16", "--batch-size", "8"]
    assert main([*argv, "--image-size", "8", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    _plain(captured.err)
    assert [line.split(":")[0] for line in captured.err.splitlines()] == ["epoch 1/2", "epoch 2/2"]
    assert captured.out.startswith("victim small (rep_dim 256) on shapes") and len(captured.out.splitlines()) == 1

    assert main([*argv, "--image-size", "8", "--device", "cpu", "--quiet", "--out", str(tmp_path / "w")]) == 0
    assert capsys.readouterr().err == ""
