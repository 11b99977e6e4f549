"""``sslsteal verify``: is a suspect encoder derived from the victim? (watermark or dataset inference)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sslsteal_fast.cli.common import add_command, add_device, emit, resolve_device
from sslsteal_fast.util.checks import check_number

__all__ = ["load_suspect", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``verify`` to the ``sslsteal`` parser (sets ``func``)."""
    p = add_command(subparsers, _cmd_verify)
    p.add_argument(
        "--method",
        choices=("watermark", "dataset-inference"),
        required=True,
        help="the rotation watermark (the victim trained with train-victim --watermark) or dataset inference",
    )
    p.add_argument("--victim", required=True, help="victim checkpoint prefix (PREFIX.safetensors + PREFIX.json)")
    p.add_argument("--suspect", required=True, help="suspect checkpoint prefix or ONNX file")
    p.add_argument(
        "--images",
        default=None,
        help="images spec: the verification images (watermark) or the unseen images (dataset-inference) "
        "(default: the test split of the watermark dataset, or of the victim's dataset)",
    )
    p.add_argument("--count", type=int, default=500, help="images per compared set")
    p.add_argument("--components", type=int, default=8, help="dataset-inference: Gaussian mixture components")
    p.add_argument(
        "--statistic",
        choices=("likelihood", "alignment"),
        default="likelihood",
        help="dataset-inference: the per-image score compared between private and unseen images: the Gaussian "
        "mixture's log-likelihood of the representation, or how consistently the suspect represents augmented "
        "views of the image (the victim's own training views)",
    )
    p.add_argument("--views", type=int, default=8, help="dataset-inference with --statistic alignment: views per image")
    p.add_argument(
        "--alpha",
        type=_alpha,
        default=0.01,
        help="significance level, in (0, 1): the verdict is 'stolen' when p < alpha",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the rotations / the mixture fit")
    add_device(p, "a checkpoint suspect")


def _alpha(text: str) -> float:
    """argparse ``type`` of ``--alpha``: a probability in (0, 1)."""
    try:
        return check_number("the significance level", float(text), low=0.0, high=1.0, strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_suspect(spec: str) -> Any:
    """A checkpoint prefix -> its encoder (a SimCLR model's encoder); ``*.onnx`` -> an unbudgeted OnnxVictim."""
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from torch import nn

    from sslsteal_fast.models import StolenEncoder, load_checkpoint
    from sslsteal_fast.victim import OnnxVictim

    if spec.endswith(".onnx"):
        return OnnxVictim(spec)
    model, _ = load_checkpoint(spec)
    if isinstance(model, StolenEncoder):  # its head (if any) maps to the victim's space, where the tests look
        return model
    encoder = getattr(model, "encoder", model)
    return encoder if isinstance(encoder, nn.Module) else model


def _cmd_verify(args: argparse.Namespace) -> int:
    """Ownership test of a suspect encoder: rotation watermark or dataset inference.

    watermark: rotate held-out images, read the victim's watermark head on the suspect's
    representations, one-sided binomial test against chance (the victim must have been trained with the
    rotation watermark: VICTIM.wm-head.safetensors next to it). dataset-inference: fit a Gaussian
    mixture to the suspect's representations of part of the victim's private training set (rebuilt from
    the victim's metadata) and test with a one-sided Welch t-test whether held-out private images are
    more likely than unseen ones. Prints the verdict ('stolen' at p < alpha, else 'independent').
    """
    # Loaded when the command runs: keeps `sslsteal --help` fast.
    from torch import nn

    from sslsteal_fast.config import VictimTrainConfig
    from sslsteal_fast.data import load_dataset
    from sslsteal_fast.models import checkpoint_paths
    from sslsteal_fast.ownership import alignment_inference, dataset_inference, load_head, verify_watermark
    from sslsteal_fast.victim import training_views

    _, meta_path = checkpoint_paths(args.victim)
    if not meta_path.is_file():
        raise FileNotFoundError(f"--victim {args.victim}: no {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--victim {args.victim}: {meta_path} is not valid JSON ({exc})") from exc
    size = int(meta.get("image_size", 32))
    device = resolve_device(args.device)
    suspect = load_suspect(args.suspect)
    if isinstance(suspect, nn.Module):
        suspect.to(device)
    report: dict[str, Any] = {"method": args.method, "victim": args.victim, "suspect": args.suspect}
    if args.method == "watermark":
        head, head_meta = load_head(args.victim)
        spec = args.images or (head_meta.get("watermark", {}).get("dataset") or meta.get("dataset", "shapes"))
        images = load_dataset(spec, "test", size=size).images[: args.count]
        res = verify_watermark(head, suspect, images, alpha=args.alpha, seed=args.seed)
        report.update(res.as_dict(), statistic=res.accuracy, images=spec)
    else:
        dataset = meta.get("dataset", "shapes")
        private = load_dataset(
            dataset,
            "train",
            size=size,
            count=meta.get("count") or meta.get("train_size"),
            seed=int(meta.get("data_seed", 0)),
        )
        if len(private) < 2 * args.count + 2:
            raise ValueError(f"the victim's private set has {len(private)} images; lower --count (now {args.count})")
        n_fit = len(private) - args.count
        unseen = load_dataset(args.images or dataset, "test", size=size).images[: args.count]
        if args.statistic == "alignment":
            if "train_config" not in meta:
                raise ValueError(f"--victim {args.victim}: its metadata records no train_config (the views to use)")
            views = training_views(VictimTrainConfig(**meta["train_config"]))
            res = alignment_inference(
                suspect, private.images[n_fit:], unseen, views, views=args.views, alpha=args.alpha, seed=args.seed
            )
        else:
            res = dataset_inference(
                suspect,
                private.images[:n_fit],
                private.images[n_fit:],
                unseen,
                n_components=args.components,
                alpha=args.alpha,
                seed=args.seed,
                device=device,
            )
        report.update(res.as_dict(), statistic_kind=args.statistic)
    emit(
        args,
        report,
        f"{args.method}{' (' + args.statistic + ')' if args.method == 'dataset-inference' else ''}: "
        f"{report['verdict']} (p = {report['p_value']:.3g}, statistic {report['statistic']:.4f})",
    )
    return 0
