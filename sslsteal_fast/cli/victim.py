"""Victim subcommands: ``train-victim`` (SimCLR), ``export`` (checkpoint -> ONNX) and ``serve-bench``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from sslsteal_fast.cli.common import (
    add_command,
    add_device,
    add_out,
    check_out,
    emit,
    info,
    refuse_stray,
    resolve_device,
)
from sslsteal_fast.config import ARCHITECTURES, TEMPERATURES, VICTIM_LOSSES, VictimTrainConfig, WatermarkConfig

__all__ = ["register"]

#: ``--watermark-*`` options: WatermarkConfig field -> (argparse type, help).
_WATERMARK_OPTIONS: dict[str, tuple[type, str]] = {
    "dataset": (
        str,
        "dataset spec of the rotation task (default: the victim's own training images; the built-in shapes "
        "are rotation invariant, so use e.g. digits)",
    ),
    "split": (str, "split of --watermark-dataset"),
    "count": (int, "images of the rotation task (default: all of --watermark-dataset's split)"),
    "weight": (float, "weight of the rotation loss next to the contrastive loss"),
    "batch_size": (int, "rotated images per step"),
    "hidden": (int, "hidden width of the watermark head"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the victim stage's subcommands to the ``sslsteal`` parser."""
    _register_train_victim(subparsers)
    p = add_command(subparsers, _cmd_export)
    p.add_argument("checkpoint", help="checkpoint prefix (PREFIX.safetensors + PREFIX.json)")
    add_out(p, "file", "output .onnx file (default: PREFIX.onnx)", short=True, overwrite=True)
    p.add_argument("--opset", type=int, default=17, help="lowest acceptable ai.onnx opset")
    p.add_argument(
        "--output",
        choices=("representation", "projection"),
        default="representation",
        help="serve the encoder representation or a SimCLR model's projection-head output",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input height = width (default: image_size from the checkpoint metadata, else 32)",
    )
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto", help="torch.onnx exporter")

    b = add_command(subparsers, _cmd_serve_bench)
    b.add_argument("model", type=Path, help=".onnx file")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256], help="batch sizes to time")
    b.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (median reported)")
    b.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime providers (default: CUDA if usable, CPU)")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    b.add_argument("--image-size", type=int, default=32, help="size for models with dynamic spatial dims")
    b.add_argument("--seed", type=int, default=0, help="seed of the random images")


def _register_train_victim(subparsers: argparse._SubParsersAction) -> None:
    d = VictimTrainConfig()
    p = add_command(subparsers, _cmd_train_victim)
    p.add_argument(
        "--recipe",
        default=None,
        metavar="NAME",
        help="retrain a packaged victim's recorded recipe (e.g. demo; no other training option applies) and compare "
        "the result with the packaged weights: bit for bit, else by linear-probe accuracy within the recorded "
        "tolerance (exit 1 outside it)",
    )
    p.add_argument("--dataset", default=d.dataset, help="dataset spec: shapes, digits, cifar10:PATH, npz:PATH, ...")
    add_out(
        p,
        "prefix",
        "checkpoint prefix: writes OUT.safetensors + OUT.json; an existing run with the same settings is resumed "
        "or reused, one with other settings refused",
        default=d.out,
    )
    p.add_argument("--arch", choices=ARCHITECTURES, default=d.arch, help="encoder architecture")
    p.add_argument("--epochs", type=int, default=d.epochs, help="SimCLR epochs: passes over the training images")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step (2 views each)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (cosine-decayed per step)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay")
    p.add_argument("--loss", choices=VICTIM_LOSSES, default=d.loss, help="contrastive loss")
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="loss temperature (default: " + ", ".join(f"{TEMPERATURES[k]:g} {k}" for k in VICTIM_LOSSES) + ")",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation / augmentation / shuffling seed")
    p.add_argument("--image-size", type=int, default=d.image_size, help="training resolution (images are resized)")
    p.add_argument("--count", type=int, default=None, help="number of training images (default: all)")
    p.add_argument("--data-seed", type=int, default=d.data_seed, help="dataset generation / subset seed")
    p.add_argument("--proj-dim", type=int, default=d.proj_dim, help="projection-head output dimension")
    p.add_argument(
        "--crop-min-scale", type=float, default=d.crop_min_scale, help="smallest random-resized-crop area fraction"
    )
    p.add_argument(
        "--rotation",
        type=float,
        default=d.rotation,
        help="rotate views by up to this many degrees either way (0: off; for classes that ignore pose)",
    )
    p.add_argument(
        "--translate", type=float, default=d.translate, help="shift views by up to this fraction of the side (0: off)"
    )
    p.add_argument(
        "--min-zoom", type=float, default=d.min_zoom, help="shrink views by a factor drawn from [MIN_ZOOM, 1] (1: off)"
    )
    p.add_argument("--grayscale-p", type=float, default=d.grayscale_p, help="probability that a view is turned grey")
    add_device(p, "training")
    w = WatermarkConfig()
    g = p.add_argument_group("watermark")
    g.add_argument(
        "--watermark",
        action="store_true",
        help="train the rotation watermark into the victim (writes OUT.wm-head.safetensors + .json next to it, "
        "for sslsteal verify --method watermark)",
    )
    for field, (kind, text) in _WATERMARK_OPTIONS.items():
        flag = "--watermark-" + field.replace("_", "-")
        g.add_argument(flag, type=kind, default=getattr(w, field), help=text)


def _training_defaults() -> dict[str, Any]:
    """The training options' defaults, by argparse dest (what --recipe refuses to combine with)."""
    d, w = VictimTrainConfig(), WatermarkConfig()
    out = {f.name: getattr(d, f.name) for f in dataclasses.fields(VictimTrainConfig)}
    out.update(count=None, temperature=None, watermark=False)
    out.update({"watermark_" + f: getattr(w, f) for f in _WATERMARK_OPTIONS})
    return {k: v for k, v in out.items() if k not in ("progress",)}


def _watermark_config(args: argparse.Namespace) -> WatermarkConfig | None:
    """The ``--watermark-*`` options as a WatermarkConfig (None without ``--watermark``)."""
    values = {field: getattr(args, "watermark_" + field) for field in _WATERMARK_OPTIONS}
    if not args.watermark:
        default = WatermarkConfig()
        refuse_stray(
            "--watermark", (f"--watermark-{f.replace('_', '-')}" for f, v in values.items() if v != getattr(default, f))
        )
        return None
    return WatermarkConfig(**values)


def _cmd_train_victim(args: argparse.Namespace) -> int:
    """Train a SimCLR victim encoder (resumable; safetensors + JSON checkpoint).

    Train a SimCLR encoder + projection head with the package's fused contrastive loss, Adam and a per-
    step cosine schedule. Writes OUT.safetensors + OUT.json (never pickle). After every epoch the state
    is saved to OUT.train-state.safetensors; re-running the same command resumes from it, and a finished
    run returns at once. With --watermark, the rotation watermark is trained jointly (a small head on
    the representation learns whether watermark images were rotated by more than 180 degrees).
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.models import checkpoint_paths
    from sslsteal_fast.ownership import train_watermarked_victim
    from sslsteal_fast.victim import train_victim

    check_out(args.out, "prefix")
    if args.recipe is not None:
        return _train_recipe(args)
    wm = _watermark_config(args)
    fields = {f.name for f in dataclasses.fields(VictimTrainConfig)} - {"progress", "device"}
    cfg = VictimTrainConfig(
        **{k: v for k, v in vars(args).items() if k in fields},
        device=resolve_device(args.device),
        progress=not args.quiet,
    )
    prefix = train_victim(cfg) if wm is None else train_watermarked_victim(cfg, wm)
    weights, meta_path = checkpoint_paths(prefix)
    meta = json.loads(meta_path.read_text())
    result: dict[str, Any] = {
        "out": str(prefix),
        "weights": str(weights),
        "arch": meta["arch"],
        "rep_dim": meta["rep_dim"],
        "dataset": meta["dataset"],
        "train_size": meta.get("train_size"),
        "epochs": meta["epochs"],
        "final_loss": meta["epoch_losses"][-1],
        "train_seconds": meta["train_seconds"],
        "watermark": None,
    }
    text = (
        f"victim {meta['arch']} (rep_dim {meta['rep_dim']}) on {meta['dataset']}: {meta['epochs']} epochs, "
        f"final loss {meta['epoch_losses'][-1]:.4f}, {meta['train_seconds']:.1f} s of training -> {weights}"
    )
    if wm is not None:
        accuracy = meta.get("hook_metrics", {}).get("watermark", {}).get("rotation_accuracy", [None])[-1]
        result["watermark"] = {**dataclasses.asdict(wm), "rotation_accuracy": accuracy}
        text += f" (watermarked: rotation accuracy {accuracy:.3f})" if accuracy is not None else " (watermarked)"
    emit(args, result, text)
    return 0


_RECIPE_FREE = ("out", "device", "recipe", "quiet", "json", "debug")


def _train_recipe(args: argparse.Namespace) -> int:
    """``train-victim --recipe NAME``: train the packaged recipe into --out, then compare with the package."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.ownership import train_watermarked_victim
    from sslsteal_fast.victim import train_victim
    from sslsteal_fast.victim.pretrained import packaged_victim

    packaged = packaged_victim(args.recipe)
    defaults = _training_defaults()
    refuse_stray(
        "a hand-written recipe (not --recipe)",
        sorted(
            "--" + k.replace("_", "-")
            for k, v in vars(args).items()
            if k in defaults and k not in _RECIPE_FREE and v != defaults[k]
        ),
    )
    cfg, wm = packaged.configs()
    cfg = dataclasses.replace(cfg, out=str(args.out), device=resolve_device(args.device), progress=not args.quiet)
    info(args, f"train-victim: recipe {packaged.name!r}: {packaged.description}")
    prefix = train_victim(cfg) if wm is None else train_watermarked_victim(cfg, wm)
    result = compare_with_packaged(prefix, packaged, progress=not args.quiet)
    verdict = (
        "bit-for-bit identical to the packaged weights"
        if result["identical"]
        else f"differs from the packaged weights (max |dw| {result['max_abs_weight_difference']:.3g}); linear probe "
        f"{result['probe_top1']:.2%} vs packaged {result['packaged_probe_top1']:.2%} "
        f"(|difference| {abs(result['probe_difference']) * 100:.2f} points, tolerance {result['tolerance_points']:g})"
    )
    emit(args, {"out": str(prefix), "recipe": packaged.name, **result}, f"{prefix}: {verdict}")
    return 0 if result["within_tolerance"] else 1


def compare_with_packaged(prefix: Any, packaged: Any, *, progress: bool = False) -> dict[str, Any]:
    """Weights of checkpoint ``prefix`` against a packaged victim's: bitwise, else by linear probe."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    import torch

    from sslsteal_fast.config import ProbeConfig
    from sslsteal_fast.data import load_dataset
    from sslsteal_fast.models import checkpoint_paths, load_checkpoint
    from sslsteal_fast.probes import probe_encoder
    from sslsteal_fast.util.files import load_tensors

    packaged.verify()
    mine, _ = load_tensors(checkpoint_paths(prefix)[0])
    theirs, _ = load_tensors(packaged.folder / "victim.safetensors")
    if mine.keys() != theirs.keys():
        raise ValueError(f"{prefix}: its tensors are not the packaged victim's ({sorted(mine.keys() ^ theirs.keys())})")
    identical = all(torch.equal(mine[k], theirs[k]) for k in mine)
    diff = max(float((mine[k].double() - theirs[k].double()).abs().max()) for k in mine if mine[k].numel())
    tolerance = float(packaged.measured.get("tolerance_points", 2.0))
    out: dict[str, Any] = {
        "identical": identical,
        "max_abs_weight_difference": diff,
        "tolerance_points": tolerance,
        "within_tolerance": identical,
    }
    if identical:
        return out
    probe = packaged.measured["probe"]
    train, test = (load_dataset(**probe[split]) for split in ("train", "test"))
    config = ProbeConfig(epochs=int(probe.get("epochs", 100)))
    top1 = probe_encoder(load_checkpoint(prefix)[0], train, test, config, progress=progress).linear.top1
    packaged_top1 = float(packaged.measured["probe_top1"])
    out.update(probe_top1=top1, packaged_probe_top1=packaged_top1, probe_difference=top1 - packaged_top1)
    out["within_tolerance"] = abs(top1 - packaged_top1) * 100 <= tolerance
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint's encoder to ONNX (dynamic batch) and check it against PyTorch.

    Export the encoder of a checkpoint written by sslsteal_fast.models.save_checkpoint to ONNX (opset >=
    17, dynamic batch), check it against PyTorch with ONNX Runtime and print the max relative difference
    (must be <= 1e-4).
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.models import checkpoint_paths, load_checkpoint
    from sslsteal_fast.victim import export_onnx

    weights, _ = checkpoint_paths(args.checkpoint)
    prefix = weights.with_suffix("")
    out = check_out(
        args.out if args.out is not None else prefix.with_name(prefix.name + ".onnx"), "file", overwrite=args.overwrite
    )
    model, meta = load_checkpoint(args.checkpoint)
    size = args.image_size if args.image_size is not None else int(meta.get("image_size", 32))
    if size < 1:
        raise ValueError(f"--image-size must be positive, got {size}")
    channels = int(meta.get("in_channels", 3))
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
    result = {
        "out": str(out),
        "output": args.output,
        "input_shape": [channels, size, size],
        "max_relative_difference": diff,
    }
    emit(
        args,
        result,
        f"wrote {out} ({args.output}, input (N, {channels}, {size}, {size}))\n"
        f"max relative difference vs PyTorch: {diff:.3g}",
    )
    return 0


def _cmd_serve_bench(args: argparse.Namespace) -> int:
    """Measure OnnxVictim serving throughput (images/s) of an .onnx file.

    Time OnnxVictim.query on random distinct images (cache misses) at several batch sizes.
    """
    import numpy as np

    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.victim import OnnxVictim

    if args.repeats < 1 or min(args.batch_sizes) < 1:
        raise ValueError("--repeats and --batch-sizes must be positive")
    victim = OnnxVictim(
        args.model, providers=args.providers, batch_size=max(args.batch_sizes), intra_op_threads=args.threads
    )
    c, h, w = (d if d is not None else args.image_size for d in victim.input_shape)
    rng = np.random.default_rng(args.seed)
    rows = []
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
        rows.append({"batch": n, "images_per_s": n / med, "ms_per_batch": med * 1e3})
    table = [f"{victim}", "| batch | images/s | ms/batch |", "|---:|---:|---:|"]
    table += [f"| {r['batch']} | {r['images_per_s']:.1f} | {r['ms_per_batch']:.2f} |" for r in rows]
    emit(
        args, {"model": str(args.model), "victim": str(victim), "repeats": args.repeats, "rows": rows}, "\n".join(table)
    )
    return 0
