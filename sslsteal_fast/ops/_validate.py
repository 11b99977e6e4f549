"""The tensor contracts of the functional ops; scalar checks come from :mod:`sslsteal_fast.util.checks`.

Every error names the argument at fault: a wrong type raises ``ArgumentTypeError`` (a ``TypeError``),
a wrong shape, device or value a ``ValueError``.
"""

from __future__ import annotations

import torch

from sslsteal_fast.util.checks import ArgumentTypeError

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_matrix(name: str, t: object) -> None:
    """``t`` is a floating (rows, features) tensor with at least one feature."""
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (rows, features) tensor, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"{name} must be float32, float64, bfloat16 or float16, got {t.dtype}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column, got shape {tuple(t.shape)}")


def check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, *, same_rows: bool) -> None:
    """Two matrices on one device, of one dtype and feature dimension (and row count with ``same_rows``)."""
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move both to one device")
    if a.dtype != b.dtype:
        raise ArgumentTypeError(f"{name_a} is {a.dtype} but {name_b} is {b.dtype}; pass one dtype")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same feature dimension D, got {a.shape[1]} and {b.shape[1]}"
        )
    if same_rows and a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same batch size B, got {a.shape[0]} and {b.shape[0]}")


def check_labels(labels: object, z: torch.Tensor) -> None:
    """Integer labels, one per row of ``z``, on ``z``'s device."""
    if not isinstance(labels, torch.Tensor):
        raise ArgumentTypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one entry per row of z ({z.shape[0]}), got shape {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise ArgumentTypeError(f"labels must be int64 or int32, got {labels.dtype}")
    if labels.device != z.device:
        raise ValueError(f"labels are on {labels.device} but z is on {z.device}; move both to one device")
