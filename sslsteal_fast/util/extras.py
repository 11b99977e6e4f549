"""Optional dependencies: a clear one-line message when an extra is not installed."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "require"]


class MissingExtra(ImportError):
    """An optional dependency is missing; the message says which ``pip install`` adds it.

    The command line reports it on one line with exit code 2, like a bad argument.
    """


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` saying that ``what`` needs ``sslsteal_fast[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{what} needs the optional dependency {module!r}: pip install 'sslsteal_fast[{extra}]'"
        ) from exc
