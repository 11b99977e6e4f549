"""The attacks, strategy and thief_arch axes of a sweep: every attack end to end on tiny data, billing,
shared prototypes, outputs, cell ids that older sweeps keep, and the configurations refused."""

from __future__ import annotations

import copy
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sslsteal_fast.config import ATTACKS
from sslsteal_fast.sweep import load_config, parse_config, run_sweep, write_outputs
from sslsteal_fast.sweep.cell import OWNER_HEAD, cached_tensors
from sslsteal_fast.sweep.grid import cell_key, expand_grid
from sslsteal_fast.util.files import stable_hash
from sslsteal_fast.util.stats import gap_share
from sslsteal_fast.victim import LinearHead
from tests.sweep.conftest import tiny_toml
from tests.sweep.test_config import base

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

VIEWS = 3


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _attacks_toml(victim: Path, **options: Any) -> str:
    text = tiny_toml(victim, losses=("mse",), budgets=(8, 16), **options)
    axes = f'attacks = {json.dumps(list(ATTACKS))}\nstrategies = ["query-once", "augmented"]\n'
    text = text.replace("[steal]\n", "[steal]\nviews = 3\n").replace('strategy = "query-once"\n', "")
    return text.replace("defenses = [", axes + "defenses = [")


def test_every_attack_runs_in_one_sweep(tmp_path: Path, tiny_victim: Path) -> None:
    path = tmp_path / "attacks.toml"
    path.write_text(_attacks_toml(tiny_victim))
    cfg = load_config(path)
    out = tmp_path / "out"
    run = run_sweep(cfg, out, progress=False, log=lambda _: None)
    written = write_outputs(run)
    assert not run.failed

    # direct twice (query-once, augmented), then one cell per attack and budget, per query set.
    rows = _read(out / "results.csv")
    assert len(rows) == cfg.grid.size == (len(ATTACKS) + 1) * 2 * 2
    for r in rows:
        budget = int(r["budget"])
        want = budget * VIEWS if r["attack"] == "prototype" else budget  # augmented: 1 epoch of views
        assert int(r["billed_queries"]) == want, r
        if r["attack"] == "label_only":
            assert r["loss"] == "cross_entropy" and r["fidelity_cosine"] == "" and r["fidelity_agreement"] != ""
        else:
            assert float(r["fidelity_cosine"]) > -1
    assert {r["strategy"] for r in rows if r["attack"] == "direct"} == {"query-once", "augmented"}
    assert {r["strategy"] for r in rows if r["attack"] != "direct"} == {"query-once"}

    # The victim answered each query set once, and each image's views once, whatever the cells.
    summary = json.loads((out / "summary.json").read_text())
    sets = {(q["query_dataset"], q["views"]): q for q in summary["query_sets"]}
    for name in ("q-in", "q-ood"):
        assert sets[(name, None)]["victim_forward_passes"] == sets[(name, None)]["billed_queries"] == 16
        assert sets[(name, VIEWS)]["victim_forward_passes"] == sets[(name, VIEWS)]["billed_queries"] == 16 * VIEWS
    augmented = sum(int(r["billed_queries"]) for r in rows if r["strategy"] == "augmented")
    assert summary["victim_forward_passes"] == 2 * (16 + 16 * VIEWS) + augmented
    shares = sum(float(r["victim_forward_passes_share"]) for r in rows)
    assert shares == pytest.approx(summary["victim_forward_passes"])

    # The new axes group the aggregate and label the table.
    agg = _read(out / "aggregate.csv")
    assert {(a["attack"], a["strategy"], a["arch"]) for a in agg} >= {("prototype", "query-once", "small")}
    assert len(agg) == len(rows)  # one seed: one group per cell
    proto = next(a for a in agg if a["attack"] == "prototype" and a["budget"] == "16")
    assert float(proto["billed_queries"]) == 16 * VIEWS
    assert "| q-in | prototype | query-once | mse |" in written["table"]
    assert "Billed queries per cell" in written["table"]

    # Label-only cells learn the owner's labels: the victim's linear probe's argmax of the answers.
    eval_file = next((out / "victim").glob("eval-*.safetensors"))
    head = LinearHead.from_tensors(cached_tensors(eval_file), OWNER_HEAD)
    assert head.num_classes == run.victim_eval["num_classes"]

    again = run_sweep(cfg, out, progress=False, log=lambda _: None)
    assert again.ran == 0 and again.resumed == len(rows)


def test_thief_archs_axis_has_its_own_floor(write_config: Callable[..., Path], tmp_path: Path) -> None:
    text = write_config(losses=("mse",), budgets=(8,)).read_text()
    path = tmp_path / "archs.toml"
    path.write_text(text.replace("defenses = [", 'thief_archs = ["small", "resnet18"]\ndefenses = ['))
    cfg = load_config(path)
    run = run_sweep(cfg, tmp_path / "archs", progress=False, log=lambda _: None)
    written = write_outputs(run)
    assert {r["arch"] for r in written["rows"]} == {"small", "resnet18"}
    assert set(run.victim_eval["floors"]) == {"small", "resnet18"}
    assert "| q-in | small | mse |" in written["table"] and "| q-in | resnet18 | mse |" in written["table"]
    # Each arch's gap share is to its own untrained encoder (the two floors differ).
    floors = run.victim_eval["floors"]
    assert floors["small"]["random_init_knn_top1"] != floors["resnet18"]["random_init_knn_top1"]
    for a in written["aggregate"]:
        floor = floors[a["arch"]]["random_init_knn_top1"]
        want = gap_share(a["knn_top1_mean"], floor, run.victim_eval["victim_knn_top1"])
        assert a["knn_top1_gap_share_mean"] == pytest.approx(want)


# Cell ids of a grid without the new axes, computed by the version before them: a sweep of that
# version resumes from its results.sqlite.
OLD_IDS = [
    "2abdf0d2bbfb292b",
    "2caed6ab8277ce18",
    "6320b5f53bbdff39",
    "72c79b47cd56f4c2",
    "af64cdcce937cbfb",
    "c77581b805a16cfe",
    "ceb06602451c21b6",
    "e7331c90acfe500f",
]


def _old_grid() -> dict[str, Any]:
    raw = base()
    raw["grid"] = {"losses": ["mse", "info_nce"], "budgets": [20, 10], "query_datasets": ["q"], "seeds": [0, 1]}
    raw["steal"] = {"epochs": 3, "strategy": "augmented", "arch": "resnet18", "augment": False}
    return raw


def _ids(raw: dict[str, Any], base_dir: Path) -> list[str]:
    cfg = parse_config(raw, base_dir=base_dir)
    return sorted(stable_hash(cell_key(cfg, c, "victim-sha")) for c in expand_grid(cfg))


def test_a_grid_without_the_new_axes_keeps_its_cell_ids(tmp_path: Path) -> None:
    assert _ids(_old_grid(), tmp_path) == OLD_IDS
    # The same cells written with the axes have the same ids; attack-only settings do not touch them.
    raw = _old_grid()
    del raw["steal"]["strategy"], raw["steal"]["arch"]
    raw["grid"].update(attacks=["direct"], strategies=["augmented"], thief_archs=["resnet18"])
    raw["steal"].update(views=7, memory=3, consistency_weight=0.5, crop_min_scale=0.08)
    assert _ids(raw, tmp_path) == OLD_IDS
    # ... while the attack's own settings enter its cells' ids.
    proto = copy.deepcopy(raw)
    proto["grid"].update(attacks=["prototype"], strategies=["query-once"])
    other_views = copy.deepcopy(proto)
    other_views["steal"]["views"] = 8
    assert set(_ids(proto, tmp_path)).isdisjoint(_ids(other_views, tmp_path))


@pytest.mark.parametrize(("name", "cells"), [("demo-attacks", 10 * 3 * 3), ("demo-attacks-crops", 2 * 3 * 3)])
def test_the_shipped_attack_configs_parse(name: str, cells: int) -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "sslsteal_fast" / "sweep" / "configs" / f"{name}.toml")
    assert cfg.grid.size == len(expand_grid(cfg)) == cells
    assert cfg.grid.budgets == (50, 200, 1000) and cfg.victim.train is not None and cfg.victim.train.count == 5000


def _tiny_raw(victim: Path) -> dict[str, Any]:
    return tomllib.loads(tiny_toml(victim, losses=("mse",), budgets=(8,)))


@pytest.mark.parametrize(
    ("grid", "steal", "message"),
    [
        ({"attacks": ["rda"]}, {}, r"unknown grid\.attacks\[0\] 'rda'"),
        ({"attacks": ["prototype"]}, {"views": 0}, r"steal\.views must be an int >= 1"),
        ({"thief_archs": ["resnet9"]}, {}, r"unknown grid\.thief_archs\[0\] 'resnet9'"),
        ({}, {"arch": "resnet9"}, r"steal: unknown architecture 'resnet9'"),
        ({"strategies": ["augmented"], "attacks": ["prototype"]}, {}, r"grid\.strategies: none of \['augmented'\]"),
        ({"strategies": ["query-once"]}, {"strategy": "augmented"}, r"grid\.strategies: \[steal\] strategy"),
        ({"attacks": ["prototype"]}, {"strategy": "augmented"}, r"steal\.strategy: the prototype attack supports"),
        ({"attack_losses": {"prototype": ["mse"]}}, {}, r"grid\.attack_losses\.prototype: 'prototype' is not one of"),
        ({"attacks": ["label_only"], "attack_losses": {"label_only": ["mse"]}}, {}, "always trains with"),
        ({"attacks": ["consistency"], "attack_losses": {"consistency": ["l2"]}}, {}, r"consistency\[0\] 'l2'"),
        ({"attacks": ["direct", "direct"]}, {}, r"grid\.attacks: contains duplicates"),
    ],
)
def test_bad_attack_configs_name_the_key(
    tiny_victim: Path, tmp_path: Path, grid: dict[str, Any], steal: dict[str, Any], message: str
) -> None:
    raw = _tiny_raw(tiny_victim)
    raw["grid"].update(grid)
    if "strategy" in steal or grid.get("strategies"):
        raw["steal"].pop("strategy", None)
    raw["steal"].update(steal)
    with pytest.raises(ValueError, match=message) as info:
        parse_config(raw, base_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_attack_losses_replace_the_losses_of_one_attack(tiny_victim: Path, tmp_path: Path) -> None:
    raw = _tiny_raw(tiny_victim)
    raw["grid"].update(
        losses=["mse", "info_nce"],
        attacks=["direct", "consistency", "label_only"],
        attack_losses={"consistency": ["cosine"]},
    )
    cfg = parse_config(raw, base_dir=tmp_path)
    assert cfg.grid.methods(cfg.steal) == [
        ("direct", "query-once", "small", "mse"),
        ("direct", "query-once", "small", "info_nce"),
        ("consistency", "query-once", "small", "cosine"),
        ("label_only", "query-once", "small", "cross_entropy"),
    ]
    assert cfg.grid.size == 4 * 1 * 2
    assert torch.equal(torch.tensor(cfg.grid.budgets), torch.tensor([8]))


def test_prototype_views_under_a_detector(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """A detector sees every view: the thief's per-query records cover budget x views queries, and
    an image's later views are its repeats."""
    text = write_config(losses=("mse",), budgets=(8,), defenses=("detection",)).read_text()
    path = tmp_path / "detected.toml"
    path.write_text(
        text.replace("defenses = [", 'attacks = ["prototype"]\ndefenses = [').replace(
            "[steal]\n", "[steal]\nviews = 3\n"
        )
    )
    out = tmp_path / "detected"
    run = run_sweep(load_config(path), out, progress=False, log=lambda _: None)
    rows = write_outputs(run)["rows"]
    assert len(rows) == 2 and all(int(r["billed_queries"]) == 24 for r in rows)
    for r in rows:
        data = cached_tensors(out / "detections" / f"{r['cell_id']}.safetensors")
        thief = data["thief"]
        assert int(thief.sum()) == 8 * 3
        assert torch.equal(data["truth"][thief], torch.arange(24) % 3 != 0)
        assert r["thief_flagged"] is not None
