"""The defense study end to end at toy scale: three sweeps, the shared victim cache, the ownership tests."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from sslsteal_fast.sweep import DefenseStudyConfig, run_defense_study
from sslsteal_fast.sweep.config import parse_config
from sslsteal_fast.sweep.defense_study import _sweep_raw

TINY = DefenseStudyConfig(
    victim_count=200,
    victim_epochs=1,
    budget=60,
    steal_epochs=2,
    honest_train=60,
    honest_test=60,
    probe_epochs=10,
    di_fit=60,
    di_eval=40,
    seeds=(0, 1),
    mem_count=48,
    mem_epochs=2,
    mem_di_fit=16,
    mem_views=2,
    workers=1,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_defense_study_runs_on_the_sweep_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLSTEAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "study"
    run_defense_study(out, TINY, progress=False, log=lambda _: None)

    per_seed = _rows(out / "defenses.csv")
    assert sorted(int(r["seed"]) for r in per_seed if r["defense"] == "none") == [0, 1]
    rows = {r["defense"]: r for r in per_seed if r["seed"] == "0"}
    assert set(rows) == {"none", "noise", "detection", "detection-augmented", "coverage", "watermark"}
    # Undefended, the honest user sees the victim itself; every query-once thief pays its budget.
    assert rows["none"]["honest_top1"] == rows["none"]["victim_top1"]
    assert {rows[d]["billed_thief"] for d in ("none", "noise", "detection", "coverage")} == {str(TINY.budget)}
    assert int(rows["detection-augmented"]["billed_thief"]) == TINY.budget * TINY.steal_epochs
    assert {r["billed_honest"] for r in rows.values()} == {str(TINY.honest_train + TINY.honest_test)}
    # The detector's columns are filled for the detector rows only; the augmented thief has repeats.
    for name in ("detection", "detection-augmented"):
        assert 0.0 <= float(rows[name]["flagged_honest"]) <= 1.0 and 0.0 <= float(rows[name]["flagged_thief"]) <= 1.0
    assert rows["detection-augmented"]["recall"] != "" and rows["detection-augmented"]["roc_auc"] != ""
    assert rows["detection"]["recall"] == ""  # a query-once thief sends no repeats: recall is undefined
    assert all(rows[d]["flagged_honest"] == "" for d in ("none", "noise", "coverage", "watermark"))

    ownership = _rows(out / "ownership.csv")
    suspects = {r["suspect"] for r in ownership}
    stolen = {f"stolen-{loss}-{b}" for loss in ("info_nce", "mse") for b in (TINY.budget // 2, TINY.budget)}
    assert suspects == {"victim", "independent-same-data", "independent-disjoint-data", *stolen}
    methods = {"watermark", "dataset_inference", "dataset_inference_alignment"}
    assert {r["method"] for r in ownership} == methods
    assert all(r["verdict"] in ("stolen", "independent") for r in ownership)
    # Every test ran at every seed; the power table counts the seeds each suspect was flagged at.
    assert len(ownership) == len(suspects) * len(methods) * len(TINY.seeds)
    power = {(r["suspect"], r["method"]): r for r in _rows(out / "ownership_power.csv")}
    assert set(power) == {(s, m) for s in suspects for m in methods}
    for (suspect, method), r in power.items():
        flagged = [o for o in ownership if o["suspect"] == suspect and o["method"] == method]
        assert int(r["n"]) == 2 and int(r["flagged"]) == sum(float(o["p_value"]) < TINY.alpha for o in flagged)
        assert float(r["power"]) == int(r["flagged"]) / 2
    # Dataset inference draws other private and unseen images at each seed.
    di = [o for o in ownership if o["suspect"] == "victim" and o["method"] == "dataset_inference"]
    assert di[0]["p_value"] != di[1]["p_value"]
    means = {r["defense"]: r for r in _rows(out / "defenses_mean.csv")}
    assert set(means) == set(rows) and all(r["n_seeds"] == "2" for r in means.values())
    assert float(means["none"]["honest_cost"]) == 0.0

    # The study's plots, next to its CSVs (the ROC from the augmented thief's kept detection scores).
    for name in ("honest_vs_thief.png", "detection_roc.png", "ownership_pvalues.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name

    # Dataset inference against a victim fit to its few images, its copies and an independent encoder.
    memorising = _rows(out / "ownership_memorising.csv")
    assert {r["suspect"] for r in memorising} == {
        "victim",
        "independent-disjoint-data",
        *(f"stolen-{loss}-{TINY.budget}" for loss in ("info_nce", "mse")),
    }
    assert {r["method"] for r in memorising} == {"dataset_inference", "dataset_inference_alignment"}
    assert len(_rows(out / "ownership_memorising_power.csv")) == 4 * 2
    assert (out / "ownership_memorising_pvalues.png").read_bytes().startswith(b"\x89PNG")

    # The four encoders come from the shared victim cache (plain, watermarked, independent, memorising).
    assert len(list((tmp_path / "cache" / "victims").iterdir())) == 4

    # Rerunning resumes every sweep: no cell runs again.
    run_defense_study(out, TINY, progress=False, log=lambda _: None)
    for sweep in ("plain", "augmented", "watermark", "memorising"):
        summary = json.loads((out / "defense-study" / sweep / "summary.json").read_text())
        assert summary["cells"]["ran_this_run"] == 0 and summary["cells"]["resumed"] == summary["cells"]["total"]


def test_the_study_sweeps_run_on_the_engine_it_is_given() -> None:
    cfg = DefenseStudyConfig.quick()
    ray = dataclasses.replace(cfg, engine="ray", address="auto")
    for study, engine, address in ((cfg, "local", None), (ray, "ray", "auto")):
        run = parse_config(_sweep_raw(study, "plain", ["none"], strategy="query-once", watermark=False)).run
        assert (run.engine, run.address) == (engine, address)
