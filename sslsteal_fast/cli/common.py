"""What the subcommands share: how a subcommand and its common options are declared, what they mean.

Every subcommand has the same output options (:func:`add_command` adds them):

* ``--quiet``: no progress and no info lines on stderr (the result and errors still print);
* ``--json``: the result as one JSON object on stdout, nothing else on stdout;
* ``--debug``: tracebacks for the expected errors too (bad arguments, missing or corrupt files).

and, where a command has them, the same ``--device`` (:func:`add_device`: ``auto`` = CUDA when
available, else the CPU) and ``--out`` (:func:`add_out`: where the result is written; never an
existing result silently replaced). Progress goes to stderr (:mod:`sslsteal_fast.util.progress`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from sslsteal_fast.config import DEVICES, check_device

__all__ = [
    "CommandLineParser",
    "UsageError",
    "add_command",
    "add_device",
    "add_out",
    "check_out",
    "device_spec",
    "emit",
    "info",
    "load_for_input",
    "refuse_stray",
    "resolve_device",
]

OutKind = Literal["prefix", "file", "folder"]


class UsageError(Exception):
    """A command line argparse rejects: ``prog`` (``"sslsteal steal"``) and argparse's message."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.message = message


class CommandLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` (the caller prints one line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(self.prog, message)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once, except None and flags (their help says what they mean)."""

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
    every default. Adds the output options every command shares (``--quiet``, ``--json``, ``--debug``).
    """
    name = func.__name__.removeprefix("_cmd_").replace("_", "-")
    first, _, rest = (inspect.getdoc(func) or "").partition("\n")
    summary = first[:1].lower() + first[1:].rstrip(".")
    parser = subparsers.add_parser(
        name, help=summary, description=rest.strip() or None, epilog=epilog, formatter_class=_Defaults
    )
    parser.set_defaults(func=func)
    group = parser.add_argument_group("output")
    group.add_argument("--quiet", action="store_true", help="no progress and no info lines on stderr")
    group.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # old name
    group.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    group.add_argument("--debug", action="store_true", help="show tracebacks of expected errors too")
    return parser


# --------------------------------------------------------------------------------------------- device


def device_spec(text: str) -> str:
    """argparse ``type`` of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    try:
        return check_device("device", text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid device {text!r}: choose auto, cpu, cuda or cuda:N") from None


def add_device(parser: argparse.ArgumentParser, what: str) -> None:
    """``--device`` (default ``auto``), documented as where ``what`` runs."""
    parser.add_argument(
        "--device",
        type=device_spec,
        default="auto",
        metavar="{" + ",".join(DEVICES) + "}",
        help=f"where {what} runs: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N",
    )


def resolve_device(spec: str) -> str:
    """``--device`` as a torch device string: ``auto`` resolved; CUDA that is not there is a ValueError."""
    # Imported here: keeps `sslsteal --help` fast (torch loads when a command runs). The one resolver every stage uses.
    from sslsteal_fast.victim.train import resolve_device as resolve

    try:
        return str(resolve(spec))
    except ValueError as exc:
        raise ValueError(f"--{exc}") from None


# ------------------------------------------------------------------------------------------------ out


def add_out(
    parser: argparse.ArgumentParser,
    kind: OutKind,
    help: str,
    *,
    required: bool = False,
    default: str | None = None,
    overwrite: bool = False,
    short: bool = False,
) -> None:
    """``--out`` (``-o`` too with ``short``): a checkpoint ``prefix``, a ``file`` or a ``folder``.

    With ``overwrite`` the command refuses an existing output unless ``--overwrite`` is given
    (:func:`check_out`); the others resume or reuse what is there (their help says which).
    """
    names = ("-o", "--out") if short else ("--out",)
    metavar = {"prefix": "PREFIX", "file": "FILE", "folder": "DIR"}[kind]
    parser.add_argument(*names, required=required, default=default, metavar=metavar, help=help)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def check_out(path: str | Path, kind: OutKind, *, overwrite: bool | None = None, suffixes: Iterable[str] = ()) -> Path:
    """Check ``--out`` before any work is done; returns it as a Path.

    Every folder above it must be a folder (or not exist yet); a ``folder`` must not be a file; a
    ``file`` must not be a folder. With ``overwrite=False`` an existing output (the file, or for a
    prefix the files ``PREFIX + suffix``) is refused; ``None`` leaves existing outputs to the command.
    """
    out = Path(path)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is a file, not a folder")
    if kind == "file" and out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name")
    if overwrite is False:
        targets = [out] if kind != "prefix" else [out.with_name(out.name + s) for s in suffixes]
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            verb = "exists" if len(existing) == 1 else "exist"
            raise ValueError(f"--out {out}: {' and '.join(existing)} already {verb}; pass --overwrite to replace it")
    return out


def refuse_stray(needed: str, given: Iterable[str]) -> None:
    """A ValueError if options that only mean something with ``needed`` were ``given`` without it."""
    given = list(given)
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{' and '.join(given)} only {verb} with {needed}")


# --------------------------------------------------------------------------------------------- output


def info(args: argparse.Namespace, message: str) -> None:
    """An info line on stderr, unless ``--quiet``."""
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, result: dict[str, Any], text: str | Callable[[], str]) -> None:
    """The command's result on stdout: ``result`` as one JSON object with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(text() if callable(text) else text)


# ----------------------------------------------------------------------------------------------- data


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
