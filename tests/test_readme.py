"""The README's examples work as written: the Python quickstart runs, and every CLI example parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sslsteal_fast.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str, lang: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    m = re.search(rf"```{lang}\n(.*?)```", section, flags=re.S)
    assert m, f"README: no {lang} block under '## {heading}'"
    return m.group(1)


#: The quickstart at the demo's scale takes minutes; the test runs the same code on fewer images and epochs.
SCALED_DOWN = {"count=5000": "count=600", "epochs=30": "epochs=2"}


def test_python_quickstart_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _block("The Python API", "python")
    for full, small in SCALED_DOWN.items():
        assert full in code, f"README quickstart no longer has {full}; update SCALED_DOWN"
        code = code.replace(full, small)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1000 1000"  # bills are exact: the thief's 1000 queries, 1000 of the budget left
    assert (tmp_path / "runs" / "api-stolen.safetensors").is_file()
    assert "probe_top1" in lines[1]


def test_cli_examples_parse() -> None:
    parser = build_parser()
    commands = [
        line.split("#", 1)[0].strip()
        for line in _block("The command line", "bash").splitlines()
        if line.strip().startswith("sslsteal ")
    ]
    assert len(commands) >= 6
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"README example does not parse ({exc}): {command}")
