"""``sslsteal probe``: linear and kNN probes of an encoder (checkpoint or ONNX) on a downstream task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sslsteal_fast.cli.common import add_command, load_for_input
from sslsteal_fast.config import ProbeConfig

__all__ = ["register"]


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
    p.add_argument("--epochs", type=int, default=d.epochs, help="L-BFGS iterations of the linear probe")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per forward pass")
    p.add_argument("--device", default=None, help="torch device for checkpoints (default: CPU)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", action="store_true", help="print the results as JSON")


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
        epochs=args.epochs,
        knn_k=args.knn_k,
        knn_temperature=args.knn_temperature,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    encoder, shape = _load_encoder(args.encoder, "--encoder")
    victim = _load_encoder(args.victim, "--victim")[0] if args.victim else None
    train = load_for_input(args.train, args.train_split, shape, "--train")
    test = load_for_input(args.test, args.test_split, shape, "--test")
    results = evaluate_encoder(encoder, train, test, config, victim=victim, device=args.device)
    results = {
        "encoder": args.encoder,
        "train": f"{args.train}:{args.train_split}",
        "test": f"{args.test}:{args.test_split}",
        "knn_k": min(args.knn_k, len(train)),
        **results,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{args.encoder}  (train {results['train']}, {len(train)} images; test {results['test']}, {len(test)} images)"
    )
    print(f"  linear probe   top-1 {100 * results['probe_top1']:6.2f}%   top-5 {100 * results['probe_top5']:6.2f}%")
    print(
        f"  kNN (k={results['knn_k']:>3})  top-1 {100 * results['knn_top1']:6.2f}%   top-5 {100 * results['knn_top5']:6.2f}%"
    )
    if victim is not None:
        print(
            f"  victim         linear top-1 {100 * results['victim_probe_top1']:6.2f}%   "
            f"kNN top-1 {100 * results['victim_knn_top1']:6.2f}%"
        )
        print(f"  agreement      {100 * results['agreement']:6.2f}% of test predictions")
        if results["fidelity_cosine"] is not None:
            print(f"  fidelity       cosine {results['fidelity_cosine']:.4f}   L2 {results['fidelity_l2']:.4f}")
    return 0
