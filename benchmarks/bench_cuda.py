"""CUDA benchmarks of the native ops vs plain PyTorch, its torch.compile version, and the matmul floor.

Losses (info_nce, soft_nn): n = 2B = 32768, D = 512, float32 and bfloat16 (``--quick``: bf16
only; ``--full``: n in {8192, 32768, 131072}, D in {128, 512, 2048}); forward,
backward and both; peak extra memory from torch.cuda (beyond the inputs and their gradients). The
matmul floor is torch.mm of the same (n x D) x (D x n) shape on the same device; "mm-equiv" is how
many such matmuls the op's time is worth (the math needs 1 for the forward and 2 for the backward).
Then the n = 1,048,576, D = 512 run (native only: plain PyTorch would need a 2 TiB n x n matrix);
top-k of 4096 queries over a 10M x 512 bf16 bank (``--quick``: 1M) against the same GEMM timed with
torch.mm in chunks and against the measured copy bandwidth; pairwise_distance (8192 x 8192 x 512,
fp32 and bf16) against one torch.mm of that shape; and the float32 (3xTF32) accuracy of every op
against the float64 reference at n = 8192. Agreement with the reference is checked before timing.
Every target is printed next to its measured value with PASS / FAIL at the end.

    python benchmarks/bench_cuda.py [--quick | --full] [--json out.json]

Exits 0 with a message when CUDA (or the native CUDA kernels) is unavailable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

SIZES = (32768,)
DIMS = (512,)
FULL_SIZES = (8192, 32768, 131072)
FULL_DIMS = (128, 512, 2048)
QUICK_SIZES = (32768,)
#: The shape the loss targets are judged at (bf16).
TARGET_N, TARGET_D = 32768, 512
#: Targets (see BENCHMARKS.md, GPU).
EAGER_SPEEDUP, COMPILE_SPEEDUP, LOSS_MM_FRACTION, LOSS_EXTRA_MIB = 2.5, 1.5, 0.5, 64.0
TOPK_MM_FRACTION, PAIRWISE_MM_RATIO, FP32_REL_ERR = 0.7, 1.2, 1e-5
#: "O(n D)": the n = 2^20 run's peak extra memory is at most this many times its inputs' bytes.
HUGE_MEMORY_FACTOR = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SEED = 0
#: "cuda"; ``--cpu-smoke`` sets "cpu" to run every code path at toy sizes on the CPU (numbers meaningless).
DEVICE = "cuda"


def cuda_time(fn: Callable[[], object], warmup: int = 2, repeat: int = 5) -> float:
    """Median milliseconds of fn() over `repeat` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if DEVICE == "cpu":
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_extra(fn: Callable[[], object]) -> int:
    if DEVICE == "cpu":
        fn()
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def fits_dense(n: int, dtype: torch.dtype, copies: int = 6) -> bool:
    """Whether a plain-PyTorch version holding ~`copies` n x n matrices fits in free memory."""
    free = torch.cuda.mem_get_info()[0] if DEVICE == "cuda" else 2**30
    return copies * n * n * torch.tensor([], dtype=dtype).element_size() < 0.8 * free


def make_inputs(loss: str, n: int, d: int, dtype: torch.dtype) -> tuple[tuple, dict]:
    g = torch.Generator(device=DEVICE).manual_seed(SEED)
    if loss == "info_nce":
        a = torch.randn(n // 2, d, device=DEVICE, generator=g).to(dtype)
        b = (a.float() + 0.3 * torch.randn(n // 2, d, device=DEVICE, generator=g)).to(dtype)
        return (a.requires_grad_(True), b.requires_grad_(True)), {"temperature": 0.1}
    z = torch.randn(n, d, device=DEVICE, generator=g).to(dtype).requires_grad_(True)
    labels = torch.arange(n // 2, device=DEVICE).repeat(2)
    return (z, labels), {"temperature": 10.0}


def loss_fns(loss: str) -> dict[str, Callable]:
    from sslsteal_fast import ops
    from sslsteal_fast.ops import reference

    native = getattr(ops, loss)
    plain = getattr(reference, loss)
    if DEVICE == "cpu":  # the smoke run skips compiling
        return {"native": native, "pytorch": plain}
    return {"native": native, "pytorch": plain, "compile": torch.compile(plain, dynamic=False)}


def measure(fn: Callable, args: tuple, kwargs: dict, warmup: int = 2, repeat: int = 5) -> dict[str, float]:
    grads = [t for t in args if t.requires_grad]

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return fn(*args, **kwargs)

    def both() -> None:
        for t in grads:
            t.grad = None
        fn(*args, **kwargs).backward()

    t_fwd = cuda_time(fwd, warmup, repeat)
    t_both = cuda_time(both, warmup, repeat)
    for t in grads:  # the peak is measured from no gradients held, and the gradients' own bytes left out
        t.grad = None
    grad_bytes = sum(t.numel() * t.element_size() for t in grads)
    return {
        "fwd_ms": t_fwd,
        "bwd_ms": max(t_both - t_fwd, 0.0),
        "both_ms": t_both,
        "peak_mib": max(peak_extra(both) - grad_bytes, 0) / 2**20,
    }


def check_agreement(loss: str, fns: dict, args: tuple, kwargs: dict, dtype: torch.dtype) -> float:
    ref_args = tuple(t.detach().double() if t.is_floating_point() else t for t in args)
    ref = fns["pytorch"](*ref_args, **kwargs).item()
    got = fns["native"](*args, **kwargs).item()
    err = abs(got - ref) / max(1.0, abs(ref))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-3
    if err > tol:
        raise SystemExit(f"bench_cuda: {loss} native disagrees with the float64 reference: {got} vs {ref}")
    return err


def bench_losses(
    sizes: tuple[int, ...], dims: tuple[int, ...], rows: list[dict], dtypes: dict[str, torch.dtype] = DTYPES
) -> None:
    for loss in ("info_nce", "soft_nn"):
        fns = loss_fns(loss)
        for dname, dtype in dtypes.items():
            for n in sizes:
                for d in dims:
                    args, kwargs = make_inputs(loss, n, d, dtype)
                    z = torch.randn(n, d, device=DEVICE, dtype=dtype)
                    mm_ms = cuda_time(lambda z=z: torch.mm(z, z.T))
                    del z
                    dense_ok = fits_dense(n, dtype)
                    err = check_agreement(loss, fns, args, kwargs, dtype) if fits_dense(n, torch.float64) else None
                    for impl, fn in fns.items():
                        row = {"op": loss, "dtype": dname, "n": n, "D": d, "impl": impl, "mm_ms": mm_ms}
                        if impl != "native" and not dense_ok:
                            row["status"] = "skipped (n x n does not fit)"
                        else:
                            try:
                                row.update(measure(fn, args, kwargs))
                                row["status"] = "ok"
                                row["mm_equiv"] = row["both_ms"] / mm_ms
                            except torch.OutOfMemoryError:
                                row["status"] = "OOM"
                            except Exception as exc:  # torch.compile failures are reported, not fatal
                                row["status"] = f"error: {type(exc).__name__}"
                        if err is not None and impl == "native":
                            row["rel_err_vs_f64"] = err
                        rows.append(row)
                        print_row(row)
                    del args
                    torch.cuda.empty_cache()


def bench_huge(rows: list[dict], targets: list[dict], warmup: int, n: int = 1_048_576, d: int = 512) -> None:
    from sslsteal_fast import ops

    for loss in ("info_nce", "soft_nn"):
        args, kwargs = make_inputs(loss, n, d, torch.bfloat16)
        input_mib = sum(t.numel() * t.element_size() for t in args if t.is_floating_point()) / 2**20
        row = {"op": loss, "dtype": "bf16", "n": n, "D": d, "impl": "native", "input_mib": input_mib}
        try:
            row.update(measure(getattr(ops, loss), args, kwargs, warmup=warmup, repeat=1))
            row["status"] = "ok"
        except torch.OutOfMemoryError:
            row["status"] = "OOM"
        rows.append(row)
        print_row(row)
        ok = row["status"] == "ok" and row["peak_mib"] <= HUGE_MEMORY_FACTOR * input_mib
        measured = f"{row['peak_mib']:.0f} MiB extra" if "peak_mib" in row else row["status"]
        dense_gib = n * n * 2 / 2**30
        add_target(
            targets,
            f"{loss} bf16 n={n} D={d} fwd+bwd",
            f"runs, extra <= {HUGE_MEMORY_FACTOR} x inputs ({HUGE_MEMORY_FACTOR * input_mib:.0f} MiB)",
            f"{measured} (n x n bf16 would be {dense_gib:.0f} GiB)",
            ok,
            row.get("peak_mib"),
        )
        del args
        torch.cuda.empty_cache()


def copy_bandwidth_gbs(src: torch.Tensor) -> float:
    """Device copy bandwidth (bytes read + written per second) measured with a device-to-device copy."""
    dst = torch.empty_like(src)
    ms = cuda_time(lambda: dst.copy_(src), repeat=3)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def chunked_mm_ms(q: torch.Tensor, bank: torch.Tensor, chunk: int = 1 << 18) -> float:
    """Milliseconds of the whole (nq x D) @ (D x M) GEMM done with torch.mm, ``chunk`` bank rows at a time."""

    def run() -> None:
        for s in range(0, bank.shape[0], chunk):
            torch.mm(q, bank[s : s + chunk].T)

    return cuda_time(run, warmup=1, repeat=3)


def bench_topk(rows: list[dict], targets: list[dict], bank_rows: int, nq: int = 4096, d: int = 512) -> None:
    from sslsteal_fast import ops
    from sslsteal_fast.ops import reference

    k = 10
    g = torch.Generator(device=DEVICE).manual_seed(SEED)
    bank = torch.empty(bank_rows, d, device=DEVICE, dtype=torch.bfloat16)
    for s in range(0, bank_rows, 1 << 20):
        bank[s : s + (1 << 20)] = torch.randn(min(1 << 20, bank_rows - s), d, device=DEVICE, generator=g)
    q = torch.randn(nq, d, device=DEVICE, generator=g).to(torch.bfloat16)
    # agreement on a slice first
    v_n, _ = ops.topk_similarity(q[:64], bank[: 1 << 18], k)
    v_r, _ = reference.topk_similarity(q[:64].double(), bank[: 1 << 18].double(), k)
    if (v_n.double() - v_r).abs().max().item() > 2e-2:
        raise SystemExit("bench_cuda: topk_similarity disagrees with the reference")
    bank_bytes = bank.numel() * bank.element_size()
    copy_gbs = copy_bandwidth_gbs(bank.view(-1)[: bank.numel() // 2])
    mm_ms = chunked_mm_ms(q, bank)
    t = cuda_time(lambda: ops.topk_similarity(q, bank, k), warmup=1, repeat=3)
    flops = 2.0 * nq * bank_rows * d
    row = {
        "op": "topk_similarity",
        "dtype": "bf16",
        "n": nq,
        "D": d,
        "impl": "native",
        "bank_rows": bank_rows,
        "k": k,
        "both_ms": t,
        "mm_ms": mm_ms,
        "mm_tflops": flops / mm_ms / 1e9,
        "mm_fraction": mm_ms / t,
        "bank_read_gbs": bank_bytes / t / 1e6,
        "copy_gbs": copy_gbs,
        "bandwidth_fraction": (bank_bytes / t / 1e6) / copy_gbs,
        "tflops": flops / t / 1e9,
        "status": "ok",
    }
    rows.append(row)
    print(
        f"topk {nq} x {bank_rows} x {d} bf16 k={k}: {t:.1f} ms = {row['tflops']:.0f} TFLOP/s; the same GEMM with "
        f"torch.mm in 2^18-row chunks {mm_ms:.1f} ms = {row['mm_tflops']:.0f} TFLOP/s; bank read "
        f"{row['bank_read_gbs']:.0f} GB/s = {100 * row['bandwidth_fraction']:.1f}% of measured copy bandwidth "
        f"({copy_gbs:.0f} GB/s; compute-bound: {flops / 1e12:.1f} TFLOP for {bank_bytes / 1e9:.1f} GB)"
    )
    add_target(
        targets,
        f"top-k {nq} q x {bank_rows / 1e6:g}M x {d} bf16",
        f">= {100 * TOPK_MM_FRACTION:.0f}% of the matmul rate",
        f"{100 * row['mm_fraction']:.1f}% ({row['tflops']:.0f} vs {row['mm_tflops']:.0f} TFLOP/s)",
        row["mm_fraction"] >= TOPK_MM_FRACTION,
        row["mm_fraction"],
    )


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| relative to the largest |ref| (the tests' convention for kernels vs float64)."""
    diff = (got.double() - ref.double()).abs().max().item()
    return diff / max(ref.double().abs().max().item(), 1e-300)


def bench_pairwise(rows: list[dict], targets: list[dict], n: int = 8192, d: int = 512) -> None:
    from sslsteal_fast import ops
    from sslsteal_fast.ops import reference
    from sslsteal_fast.testing import DISTANCE_TOL

    g = torch.Generator(device=DEVICE).manual_seed(SEED)
    for dname, dtype in DTYPES.items():
        x = torch.randn(n, d, device=DEVICE, generator=g).to(dtype)
        y = torch.randn(n, d, device=DEVICE, generator=g).to(dtype)
        mm_ms = cuda_time(lambda x=x, y=y: torch.mm(x, y.T))
        for metric in ("sqeuclidean", "cosine"):
            row = {"op": "pairwise_distance", "metric": metric, "dtype": dname, "n": n, "D": d, "impl": "native"}
            row["mm_ms"] = mm_ms
            err = rel_err(
                ops.pairwise_distance(x, y, metric), reference.pairwise_distance(x.double(), y.double(), metric)
            )
            row["rel_err_vs_f64"] = err
            if err > DISTANCE_TOL[dtype]:
                row["status"] = f"error: disagrees with the float64 reference ({err:.3g})"
            else:
                row["both_ms"] = cuda_time(lambda x=x, y=y, m=metric: ops.pairwise_distance(x, y, m))
                row["mm_ratio"] = row["both_ms"] / mm_ms
                row["status"] = "ok"
            rows.append(row)
            ratio = row.get("mm_ratio")
            print(
                f"pairwise_distance {metric:<11} {dname} {n} x {n} x {d}: "
                + (f"{row['both_ms']:.3f} ms vs torch.mm {mm_ms:.3f} ms = {ratio:.2f}x" if ratio else row["status"]),
                flush=True,
            )
            add_target(
                targets,
                f"pairwise_distance {metric} {dname} {n}x{n}x{d}",
                f"<= {PAIRWISE_MM_RATIO}x one matmul",
                f"{ratio:.2f}x" if ratio is not None else row["status"],
                ratio is not None and ratio <= PAIRWISE_MM_RATIO,
                ratio,
            )
        del x, y
        torch.cuda.empty_cache()


def bench_fp32_accuracy(
    rows: list[dict], targets: list[dict], n: int = 8192, d: int = 512, bank_rows: int = 1 << 18
) -> None:
    """Max relative error (to the largest value) of each op's float32 (3xTF32) values vs float64."""
    from sslsteal_fast import ops
    from sslsteal_fast.ops import reference

    def f64(args: tuple) -> tuple:
        return tuple(t.detach().double() if t.is_floating_point() else t for t in args)

    cases: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for loss in ("info_nce", "soft_nn"):
        args, kwargs = make_inputs(loss, n, d, torch.float32)
        args = tuple(t.detach() for t in args)
        got = getattr(ops, loss)(*args, **kwargs, reduction="none")
        cases[f"{loss} rows"] = (got, getattr(reference, loss)(*f64(args), **kwargs, reduction="none"))
    g = torch.Generator(device=DEVICE).manual_seed(SEED)
    x = torch.randn(n, d, device=DEVICE, generator=g)
    y = torch.randn(n, d, device=DEVICE, generator=g)
    for metric in ("sqeuclidean", "cosine"):
        got = ops.pairwise_distance(x, y, metric)
        cases[f"pairwise_distance {metric}"] = (got, reference.pairwise_distance(x.double(), y.double(), metric))
    bank = torch.randn(bank_rows, d, device=DEVICE, generator=g)
    v_n, _ = ops.topk_similarity(x[:1024], bank, 10)
    v_r, _ = reference.topk_similarity(x[:1024].double(), bank.double(), 10)
    cases["topk_similarity values"] = (v_n, v_r)
    for name, (got, ref) in cases.items():
        err = rel_err(got, ref)
        rows.append({"op": name, "dtype": "fp32", "n": n, "D": d, "impl": "native", "rel_err_vs_f64": err})
        add_target(
            targets,
            f"fp32 (3xTF32) {name}, n={n}",
            f"within {FP32_REL_ERR:g} of fp64",
            f"{err:.2e}",
            err <= FP32_REL_ERR,
            err,
        )
    del x, y, bank
    torch.cuda.empty_cache()


def loss_targets(rows: list[dict], targets: list[dict], n: int = TARGET_N, d: int = TARGET_D) -> None:
    """The loss rows' targets at n = TARGET_N, D = TARGET_D, bf16."""
    for loss in ("info_nce", "soft_nn"):
        at = {r["impl"]: r for r in rows if r["op"] == loss and r["dtype"] == "bf16" and r["n"] == n and r["D"] == d}
        work = f"{loss} fwd+bwd bf16 n={n} D={d}"
        native = at.get("native", {})
        if native.get("status") != "ok":
            add_target(targets, work, "native runs", native.get("status", "not measured"), False, None)
            continue
        for impl, goal in (("pytorch", EAGER_SPEEDUP), ("compile", COMPILE_SPEEDUP)):
            other = at.get(impl, {})
            label = "eager PyTorch" if impl == "pytorch" else "torch.compile"
            if other.get("status") == "ok":
                speedup = other["both_ms"] / native["both_ms"]
                add_target(targets, work, f">= {goal}x {label}", f"{speedup:.2f}x", speedup >= goal, speedup)
            else:
                add_target(targets, work, f">= {goal}x {label}", other.get("status", "not measured"), False, None)
        frac = 3 * native["mm_ms"] / native["both_ms"]
        add_target(
            targets,
            work,
            f">= {100 * LOSS_MM_FRACTION:.0f}% of the bf16 matmul rate",
            f"{100 * frac:.0f}% (3 n x n x D GEMMs' FLOPs / time)",
            frac >= LOSS_MM_FRACTION,
            frac,
        )
        peak = native["peak_mib"]
        add_target(
            targets,
            work,
            f"<= {LOSS_EXTRA_MIB:.0f} MiB extra memory",
            f"{peak:.1f} MiB beyond inputs and grads",
            peak <= LOSS_EXTRA_MIB,
            peak,
        )


def add_target(targets: list[dict], work: str, target: str, measured: str, ok: bool, value: float | None) -> None:
    targets.append({"work": work, "target": target, "measured": measured, "value": value, "pass": bool(ok)})


def print_targets(targets: list[dict]) -> None:
    print("\nTargets")
    width = max(len(t["work"]) for t in targets) if targets else 0
    for t in targets:
        print(
            f"  {t['work']:<{width}}  target {t['target']:<40} measured {t['measured']:<44} {'PASS' if t['pass'] else 'FAIL'}"
        )


HEADER = f"{'op':<10}{'dtype':<6}{'n':>9}{'D':>6}  {'impl':<8}{'fwd ms':>9}{'bwd ms':>9}{'both ms':>9}{'mm-eq':>7}{'peak MiB':>10}  status"


def print_row(r: dict) -> None:
    def f(key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"

    print(
        f"{r['op']:<10}{r['dtype']:<6}{r['n']:>9}{r['D']:>6}  {r['impl']:<8}{f('fwd_ms', '9.2f'):>9}"
        f"{f('bwd_ms', '9.2f'):>9}{f('both_ms', '9.2f'):>9}{f('mm_equiv', '7.2f'):>7}{f('peak_mib', '10.1f'):>10}  {r['status']}",
        flush=True,
    )


def cpu_smoke(json_path: str | None) -> int:
    """Run every part at toy sizes on the CPU: checks the script's own code, not the kernels' speed."""
    global DEVICE
    DEVICE = "cpu"
    rows: list[dict] = []
    targets: list[dict] = []
    print(HEADER)
    bench_losses((256,), (32,), rows)
    loss_targets(rows, targets, 256, 32)
    bench_huge(rows, targets, warmup=0, n=1024, d=32)
    bench_topk(rows, targets, 5000, nq=64, d=32)
    bench_pairwise(rows, targets, n=256, d=32)
    bench_fp32_accuracy(rows, targets, n=256, d=32, bank_rows=2000)
    print_targets(targets)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"device": "cpu (smoke)", "targets": targets, "rows": rows}, fh, indent=1)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="losses at n=32768, D=512, bf16 only; a 1M-row top-k bank")
    size.add_argument("--full", action="store_true", help="losses at n in {8192, 32768, 131072}, D in {128, 512, 2048}")
    size.add_argument("--cpu-smoke", action="store_true", help="every code path at toy sizes on the CPU (no numbers)")
    parser.add_argument("--json", default=None, help="also write the rows and targets as JSON here")
    opts = parser.parse_args()
    if opts.cpu_smoke:
        return cpu_smoke(opts.json)
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device; skipping")
        return 0
    from sslsteal_fast.ops._native import has_kernel, load_error

    if not has_kernel("cuda"):
        print(f"bench_cuda: native CUDA kernels not built ({load_error() or 'no CUDA kernel registered'}); skipping")
        return 0
    torch.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 kernels then run 3xTF32, torch.mm full fp32
    # torch.compile recompiles per shape and dtype (dynamic=False); keep every shape compiled, not eager.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  seed {SEED}")
    print(HEADER)
    rows: list[dict] = []
    targets: list[dict] = []
    parts: dict[str, float] = {}
    if opts.full:
        sizes, dims = FULL_SIZES, FULL_DIMS
    else:
        sizes, dims = (QUICK_SIZES if opts.quick else SIZES), DIMS
    t0 = time.perf_counter()
    bench_losses(sizes, dims, rows, {"bf16": torch.bfloat16} if opts.quick else DTYPES)
    loss_targets(rows, targets)
    parts["losses_s"] = time.perf_counter() - t0
    for name, run in (
        ("huge_s", lambda: bench_huge(rows, targets, warmup=0 if opts.quick else 1)),
        ("topk_s", lambda: bench_topk(rows, targets, 1_000_000 if opts.quick else 10_000_000)),
        ("pairwise_s", lambda: bench_pairwise(rows, targets)),
        ("fp32_accuracy_s", lambda: bench_fp32_accuracy(rows, targets)),
    ):
        t0 = time.perf_counter()
        run()
        parts[name] = time.perf_counter() - t0
    print_targets(targets)
    print("wall time per part: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in parts.items()))
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(
                {
                    "device": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "seed": SEED,
                    "mode": "quick" if opts.quick else "full" if opts.full else "default",
                    "part_wall_s": parts,
                    "targets": targets,
                    "rows": rows,
                },
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
