"""Sweeps on GPUs, planned on the CPU with faked devices: workers per GPU from free memory, ids device-free."""

from __future__ import annotations

import dataclasses
import queue
from pathlib import Path

import pytest
import torch

from sslsteal_fast.config import StealConfig
from sslsteal_fast.models import build_encoder
from sslsteal_fast.sweep import cell as cell_mod
from sslsteal_fast.sweep import grid, parse_config
from sslsteal_fast.sweep.config import GRID_OWNED
from sslsteal_fast.util.files import save_tensors, stable_hash
from tests.sweep.test_config import base

GiB = 2**30


@pytest.fixture
def fake_gpus(monkeypatch):
    """``fake([free bytes of GPU 0, GPU 1, ...])``: torch sees those GPUs with that much free memory."""

    def fake(free: list[int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(free))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free))
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (free[i], 80 * GiB))

    return fake


def test_cells_per_gpu_follow_free_memory(fake_gpus):
    fake_gpus([10 * GiB, 4 * GiB])
    # 1 GiB per cell + 1 GiB per worker: GPU 0 fits int(8 GiB / 2 GiB) = 4, GPU 1 int(3.2 / 2) = 1.
    plan = grid.plan_device_workers("auto", 1, None, pending=100, per_cell_bytes=GiB, cores=16)
    assert plan.workers == 5
    assert plan.devices == ("cuda:0", "cuda:1", "cuda:0", "cuda:0", "cuda:0")
    assert plan.threads == 16 // 5


def test_a_full_gpu_still_gets_one_worker(fake_gpus):
    fake_gpus([GiB // 4])
    plan = grid.plan_device_workers("cuda", 1, None, pending=10, per_cell_bytes=8 * GiB, cores=4)
    assert plan.devices == ("cuda:0",)


def test_cells_per_gpu_overrides_and_caps_apply(fake_gpus):
    fake_gpus([80 * GiB, 80 * GiB])
    plan = grid.plan_device_workers("cuda", 1, None, pending=100, per_cell_bytes=GiB, cells_per_gpu=3, cores=16)
    assert plan.devices == ("cuda:0", "cuda:1") * 3
    assert (
        grid.plan_device_workers("cuda", 1, None, pending=4, per_cell_bytes=GiB, cells_per_gpu=3, cores=16).workers == 4
    )
    assert (
        grid.plan_device_workers("cuda", 1, None, pending=100, per_cell_bytes=GiB, cells_per_gpu=3, cores=2).workers
        == 2
    )
    one = grid.plan_device_workers("cuda:1", 1, 1, pending=100, per_cell_bytes=GiB, cells_per_gpu=2, cores=16)
    assert one.devices == ("cuda:1", "cuda:1") and one.threads == 1


def test_cpu_plans_are_unchanged(fake_gpus):
    fake_gpus([])
    plan = grid.plan_device_workers("auto", 3, None, pending=10, per_cell_bytes=GiB, cores=8)
    assert (plan.workers, plan.threads) == grid.plan_workers(3, None, 10, 8)
    assert plan.devices == ("cpu",) * 3
    fake_gpus([80 * GiB])
    assert grid.plan_device_workers("cpu", 2, None, pending=10, per_cell_bytes=GiB, cores=8).devices == ("cpu", "cpu")


def test_cell_memory_estimate_grows_with_the_cell():
    small = grid.cell_memory_bytes("small", 64, (3, 32, 32), 1000, 512)
    assert small > 16 * sum(p.numel() for p in build_encoder("small").parameters())
    assert grid.cell_memory_bytes("resnet18", 64, (3, 32, 32), 1000, 512) > small
    assert grid.cell_memory_bytes("small", 256, (3, 32, 32), 1000, 512) > small


def test_run_device_and_cells_per_gpu_are_run_settings(tmp_path: Path):
    raw = base()
    raw["run"] = {"device": "cuda:1", "cells_per_gpu": 2}
    cfg = parse_config(raw, base_dir=tmp_path)
    assert (cfg.run.device, cfg.run.cells_per_gpu) == ("cuda:1", 2)
    assert parse_config(base(), base_dir=tmp_path).run.device == "auto"
    for bad in ({"device": "gpu"}, {"cells_per_gpu": 0}):
        with pytest.raises(ValueError, match="run\\."):
            parse_config({**base(), "run": bad}, base_dir=tmp_path)
    with pytest.raises(ValueError, match="\\[run\\] device"):
        parse_config({**base(), "steal": {"device": "cuda"}}, base_dir=tmp_path)


def test_cell_ids_do_not_depend_on_the_device(tmp_path: Path):
    ids = []
    for device in ("cpu", "cuda", "auto"):
        cfg = parse_config({**base(), "run": {"device": device}}, base_dir=tmp_path)
        ids.append([stable_hash(grid.cell_key(cfg, c, "sha")) for c in grid.expand_grid(cfg)])
    assert ids[0] == ids[1] == ids[2]
    # The same key the ids were made with before the device moved to [run] (StealConfig's device was "cpu").
    cfg = parse_config(base(), base_dir=tmp_path)
    # Fields added later (the attacks' settings, the crop) stay out of the key at their defaults.
    later = {"attack", "views", "memory", "consistency_weight", "crop_min_scale"}
    old = {k: v for k, v in dataclasses.asdict(dataclasses.replace(StealConfig(), device="cpu")).items()}
    assert cfg.steal_key() == {k: v for k, v in old.items() if k not in GRID_OWNED and k not in later}


def test_inputs_move_to_the_worker_device_once(tmp_path: Path, monkeypatch):
    path = tmp_path / "q.safetensors"
    save_tensors(path, {"images": torch.zeros(4, 3, 2, 2, dtype=torch.uint8)}, {})
    monkeypatch.setattr(cell_mod, "_FILES", {})
    moved = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        moved.append(args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    first = cell_mod.cached_tensors(path, "meta")  # "meta" stands in for a GPU here
    again = cell_mod.cached_tensors(path, "meta")
    assert first is again and first["images"].device.type == "meta"
    assert len(moved) == 1
    assert cell_mod.cached_tensors(path)["images"].device.type == "cpu"


def test_each_pool_worker_takes_its_device(monkeypatch):
    slots: queue.Queue[str] = queue.Queue()
    slots.put("cuda:1")
    monkeypatch.setattr(cell_mod, "_WORKER_DEVICE", None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    cell_mod.init_worker(1, None, slots)
    assert cell_mod._WORKER_DEVICE == "cuda:1"
