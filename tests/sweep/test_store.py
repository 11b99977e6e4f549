"""SQLite result store: one atomic row per cell, unique ids, and the airport-game forward-pass shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslsteal_fast.sweep import ResultStore, forward_pass_shares
from sslsteal_fast.sweep.store import CELL_COLUMNS


def row(cell_id: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {name: 0 for name, _ in CELL_COLUMNS if name != "finished_at"}
    values.update(cell_id=cell_id, loss="mse", query_dataset="q", defense="none", arch="small", strategy="query-once")
    values["config_json"] = "{}"
    values.update(overrides)
    return values


def test_insert_is_unique_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        assert store.insert_cell(row("a", probe_top1=0.5))
        assert not store.insert_cell(row("a", probe_top1=0.9))  # a second commit of the same cell is ignored
        assert store.insert_cell(row("b"))
    with ResultStore(path) as store:
        assert store.done_ids() == {"a", "b"}
        cells = store.cells()
        assert [c["cell_id"] for c in cells] == ["a", "b"]
        assert cells[0]["probe_top1"] == 0.5
        assert store.cells({"b"})[0]["cell_id"] == "b"


def test_incomplete_row_changes_nothing(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        bad = row("a")
        del bad["loss"]
        with pytest.raises(KeyError, match="loss"):
            store.insert_cell(bad)
        with pytest.raises(Exception, match="NOT NULL"):  # sqlite3.IntegrityError, rolled back
            store.insert_cell(row("a", loss=None))
        assert store.done_ids() == set()
        assert store.insert_cell(row("a"))  # the connection is usable after a rollback


def test_kv(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.get("x") is None
        store.put("x", {"top1": 0.5})
        store.put("x", {"top1": 0.75})
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.get("x") == {"top1": 0.75}


def test_forward_pass_shares_example() -> None:
    # Budgets 10, 20, 40 share one cache of 40 rows: rows 0-9 split 3 ways, 10-19 two ways, 20-39 one.
    shares = forward_pass_shares([10, 20, 40], 40)
    assert shares == pytest.approx([10 / 3, 10 / 3 + 5, 10 / 3 + 5 + 20])
    assert forward_pass_shares([], 0) == []


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=12))
def test_forward_pass_shares_sum_to_total_and_grow_with_budget(budgets: list[int]) -> None:
    total = max(budgets)
    shares = forward_pass_shares(budgets, total)
    assert sum(shares) == pytest.approx(total)
    for b1, s1 in zip(budgets, shares, strict=True):
        for b2, s2 in zip(budgets, shares, strict=True):
            if b1 <= b2:
                assert s1 <= s2 + 1e-9
            if b1 == b2:
                assert s1 == pytest.approx(s2)
