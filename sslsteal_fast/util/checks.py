"""The package's argument checks: one place, one wording, every error names the argument.

Each check returns the value (converted where that is lossless: an int given for a float becomes a
float) so a constructor can validate and normalise in one line::

    self.sigma = check_number("GaussianNoise.sigma", sigma, low=0.0)

Wrong *types* raise :class:`ArgumentTypeError`, which is both a ``TypeError`` (what it is) and a
``ValueError`` (what callers that validate user input catch, the command line among them); wrong
*values* raise ``ValueError``. ``bool`` is never accepted where a number is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = [
    "ArgumentTypeError",
    "check_bool",
    "check_choice",
    "check_client",
    "check_int",
    "check_number",
    "check_positive_int",
]

T = TypeVar("T")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (catchable as ``TypeError`` or ``ValueError``)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else an error naming ``name``."""
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be an int{_range(low, high, False)}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int{_range(low, high, False)}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """``check_int(name, value, low=1)``."""
    return check_int(name, value, low=1)


def check_number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, strict: bool = False
) -> float:
    """``value`` as a float if it is a finite int/float in ``[low, high]`` (``(low, high)`` with ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a finite number{_range(low, high, strict)}, got {value!r}")
    bad = not math.isfinite(value)
    if low is not None:
        bad = bad or value < low or (strict and value == low)
    if high is not None:
        bad = bad or value > high or (strict and value == high)
    if bad:
        raise ValueError(f"{name} must be a finite number{_range(low, high, strict)}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: T, allowed: Sequence[T]) -> T:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(str(a) for a in allowed)}")
    return value


def check_client(client: Any) -> str:
    """``client`` if it is a valid client id: a non-empty ``str`` that UTF-8 can encode (no lone
    surrogates such as ``"\\ud800"``) and without NUL characters; client ids are billed, stored and
    hashed as UTF-8 text, so every API that takes one checks it here before doing anything."""
    if not isinstance(client, str):
        raise ArgumentTypeError(f"client must be a non-empty string, got {client!r}")
    if not client:
        raise ValueError("client must be a non-empty string, got ''")
    try:
        client.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"client {client!r} cannot be encoded as UTF-8 (it has a lone surrogate)") from None
    if "\x00" in client:
        raise ValueError(f"client {client!r} must not contain NUL characters")
    return client


def _range(low: float | None, high: float | None, strict: bool) -> str:
    lo, hi = (">", "<") if strict else (">=", "<=")
    if low is not None and high is not None:
        return f" in {'(' if strict else '['}{low:g}, {high:g}{')' if strict else ']'}"
    if low is not None:
        return f" {lo} {low:g}"
    if high is not None:
        return f" {hi} {high:g}"
    return ""
