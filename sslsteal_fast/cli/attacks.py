"""``sslsteal steal``: steal a served victim encoder (an ONNX file, optionally defended, or an HTTP API) into a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

from sslsteal_fast.cli.common import (
    add_command,
    add_device,
    add_out,
    check_out,
    emit,
    info,
    load_for_input,
    refuse_stray,
    resolve_device,
)
from sslsteal_fast.config import (
    ARCHITECTURES,
    DEFAULT_BATCH_SIZES,
    DEFAULT_LRS,
    LOSSES,
    STRATEGIES,
    TEMPERATURES,
    StealConfig,
)

__all__ = ["register"]

#: What ``steal --out PREFIX`` writes (refused when present, unless --overwrite).
OUT_SUFFIXES = (".safetensors", ".json")


def _per_loss(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in values.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the attack stage's subcommands (``steal``) to the ``sslsteal`` parser."""
    d = StealConfig()
    p = add_command(
        subparsers,
        _cmd_steal,
        epilog="example: sslsteal steal --victim victim.onnx --queries shapes-ood --budget 1000 "
        "--loss info_nce --epochs 20 --out stolen/ood-1000",
    )
    p.add_argument(
        "--victim",
        required=True,
        metavar="MODEL.onnx|URL",
        help="the served victim: an ONNX file, or the URL of an encoder API (sslsteal serve) with --key-file",
    )
    p.add_argument(
        "--key-file", type=Path, default=None, metavar="FILE", help="the API key of a --victim URL (sslsteal keys add)"
    )
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
    p.add_argument(
        "--epochs",
        type=int,
        default=d.epochs,
        help="training epochs of the stolen encoder: passes over the BUDGET query images (with --strategy "
        "augmented every pass re-queries the victim, so BUDGET x EPOCHS queries are billed)",
    )
    add_out(p, "prefix", "checkpoint prefix to write (OUT.safetensors + OUT.json)", required=True, overwrite=True)
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=d.strategy,
        help="query-once: each image sent once, augmentations local and free; augmented: augmented views "
        "sent every epoch, each billed (budget x epochs queries, the paper's accounting)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"training batch, clipped to the budget (default: per loss: {_per_loss(DEFAULT_BATCH_SIZES)})",
    )
    p.add_argument(
        "--lr", type=float, default=None, help=f"Adam learning rate (default: per loss: {_per_loss(DEFAULT_LRS)})"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"temperature of the losses that have one (default: {_per_loss(TEMPERATURES)}; the others have none)",
    )
    p.add_argument("--no-augment", action="store_true", help="train on clean images only")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of initialisation, batch order and augmentations")
    add_device(p, "the stolen encoder's training")
    g = p.add_argument_group("defended victim")
    g.add_argument(
        "--defense",
        action="append",
        default=None,
        metavar="SPEC",
        help="serve the victim through this defense, NAME[:KEY=VALUE,...] with the fields of the defense's "
        "Config (none, noise:sigma=0.5, quantize:decimals=2, topk:k=32, detection:threshold=0.6, coverage:lam=1); "
        "repeat to stack defenses, applied in order",
    )
    g.add_argument(
        "--defense-state",
        default=None,
        metavar="FILE",
        help="the defended API's state (secrets, per-client history), kept across runs (default: a fresh one "
        "per run, with a fresh random secret)",
    )
    g.add_argument(
        "--defense-center",
        default=None,
        metavar="SPEC",
        help="images whose mean undefended answer the defenses subtract before comparing outputs (the owner's "
        "reference point; not billed to the thief)",
    )


def _check_batches(cfg: StealConfig) -> None:
    """Refuse a contrastive loss whose batches would hold a single pair (no negatives to contrast)."""
    resolved = cfg.resolved()
    if resolved.loss not in TEMPERATURES:
        return
    assert resolved.batch_size is not None
    batch = min(resolved.batch_size, resolved.budget)
    # The budget is cut into ceil(budget / batch) near-equal batches; the smallest has this many rows.
    smallest = resolved.budget // math.ceil(resolved.budget / batch)
    if smallest < 2:
        raise ValueError(
            f"--loss {resolved.loss} contrasts each image with the others in its batch and needs batches of "
            f"at least 2, but --budget {resolved.budget} in batches of {resolved.batch_size} gives a batch of "
            f"{smallest}; raise --batch-size (or --budget)"
        )


def _is_url(victim: str) -> bool:
    return victim.startswith(("http://", "https://"))


def _victim(args: argparse.Namespace) -> Any:
    """The victim ``--victim`` names: an OnnxVictim of a file, or an HttpVictim of a URL with ``--key-file``."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.victim import OnnxVictim
    from sslsteal_fast.victim.http import HttpVictim, read_key

    if _is_url(args.victim):
        if args.key_file is None:
            raise ValueError(f"--victim {args.victim} is an API: give its key with --key-file FILE")
        if args.defense or args.defense_state or args.defense_center:
            raise ValueError(
                "--defense, --defense-state and --defense-center apply to an ONNX file; an API's defenses are "
                "its server's (sslsteal keys add --defense)"
            )
        return HttpVictim(args.victim, read_key(args.key_file))
    refuse_stray("a --victim URL", ["--key-file"] if args.key_file is not None else [])
    path = Path(args.victim)
    if not path.is_file():
        raise FileNotFoundError(f"--victim {path}: no such ONNX file (export one with `sslsteal export`)")
    return OnnxVictim(path)


def _defended_victim(args: argparse.Namespace, victim: Any) -> Any:
    """``victim`` itself, or an OnnxVictim of the same file serving through ``--defense``."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.defenses import make_defense
    from sslsteal_fast.victim import OnnxVictim, query_victim

    specs = args.defense or []
    if not specs:
        stray = {"--defense-state": args.defense_state, "--defense-center": args.defense_center}
        refuse_stray("--defense", (flag for flag, value in stray.items() if value))
        return victim
    center = None
    if args.defense_center:
        images = load_for_input(args.defense_center, "train", victim.input_shape, "--defense-center").images
        center = query_victim(victim, images, progress=not args.quiet).mean(0)  # the owner's own, unbilled
    defenses = [make_defense(spec, state=args.defense_state, center=center) for spec in specs]
    info(args, f"serving {args.victim} through {', '.join(specs)}")
    return OnnxVictim(args.victim, defenses=defenses)


def _cmd_steal(args: argparse.Namespace) -> int:
    """Steal a victim encoder served from an ONNX file or an HTTP API, under a query budget.

    Query a victim encoder (an ONNX file from `sslsteal export`, served with exact billing, through
    --defense if given; or the URL of a `sslsteal serve` API with --key-file) with the first BUDGET images of a query set, train a fresh encoder of
    architecture ARCH to reproduce its answers (with a linear head when its dimension is not the
    victim's), and save it as OUT.safetensors + OUT.json (metadata
    records billed queries, victim forward passes, defenses, loss history and the full configuration).
    Query images are loaded at the victim's channels and size. Defaults follow Dziedzic et al. (ICML
    2022): Adam, the paper's per-loss batch sizes, learning rates and temperatures.
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from sslsteal_fast.attacks import steal

    fields = {f.name for f in dataclasses.fields(StealConfig)} - {"device", "augment"}
    cfg = StealConfig(
        **{k: v for k, v in vars(args).items() if k in fields},
        augment=not args.no_augment,
        device=resolve_device(args.device),
    )
    _check_batches(cfg)
    check_out(args.out, "prefix", overwrite=args.overwrite, suffixes=OUT_SUFFIXES)
    victim = _victim(args)
    queries = load_for_input(args.queries, args.split, victim.input_shape, "--queries")
    served = _defended_victim(args, victim)
    result = steal(served, queries, cfg, progress=not args.quiet)
    summary = {
        "victim": str(args.victim),
        "defenses": list(args.defense or []),
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
    result.stolen.cpu()
    result.save(args.out, summary)  # the steal's provenance (config, bills, loss history) is recorded too
    summary["out"] = str(args.out)
    through = f" through {', '.join(args.defense)}" if args.defense else ""
    emit(
        args,
        summary,
        f"stole {args.victim}{through} with {cfg.loss} ({cfg.strategy}): {result.billed_queries} billed queries, "
        f"{result.victim_forward_passes} victim forward passes, final loss {result.history[-1]:.4f}, "
        f"{result.wall_time_s:.1f} s -> {args.out}.safetensors / {args.out}.json",
    )
    return 0
