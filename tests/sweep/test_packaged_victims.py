"""The packaged pretrained victims are the ones the demo and the defense study ask for, and are as good as recorded."""

from __future__ import annotations

import dataclasses

import pytest

from sslsteal_fast.config import ProbeConfig
from sslsteal_fast.data import load_dataset
from sslsteal_fast.models import load_checkpoint
from sslsteal_fast.ownership import WatermarkHook
from sslsteal_fast.probes import probe_encoder
from sslsteal_fast.sweep import DefenseStudyConfig, demo_config
from sslsteal_fast.sweep.config import parse_config
from sslsteal_fast.sweep.defense_study import _sweep_raw
from sslsteal_fast.victim.cache import cache_folder
from sslsteal_fast.victim.pretrained import packaged_victims

PACKAGED = packaged_victims()
NAMES = ("demo", "demo-watermark", "demo-independent")


def test_the_package_ships_the_demo_victims_intact() -> None:
    assert set(NAMES) <= set(PACKAGED)
    for entry in PACKAGED.values():
        entry.verify()  # every file present, sha256 as recorded
        assert all((entry.folder / f).stat().st_size < 4_000_000 for f in entry.files)


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_maps_to_its_packaged_cache_entry(name: str) -> None:
    entry = PACKAGED[name]
    cfg, wm = entry.configs()
    hooks = [WatermarkHook(wm)] if wm is not None else []
    assert cache_folder(cfg, hooks).name == entry.cache_entry


def test_the_demo_and_the_defense_study_ask_for_the_packaged_victims() -> None:
    demo = demo_config().victim
    assert cache_folder(demo.train).name == PACKAGED["demo"].cache_entry
    study = DefenseStudyConfig()
    assert cache_folder(study.victim()).name == PACKAGED["demo"].cache_entry
    independent = study.victim(seed=study.seed + 1, data_seed=4)
    assert cache_folder(independent).name == PACKAGED["demo-independent"].cache_entry
    spec = parse_config(_sweep_raw(study, "watermark", ["none"], strategy="query-once", watermark=True)).victim
    assert spec.watermark is not None
    assert cache_folder(spec.train, [WatermarkHook(spec.watermark)]).name == PACKAGED["demo-watermark"].cache_entry


def test_the_demo_victim_is_as_good_as_recorded_and_beats_both_baselines() -> None:
    entry = PACKAGED["demo"]
    m = entry.measured
    # The recorded claim: >= 2.5x an untrained encoder and >= 70% of a supervised one (same architecture).
    assert m["probe_top1"] >= 2.5 * m["untrained"]["probe_top1"]
    assert m["probe_top1"] >= 0.7 * m["supervised"]["probe_top1"]
    # ...and the shipped weights really give the recorded accuracy on the recorded probe.
    model, _ = load_checkpoint(entry.folder / "victim")
    probe = m["probe"]
    train, test = (load_dataset(**probe[split]) for split in ("train", "test"))
    top1 = probe_encoder(model, train, test, ProbeConfig(epochs=probe["epochs"])).linear.top1
    assert top1 == pytest.approx(m["probe_top1"], abs=0.01)


def test_the_recorded_recipe_is_the_full_training_config() -> None:
    cfg, _ = PACKAGED["demo"].configs()
    assert dataclasses.asdict(cfg).keys() == dataclasses.asdict(demo_config().victim.train).keys()
    assert cfg.identity() == demo_config().victim.train.identity()


@pytest.mark.parametrize("name", ["demo.toml", "demo-seeds.toml", "demo-requery.toml"])
def test_every_full_demo_config_uses_the_packaged_victim(name: str) -> None:
    from importlib import resources

    from sslsteal_fast.sweep.config import load_config

    with resources.as_file(resources.files("sslsteal_fast.sweep").joinpath("configs", name)) as path:
        cfg = load_config(path)
    assert cache_folder(cfg.victim.train).name == PACKAGED["demo"].cache_entry
