"""A/B timing of the native CPU ops between two builds of the package (before and after a change).

    python benchmarks/ab_ops.py --before PATH [--after PATH] [--rounds 5] [--quick] [--out FILE.md]

PATH is a source tree with its extension built in place (``sslsteal_fast/_C*.so``); ``--after``
defaults to this checkout. Two builds of the extension cannot share a process (both register the
``torch.ops.sslsteal_fast`` namespace), so each build runs in its own subprocess, and the subprocesses
alternate round after round so that machine drift hits both alike. Each subprocess reports the median
of its repetitions per case; the table gives the median over rounds and the after / before ratio.
The cases cover every op at the sizes of ``run.py`` plus small sizes, where an O(rows * D) extra pass
weighs most.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import machine, markdown_table

HERE = os.path.dirname(os.path.abspath(__file__))


def _cases(quick: bool, only: str = "") -> dict[str, tuple]:
    """name -> (op, metric or None, rows, cols, D, k); losses time forward + backward."""
    cases = _all_cases(quick)
    return {name: case for name, case in cases.items() if only in name}


def _all_cases(quick: bool) -> dict[str, tuple]:
    if quick:
        return {
            "info_nce 1024 x 128": ("info_nce", None, 1024, 0, 128, 0),
            "soft_nn 1024 x 128": ("soft_nn", None, 1024, 0, 128, 0),
            "pairwise sqeuclidean 1024^2 x 128": ("pairwise", "sqeuclidean", 1024, 1024, 128, 0),
            "topk sqeuclidean 64 x 100k x 128": ("topk", "sqeuclidean", 64, 100_000, 128, 10),
        }
    return {
        "info_nce 4096 x 512": ("info_nce", None, 4096, 0, 512, 0),
        "soft_nn 4096 x 512": ("soft_nn", None, 4096, 0, 512, 0),
        "soft_nn 512 x 64": ("soft_nn", None, 512, 0, 64, 0),
        "pairwise sqeuclidean 4096^2 x 512": ("pairwise", "sqeuclidean", 4096, 4096, 512, 0),
        "pairwise cosine 4096^2 x 512": ("pairwise", "cosine", 4096, 4096, 512, 0),
        "pairwise sqeuclidean 512^2 x 64": ("pairwise", "sqeuclidean", 512, 512, 64, 0),
        "topk cosine 256 x 1M x 128": ("topk", "cosine", 256, 1_000_000, 128, 10),
        "topk sqeuclidean 256 x 1M x 128": ("topk", "sqeuclidean", 256, 1_000_000, 128, 10),
        "topk sqeuclidean 16 x 200k x 128": ("topk", "sqeuclidean", 16, 200_000, 128, 10),
    }


def _worker(quick: bool, only: str, reps: int, threads: int) -> None:
    """Runs inside one build's interpreter: prints {case: median seconds} as JSON."""
    import torch

    from sslsteal_fast import ops

    assert ops.native_available(), "this tree's extension is not built"
    torch.set_num_threads(threads)
    out = {}
    for name, (op, metric, rows, cols, dim, k) in _cases(quick, only).items():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, dim, generator=g)
        y = torch.randn(cols or rows, dim, generator=g)
        if op == "info_nce":
            a, b = x[: rows // 2].clone().requires_grad_(True), x[rows // 2 :].clone().requires_grad_(True)
            fn = lambda a=a, b=b: ops.info_nce(a, b).backward()  # noqa: E731
        elif op == "soft_nn":
            z = x.requires_grad_(True)
            labels = torch.arange(rows // 2).repeat(2)
            fn = lambda z=z, labels=labels: ops.soft_nn(z, labels).backward()  # noqa: E731
        elif op == "pairwise":
            fn = lambda x=x, y=y, metric=metric: ops.pairwise_distance(x, y, metric)  # noqa: E731
        else:
            fn = lambda x=x, y=y, k=k, metric=metric: ops.topk_similarity(x, y, k, metric)  # noqa: E731
        fn()  # warm-up
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        out[name] = statistics.median(samples)
    print(json.dumps(out))


def _run_build(tree: str, quick: bool, only: str, reps: int, threads: int) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--reps", str(reps), "--threads", str(threads)]
    cmd += ["--only", only]
    if quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"{tree}: benchmark worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="source tree of the baseline build")
    parser.add_argument("--after", default=os.path.dirname(HERE), help="source tree of the new build (this one)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each build")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per case in each run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", default="", help="only the cases whose name contains this text")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.quick, args.only, args.reps, args.threads)
        return
    if not args.before:
        parser.error("--before is required")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for which in order:
            runs[which].append(_run_build(getattr(args, which), args.quick, args.only, args.reps, args.threads))
    rows = []
    for name in _cases(args.quick, args.only):
        before = statistics.median(run[name] for run in runs["before"])
        after = statistics.median(run[name] for run in runs["after"])
        ratios = [a[name] / b[name] for a, b in zip(runs["after"], runs["before"], strict=True)]
        rows.append([name, before * 1e3, after * 1e3, after / before, f"{min(ratios):.3g}-{max(ratios):.3g}"])
    text = "\n".join(
        [
            f"Machine: {machine()}; timed with torch threads = {args.threads}, {args.rounds} alternating rounds x {args.reps} reps",
            "",
            markdown_table(["case (fp32)", "before ms", "after ms", "after / before", "per-round ratios"], rows),
        ]
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
