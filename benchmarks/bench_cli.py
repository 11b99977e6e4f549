"""How fast the command line answers: ``sslsteal --help`` against the interpreter's own start-up.

    python benchmarks/bench_cli.py [--reps 15]

Each command runs in a fresh process, the commands interleaved round-robin so that drifts hit all
alike; the table gives medians. ``python -c pass`` is the floor (the interpreter alone), ``import
torch`` what any command pays once it loads the ML stack, and ``import sslsteal_fast`` the package
root. ``sslsteal --help`` builds every subcommand's parser from plain-Python configuration, so it
should sit near the floor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import machine, markdown_table

COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "import sslsteal_fast": [sys.executable, "-c", "import sslsteal_fast"],
    "sslsteal --help": [sys.executable, "-m", "sslsteal_fast.cli", "--help"],
    "sslsteal steal --help": [sys.executable, "-m", "sslsteal_fast.cli", "steal", "--help"],
    "import torch": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15, help="runs of each command (median reported)")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():  # warm the file cache
        subprocess.run(cmd, capture_output=True, check=True)
    for _ in range(args.reps):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            samples[name].append(time.perf_counter() - start)
    floor = statistics.median(samples["python -c pass (floor)"])
    rows = []
    for name, values in samples.items():
        med = statistics.median(values)
        rows.append([name, med * 1e3, med / floor])
    print(f"Machine: {machine()}; {args.reps} runs each, interleaved, medians.\n")
    print(markdown_table(["command", "ms (median)", "x floor"], rows))


if __name__ == "__main__":
    main()
