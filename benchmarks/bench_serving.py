"""Serving throughput: OnnxVictim (ONNX Runtime) vs the same encoder in PyTorch eager, side by side.

For each encoder (default: the small CPU encoder and ResNet-18, at 32x32) and batch size (1, 64,
256) it reports images/s of

* PyTorch eager under ``torch.inference_mode`` (the baseline),
* the raw ONNX Runtime session (``session.run``, no wrapper),
* ``OnnxVictim.query`` (validation, content hashing for the cache, billing; every batch is new,
  so the cache never answers),

as the median over repeats (the three take turns repeat by repeat, so load changes on a shared
machine hit them alike), plus the fraction of the machine's measured float32 matmul rate
(``torch.mm`` at 2048^3) that each reaches, counting the model's FLOPs with a conv/linear counter
(2 FLOPs per multiply-add). Like the tests, it checks before it times: the export's parity with
PyTorch (<= 1e-4) and the victim's outputs against eager.

    PYTHONPATH=. python benchmarks/bench_serving.py [--out BENCHMARKS-serving.md] [--json rows.json]
        [--device auto|cpu|cuda|all]

``--device cuda`` (what ``make gpu-check`` runs, at batch 256 and 1024) serves through ONNX Runtime's
CUDA execution provider against eager PyTorch on the same GPU; without a GPU, a CUDA build of torch
and onnxruntime-gpu it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from sslsteal_fast.models import build_encoder
from sslsteal_fast.victim import OnnxVictim, export_onnx, max_relative_difference, physical_cores

#: Largest relative difference allowed between OnnxVictim and eager before timing: the export contract on
#: the CPU; on CUDA both sides may run float32 convolutions as TF32 (cuDNN's and ONNX Runtime's default).
SERVED_RTOL = {"cpu": 1e-4, "cuda": 1e-2}
IMAGES_PER_REPEAT = 256  # small batches are looped so that every repeat serves about this many images


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one image through ``model``'s Conv2d and Linear layers (2 per multiply-add)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *input_shape), device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_flop_rate(device: str, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 ``torch.mm`` FLOP/s at n x n x n on ``device`` (the best run: a capability, not a median)."""
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    times = []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    fns: dict[str, Callable[[np.ndarray], object]], rounds: list[list[np.ndarray]]
) -> dict[str, float]:
    """Median images/s of each function; ``rounds[0]`` warms up, every later round is timed.

    The functions take turns round by round, so a shared machine's changing load hits them alike.
    Each function gets its own copy of every input (the victim's cache never answers).
    """
    own = {name: [[x.copy() for x in batches] for batches in rounds] for name in fns}
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(len(rounds)):
        for name, fn in fns.items():
            start = time.perf_counter()
            for x in own[name][i]:
                fn(x)
            if i:
                rates[name].append(sum(len(x) for x in own[name][i]) / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def bench_model(
    arch: str, size: int, device: str, batch_sizes: list[int], repeats: int, workdir: Path, seed: int
) -> list[dict[str, float | int | str]]:
    torch.manual_seed(seed)
    model = build_encoder(arch).eval()
    shape = (3, size, size)
    path = workdir / f"{arch}_{size}.onnx"
    parity = export_onnx(model, path, shape, arch=arch)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    victim = OnnxVictim(path, providers=providers, batch_size=max(batch_sizes))
    session = victim._session  # the same tuned session, without the wrapper
    provider = session.get_providers()[0]  # what ONNX Runtime actually runs the model on
    in_name = session.get_inputs()[0].name
    model = model.to(device)
    flops = count_flops(model, shape)

    rng = np.random.default_rng(seed)
    check = rng.random((4, *shape), dtype=np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(check).to(device)).cpu().numpy()
    served = max_relative_difference(victim.query(check, client="check").numpy(), ref)
    if served > SERVED_RTOL[device]:
        raise RuntimeError(f"{arch}: OnnxVictim differs from eager by {served:.3g}")

    def eager(x: np.ndarray) -> object:
        with torch.inference_mode():
            out = model(torch.from_numpy(x).to(device)).cpu()
        return out

    def raw(x: np.ndarray) -> object:
        return session.run(None, {in_name: x})

    def served_fn(x: np.ndarray) -> object:
        return victim.query(x, client="bench")

    rows = []
    for n in batch_sizes:
        loops = max(1, IMAGES_PER_REPEAT // n)
        rounds = [[rng.random((n, *shape), dtype=np.float32) for _ in range(loops)] for _ in range(repeats + 1)]
        result: dict[str, float | int | str] = {"arch": arch, "size": size, "device": device, "batch": n}
        result.update(time_interleaved({"eager": eager, "ort": raw, "victim": served_fn}, rounds))
        result["flops"] = flops
        result["parity"] = parity
        result["provider"] = provider
        result["served_rel_diff"] = served
        rows.append(result)
        print(
            f"  {arch:9s} b={n:<4d} eager {result['eager']:8.1f}  ort {result['ort']:8.1f}  "
            f"victim {result['victim']:8.1f} img/s",
            file=sys.stderr,
        )
    return rows


def render(rows: list[dict[str, float | int | str]], peaks: dict[str, float], header: list[str]) -> str:
    lines = [*header, ""]
    lines.append(
        "| model | device | batch | eager img/s | ORT session img/s | OnnxVictim img/s | victim / eager "
        "| eager % of matmul peak | victim % of matmul peak |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        peak = peaks[str(r["device"])]
        fl = float(r["flops"])
        lines.append(
            f"| {r['arch']} {r['size']}x{r['size']} | {r['device']} | {r['batch']} | {r['eager']:.1f} "
            f"| {r['ort']:.1f} | {r['victim']:.1f} | {float(r['victim']) / float(r['eager']):.2f}x "
            f"| {100 * fl * float(r['eager']) / peak:.1f}% | {100 * fl * float(r['victim']) / peak:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["small", "resnet18"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "all"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    gpu = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    if args.device == "cuda" and not gpu:
        print(
            f"bench_serving: --device cuda needs a GPU, a CUDA build of torch and onnxruntime-gpu (torch sees a GPU: "
            f"{torch.cuda.is_available()}; ONNX Runtime providers: {', '.join(ort.get_available_providers())}); skipping"
        )
        return 0
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu", "cuda"] if gpu else ["cpu"]}.get(
        args.device, ["cpu", "cuda"] if gpu else ["cpu"]
    )
    threads = physical_cores()
    torch.set_num_threads(threads)
    peaks = {d: matmul_flop_rate(d) for d in devices}
    rows: list[dict[str, float | int | str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for arch in args.archs:
                rows += bench_model(arch, args.size, device, args.batch_sizes, args.repeats, Path(tmp), args.seed)
    # Measure the peak again after the models ran and keep the better one (a shared machine's load varies).
    peaks = {d: max(p, matmul_flop_rate(d)) for d, p in peaks.items()}
    header = [
        f"Serving throughput, {platform.processor() or platform.machine()}, {threads} physical cores "
        f"(torch threads = ORT intra-op threads = {threads}); torch {torch.__version__}, onnxruntime "
        f"{ort.__version__}; median of {args.repeats} repeats, seed {args.seed}.",
        "Matmul peak (float32 torch.mm 2048^3, best of runs before and after): "
        + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items())
        + ". FLOPs per image: conv + linear layers, 2 per multiply-add.",
    ]
    table = render(rows, peaks, header)
    print(table)
    print_targets(rows)
    if args.out is not None:
        args.out.write_text(table)
    if args.json is not None:
        summary = {"header": header, "matmul_flops": peaks, "onnxruntime": ort.__version__, "torch": torch.__version__}
        args.json.write_text(json.dumps({**summary, "rows": rows, "targets": targets(rows)}, indent=1))
    return 0


def targets(rows: list[dict[str, float | int | str]]) -> list[dict[str, object]]:
    """The GPU serving rows as targets: OnnxVictim (CUDA provider) throughput vs eager PyTorch on the GPU.

    There is no numeric goal: PASS means the victim ran on the CUDA provider and agreed with eager
    (both checked before timing); the ratio is reported.
    """
    out = []
    for r in rows:
        if r["device"] != "cuda":
            continue
        ratio = float(r["victim"]) / float(r["eager"])
        out.append(
            {
                "work": f"OnnxVictim CUDA provider, {r['arch']} {r['size']}x{r['size']}, batch {r['batch']}",
                "target": "throughput vs eager PyTorch on the GPU (PASS: served on CUDA, agrees with eager)",
                "measured": f"{float(r['victim']):.0f} vs {float(r['eager']):.0f} img/s = {ratio:.2f}x",
                "value": ratio,
                "pass": r.get("provider") == "CUDAExecutionProvider",
            }
        )
    return out


def print_targets(rows: list[dict[str, float | int | str]]) -> None:
    found = targets(rows)
    if found:
        print("Targets")
    for t in found:
        print(f"  {t['work']}  target {t['target']}  measured {t['measured']}  {'PASS' if t['pass'] else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
