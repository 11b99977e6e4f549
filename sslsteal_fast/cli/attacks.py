"""``sslsteal steal``: steal a served (ONNX) victim encoder into a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from sslsteal_fast.cli.common import add_command, load_for_input
from sslsteal_fast.config import ARCHITECTURES, LOSSES, REP_DIMS, STRATEGIES, StealConfig

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the attack stage's subcommands (``steal``) to the ``sslsteal`` parser."""
    d = StealConfig()
    p = add_command(
        subparsers,
        _cmd_steal,
        epilog="example: sslsteal steal --victim victim.onnx --queries shapes-ood --budget 1000 "
        "--loss info_nce --epochs 20 --out stolen/ood-1000",
    )
    p.add_argument("--victim", required=True, type=Path, metavar="MODEL.onnx", help="the served victim")
    p.add_argument(
        "--queries",
        required=True,
        metavar="SPEC",
        help="query set: a built-in (shapes, shapes-ood, digits) or NAME:PATH (cifar10:DIR, svhn:DIR, npz:FILE, ...)",
    )
    p.add_argument("--split", default="train", help="split of the query set to draw queries from")
    p.add_argument("--budget", type=int, default=d.budget, help="number of distinct query images (each billed once)")
    p.add_argument("--loss", choices=LOSSES, default=d.loss, help="stealing loss")
    p.add_argument("--arch", choices=ARCHITECTURES, default=d.arch, help="the stolen encoder's architecture")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs over the budget")
    p.add_argument("--out", required=True, metavar="PREFIX", help="checkpoint prefix to write")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=d.strategy,
        help="query-once: each image sent once, augmentations local and free; augmented: augmented views "
        "sent every epoch, each billed (budget x epochs queries, the paper's accounting)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: per loss, see above)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: per loss, see above)")
    p.add_argument("--temperature", type=float, default=None, help="info_nce (0.07) / soft_nn (100) temperature")
    p.add_argument("--no-augment", action="store_true", help="train on clean images only")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of initialisation, batch order and augmentations")
    p.add_argument("--device", default=d.device, help="torch device for training the stolen encoder")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_steal(args: argparse.Namespace) -> int:
    """Steal a victim encoder served from an ONNX file, under a query budget.

    Query a victim encoder (an ONNX file from `sslsteal export`, served with exact billing) with the
    first BUDGET images of a query set, train a fresh encoder of architecture ARCH to reproduce its
    answers, and save it as OUT.safetensors + OUT.json (metadata records billed queries, victim forward
    passes, loss history and the full configuration). Query images are loaded at the victim's channels
    and size. Defaults follow Dziedzic et al. (ICML 2022): Adam, batch 64 (mse/wasserstein/cosine) or
    256 (info_nce/soft_nn), lr 1e-3 (3e-4 for info_nce), 100 epochs.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.attacks import StolenEncoder, steal
    from sslsteal_fast.models import save_checkpoint
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
    queries = load_for_input(args.queries, args.split, victim.input_shape, "--queries")
    fields = {f.name for f in dataclasses.fields(StealConfig)}
    cfg = StealConfig(**{k: v for k, v in vars(args).items() if k in fields}, augment=not args.no_augment)
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
