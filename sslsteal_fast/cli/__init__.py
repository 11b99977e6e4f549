"""The ``sslsteal`` command line: one subcommand per stage of the pipeline.

Each module here registers one stage's subcommands (``register(subparsers)``; each sets ``func``,
which returns an exit code). Registering needs only :mod:`sslsteal_fast.config` (plain Python), so
``sslsteal --help`` answers without loading torch, scipy or onnxruntime; each command imports the
stage it runs when it runs. Options every command shares are declared in :mod:`.common`; which
failures are reported as one line (exit 2) rather than a traceback is decided in :mod:`.errors`,
in one place: :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sslsteal_fast._version import __version__
from sslsteal_fast.cli import attacks, ownership, probes, serve, sweep, victim
from sslsteal_fast.cli.common import CommandLineParser, UsageError
from sslsteal_fast.cli.errors import expected_error, one_line

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "build_parser", "main"]

# In the order they appear in --help: the pipeline's order.
STAGES = (victim, serve, attacks, probes, sweep, ownership)

#: Exit status of a usage error or an expected failure (argparse's convention).
EXIT_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130

EPILOG = (
    "Every command takes --quiet (no progress or info lines; progress goes to stderr, as a bar on a "
    "terminal and as plain lines otherwise), --json (the result as one JSON object on stdout) and --debug. "
    "Exit status: 0 done; 1 a sweep with failed cells (rerun it to retry them), or a bug (with its "
    "traceback); 2 a usage error or an expected failure - a bad argument, a missing or corrupt file, "
    "an --out that is in the way, a device that is not there - reported as one line "
    "'sslsteal COMMAND: error: ...' on stderr (--debug shows its traceback); 130 interrupted "
    "(Ctrl-C; train-victim and sweep resume where they stopped when rerun)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="sslsteal",
        description=(
            "Model extraction against self-supervised encoders: train and serve victims, steal them "
            "under a query budget, probe the copies, sweep budgets x losses x defenses, verify ownership."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"sslsteal_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in STAGES:
        stage.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sslsteal ARGV``; returns the exit status (see :data:`EPILOG`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {one_line(exc.message)} (see: {exc.prog} --help)", file=sys.stderr)
        return EXIT_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    prog = f"sslsteal {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = expected_error(exc)
        if message is None or getattr(args, "debug", False):
            raise  # a bug: keep the traceback
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
