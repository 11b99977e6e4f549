"""End-to-end sweeps against a tiny ONNX victim (in-process cells): accounting, outputs, resume."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sslsteal_fast.models import StolenEncoder, load_checkpoint
from sslsteal_fast.sweep import ResultStore, load_config, parse_config, run_sweep, write_outputs
from sslsteal_fast.util.files import file_sha256
from tests.helpers import write_toy_npz

REQUIRED_COLUMNS = {
    "loss",
    "budget",
    "query_dataset",
    "probe_top1",
    "knn_top1",
    "fidelity_cosine",
    "victim_top1",
    "victim_train_size",
    "billed_queries",
    "seed",
    "wall_time_s",
    "victim_forward_passes_share",
    "defense",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_nested_budgets_outputs_and_resume(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = load_config(write_config(budgets=(8, 16, 32)))
    out = tmp_path / "out"
    run = run_sweep(cfg, out, progress=False, log=lambda _: None)
    written = write_outputs(run)
    summary = json.loads((out / "summary.json").read_text())

    # The victim ran once per query set, for the largest budget only: forward passes == unique queries.
    assert summary["victim_forward_passes"] == summary["unique_queries"] == 2 * 32
    for q in summary["query_sets"]:
        assert q["victim_forward_passes"] == q["rows"] == q["billed_queries"] == 32
    # ... while each cell is billed what its attack would have paid alone.
    rows = read_csv(out / "results.csv")
    assert len(rows) == cfg.grid.size == 2 * 3 * 2
    assert REQUIRED_COLUMNS <= set(rows[0])
    assert all(int(r["billed_queries"]) == int(r["budget"]) for r in rows)
    assert summary["billed_queries_total"] == 2 * 2 * (8 + 16 + 32)
    for qname in ("q-in", "q-ood"):
        shares = [float(r["victim_forward_passes_share"]) for r in rows if r["query_dataset"] == qname]
        assert sum(shares) == pytest.approx(32)
    assert {r["defense"] for r in rows} == {"none"}
    assert all(0.0 <= float(r["probe_top1"]) <= 1.0 and -1.0 <= float(r["fidelity_cosine"]) <= 1.0 for r in rows)
    assert len({r["victim_top1"] for r in rows}) == 1
    assert summary["victim"]["top1"] == pytest.approx(float(rows[0]["victim_top1"]))
    assert summary["cells"] == {"total": 12, "done": 12, "ran_this_run": 12, "resumed": 0, "failed": 0}

    png = (out / "probe_vs_queries.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    import matplotlib.image

    assert matplotlib.image.imread(out / "probe_vs_queries.png").ndim == 3
    table = (out / "table.md").read_text()
    assert "| q-in | info_nce |" in table and written["table"] == table

    # Resuming a finished sweep runs nothing and queries nothing.
    again = run_sweep(cfg, out, progress=False, log=lambda _: None)
    assert (again.ran, again.resumed) == (0, 12)
    write_outputs(again)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["victim_forward_passes_this_run"] == 0
    assert summary["victim_forward_passes"] == 64
    assert len(read_csv(out / "results.csv")) == 12


def test_crash_between_training_and_commit(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(write_config(losses=("mse",), budgets=(8, 16)))
    out = tmp_path / "out"
    real_insert = ResultStore.insert_cell
    calls = {"n": 0}

    def crashing_insert(self: ResultStore, row: dict[str, object]) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:  # the third cell trained and probed, then the process "died"
            raise SystemExit("killed before commit")
        return real_insert(self, row)

    monkeypatch.setattr(ResultStore, "insert_cell", crashing_insert)
    with pytest.raises(SystemExit):
        run_sweep(cfg, out, progress=False, log=lambda _: None)
    monkeypatch.setattr(ResultStore, "insert_cell", real_insert)
    with ResultStore(out / "results.sqlite") as store:
        assert len(store.done_ids()) == 2  # the crashed cell left nothing behind

    run = run_sweep(cfg, out, progress=False, log=lambda _: None)
    assert (run.ran, run.resumed) == (2, 2)
    assert all(a["forward_passes_this_run"] == 0 for a in run.answers.values())  # answers were cached
    with ResultStore(out / "results.sqlite") as store:
        ids = [c["cell_id"] for c in store.cells()]
    assert sorted(ids) == sorted(set(run.cell_ids)) and len(ids) == 4


def test_growing_the_largest_budget_queries_only_new_rows(write_config: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    small = load_config(write_config(losses=("mse",), budgets=(8, 16)))
    run_sweep(small, out, progress=False, log=lambda _: None)
    bigger = load_config(write_config(losses=("mse",), budgets=(8, 16, 32)))
    run = run_sweep(bigger, out, progress=False, log=lambda _: None)
    assert (run.ran, run.resumed) == (2, 4)
    for answers in run.answers.values():
        assert answers["forward_passes_this_run"] == 16
        assert answers["forward_passes"] == answers["rows"] == 32


def test_budget_above_query_set_is_a_clear_error(write_config: Callable[..., Path], tmp_path: Path) -> None:
    # Known from the config (the query set's count): refused at load, before any victim is trained.
    with pytest.raises(
        ValueError, match=r"grid.query_datasets\[0\]: 'q-in' has 40 images but the largest budget is 64"
    ):
        load_config(write_config(budgets=(8, 64), query_count=40))
    # Known only once loaded (a file's length): refused before the victim is looked at (here: missing).
    write_toy_npz(tmp_path / "toy.npz", size=16, train=10, test=5)
    raw = {
        "victim": {"onnx": "missing.onnx"},
        "probe": {"train": {"spec": "shapes", "count": 20}, "test": {"spec": "shapes", "count": 20}},
        "grid": {"losses": ["mse"], "budgets": [8, 12], "query_datasets": ["npz:toy.npz"]},
    }
    cfg = parse_config(raw, base_dir=tmp_path)
    with pytest.raises(
        ValueError, match=r"grid.query_datasets: 'npz:toy.npz' has 10 images but the largest budget is 12"
    ):
        run_sweep(cfg, tmp_path / "out", progress=False, log=lambda _: None)


def test_augmented_strategy_bills_every_view(write_config: Callable[..., Path], tmp_path: Path) -> None:
    # The paper's accounting: augmented views are sent every epoch, so nothing is shared between cells.
    cfg = load_config(write_config(losses=("mse",), budgets=(8, 16), steal_epochs=2, strategy="augmented"))
    out = tmp_path / "out"
    run = run_sweep(cfg, out, progress=False, log=lambda _: None)
    assert run.answers == {} and not run.failed
    write_outputs(run)
    rows = read_csv(out / "results.csv")
    assert all(int(r["billed_queries"]) == 2 * int(r["budget"]) for r in rows)
    assert all(float(r["victim_forward_passes_share"]) == 2 * int(r["budget"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["victim_forward_passes"] == summary["billed_queries_total"] == 2 * 2 * (8 + 16)


def test_defense_axis_reports_honest_user_and_thief(write_config: Callable[..., Path], tmp_path: Path) -> None:
    # Heavy output noise: the honest user's probe (trained on defended answers) and every thief pay for it.
    cfg = load_config(write_config(losses=("mse",), budgets=(8, 16), defenses=("none", "noise:sigma=50")))
    out = tmp_path / "out"
    write_outputs(run_sweep(cfg, out, progress=False, log=lambda _: None))
    rows = read_csv(out / "results.csv")
    assert {r["defense"] for r in rows} == {"none", "noise:sigma=50"}
    clean = {float(r["honest_top1"]) for r in rows if r["defense"] == "none"}
    noisy = {float(r["honest_top1"]) for r in rows if r["defense"] != "none"}
    assert len(clean) == len(noisy) == 1  # one honest-user measurement per defense
    assert clean == {float(rows[0]["victim_top1"])}  # undefended: the honest user sees the victim itself
    summary = json.loads((out / "summary.json").read_text())
    # One pass per (query set, defense) for the largest budget: nested budgets reuse its prefixes.
    assert summary["victim_forward_passes"] <= 2 * 2 * 16
    table = (out / "table.md").read_text()
    assert "Honest user's linear-probe top-1" in table and "| noise:sigma=50 |" in table


def test_saved_encoders_keep_their_head_and_name_the_victim(
    write_config: Callable[..., Path], tiny_victim: Path, tmp_path: Path
) -> None:
    # A 512-d resnet18 thief of the 256-d victim: the saved encoder is the thief plus its linear head.
    text = write_config(losses=("mse",), budgets=(8,)).read_text()
    text = text.replace("[steal]\n", '[steal]\narch = "resnet18"\n').replace("[run]\n", "[run]\nsave_encoders = true\n")
    path = tmp_path / "heads.toml"
    path.write_text(text)
    run = run_sweep(load_config(path), tmp_path / "out", progress=False, log=lambda _: None)
    assert not run.failed and run.ran == 2
    for cid in run.cell_ids:
        model, meta = load_checkpoint(tmp_path / "out" / "encoders" / cid)
        assert isinstance(model, StolenEncoder) and model.adapter is not None and model.backbone_dim == 512
        assert meta["cell_id"] == cid and meta["steal"]["budget"] == 8
        assert meta["steal"]["victim_sha256"] == file_sha256(tiny_victim)
        assert model(torch.rand(2, 3, 16, 16)).shape == (2, 256)
