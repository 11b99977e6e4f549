"""Build a defense from a short spec: ``"none"``, ``"noise:sigma=0.5"``, ``"detection:threshold=0.6"``, ...

Spec grammar: ``NAME[:KEY=VALUE[,KEY=VALUE...]]`` or a dict ``{"name": NAME, KEY: VALUE, ...}``
(what a TOML sweep axis gives). Values are parsed as bool (``true``/``false``), int, float, else
string. Names: ``none``, ``noise``, ``quantize``, ``topk``, ``detection``, ``coverage``; the keys are
the constructor parameters of the class (unknown keys raise ``ValueError`` naming the valid ones).
Objects that are not plain values (``state``, ``center``, ``key``) are passed as keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from sslsteal_fast.defenses.coverage import CoverageDefense
from sslsteal_fast.defenses.detection import SimilarityDetector
from sslsteal_fast.defenses.perturb import GaussianNoise, NoDefense, Quantize, TopKSparsify
from sslsteal_fast.defenses.state import DefenseState

__all__ = ["DEFENSES", "make_defense", "parse_spec"]

DEFENSES: dict[str, Callable[..., Any]] = {
    "none": NoDefense,
    "noise": GaussianNoise,
    "quantize": Quantize,
    "topk": TopKSparsify,
    "detection": SimilarityDetector,
    "coverage": CoverageDefense,
}
_OBJECT_PARAMS = ("state", "center", "key")


def _value(text: str) -> bool | int | float | str:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a spec string or dict (see the module docstring)."""
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"defense spec {spec!r} needs a string 'name' ({', '.join(DEFENSES)})")
    elif isinstance(spec, str):
        name, _, rest = spec.strip().partition(":")
        params = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"defense spec {spec!r}: expected KEY=VALUE, got {item!r}")
            params[key.strip()] = _value(value)
    else:
        raise ValueError(f"defense spec must be a string or a dict, got {type(spec).__name__}")
    name = name.strip().lower()
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of: {', '.join(DEFENSES)}")
    return name, params


def make_defense(
    spec: str | Mapping[str, Any],
    *,
    state: DefenseState | str | None = None,
    center: torch.Tensor | None = None,
    key: bytes | None = None,
) -> Any:
    """Build the defense ``spec`` describes; ``state``/``center``/``key`` go to the classes that take them.

    Raises:
        ValueError: unknown name, malformed spec, unknown parameter or an invalid value.
    """
    name, params = parse_spec(spec)
    cls = DEFENSES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in _OBJECT_PARAMS]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"defense {name!r}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(accepted)}")
    sig = inspect.signature(cls).parameters
    extras = {"state": state, "center": center, "key": key}
    for pname, value in extras.items():
        if pname in sig and value is not None:
            params[pname] = value
    return cls(**params)
