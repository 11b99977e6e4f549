"""Victim subcommands: ``export`` (checkpoint -> ONNX), ``serve-bench`` and ``train-victim``.

``train-victim`` is owned by :mod:`sslsteal_fast.victim.train`; it is registered here when that
module is part of the build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the victim stage's subcommands to the ``sslsteal`` parser."""
    try:
        from sslsteal_fast.victim.train import register_train_victim
    except ModuleNotFoundError as exc:
        if exc.name != "sslsteal_fast.victim.train":
            raise
    else:
        register_train_victim(subparsers)

    p = subparsers.add_parser(
        "export",
        help="export a checkpoint's encoder to ONNX (dynamic batch) and check it against PyTorch",
        description=(
            "Export the encoder of a checkpoint written by sslsteal_fast.models.save_checkpoint to ONNX "
            "(opset >= 17, dynamic batch), check it against PyTorch with ONNX Runtime and print the max "
            "relative difference (must be <= 1e-4)."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint prefix (PREFIX.safetensors + PREFIX.json)")
    p.add_argument("-o", "--out", type=Path, default=None, help="output .onnx path (default: PREFIX.onnx)")
    p.add_argument("--opset", type=int, default=17, help="lowest acceptable ai.onnx opset (default 17)")
    p.add_argument(
        "--output",
        choices=("representation", "projection"),
        default="representation",
        help="serve the encoder representation (default) or a SimCLR model's projection-head output",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input height = width (default: image_size from the checkpoint metadata, else 32)",
    )
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto")
    p.set_defaults(func=_cmd_export)

    b = subparsers.add_parser(
        "serve-bench",
        help="measure OnnxVictim serving throughput (images/s) of an .onnx file",
        description="Time OnnxVictim.query on random distinct images (cache misses) at several batch sizes.",
    )
    b.add_argument("model", type=Path, help=".onnx file")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    b.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (median reported)")
    b.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime providers (default: auto)")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    b.add_argument("--image-size", type=int, default=32, help="size for models with dynamic spatial dims")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_cmd_serve_bench)


def _cmd_export(args: argparse.Namespace) -> int:
    from sslsteal_fast.models import checkpoint_paths, load_checkpoint
    from sslsteal_fast.victim.export import export_onnx

    model, meta = load_checkpoint(args.checkpoint)
    size = args.image_size if args.image_size is not None else int(meta.get("image_size", 32))
    if size < 1:
        raise ValueError(f"--image-size must be positive, got {size}")
    channels = int(meta.get("in_channels", 3))
    weights, _ = checkpoint_paths(args.checkpoint)
    prefix = weights.with_suffix("")
    out = args.out if args.out is not None else prefix.with_name(prefix.name + ".onnx")
    extra = {
        key: (value if isinstance(value, str) else json.dumps(value))
        for key, value in meta.items()
        if key in ("dataset", "seed", "epochs", "image_size")
    }
    diff = export_onnx(
        model,
        out,
        (channels, size, size),
        opset=args.opset,
        output=args.output,
        arch=str(meta.get("arch", "")),
        source_checkpoint=str(prefix),
        metadata={f"checkpoint.{k}": v for k, v in extra.items()},
        exporter=args.exporter,
    )
    print(f"wrote {out} ({args.output}, input (N, {channels}, {size}, {size}))")
    print(f"max relative difference vs PyTorch: {diff:.3g}")
    return 0


def _cmd_serve_bench(args: argparse.Namespace) -> int:
    from sslsteal_fast.victim.serving import OnnxVictim

    if args.repeats < 1 or min(args.batch_sizes) < 1:
        raise ValueError("--repeats and --batch-sizes must be positive")
    victim = OnnxVictim(
        args.model, providers=args.providers, batch_size=max(args.batch_sizes), intra_op_threads=args.threads
    )
    c, h, w = (d if d is not None else args.image_size for d in victim.input_shape)
    rng = np.random.default_rng(args.seed)
    print(f"{victim}")
    print("| batch | images/s | ms/batch |")
    print("|---:|---:|---:|")
    for n in args.batch_sizes:
        # Distinct images for every call so the response cache never answers.
        batches = [rng.random((n, c, h, w), dtype=np.float32) for _ in range(args.repeats + 1)]
        victim.query(batches[0], client="bench")  # warm-up
        times = []
        for x in batches[1:]:
            start = time.perf_counter()
            victim.query(x, client="bench")
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        print(f"| {n} | {n / med:.1f} | {med * 1e3:.2f} |")
    return 0
