"""`make bench`: the native CPU ops against plain PyTorch, torch.compile of it, the paper's float64
formulation and the GEMM floor, timed side by side in one run (interleaved medians), plus peak memory.

    python benchmarks/run.py [--quick] [--out FILE.md]

Every case checks agreement with the reference before it is timed.
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import machine, markdown_table, peak_rss_mib, time_interleaved

from sslsteal_fast import ops
from sslsteal_fast.ops import reference
from sslsteal_fast.testing import bank_inputs, pair_inputs


def _check(name: str, got: torch.Tensor, exp: torch.Tensor, rtol: float = 1e-3, atol: float = 1e-4) -> None:
    try:
        torch.testing.assert_close(got.double(), exp.double(), rtol=rtol, atol=atol)
    except AssertionError as exc:
        sys.exit(f"{name}: native disagrees with the reference, not timing it:\n{exc}")


def bench_loss(loss: str, n: int, dim: int, reps: int, compile_: bool) -> tuple[list[list[object]], dict]:
    bsz = n // 2
    a, b = pair_inputs(bsz, dim, torch.float32, requires_grad=True)
    labels = torch.arange(bsz).repeat(2)
    a64 = a.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    if loss == "info_nce":
        native = lambda: ops.info_nce(a, b)  # noqa: E731
        plain = lambda: reference.info_nce(a, b)  # noqa: E731
        paper = lambda: reference.info_nce_paper(a64, b64)  # noqa: E731
        compiled_fn = torch.compile(reference.info_nce)
        comp = lambda: compiled_fn(a, b)  # noqa: E731
    else:
        native = lambda: ops.soft_nn(torch.cat([a, b]), labels)  # noqa: E731
        plain = lambda: reference.soft_nn(torch.cat([a, b]), labels)  # noqa: E731
        paper = lambda: reference.soft_nn_paper(torch.cat([a64, b64]), labels)  # noqa: E731
        compiled_fn = torch.compile(reference.soft_nn)
        comp = lambda: compiled_fn(torch.cat([a, b]), labels)  # noqa: E731
    _check(loss, native(), plain())

    def both(f):
        def run():
            f().backward()

        return run

    def fwd(f):
        def run():
            with torch.no_grad():
                f()

        return run

    z = torch.randn(n, dim)
    impls = {"native": native, "plain fp32": plain, "paper fp64": paper}
    if compile_:
        impls["torch.compile"] = comp
    fwd_t = time_interleaved({k: fwd(f) for k, f in impls.items()} | {"mm": lambda: torch.mm(z, z.T)}, reps)
    both_t = time_interleaved(
        {k: both(f) for k, f in impls.items()} | {"3 mm": lambda: [torch.mm(z, z.T) for _ in range(3)]}, reps
    )
    rows = []
    for k in impls:
        rows.append(
            [
                loss,
                n,
                dim,
                k,
                fwd_t[k] * 1e3,
                (both_t[k] - fwd_t[k]) * 1e3,
                both_t[k] * 1e3,
                both_t[k] / both_t["native"],
                both_t[k] / both_t["3 mm"],
            ]
        )
    rows.append(
        [
            loss,
            n,
            dim,
            "GEMM floor",
            fwd_t["mm"] * 1e3,
            (both_t["3 mm"] - fwd_t["mm"]) * 1e3,
            both_t["3 mm"] * 1e3,
            both_t["3 mm"] / both_t["native"],
            1.0,
        ]
    )
    ratios = {
        "vs_paper": both_t["paper fp64"] / both_t["native"],
        "vs_compile": both_t.get("torch.compile", float("nan")) / both_t["native"],
        "vs_plain": both_t["plain fp32"] / both_t["native"],
        "of_3mm": both_t["native"] / both_t["3 mm"],
    }
    return rows, ratios


def loss_memory(loss: str, n: int, dim: int) -> list[list[object]]:
    setup = f"""
        a, b = pair_inputs({n // 2}, {dim}, torch.float32, requires_grad=True)
        labels = torch.arange({n // 2}).repeat(2)
        a64 = a.detach().double().requires_grad_(True); b64 = b.detach().double().requires_grad_(True)
    """
    calls = {
        "info_nce": {
            "native": "ops.info_nce(a, b).backward()",
            "plain fp32": "reference.info_nce(a, b).backward()",
            "paper fp64": "reference.info_nce_paper(a64, b64).backward()",
        },
        "soft_nn": {
            "native": "ops.soft_nn(torch.cat([a, b]), labels).backward()",
            "plain fp32": "reference.soft_nn(torch.cat([a, b]), labels).backward()",
            "paper fp64": "reference.soft_nn_paper(torch.cat([a64, b64]), labels).backward()",
        },
    }[loss]
    return [[loss, n, dim, k, peak_rss_mib(setup, stmt)] for k, stmt in calls.items()]


def bench_pairwise(n: int, dim: int, reps: int, compile_: bool) -> tuple[list[list[object]], float]:
    x, y = torch.randn(n, dim), torch.randn(n, dim)
    _check("pairwise_distance", ops.pairwise_distance(x, y), reference.pairwise_distance(x, y), atol=1e-2)
    fns = {
        "native": lambda: ops.pairwise_distance(x, y),
        "plain fp32": lambda: reference.pairwise_distance(x, y),
        "one mm": lambda: torch.mm(x, y.T),
    }
    if compile_:
        compiled = torch.compile(reference.pairwise_distance)
        fns["torch.compile"] = lambda: compiled(x, y)
    t = time_interleaved(fns, reps)
    rows = [["pairwise_distance", n, dim, k, v * 1e3, v / t["one mm"]] for k, v in t.items()]
    return rows, t["native"] / t["one mm"]


def bench_topk(n_queries: int, n_bank: int, dim: int, k: int, reps: int) -> tuple[list[list[object]], dict]:
    q, bank = bank_inputs(n_queries, n_bank, dim)
    v, i = ops.topk_similarity(q, bank, k)
    rv, ri = reference.topk_similarity(q, bank, k)
    _check("topk_similarity", v, rv, atol=1e-5)
    t = time_interleaved(
        {
            "native": lambda: ops.topk_similarity(q, bank, k),
            "chunked mm + topk": lambda: reference.topk_similarity(q, bank, k),
        },
        reps,
    )
    setup = f"""
        q, bank = bank_inputs({n_queries}, {n_bank}, {dim})
    """
    mem = {
        "native": peak_rss_mib(setup, f"ops.topk_similarity(q, bank, {k})"),
        "chunked mm + topk": peak_rss_mib(setup, f"reference.topk_similarity(q, bank, {k})"),
    }
    rows = [
        [
            "topk_similarity",
            f"{n_queries}x{n_bank}",
            dim,
            name,
            t[name] * 1e3,
            t["chunked mm + topk"] / t[name],
            mem[name],
        ]
        for name in t
    ]
    return rows, {"speedup": t["chunked mm + topk"] / t["native"], "native_mib": mem["native"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, no torch.compile (a smoke run)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", help="also write the tables (markdown) to this file")
    args = parser.parse_args()
    if not ops.native_available():
        sys.exit("native extension not built: run `pip install --no-build-isolation -e .` first")
    quick = args.quick
    compile_ = not (args.no_compile or quick)
    n, dim = (1024, 128) if quick else (4096, 512)
    reps = 3 if quick else args.reps
    out = [f"Machine: {machine()}", ""]

    loss_rows, loss_ratios = [], {}
    for loss in ("info_nce", "soft_nn"):
        rows, ratios = bench_loss(loss, n, dim, reps, compile_)
        loss_rows += rows
        loss_ratios[loss] = ratios
    out += [
        f"### Losses, fp32, n = 2B = {n}, D = {dim} (ms, median of {reps}, interleaved)",
        "",
        markdown_table(
            ["op", "n", "D", "impl", "fwd", "bwd (both - fwd)", "fwd+bwd", "x native time", "x 3 mm"], loss_rows
        ),
        "",
    ]
    mem_rows = loss_memory("info_nce", n, dim) + loss_memory("soft_nn", n, dim)
    out += [
        "### Peak extra memory, fwd+bwd (MiB above the inputs: VmHWM reset before the call, in a fresh process)",
        "",
        markdown_table(["op", "n", "D", "impl", "peak MiB"], mem_rows),
        "",
    ]

    pd_rows, pd_ratio = bench_pairwise(n, dim, reps, compile_)
    out += [
        f"### pairwise_distance, fp32, {n} x {n}, D = {dim} (ms)",
        "",
        markdown_table(["op", "n", "D", "impl", "ms", "x one mm"], pd_rows),
        "",
    ]

    nq, nb, tdim, k = (64, 100_000, 128, 10) if quick else (256, 1_000_000, 128, 10)
    tk_rows, tk = bench_topk(nq, nb, tdim, k, reps)
    out += [
        f"### topk_similarity, fp32, k = {k} (ms; peak extra MiB beyond the bank)",
        "",
        markdown_table(["op", "queries x bank", "D", "impl", "ms", "speed-up vs chunked", "peak MiB"], tk_rows),
        "",
    ]

    out += ["### Targets", ""]
    for loss, r in loss_ratios.items():
        out.append(
            f"- {loss}: {r['vs_paper']:.1f}x faster than the paper's fp64 (target >= 5), "
            f"{r['vs_compile']:.2f}x faster than torch.compile (target >= 1.5), "
            f"{r['vs_plain']:.2f}x faster than plain fp32, {r['of_3mm']:.2f}x the time of 3 mm (target <= 1.5)"
        )
    out.append(f"- pairwise_distance: {pd_ratio:.2f}x one mm (target <= 1.2)")
    out.append(
        f"- topk_similarity: {tk['speedup']:.2f}x faster than chunked mm + topk (target >= 2), "
        f"{tk['native_mib']:.0f} MiB extra (target <= 64)"
    )
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
