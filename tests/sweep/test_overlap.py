"""Query images that are also victim training images are counted for checkpoint victims too."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.models import checkpoint_paths
from sslsteal_fast.sweep import inputs, parse_config, run_sweep, write_outputs
from sslsteal_fast.sweep.artifacts import PreparedVictim
from sslsteal_fast.victim import train_victim
from tests.sweep.conftest import IMAGE_SIZE


def test_checkpoint_victim_reports_overlap_with_its_training_set(tmp_path: Path) -> None:
    victim = VictimTrainConfig(
        dataset="shapes", out=str(tmp_path / "victim"), epochs=1, batch_size=20, count=40, image_size=IMAGE_SIZE,
        data_seed=3, device="cpu", progress=False,
    )  # fmt: skip
    prefix = train_victim(victim)
    shapes = {"spec": "shapes", "size": IMAGE_SIZE, "count": 20}
    raw = {
        "victim": {"checkpoint": "victim"},
        "datasets": {
            "seen": {**shapes, "seed": 3, "count": 40, "slice": [10, 30]},  # training images
            "unseen": {**shapes, "seed": 4},
            "p-train": {**shapes, "seed": 5},
            "p-test": {**shapes, "split": "test"},
        },
        "probe": {"train": "p-train", "test": "p-test", "epochs": 5, "knn_k": 5},
        "grid": {"losses": ["mse"], "budgets": [8], "query_datasets": ["seen", "unseen"]},
        "steal": {"epochs": 1},
        "run": {"threads": 1},
    }
    cfg = parse_config(raw, base_dir=tmp_path)
    messages: list[str] = []
    run = run_sweep(cfg, tmp_path / "out", progress=False, log=messages.append)
    assert run.victim.source == "checkpoint"
    assert run.overlap == {"seen": 8, "unseen": 0}  # its first 8 images are queried
    assert any("WARNING 8 query images of 'seen' are also victim training images" in m for m in messages)
    write_outputs(run)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {q["query_dataset"]: q["overlap_with_victim_train"] for q in summary["query_sets"]} == run.overlap

    # A checkpoint written before the `train_data` record: the older metadata fields say the same.
    meta = json.loads(checkpoint_paths(prefix)[1].read_text())
    old = {k: v for k, v in run.victim.metadata.items() if k != "train_data"}
    queries = {q.name: inputs.query_images(q, 8, tmp_path / "out") for q in cfg.grid.query_datasets}
    older = dataclasses.replace(run.victim, metadata=old)
    assert inputs.overlap_with_victim_train(cfg, older, queries, log=messages.append) == {"seen": 8, "unseen": 0}
    # Data that no longer holds the training images (its hash differs): not counted, and said so.
    tampered = {**meta["train_data"], "images_sha256": "0" * 64}
    other = PreparedVictim(run.victim.onnx, run.victim.sha256, "checkpoint", 40, metadata={"train_data": tampered})
    assert inputs.overlap_with_victim_train(cfg, other, queries, log=messages.append) == {}
    assert "no longer holds the images it was trained on" in messages[-1]
    # A checkpoint that does not say what it was trained on: nothing to count.
    bare = dataclasses.replace(run.victim, metadata={"image_size": IMAGE_SIZE})
    assert inputs.overlap_with_victim_train(cfg, bare, queries, log=messages.append) == {}
