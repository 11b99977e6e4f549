"""What the subcommands share: how a subcommand is declared, and loading data at a model's input size."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["add_command", "load_for_input"]


def load_for_input(spec: str, split: str, input_shape: tuple[int | None, int | None, int | None], flag: str) -> Any:
    """``load_dataset(spec, split)`` resized to ``input_shape`` (C, H, W; None = any) -> ``ImageDataset``."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.data import load_dataset

    c, h, w = input_shape
    options: dict[str, Any] = {}
    if c is not None:
        options["channels"] = c
    if h is not None and w is not None:
        if h != w:
            raise ValueError(f"{flag}: the model takes {h}x{w} images; only square inputs are supported for datasets")
        options["size"] = h
    return load_dataset(spec, split, **options)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None and flags (their help says what they mean)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def add_command(
    subparsers: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int], *, epilog: str | None = None
) -> argparse.ArgumentParser:
    """The subcommand ``func`` runs (``func(args) -> exit code``), named and documented by ``func`` itself.

    ``_cmd_train_victim`` is ``train-victim``; the first line of its docstring is the one-line help
    in ``sslsteal --help``, the rest the description in ``sslsteal train-victim --help``, which shows
    every default.
    """
    name = func.__name__.removeprefix("_cmd_").replace("_", "-")
    first, _, rest = (inspect.getdoc(func) or "").partition("\n")
    summary = first[:1].lower() + first[1:].rstrip(".")
    parser = subparsers.add_parser(
        name, help=summary, description=rest.strip() or None, epilog=epilog, formatter_class=_Defaults
    )
    parser.set_defaults(func=func)
    return parser
