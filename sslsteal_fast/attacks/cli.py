"""``sslsteal steal``: steal a served (ONNX) victim encoder into a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the attack stage's subcommands (``steal``) to the ``sslsteal`` parser."""
    from sslsteal_fast.attacks.losses import LOSSES
    from sslsteal_fast.attacks.steal import STRATEGIES
    from sslsteal_fast.models import ARCHITECTURES

    p = subparsers.add_parser(
        "steal",
        help="steal a victim encoder served from an ONNX file, under a query budget",
        description=(
            "Query a victim encoder (an ONNX file from `sslsteal export`, served with exact billing) with the "
            "first BUDGET images of a query set, train a fresh encoder of architecture ARCH to reproduce its "
            "answers, and save it as OUT.safetensors + OUT.json (metadata records billed queries, victim "
            "forward passes, loss history and the full configuration). Query images are loaded at the "
            "victim's channels and size. Defaults follow Dziedzic et al. (ICML 2022): Adam, batch 64 "
            "(mse/wasserstein/cosine) or 256 (info_nce/soft_nn), lr 1e-3 (3e-4 for info_nce), 100 epochs."
        ),
        epilog=(
            "example: sslsteal steal --victim victim.onnx --queries shapes-ood --budget 1000 "
            "--loss info_nce --epochs 20 --out stolen/ood-1000"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--victim", required=True, type=Path, metavar="MODEL.onnx", help="the served victim")
    p.add_argument(
        "--queries",
        required=True,
        metavar="SPEC",
        help="query set: a built-in (shapes, shapes-ood, digits) or NAME:PATH (cifar10:DIR, svhn:DIR, npz:FILE, ...)",
    )
    p.add_argument("--split", default="train", help="split of the query set to draw queries from")
    p.add_argument("--budget", type=int, default=9000, help="number of distinct query images (each billed once)")
    p.add_argument("--loss", choices=LOSSES, default="info_nce", help="stealing loss")
    p.add_argument("--arch", choices=ARCHITECTURES, default="small", help="the stolen encoder's architecture")
    p.add_argument("--epochs", type=int, default=100, help="training epochs over the budget")
    p.add_argument("--out", required=True, metavar="PREFIX", help="checkpoint prefix to write")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="query-once",
        help="query-once: each image sent once, augmentations local and free; augmented: augmented views "
        "sent every epoch, each billed (budget x epochs queries, the paper's accounting)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: per loss, see above)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: per loss, see above)")
    p.add_argument("--temperature", type=float, default=None, help="info_nce (0.07) / soft_nn (100) temperature")
    p.add_argument("--no-augment", action="store_true", help="train on clean images only")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and augmentations")
    p.add_argument("--device", default="cpu", help="torch device for training the stolen encoder")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_steal)


def _load_queries(spec: str, split: str, input_shape: tuple[int | None, int | None, int | None]) -> Any:
    from sslsteal_fast.data import load_dataset

    c, h, w = input_shape
    options: dict[str, Any] = {}
    if c is not None:
        options["channels"] = c
    if h is not None and w is not None:
        if h != w:
            raise ValueError(f"the victim takes {h}x{w} images; only square inputs are supported for query sets")
        options["size"] = h
    return load_dataset(spec, split, **options)


def _cmd_steal(args: argparse.Namespace) -> int:
    from sslsteal_fast.attacks.steal import StealConfig, StolenEncoder, steal
    from sslsteal_fast.models import REP_DIMS, save_checkpoint
    from sslsteal_fast.victim import OnnxVictim

    if not args.victim.is_file():
        raise FileNotFoundError(f"--victim {args.victim}: no such ONNX file (export one with `sslsteal export`)")
    victim = OnnxVictim(args.victim)
    if REP_DIMS[args.arch] != victim.output_dim:
        raise ValueError(
            f"--arch {args.arch} has {REP_DIMS[args.arch]}-d representations but the victim answers with "
            f"{victim.output_dim}-d; choose an architecture with rep_dim {victim.output_dim} "
            f"({', '.join(a for a, d in REP_DIMS.items() if d == victim.output_dim) or 'none built in'}) - "
            "stolen models with an extra output layer can be trained with sslsteal_fast.attacks.steal() but "
            "not yet saved as checkpoints"
        )
    queries = _load_queries(args.queries, args.split, victim.input_shape)
    cfg = StealConfig(
        loss=args.loss,
        arch=args.arch,
        budget=args.budget,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        strategy=args.strategy,
        augment=not args.no_augment,
        seed=args.seed,
        device=args.device,
    )
    result = steal(victim, queries, cfg, progress=not args.quiet)
    stolen = result.stolen
    assert isinstance(stolen, StolenEncoder) and stolen.adapter is None
    summary = {
        "victim": str(args.victim),
        "queries": args.queries,
        "query_split": args.split,
        "image_size": int(queries.images.shape[-1]),
        "billed_queries": result.billed_queries,
        "victim_forward_passes": result.victim_forward_passes,
        "answers_used": result.answers_used,
        "wall_time_s": round(result.wall_time_s, 3),
        "seed": result.seed,
        "final_loss": result.history[-1],
    }
    metadata = {**summary, "stolen": True, "steal_config": result.config, "loss_history": result.history}
    save_checkpoint(args.out, stolen.encoder.cpu(), metadata)
    summary["out"] = str(args.out)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"stole {args.victim} with {cfg.loss} ({cfg.strategy}): {result.billed_queries} billed queries, "
            f"{result.victim_forward_passes} victim forward passes, final loss {result.history[-1]:.4f}, "
            f"{result.wall_time_s:.1f} s -> {args.out}.safetensors / {args.out}.json"
        )
    return 0
