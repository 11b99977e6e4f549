"""The reference docs cover what the code has: every sweep-config key with its real default, every output column."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sslsteal_fast.config import ProbeConfig, StealConfig, VictimTrainConfig, WatermarkConfig
from sslsteal_fast.defenses import DEFENSES
from sslsteal_fast.sweep.config import GRID_OWNED, RUN_OWNED, RunConfig
from sslsteal_fast.sweep.defense_study import DEFENSE_COLUMNS, MEAN_COLUMNS, OWNERSHIP_COLUMNS, POWER_COLUMNS
from sslsteal_fast.sweep.report import AGGREGATE_COLUMNS, CSV_COLUMNS

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: (heading of the section in CONFIG.md, the config class, fields the sweep does not let a file set)
SECTIONS = [
    ("`[victim.train]`", VictimTrainConfig, {"out", "device", "progress"}),  # `dataset` is required there
    ("`[victim.train.watermark]`", WatermarkConfig, set()),
    ("`[probe]`", ProbeConfig, set()),
    ("`[steal]`", StealConfig, set(GRID_OWNED) | set(RUN_OWNED)),
    ("`[run]`", RunConfig, set()),
]

#: Fields with a default in Python that a sweep file must give.
REQUIRED_IN_SWEEPS = {(VictimTrainConfig, "dataset")}


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^#{2,3} ", text, flags=re.M)
    return {p.splitlines()[0]: p for p in parts[1:]}


def _rows(section: str) -> dict[str, list[str]]:
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`([a-z_]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def _shown(default: object) -> list[str]:
    """Ways the docs may write ``default``."""
    if isinstance(default, bool):
        return [str(default).lower()]
    if isinstance(default, str):
        return [f'"{default}"']
    if isinstance(default, float):
        return [repr(default), f"{default:g}"]
    return [str(default)]


@pytest.mark.parametrize("heading, cls, excluded", SECTIONS, ids=[s[1].__name__ for s in SECTIONS])
def test_config_reference_lists_every_key_with_its_default(heading: str, cls: type, excluded: set[str]) -> None:
    sections = _sections((DOCS / "CONFIG.md").read_text())
    matches = [body for title, body in sections.items() if title.startswith(heading)]
    assert len(matches) == 1, f"CONFIG.md has no single section {heading}"
    rows = _rows(matches[0])
    for f in dataclasses.fields(cls):
        if f.name in excluded:
            assert f.name not in rows, f"{heading} documents {f.name}, which a sweep file may not set"
            continue
        assert f.name in rows, f"{heading} does not document {f.name}"
        default_column = rows[f.name][1]
        if (cls, f.name) in REQUIRED_IN_SWEEPS:
            assert default_column.startswith("—"), f"{heading} {f.name}: required in a sweep file"
        elif f.default is not None and f.default is not dataclasses.MISSING:
            assert any(s in default_column for s in _shown(f.default)), (
                f"{heading} {f.name}: shows default {default_column!r}, the code's is {f.default!r}"
            )


def test_config_reference_lists_every_defense_and_parameter() -> None:
    text = (DOCS / "CONFIG.md").read_text()
    for name, cls in DEFENSES.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"CONFIG.md does not document the {name} defense"
        for param in cls.parameters():
            assert f"`{param}`" in row, f"CONFIG.md: the {name} defense's {param} parameter is missing"


@pytest.mark.parametrize(
    "heading, columns",
    [
        ("`results.csv` columns", CSV_COLUMNS),
        ("`aggregate.csv` columns", AGGREGATE_COLUMNS),
        ("`sslsteal demo", DEFENSE_COLUMNS + MEAN_COLUMNS + OWNERSHIP_COLUMNS + POWER_COLUMNS),
    ],
)
def test_outputs_reference_lists_every_column(heading: str, columns: tuple[str, ...]) -> None:
    sections = _sections((DOCS / "OUTPUTS.md").read_text())
    body = next(body for title, body in sections.items() if title.startswith(heading))
    missing = [c for c in columns if f"`{c}`" not in body]
    assert not missing, f"OUTPUTS.md ({heading}) does not document {missing}"
