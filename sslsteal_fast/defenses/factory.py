"""Build a defense from a short spec: ``"none"``, ``"noise:sigma=0.5"``, ``"detection:threshold=0.6"``, ...

Spec grammar: ``NAME[:KEY=VALUE[,KEY=VALUE...]]`` or a dict ``{"name": NAME, KEY: VALUE, ...}``
(what a TOML sweep axis gives). Values are parsed as bool (``true``/``false``), int, float, else
string. Names: ``none``, ``noise``, ``quantize``, ``topk``, ``detection``, ``coverage``; the keys are
the fields of the defense's ``Config`` (unknown keys raise ``ValueError`` naming the valid ones).
Objects that are not plain values (``state``, ``center``, ``key``) are passed as keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from sslsteal_fast.defenses.base import ConfiguredDefense
from sslsteal_fast.defenses.coverage import CoverageDefense
from sslsteal_fast.defenses.detection import SimilarityDetector
from sslsteal_fast.defenses.perturb import GaussianNoise, NoDefense, Quantize, TopKSparsify
from sslsteal_fast.defenses.state import DefenseState

__all__ = ["DEFENSES", "make_defense", "parse_spec"]

#: Every defense a spec can name, by its spec name.
DEFENSES: dict[str, type[ConfiguredDefense]] = {
    cls.name: cls for cls in (NoDefense, GaussianNoise, Quantize, TopKSparsify, SimilarityDetector, CoverageDefense)
}


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
    unknown = sorted(set(params) - set(DEFENSES[name].parameters()))
    if unknown:
        valid = ", ".join(DEFENSES[name].parameters()) or "none"
        raise ValueError(f"defense {name!r}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    return name, params


def make_defense(
    spec: str | Mapping[str, Any],
    *,
    state: DefenseState | str | None = None,
    center: torch.Tensor | None = None,
    key: bytes | None = None,
) -> ConfiguredDefense:
    """Build the defense ``spec`` describes; ``state``/``center``/``key`` go to the classes that take them.

    Raises:
        ValueError: unknown name, malformed spec, unknown parameter or an invalid value.
    """
    name, params = parse_spec(spec)
    cls = DEFENSES[name]
    # Keyword arguments any __init__ along the class hierarchy declares (a subclass may pass them on).
    takes = {p for k in cls.__mro__ if "__init__" in vars(k) for p in inspect.signature(vars(k)["__init__"]).parameters}
    objects = {k: v for k, v in (("state", state), ("center", center), ("key", key)) if k in takes and v is not None}
    return cls(cls.Config(**params), **objects)
