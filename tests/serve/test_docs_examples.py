"""The serving docs' command lines parse as written (README's section and docs/SERVING.md)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sslsteal_fast.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#", 1)[0].split(" > ", 1)[0].strip() for b in blocks for line in b.splitlines()]
    return [line for line in lines if line.startswith("sslsteal ")]


@pytest.mark.parametrize("doc", ["README.md", "docs/SERVING.md"])
def test_serving_examples_parse(doc: str) -> None:
    text = (ROOT / doc).read_text()
    if doc == "README.md":
        text = text.split("## Serving the victim over HTTP", 1)[1].split("\n## ", 1)[0]
    commands = _commands(text)
    assert len(commands) >= 4 and any(c.startswith("sslsteal serve ") for c in commands)
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"{doc} example does not parse ({exc}): {command}")
