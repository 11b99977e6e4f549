"""Fixtures for the sweep tests: a tiny ONNX victim and tiny TOML grids (16x16 images, budgets <= 32)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sslsteal_fast.models import build_encoder
from sslsteal_fast.victim import export_onnx

IMAGE_SIZE = 16


@pytest.fixture(scope="session")
def tiny_victim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised ``small`` encoder exported to ONNX for 3x16x16 images."""
    path = tmp_path_factory.mktemp("victim") / "victim.onnx"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = build_encoder("small")
    export_onnx(encoder, path, (3, IMAGE_SIZE, IMAGE_SIZE))
    return path


def tiny_toml(
    victim: Path,
    *,
    losses: tuple[str, ...] = ("mse", "info_nce"),
    budgets: tuple[int, ...] = (8, 16, 32),
    seeds: tuple[int, ...] = (0,),
    workers: int = 1,
    steal_epochs: int = 1,
    query_count: int = 40,
    strategy: str = "query-once",
    defenses: tuple[str, ...] = ("none",),
) -> str:
    """A sweep over two query sets (in-domain and shifted) against ``victim``."""

    def arr(values: tuple[object, ...]) -> str:
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values) + "]"

    return f"""
name = "tiny"

[datasets.q-in]
spec = "shapes"
seed = 1
count = {query_count}
size = {IMAGE_SIZE}

[datasets.q-ood]
spec = "shapes-ood"
seed = 1
count = {query_count}
size = {IMAGE_SIZE}

[datasets.probe-train]
spec = "shapes"
seed = 2
count = 100
size = {IMAGE_SIZE}

[datasets.probe-test]
spec = "shapes"
split = "test"
count = 50
size = {IMAGE_SIZE}

[victim]
onnx = "{victim}"

[probe]
train = "probe-train"
test = "probe-test"
epochs = 10
knn_k = 10

[grid]
losses = {arr(losses)}
budgets = {arr(budgets)}
query_datasets = ["q-in", "q-ood"]
seeds = {arr(seeds)}
defenses = {arr(defenses)}

[steal]
epochs = {steal_epochs}
strategy = "{strategy}"

[run]
workers = {workers}
threads = 1  # tiny tensors: more threads only add synchronisation (and this machine is shared)
"""


@pytest.fixture
def write_config(tmp_path: Path, tiny_victim: Path) -> Callable[..., Path]:
    """``write_config(**tiny_toml_options) -> path`` of a TOML file in ``tmp_path``."""

    def write(**options: object) -> Path:
        path = tmp_path / "sweep.toml"
        path.write_text(tiny_toml(tiny_victim, **options))  # type: ignore[arg-type]
        return path

    return write
