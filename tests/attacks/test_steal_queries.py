"""steal() reads tensors, numpy arrays and Datasets alike: a batch at a time, with the same results and exact bills."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset

from sslsteal_fast.attacks import LocalVictim, QuerySet, StealConfig, steal
from sslsteal_fast.data import ImageDataset
from tests.helpers import calibrated_encoder, uint8_images

SIZE = 16
BUDGET, EPOCHS = 24, 2


class Images(Dataset):
    """A map-style Dataset over images; items are ``x`` or ``(x, label)``; every read is logged."""

    def __init__(self, images, *, pairs: bool = False, log: list | None = None) -> None:
        self.images, self.pairs, self.log = images, pairs, log if log is not None else []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.log.append(("get", i))
        x = self.images[i]
        return (x, i % 3) if self.pairs else x


class LoggingVictim(LocalVictim):
    """A local victim that logs each query's size."""

    def __init__(self, encoder: torch.nn.Module, log: list) -> None:
        super().__init__(encoder)
        self.log = log

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor:
        self.log.append(("query", int(x.shape[0])))
        return super().query(x, client)


U8 = uint8_images(40, seed=4, size=SIZE)
KINDS: dict[str, Callable[[], object]] = {
    "tensor-uint8": lambda: U8,
    "image-dataset": lambda: ImageDataset(U8, torch.zeros(40, dtype=torch.int64), 1, "toy"),
    "numpy-uint8": lambda: U8.numpy(),
    "dataset-x": lambda: Images(U8),
    "dataset-x-label": lambda: Images(U8, pairs=True),
    "dataset-numpy-items": lambda: Images(U8.numpy(), pairs=True),
    "tensor-float32": lambda: U8.float() / 255,
    "tensor-float64": lambda: U8.double() / 255,
    "numpy-float32": lambda: U8.numpy().astype(np.float32) / np.float32(255),
    "dataset-float32": lambda: Images(U8.float() / 255, pairs=True),
}


def _cfg(strategy: str) -> StealConfig:
    return StealConfig(loss="mse", budget=BUDGET, epochs=EPOCHS, batch_size=8, strategy=strategy, augment=False)


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    return calibrated_encoder(123, size=SIZE)


@pytest.fixture(scope="module")
def reference(encoder: torch.nn.Module) -> dict[str, list[float]]:
    return {s: steal(LocalVictim(encoder), U8, _cfg(s), progress=False).history for s in ("query-once", "augmented")}


@pytest.mark.parametrize("strategy", ["query-once", "augmented"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_query_kind_steals_the_same_and_bills_exactly(
    kind: str, strategy: str, encoder: torch.nn.Module, reference: dict[str, list[float]]
) -> None:
    victim = LocalVictim(encoder)
    result = steal(victim, KINDS[kind](), _cfg(strategy), progress=False)
    billed = BUDGET if strategy == "query-once" else BUDGET * EPOCHS
    assert result.billed_queries == result.victim_forward_passes == victim.queries_used == billed
    assert result.answers_used == billed
    assert result.history == reference[strategy]  # uint8 / 255 and float images are the same pixels


def test_query_set_hash_and_name() -> None:
    u8 = {k: QuerySet(KINDS[k](), BUDGET) for k in ("tensor-uint8", "image-dataset", "numpy-uint8", "dataset-x")}
    f32 = {k: QuerySet(KINDS[k](), BUDGET) for k in ("tensor-float32", "tensor-float64", "dataset-float32")}
    assert len({q.sha256() for q in u8.values()}) == 1  # the same images, whatever container
    assert len({q.sha256() for q in f32.values()}) == 1
    assert u8["tensor-uint8"].sha256() != f32["tensor-float32"].sha256()
    assert QuerySet(U8, BUDGET - 1).sha256() != u8["tensor-uint8"].sha256()  # a prefix is another set
    changed = U8.clone()
    changed[BUDGET - 1, 0, 0, 0] ^= 1
    assert QuerySet(changed, BUDGET).sha256() != u8["tensor-uint8"].sha256()
    assert QuerySet(changed, BUDGET - 1).sha256() == QuerySet(U8, BUDGET - 1).sha256()  # only used rows count
    assert [u8[k].name for k in u8] == ["Tensor", "toy", "ndarray", "Images"]
    assert u8["tensor-uint8"].dtype == torch.uint8 and f32["tensor-float64"].dtype == torch.float32


def test_a_dataset_is_read_a_batch_at_a_time(encoder: torch.nn.Module) -> None:
    log: list[tuple[str, int]] = []

    def logged_mse(stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log.append(("loss", int(stolen.shape[0])))
        return F.mse_loss(stolen, target)

    cfg = StealConfig(loss="mse", budget=40, epochs=2, batch_size=8, victim_batch_size=16, augment=False)
    result = steal(LoggingVictim(encoder, log), Images(U8, log=log), cfg, loss=logged_mse, progress=False)
    assert result.billed_queries == 40
    # One image read for its shape, two for the loss check, each image once for the victim, once per epoch.
    assert sum(1 for event, _ in log if event == "get") == 1 + 2 + 40 + 2 * 40
    # Reads and uses interleave: never more than one chunk of images is read ahead of its use.
    run = longest = 0
    for event, _ in log:
        run = run + 1 if event == "get" else 0
        longest = max(longest, run)
    assert longest <= 16
    queries = [n for event, n in log if event == "query"]
    assert queries == [16, 16, 8]


def test_a_memory_mapped_array_is_read_in_place(tmp_path, encoder: torch.nn.Module, reference) -> None:
    path = tmp_path / "queries.u8"
    U8.numpy().tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=tuple(U8.shape))
    result = steal(LocalVictim(encoder), mapped, _cfg("query-once"), progress=False)
    assert result.history == reference["query-once"]


class _Stream(IterableDataset):
    def __iter__(self):
        yield from U8


class _NoLength(Dataset):
    def __getitem__(self, i: int) -> torch.Tensor:
        return U8[i]


class _Ragged(Images):
    def __getitem__(self, i: int):
        x = super().__getitem__(i)
        return x[:, :8] if i == 3 else x


@pytest.mark.parametrize(
    "queries, match",
    [
        (_Stream(), "cannot be an IterableDataset"),
        (_NoLength(), "must have a length"),
        (Images([object()] * 40), "item 0 must be an image tensor or array"),
        (Images([U8[0, 0]] * 40), "item 0 must be a uint8 or float image \\(C, H, W\\)"),
        (_Ragged(U8), "differ in shape or dtype"),
        ([U8[0]] * 40, "queries must be an ImageDataset, a torch tensor or numpy array"),
        (U8.numpy().astype(np.int32), "got a numpy array of int32"),
        (U8.float(), "float query images must be finite and in \\[0, 1\\]"),
        (torch.full((40, 3, SIZE, SIZE), float("nan")), "float query images must be finite"),
        (Images(U8[:10]), "budget 24 exceeds the 10 available query images"),
    ],
)
def test_unusable_query_sets_say_what_to_fix(queries: object, match: str, encoder: torch.nn.Module) -> None:
    victim = LocalVictim(encoder)
    with pytest.raises(ValueError, match=match):
        steal(victim, queries, _cfg("query-once"), progress=False)
    assert victim.queries_used == 0
