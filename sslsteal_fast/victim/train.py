"""SimCLR victim training (``sslsteal train-victim``), resumable from the last finished epoch.

Two augmented views per image (:class:`~sslsteal_fast.data.SimCLRAugment`), an encoder + projection
head (:class:`~sslsteal_fast.models.SimCLRModel`), the package's fused contrastive loss
(:func:`sslsteal_fast.ops.info_nce`, NT-Xent, tau = 0.07; or :func:`sslsteal_fast.ops.soft_nn` with
each image's two views as the positive pair), Adam, and a cosine learning-rate schedule evaluated per
step over exactly ``epochs * steps_per_epoch`` steps (it never wraps around).

Reproducibility and resuming. The seed fixes the weight initialisation, and every epoch re-seeds the
global RNG (used by the augmentations) and the shuffling generator from ``(seed, epoch)``; so the RNG
state at an epoch boundary is a function of the config, and a run resumed from its epoch-k state is
bit-for-bit the run that was never interrupted. After each epoch the model, the optimiser state and
the progress are written atomically to ``<out>.train-state.safetensors`` (tensors, with the JSON
bookkeeping in its header; never pickle). Re-running with the same ``out`` resumes from there; when
the final checkpoint (``<out>.safetensors`` + ``<out>.json``, via
:func:`~sslsteal_fast.models.save_checkpoint`) exists, the call returns at once. The state file is
removed once the final checkpoint is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file
from tqdm.auto import tqdm

from sslsteal_fast import ops
from sslsteal_fast.data import SimCLRAugment, load_dataset, to_float
from sslsteal_fast.models import ARCHITECTURES, SimCLRModel, build_encoder, checkpoint_paths, save_checkpoint

__all__ = ["VictimTrainConfig", "train_victim", "register_train_victim", "state_path", "LOSSES"]

LOSSES = ("info_nce", "soft_nn")
DEFAULT_TEMPERATURE = {"info_nce": 0.07, "soft_nn": 100.0}
_STATE_FORMAT = "sslsteal_fast.victim-train-state/1"
# Config fields that do not change the result (so they may differ between a run and its resumption).
_RESUME_FREE = ("out", "device", "progress")


@dataclass
class VictimTrainConfig:
    """Everything that defines a victim training run (all of it is recorded in the checkpoint).

    ``dataset``: a :func:`~sslsteal_fast.data.load_dataset` spec; its ``train`` split is used,
    resized to ``image_size``; ``count`` limits the number of training images (for ``shapes`` it is
    how many are generated) and ``data_seed`` is the dataset's generation / subset seed.
    ``crop_min_scale``: smallest random-resized-crop area (the paper's 0.08 by default).
    ``temperature``: ``None`` means the loss's default (0.07 for InfoNCE, 100 for SoftNN, which works
    on unnormalised projections). ``out``: checkpoint prefix. ``device``: ``"cpu"``, ``"cuda"``, ... or
    ``"auto"`` (CUDA when available).
    """

    dataset: str = "shapes"
    out: str = "runs/victim"
    arch: str = "small"
    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    temperature: float | None = None
    loss: str = "info_nce"
    seed: int = 0
    image_size: int = 32
    count: int | None = None
    data_seed: int = 0
    proj_dim: int = 128
    crop_min_scale: float = 0.08
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "image_size", "proj_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (contrastive learning needs negatives)")
        if self.count is not None and self.count < 2:
            raise ValueError(f"count must be >= 2, got {self.count}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.out = str(self.out)

    @property
    def resolved_temperature(self) -> float:
        return float(self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE[self.loss])

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result (everything but out, device and progress display)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _RESUME_FREE}


@dataclass
class _Progress:
    epochs_done: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def state_path(out: str | Path) -> Path:
    """Where the per-epoch training state of run ``out`` lives."""
    weights, _ = checkpoint_paths(out)
    return weights.with_name(weights.name.replace(".safetensors", ".train-state.safetensors"))


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x51C1A]).generate_state(1)[0])


def _cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``total`` (clamped: no wrap-around)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def _contrastive_loss(cfg: VictimTrainConfig, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Loss of two projected views (B, proj_dim) each; row i of p1 and row i of p2 are positives."""
    t = cfg.resolved_temperature
    if cfg.loss == "info_nce":
        return ops.info_nce(p1, p2, temperature=t)
    pairs = torch.arange(p1.shape[0], device=p1.device).repeat(2)
    return ops.soft_nn(torch.cat([p1, p2]), pairs, temperature=t)


# ------------------------------------------------------------------------------------ state save/load


def _save_state(path: Path, cfg: VictimTrainConfig, model: SimCLRModel, opt: torch.optim.Optimizer, prog: _Progress):
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
    }
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous().clone()
    header = {
        "format": _STATE_FORMAT,
        "config": cfg.identity(),
        "progress": dataclasses.asdict(prog),
        "param_groups": opt_state["param_groups"],
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(header)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_state_header(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "state" not in meta:
        raise ValueError(f"{path} is not a train-victim state file; delete it to start over")
    header = json.loads(meta["state"])
    if header.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path}: unsupported state format {header.get('format')!r}; delete it to start over")
    return header


def _load_state(path: Path, model: SimCLRModel, opt: torch.optim.Optimizer, header: dict[str, Any]) -> _Progress:
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": header["param_groups"]})
    return _Progress(**header["progress"])


def _check_same_run(what: Path, saved: dict[str, Any], cfg: VictimTrainConfig) -> None:
    mine = cfg.identity()
    diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} there vs {mine.get(k)!r} now" for k in diff)
        raise ValueError(f"{what} belongs to a run with other settings ({detail}); use another --out or delete it")


# ------------------------------------------------------------------------------------------- training


def train_victim(cfg: VictimTrainConfig, *, on_epoch_end: Callable[[int, float], None] | None = None) -> Path:
    """Train (or resume, or find finished) a SimCLR victim; returns the checkpoint prefix ``Path(cfg.out)``.

    ``on_epoch_end(epoch, mean_loss)`` is called after each epoch's state is saved (epochs count
    from 1); an exception raised there stops training, and the next call resumes after that epoch.
    """
    prefix = Path(cfg.out)
    weights_path, meta_path = checkpoint_paths(prefix)
    if weights_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        _check_same_run(meta_path, meta.get("train_config", {}), cfg)
        return prefix

    device = _resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, "train", size=cfg.image_size, count=cfg.count, seed=cfg.data_seed)
    n = len(data)
    if n < 2:
        raise ValueError(f"{cfg.dataset}: need at least 2 training images, got {n}")
    images = data.images.to(device)
    in_channels = int(images.shape[1])
    batch = min(cfg.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: every step has `batch` negatives pairs
    total_steps = cfg.epochs * steps_per_epoch

    torch.manual_seed(cfg.seed)
    model = SimCLRModel(build_encoder(cfg.arch, in_channels), proj_dim=cfg.proj_dim).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # ~1.5x faster convolutions on CPU
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = SimCLRAugment(cfg.image_size, min_scale=cfg.crop_min_scale)

    spath = state_path(prefix)
    prog = _Progress()
    if spath.is_file():
        header = _read_state_header(spath)
        _check_same_run(spath, header["config"], cfg)
        prog = _load_state(spath, model, opt, header)
    spath.parent.mkdir(parents=True, exist_ok=True)

    for epoch in range(prog.epochs_done, cfg.epochs):
        start = time.perf_counter()
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 1))
        model.train()
        total = 0.0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for i in bar:
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(cfg.lr, epoch * steps_per_epoch + i, total_steps)
            x = to_float(images[order[i * batch : (i + 1) * batch].to(device)])
            views = torch.cat([augment(x), augment(x)])
            if device.type == "cpu":
                views = views.contiguous(memory_format=torch.channels_last)
            _, proj = model(views)
            loss = _contrastive_loss(cfg, proj[:batch], proj[batch:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        prog.epochs_done = epoch + 1
        prog.epoch_losses.append(total / steps_per_epoch)
        prog.seconds += time.perf_counter() - start
        _save_state(spath, cfg, model, opt, prog)
        if cfg.progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: loss {prog.epoch_losses[-1]:.4f} ({prog.seconds:.1f} s)")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, prog.epoch_losses[-1])

    metadata = {
        "dataset": cfg.dataset,
        "split": "train",
        "train_size": n,
        "num_classes": data.num_classes,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "epochs": cfg.epochs,
        "batch_size": batch,
        "steps": total_steps,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "loss": cfg.loss,
        "temperature": cfg.resolved_temperature,
        "crop_min_scale": cfg.crop_min_scale,
        "epoch_losses": prog.epoch_losses,
        "train_seconds": round(prog.seconds, 3),
        "torch": torch.__version__,
        "trained_by": "sslsteal train-victim (SimCLR)",
        "train_config": cfg.identity(),
        "device": str(device),
    }
    save_checkpoint(prefix, model, metadata)
    spath.unlink(missing_ok=True)
    return prefix


# ------------------------------------------------------------------------------------------------ CLI


def register_train_victim(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sslsteal train-victim`` to an argparse subparsers object (sets ``func``)."""
    d = VictimTrainConfig()
    p = subparsers.add_parser(
        "train-victim",
        help="train a SimCLR victim encoder (resumable; safetensors + JSON checkpoint)",
        description=(
            "Train a SimCLR encoder + projection head with the package's fused contrastive loss, Adam and a "
            "per-step cosine schedule. Writes OUT.safetensors + OUT.json (never pickle). After every epoch the "
            "state is saved to OUT.train-state.safetensors; re-running the same command resumes from it, and "
            "a finished run returns at once."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default=d.dataset, help="dataset spec: shapes, digits, cifar10:PATH, npz:PATH, ...")
    p.add_argument("--out", default=d.out, help="checkpoint prefix (writes OUT.safetensors and OUT.json)")
    p.add_argument("--arch", choices=ARCHITECTURES, default=d.arch, help="encoder architecture")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step (2 views each)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (cosine-decayed per step)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--loss", choices=LOSSES, default=d.loss)
    p.add_argument(
        "--temperature", type=float, default=None, help="loss temperature (default: 0.07 info_nce, 100 soft_nn)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation / augmentation / shuffling seed")
    p.add_argument("--image-size", type=int, default=d.image_size, help="training resolution (images are resized)")
    p.add_argument("--count", type=int, default=None, help="number of training images (default: all)")
    p.add_argument("--data-seed", type=int, default=d.data_seed, help="dataset generation / subset seed")
    p.add_argument("--proj-dim", type=int, default=d.proj_dim, help="projection-head output dimension")
    p.add_argument(
        "--crop-min-scale", type=float, default=d.crop_min_scale, help="smallest random-resized-crop area fraction"
    )
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_victim)


def _cmd_train_victim(args: argparse.Namespace) -> int:
    cfg = VictimTrainConfig(
        dataset=args.dataset,
        out=args.out,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        temperature=args.temperature,
        loss=args.loss,
        seed=args.seed,
        image_size=args.image_size,
        count=args.count,
        data_seed=args.data_seed,
        proj_dim=args.proj_dim,
        crop_min_scale=args.crop_min_scale,
        device=args.device,
        progress=not args.no_progress,
    )
    prefix = train_victim(cfg)
    weights, meta_path = checkpoint_paths(prefix)
    meta = json.loads(meta_path.read_text())
    print(
        f"victim {meta['arch']} (rep_dim {meta['rep_dim']}) on {meta['dataset']}: {meta['epochs']} epochs, "
        f"final loss {meta['epoch_losses'][-1]:.4f}, {meta['train_seconds']:.1f} s of training -> {weights}"
    )
    return 0
