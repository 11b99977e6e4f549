"""A sweep under a stateful defense (a detector remembers what each client sent) gives the same cell,
under the same id, whether its budgets grew over two runs or it ran once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslsteal_fast.sweep import ResultStore, parse_config, run_sweep
from tests.sweep.conftest import IMAGE_SIZE

#: The columns a cell's result is made of (not its timings).
RESULT_COLUMNS = ("probe_top1", "knn_top1", "fidelity_cosine", "final_loss", "billed_queries", "thief_flagged")


def _config(folder: Path, victim: Path, budgets: list[int]) -> dict[str, object]:
    return {
        "victim": {"onnx": str(victim)},
        "datasets": {
            "p-train": {"spec": "shapes", "seed": 2, "count": 30, "size": IMAGE_SIZE},
            "p-test": {"spec": "shapes", "split": "test", "count": 20, "size": IMAGE_SIZE},
        },
        "probe": {"train": "p-train", "test": "p-test", "epochs": 5, "knn_k": 5},
        "grid": {
            "losses": ["mse"],
            "budgets": budgets,
            "query_datasets": ["npz:repeats.npz"],
            # Flags only exact repeats of an earlier image (random images are ~0.75 apart), and junks them.
            "defenses": ["detection:threshold=0.99,feature=input"],
        },
        "steal": {"epochs": 1},
        "run": {"threads": 1},
    }


def _results(out: Path) -> dict[str, tuple[object, ...]]:
    with ResultStore(out / "results.sqlite") as store:
        return {r["cell_id"]: (r["budget"], *(r[c] for c in RESULT_COLUMNS)) for r in store.cells()}


def test_growing_budgets_under_a_detector_matches_a_fresh_run(tmp_path: Path, tiny_victim: Path) -> None:
    # 20 distinct images, then the same 20 again: the detector should flag every one of the repeats.
    first = np.random.default_rng(0).integers(0, 256, (20, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    np.savez(tmp_path / "repeats.npz", images=np.concatenate([first, first]))
    quiet = {"progress": False, "log": lambda _: None}

    grown = tmp_path / "grown"
    run_sweep(parse_config(_config(tmp_path, tiny_victim, [10, 20]), base_dir=tmp_path), grown, **quiet)
    bigger = parse_config(_config(tmp_path, tiny_victim, [10, 20, 40]), base_dir=tmp_path)
    run = run_sweep(bigger, grown, **quiet)
    assert (run.ran, run.resumed) == (1, 2)
    # The detector's memory of the first 20 rows is rebuilt: all 40 are sent (and billed) again; the
    # victim runs once per distinct image, so the 20 repeats cost no forward pass.
    (answers,) = run.answers.values()
    assert (answers["billed_queries"], answers["forward_passes_this_run"], answers["forward_passes"]) == (60, 20, 40)
    fresh = tmp_path / "fresh"
    run_sweep(bigger, fresh, **quiet)

    a, b = _results(grown), _results(fresh)
    assert a.keys() == b.keys() and len(a) == 3
    assert a == b  # every shared cell: same id, same result
    by_budget = {row[0]: row for row in b.values()}
    assert by_budget[40][-1] == pytest.approx(20 / 40)  # the 20 repeats were flagged
    assert by_budget[20][-1] == 0.0
