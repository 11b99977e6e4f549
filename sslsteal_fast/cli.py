"""The ``sslsteal`` command line: one subcommand per stage of the pipeline.

Each stage's package owns its subcommands in a ``cli`` module exposing ``register(subparsers)``;
this file only assembles them, so stages can grow without touching each other.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "sslsteal_fast.victim.cli",  # train-victim, export, serve-bench
    "sslsteal_fast.attacks.cli",  # steal
    "sslsteal_fast.probes.cli",  # probe
    "sslsteal_fast.sweep.cli",  # sweep, demo
    "sslsteal_fast.defenses.cli",  # verify
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslsteal",
        description=(
            "Model extraction against self-supervised encoders: train and serve victims, steal them "
            "under a query budget, probe the copies, sweep budgets x losses x defenses."
        ),
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that stage is not part of this build yet
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from sslsteal_fast import __version__

    return f"sslsteal_fast {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # User errors: say what to fix, without a traceback.
        print(f"sslsteal {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
