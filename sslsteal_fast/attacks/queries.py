"""The query set of a steal: tensors, numpy arrays and Datasets, read a batch at a time.

:func:`~sslsteal_fast.attacks.steal` reads its queries through :class:`QuerySet`: random access to the
first ``budget`` images, each fetch returning one batch and never the whole set, so a Dataset that
decodes images from disk, or a memory-mapped array, is only read as the batches are needed.
Accepted query sets:

* an :class:`~sslsteal_fast.data.ImageDataset` (its uint8 images; its ``name`` names the set);
* a torch tensor (N, C, H, W), uint8 or floating point in [0, 1];
* a numpy array (N, C, H, W) of those dtypes (an ``np.memmap`` is read batch by batch);
* a map-style ``torch.utils.data.Dataset`` whose items are an image (C, H, W) (tensor or array) or a
  tuple/list whose first element is one, such as ``(image, label)``; labels are never used.

Fetched batches are uint8 or float32 (float64 and half inputs are converted), on the source's device.
Float images outside [0, 1] or not finite are refused when they are read.

:meth:`QuerySet.new_hash` starts the SHA-256 that identifies the query set in what is stolen with it:
over the dtype, the image shape and the bytes of the first ``budget`` images in order, so the same
images in the same dtype give the same hash whatever container they came in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from sslsteal_fast.data import ImageDataset
from sslsteal_fast.util.checks import ArgumentTypeError, check_positive_int

__all__ = ["QueryInput", "QuerySet"]

#: What :func:`~sslsteal_fast.attacks.steal` takes as queries.
QueryInput = ImageDataset | torch.Tensor | np.ndarray | Dataset

_FLOAT_NUMPY = (np.float16, np.float32, np.float64)


class QuerySet:
    """The first ``budget`` images of a query set, fetched a batch at a time (see the module docstring).

    Attributes:
        name: the set's name: an ImageDataset's or a Dataset's ``name``, else its type (``"Tensor"``, ...).
        budget: how many images are used (the first ones).
        image_shape: (C, H, W) of every image.
        dtype: ``torch.uint8`` or ``torch.float32``, the dtype of fetched batches.
    """

    def __init__(self, queries: QueryInput, budget: int) -> None:
        check_positive_int("steal: budget", budget)
        source: Any = queries.images if isinstance(queries, ImageDataset) else queries
        self.name: str = str(getattr(queries, "name", None) or type(queries).__name__)
        self._source = source
        if isinstance(source, torch.Tensor):
            if source.dim() != 4 or not (source.dtype == torch.uint8 or source.is_floating_point()):
                raise ValueError(
                    "steal: query images must be (N, C, H, W), uint8 or float in [0, 1], got a "
                    f"{source.dtype} tensor of shape {tuple(source.shape)}"
                )
            available = int(source.shape[0])
        elif isinstance(source, np.ndarray):
            if source.ndim != 4 or source.dtype not in (np.uint8, *_FLOAT_NUMPY):
                raise ValueError(
                    "steal: query images must be (N, C, H, W), uint8 or float in [0, 1], got a numpy array "
                    f"of {source.dtype} and shape {source.shape}"
                )
            available = int(source.shape[0])
        elif isinstance(source, IterableDataset):
            raise ArgumentTypeError(
                "steal: queries cannot be an IterableDataset: every epoch revisits the images in a new order, "
                "so they need random access; use a map-style Dataset (with __getitem__ and __len__)"
            )
        elif isinstance(source, Dataset):
            try:
                available = len(source)  # type: ignore[arg-type]
            except TypeError as exc:
                raise ArgumentTypeError(f"steal: a query Dataset must have a length ({exc})") from exc
        else:
            raise ArgumentTypeError(
                "steal: queries must be an ImageDataset, a torch tensor or numpy array (N, C, H, W), or a "
                f"torch.utils.data.Dataset of images; got {type(queries).__name__}"
            )
        if budget > available:
            raise ValueError(
                f"steal: budget {budget} exceeds the {available} available query images; lower the budget or "
                "use a larger query set"
            )
        self.budget = budget
        first = self._read(np.zeros(1, dtype=np.int64))
        self.image_shape: tuple[int, int, int] = (int(first.shape[1]), int(first.shape[2]), int(first.shape[3]))
        self.dtype: torch.dtype = first.dtype

    def __len__(self) -> int:
        return self.budget

    def fetch(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Images ``index`` (int, each < budget) as one (n, C, H, W) batch of :attr:`dtype`."""
        rows = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.budget):
            raise IndexError(f"QuerySet.fetch: rows must be in [0, {self.budget}), got {rows.min()}..{rows.max()}")
        batch = self._read(rows)
        if tuple(batch.shape[1:]) != self.image_shape or batch.dtype != self.dtype:
            raise ValueError(
                f"steal: query images must all be {self.dtype} {self.image_shape}; rows {rows[:4].tolist()}... give "
                f"{batch.dtype} {tuple(batch.shape[1:])}"
            )
        return batch

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """The ``budget`` images in order, ``size`` at a time."""
        check_positive_int("QuerySet.chunks: size", size)
        for start in range(0, self.budget, size):
            yield self.fetch(np.arange(start, min(start + size, self.budget)))

    def new_hash(self) -> Any:
        """A ``hashlib.sha256`` object primed with the dtype and image shape; feed it with :func:`update_hash`."""
        return hashlib.sha256(f"sslsteal_fast queries|{self.dtype}|{self.image_shape}|".encode())

    def sha256(self, chunk_size: int = 256) -> str:
        """SHA-256 of the ``budget`` images (one streamed pass over them)."""
        h = self.new_hash()
        for batch in self.chunks(chunk_size):
            update_hash(h, batch)
        return h.hexdigest()

    # ---------------------------------------------------------------------------------- reading
    def _read(self, rows: np.ndarray) -> torch.Tensor:
        source = self._source
        if isinstance(source, torch.Tensor):
            batch = source[torch.from_numpy(rows).to(source.device)]
        elif isinstance(source, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(source[rows]))
        else:
            images = [self._item(int(i)) for i in rows]
            shapes = {(tuple(x.shape), x.dtype) for x in images}
            if len(shapes) > 1:
                raise ValueError(
                    f"steal: the query Dataset's images differ in shape or dtype: {sorted(map(str, shapes))}"
                )
            batch = torch.stack(images)
        if batch.dtype == torch.uint8:
            return batch
        batch = batch.to(torch.float32)
        if not bool(torch.isfinite(batch).all()) or (batch.numel() and (batch.min() < 0 or batch.max() > 1)):
            raise ValueError(
                "steal: float query images must be finite and in [0, 1] (uint8 images are scaled by 1/255); got "
                f"values in [{batch.min().item():g}, {batch.max().item():g}]"
            )
        return batch

    def _item(self, i: int) -> torch.Tensor:
        item = self._source[i]
        x = item[0] if isinstance(item, (tuple, list)) and item else item
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise ArgumentTypeError(
                f"steal: query Dataset item {i} must be an image tensor or array (C, H, W), or a tuple whose first "
                f"element is one; got {type(x).__name__} (convert PIL images with a transform such as PILToTensor)"
            )
        if x.dim() != 3 or not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise ValueError(
                f"steal: query Dataset item {i} must be a uint8 or float image (C, H, W), got {x.dtype} "
                f"{tuple(x.shape)}"
            )
        return x


def update_hash(h: Any, batch: torch.Tensor) -> None:
    """Feed the bytes of one fetched batch (in order) to a hash from :meth:`QuerySet.new_hash`."""
    h.update(np.ascontiguousarray(batch.detach().cpu().numpy()).data)
