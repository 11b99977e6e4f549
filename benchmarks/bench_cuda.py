"""CUDA benchmarks of the native ops vs plain PyTorch, its torch.compile version, and the matmul floor.

Losses (info_nce, soft_nn): n = 2B in {8192, 32768, 131072}, D in {128, 512, 2048}, float32 and bfloat16;
forward, backward and both; peak extra memory from torch.cuda. The matmul floor is torch.mm of the same
(n x D) x (D x n) shape on the same device; "mm-equiv" is how many such matmuls the op's time is worth
(the math needs 1 for the forward and 2 for the backward). Then the n = 1,048,576, D = 512 run (native
only: plain PyTorch would need a 2 TiB n x n matrix) and top-k of 4096 queries over a 10M x 512 bf16 bank
against the device's measured copy bandwidth. Agreement with the reference is checked before timing.

    python benchmarks/bench_cuda.py [--quick] [--json out.json]

Exits 0 with a message when CUDA (or the native CUDA kernels) is unavailable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable

import torch

SIZES = (8192, 32768, 131072)
DIMS = (128, 512, 2048)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SEED = 0


def cuda_time(fn: Callable[[], object], warmup: int = 2, repeat: int = 5) -> float:
    """Median milliseconds of fn() over `repeat` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_extra(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def fits_dense(n: int, dtype: torch.dtype, copies: int = 6) -> bool:
    """Whether a plain-PyTorch version holding ~`copies` n x n matrices fits in free memory."""
    free, _ = torch.cuda.mem_get_info()
    return copies * n * n * torch.tensor([], dtype=dtype).element_size() < 0.8 * free


def make_inputs(loss: str, n: int, d: int, dtype: torch.dtype) -> tuple[tuple, dict]:
    g = torch.Generator(device="cuda").manual_seed(SEED)
    if loss == "info_nce":
        a = torch.randn(n // 2, d, device="cuda", generator=g).to(dtype)
        b = (a.float() + 0.3 * torch.randn(n // 2, d, device="cuda", generator=g)).to(dtype)
        return (a.requires_grad_(True), b.requires_grad_(True)), {"temperature": 0.1}
    z = torch.randn(n, d, device="cuda", generator=g).to(dtype).requires_grad_(True)
    labels = torch.arange(n // 2, device="cuda").repeat(2)
    return (z, labels), {"temperature": 10.0}


def loss_fns(loss: str) -> dict[str, Callable]:
    from sslsteal_fast import ops
    from sslsteal_fast.ops import reference

    native = getattr(ops, loss)
    plain = getattr(reference, loss)
    return {"native": native, "pytorch": plain, "compile": torch.compile(plain, dynamic=False)}


def measure(fn: Callable, args: tuple, kwargs: dict) -> dict[str, float]:
    grads = [t for t in args if t.requires_grad]

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return fn(*args, **kwargs)

    def both() -> None:
        for t in grads:
            t.grad = None
        fn(*args, **kwargs).backward()

    t_fwd = cuda_time(fwd)
    t_both = cuda_time(both)
    return {
        "fwd_ms": t_fwd,
        "bwd_ms": max(t_both - t_fwd, 0.0),
        "both_ms": t_both,
        "peak_mib": peak_extra(both) / 2**20,
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


def bench_losses(sizes: tuple[int, ...], dims: tuple[int, ...], rows: list[dict]) -> None:
    for loss in ("info_nce", "soft_nn"):
        fns = loss_fns(loss)
        for dname, dtype in DTYPES.items():
            for n in sizes:
                for d in dims:
                    args, kwargs = make_inputs(loss, n, d, dtype)
                    z = torch.randn(n, d, device="cuda", dtype=dtype)
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


def bench_huge(rows: list[dict]) -> None:
    from sslsteal_fast import ops

    n, d = 1_048_576, 512
    for loss in ("info_nce", "soft_nn"):
        args, kwargs = make_inputs(loss, n, d, torch.bfloat16)
        row = {"op": loss, "dtype": "bf16", "n": n, "D": d, "impl": "native"}
        try:
            row.update(measure(getattr(ops, loss), args, kwargs))
            row["status"] = "ok"
        except torch.OutOfMemoryError:
            row["status"] = "OOM"
        rows.append(row)
        print_row(row)
        del args
        torch.cuda.empty_cache()


def copy_bandwidth_gbs(src: torch.Tensor) -> float:
    """Device copy bandwidth (bytes read + written per second) measured with a device-to-device copy."""
    dst = torch.empty_like(src)
    ms = cuda_time(lambda: dst.copy_(src), repeat=3)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def bench_topk(rows: list[dict], bank_rows: int) -> None:
    from sslsteal_fast import ops
    from sslsteal_fast.ops import reference

    nq, d, k = 4096, 512, 10
    g = torch.Generator(device="cuda").manual_seed(SEED)
    bank = torch.empty(bank_rows, d, device="cuda", dtype=torch.bfloat16)
    for s in range(0, bank_rows, 1 << 20):
        bank[s : s + (1 << 20)] = torch.randn(min(1 << 20, bank_rows - s), d, device="cuda", generator=g)
    q = torch.randn(nq, d, device="cuda", generator=g).to(torch.bfloat16)
    # agreement on a slice first
    v_n, _ = ops.topk_similarity(q[:64], bank[: 1 << 18], k)
    v_r, _ = reference.topk_similarity(q[:64].double(), bank[: 1 << 18].double(), k)
    if (v_n.double() - v_r).abs().max().item() > 2e-2:
        raise SystemExit("bench_cuda: topk_similarity disagrees with the reference")
    bank_bytes = bank.numel() * bank.element_size()
    copy_gbs = copy_bandwidth_gbs(bank.view(-1)[: bank.numel() // 2])
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
        "bank_read_gbs": bank_bytes / t / 1e6,
        "copy_gbs": copy_gbs,
        "bandwidth_fraction": (bank_bytes / t / 1e6) / copy_gbs,
        "tflops": flops / t / 1e9,
        "status": "ok",
    }
    rows.append(row)
    print(
        f"topk 4096 x {bank_rows} x {d} bf16 k={k}: {t:.1f} ms, bank read {row['bank_read_gbs']:.0f} GB/s = "
        f"{100 * row['bandwidth_fraction']:.1f}% of measured copy bandwidth ({copy_gbs:.0f} GB/s), "
        f"{row['tflops']:.0f} TFLOP/s (compute-bound: {flops / 1e12:.1f} TFLOP for {bank_bytes / 1e9:.1f} GB)"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=8192/32768, D=128/512 only; smaller top-k bank")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device; skipping")
        return 0
    from sslsteal_fast.ops._native import has_kernel, load_error

    if not has_kernel("cuda"):
        print(f"bench_cuda: native CUDA kernels not built ({load_error() or 'no CUDA kernel registered'}); skipping")
        return 0
    torch.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  seed {SEED}")
    print(HEADER)
    rows: list[dict] = []
    sizes, dims = ((8192, 32768), (128, 512)) if opts.quick else (SIZES, DIMS)
    bench_losses(sizes, dims, rows)
    if not opts.quick:
        bench_huge(rows)
    bench_topk(rows, 1_000_000 if opts.quick else 10_000_000)
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(
                {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seed": SEED, "rows": rows},
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
