"""The ``sslsteal`` command line: one subcommand per stage of the pipeline.

Each module here registers one stage's subcommands (``register(subparsers)``; each sets ``func``,
which returns an exit code). Registering needs only :mod:`sslsteal_fast.config` (plain Python), so
``sslsteal --help`` answers without loading torch, scipy or onnxruntime; each command imports the
stage it runs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sslsteal_fast._version import __version__
from sslsteal_fast.cli import attacks, ownership, probes, sweep, victim

__all__ = ["build_parser", "main"]

# In the order they appear in --help: the pipeline's order.
STAGES = (victim, attacks, probes, sweep, ownership)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslsteal",
        description=(
            "Model extraction against self-supervised encoders: train and serve victims, steal them "
            "under a query budget, probe the copies, sweep budgets x losses x defenses, verify ownership."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sslsteal_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in STAGES:
        stage.register(sub)
    return parser


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
