"""``sslsteal probe``: linear and kNN probes of an encoder (checkpoint or ONNX) on a downstream task."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sslsteal_fast.cli.common import add_command, add_device, emit, load_for_input, resolve_device
from sslsteal_fast.config import ProbeConfig

__all__ = ["register"]

_OPTIMIZERS = {"lbfgs": "L-BFGS", "adam": "Adam"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the probe stage's subcommands (``probe``) to the ``sslsteal`` parser."""
    d = ProbeConfig()
    p = add_command(
        subparsers,
        _cmd_probe,
        epilog="example: sslsteal probe --encoder stolen/ood-1000 --train shapes --test shapes --json",
    )
    p.add_argument(
        "--encoder",
        required=True,
        metavar="PREFIX|MODEL.onnx",
        help="a checkpoint prefix (PREFIX.safetensors + PREFIX.json) or an ONNX file",
    )
    p.add_argument("--train", required=True, metavar="SPEC", help="dataset the probes are fitted on")
    p.add_argument("--test", required=True, metavar="SPEC", help="dataset the probes are scored on")
    p.add_argument("--train-split", default="train", help="split of --train")
    p.add_argument("--test-split", default="test", help="split of --test")
    p.add_argument("--victim", default=None, metavar="PREFIX|MODEL.onnx", help="also report fidelity to this encoder")
    p.add_argument("--knn-k", type=int, default=d.knn_k, help="neighbours of the kNN probe (clipped to the train size)")
    p.add_argument(
        "--knn-temperature", type=float, default=d.knn_temperature, help="kNN vote weight exp(similarity / T)"
    )
    p.add_argument(
        "--linear-iters",
        type=int,
        default=d.epochs,
        help=f"full-batch {_OPTIMIZERS[d.optimizer]} iterations of the linear probe on the frozen features",
    )
    p.add_argument(
        "--epochs", type=_deprecated_epochs, dest="linear_iters", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per forward pass")
    add_device(p, "a checkpoint's encoder")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the probes")


def _deprecated_epochs(text: str) -> int:
    """``probe --epochs``, the old name of ``--linear-iters`` (it never counted epochs)."""
    print("sslsteal probe: warning: --epochs is deprecated; it is --linear-iters", file=sys.stderr)
    return int(text)


def _load_encoder(spec: str, flag: str) -> tuple[Any, tuple[int | None, int | None, int | None]]:
    """(encoder or OnnxVictim, input (C, H, W) with None where any size works)."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.models import load_checkpoint
    from sslsteal_fast.victim import OnnxVictim

    path = Path(spec)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {spec}: no such ONNX file")
        victim = OnnxVictim(path)
        return victim, victim.input_shape
    model, meta = load_checkpoint(spec)
    size = meta.get("image_size")
    size = int(size) if size is not None else None
    return model, (int(meta.get("in_channels", 3)), size, size)


def _cmd_probe(args: argparse.Namespace) -> int:
    """Linear-probe and kNN accuracy of an encoder on a downstream task.

    Compute an encoder's frozen features (eval mode) on a train and a test split, then report the
    top-1/top-5 accuracy of a linear probe (standardised features, multinomial logistic regression by
    L-BFGS) and of a weighted cosine kNN classifier on the test split. With --victim, also the fidelity
    of the encoder to that victim (mean cosine and L2 between representations, agreement of the two
    linear probes' predictions). Images are loaded at the encoder's channels and size.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.probes import evaluate_encoder

    config = ProbeConfig(
        epochs=args.linear_iters,
        knn_k=args.knn_k,
        knn_temperature=args.knn_temperature,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    device = resolve_device(args.device)
    encoder, shape = _load_encoder(args.encoder, "--encoder")
    victim = _load_encoder(args.victim, "--victim")[0] if args.victim else None
    train = load_for_input(args.train, args.train_split, shape, "--train")
    test = load_for_input(args.test, args.test_split, shape, "--test")
    results = evaluate_encoder(encoder, train, test, config, victim=victim, device=device, progress=not args.quiet)
    results = {
        "encoder": args.encoder,
        "train": f"{args.train}:{args.train_split}",
        "test": f"{args.test}:{args.test_split}",
        "knn_k": min(args.knn_k, len(train)),
        **results,
    }
    emit(args, results, lambda: _text(results, args.encoder, victim is not None))
    return 0


def _text(results: dict[str, Any], encoder: str, with_victim: bool) -> str:
    r = results
    lines = [
        f"{encoder}  (train {r['train']}, {r['train_size']} images; test {r['test']}, {r['test_size']} images)",
        f"  linear probe   top-1 {100 * r['probe_top1']:6.2f}%   top-5 {100 * r['probe_top5']:6.2f}%",
        f"  kNN (k={r['knn_k']:>3})  top-1 {100 * r['knn_top1']:6.2f}%   top-5 {100 * r['knn_top5']:6.2f}%",
    ]
    if with_victim:
        lines.append(
            f"  victim         linear top-1 {100 * r['victim_probe_top1']:6.2f}%   kNN top-1 {100 * r['victim_knn_top1']:6.2f}%"
        )
        lines.append(f"  agreement      {100 * r['agreement']:6.2f}% of test predictions")
        if r["fidelity_cosine"] is not None:
            lines.append(f"  fidelity       cosine {r['fidelity_cosine']:.4f}   L2 {r['fidelity_l2']:.4f}")
    return "\n".join(lines)
