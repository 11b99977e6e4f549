"""Argument checks shared by the functional ops: every error names the argument at fault."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_matrix(name: str, t: object) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (rows, features) tensor, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {t.dtype}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column, got shape {tuple(t.shape)}")


def check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, *, same_rows: bool) -> None:
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move both to one device")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} is {a.dtype} but {name_b} is {b.dtype}; pass one dtype")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same feature dimension D, got {a.shape[1]} and {b.shape[1]}"
        )
    if same_rows and a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same batch size B, got {a.shape[0]} and {b.shape[0]}")


def check_labels(labels: object, z: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one entry per row of z ({z.shape[0]}), got shape {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be int64 or int32, got {labels.dtype}")
    if labels.device != z.device:
        raise ValueError(f"labels are on {labels.device} but z is on {z.device}; move both to one device")


def check_temperature(temperature: object) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a positive number, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def choose(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def check_reduction(reduction: object, allowed: Sequence[str]) -> None:
    choose("reduction", reduction, allowed)
