"""Ownership by watermark: a rotation task embedded while training the victim (Dziedzic et al. 2022, Sec. 6).

While the victim learns SimCLR, a small head on its *representation* learns to tell images rotated
by an angle in [0, 180) degrees from images rotated by [180, 360) (rotations by ``affine_grid`` +
``grid_sample``, zero padding). Encoder and head are trained jointly by one optimiser (the
reference code forgot to give the head to the optimiser). To verify a suspect, the owner rotates
held-out images, feeds the suspect's representations to the head and tests whether its accuracy is
above chance: a one-sided binomial test against 0.5 (``scipy.stats.binomtest``). A suspect whose
representation lives in another space (a stolen copy of another architecture) is checked in the
victim's space: :class:`~sslsteal_fast.attacks.StolenEncoder` maps to the victim's dimension.

The task needs images with a canonical orientation: on data whose distribution is rotation
invariant (the built-in ``shapes``: every shape, gradient and stripe has a uniformly random
direction) the label is unpredictable by construction. ``WatermarkConfig.dataset`` therefore names
the images the rotation task is trained on (e.g. ``digits``), which need not be the SimCLR data.

Files: the victim checkpoint (``<out>.safetensors`` + ``<out>.json``, with the watermark settings in
its metadata) and the head (``<out>.wm-head.safetensors`` + ``<out>.wm-head.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy.stats import binomtest
from torch import nn
from tqdm.auto import tqdm

from sslsteal_fast.data import SimCLRAugment, load_dataset, to_float
from sslsteal_fast.defenses.perturb import check_int, check_number
from sslsteal_fast.models import SimCLRModel, build_encoder, checkpoint_paths, save_checkpoint
from sslsteal_fast.probes import extract_features
from sslsteal_fast.victim.train import (
    VictimTrainConfig,
    _contrastive_loss,
    _cosine_lr,
    _epoch_seed,
    _resolve_device,
)

__all__ = [
    "WatermarkConfig",
    "WatermarkHead",
    "WatermarkVerdict",
    "rotate",
    "rotation_task",
    "head_paths",
    "save_head",
    "load_head",
    "train_watermarked_victim",
    "verify_watermark",
]


@dataclass(frozen=True)
class WatermarkConfig:
    """The rotation watermark: where its images come from and how much it weighs.

    ``dataset``/``split``/``count``/``data_seed``: the rotation task's images (None = the victim's
    own training set); ``weight``: the rotation loss's weight next to the contrastive loss;
    ``batch_size``: rotated images per step; ``hidden``: the head's hidden width.
    """

    dataset: str | None = None
    split: str = "train"
    count: int | None = None
    data_seed: int = 0
    weight: float = 1.0
    batch_size: int = 128
    hidden: int = 128

    def __post_init__(self) -> None:
        check_number("WatermarkConfig", "weight", self.weight, low=0.0, strict=True)
        check_int("WatermarkConfig", "batch_size", self.batch_size, 2)
        check_int("WatermarkConfig", "hidden", self.hidden, 1)
        if self.count is not None:
            check_int("WatermarkConfig", "count", self.count, 2)


class WatermarkHead(nn.Module):
    """``Linear(rep_dim, hidden) - ReLU - Linear(hidden, 2)``: representation -> rotation-half logits."""

    def __init__(self, rep_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.rep_dim = check_int("WatermarkHead", "rep_dim", rep_dim, 1)
        self.hidden = check_int("WatermarkHead", "hidden", hidden, 1)
        self.net = nn.Sequential(nn.Linear(rep_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        """(B, rep_dim) -> (B, 2) logits (class 1 = rotated by [180, 360))."""
        return self.net(rep)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate float (B, C, H, W) images counter-clockwise by ``degrees`` (B,) about their centres (zero fill)."""
    theta = degrees.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(mat.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_task(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each float image by a uniform angle in [0, 360); label 1 if the angle is >= 180."""
    degrees = torch.rand(images.shape[0], generator=generator) * 360.0
    return rotate(images, degrees.to(images.device)), (degrees >= 180.0).to(torch.int64).to(images.device)


def head_paths(prefix: str | Path) -> tuple[Path, Path]:
    """``(<prefix>.wm-head.safetensors, <prefix>.wm-head.json)``."""
    weights, _ = checkpoint_paths(prefix)
    base = weights.with_name(weights.name[: -len(".safetensors")] + ".wm-head")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_head(prefix: str | Path, head: WatermarkHead, metadata: dict[str, Any]) -> None:
    """Write the head's weights and JSON metadata next to the victim checkpoint ``prefix``."""
    weights, meta_path = head_paths(prefix)
    meta = {**metadata, "rep_dim": head.rep_dim, "hidden": head.hidden, "format": "sslsteal_fast.wm-head/1"}
    text = json.dumps(meta, indent=2, sort_keys=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in head.state_dict().items()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(weights), metadata={"sslsteal_fast": text})
    meta_path.write_text(text + "\n")


def load_head(prefix: str | Path) -> tuple[WatermarkHead, dict[str, Any]]:
    """The watermark head saved with victim ``prefix`` (eval mode, CPU) and its metadata."""
    weights, meta_path = head_paths(prefix)
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"no watermark head for {prefix}: expected {weights.name} and {meta_path.name} (train the victim "
            "with train_watermarked_victim)"
        )
    meta = json.loads(meta_path.read_text())
    head = WatermarkHead(int(meta["rep_dim"]), int(meta["hidden"]))
    head.load_state_dict(load_file(str(weights)), strict=True)
    return head.eval(), meta


def train_watermarked_victim(cfg: VictimTrainConfig, wm: WatermarkConfig = WatermarkConfig()) -> Path:
    """Train a SimCLR victim with the rotation watermark; returns the checkpoint prefix ``Path(cfg.out)``.

    The SimCLR part is :mod:`sslsteal_fast.victim.train`'s recipe (two views, fused NT-Xent/SoftNN,
    Adam, per-step cosine schedule, per-epoch seeding); each step also adds ``wm.weight`` times the
    cross-entropy of the head on ``wm.batch_size`` rotated watermark images. Head and model share the
    optimiser. When the checkpoint and head exist with the same settings the call returns at once
    (the run is not resumable mid-way, unlike ``train_victim``).
    """
    prefix = Path(cfg.out)
    weights_path, meta_path = checkpoint_paths(prefix)
    identity = {"train_config": cfg.identity(), "watermark": dataclasses.asdict(wm)}
    if weights_path.is_file() and meta_path.is_file() and all(p.is_file() for p in head_paths(prefix)):
        meta = json.loads(meta_path.read_text())
        if {"train_config": meta.get("train_config"), "watermark": meta.get("watermark")} == identity:
            return prefix
    device = _resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, "train", size=cfg.image_size, count=cfg.count, seed=cfg.data_seed)
    wm_data = (
        data
        if wm.dataset is None
        else load_dataset(wm.dataset, wm.split, size=cfg.image_size, count=wm.count, seed=wm.data_seed)
    )
    if wm_data.images.shape[1:] != data.images.shape[1:]:
        raise ValueError(
            f"watermark images {tuple(wm_data.images.shape[1:])} differ from training images "
            f"{tuple(data.images.shape[1:])}; choose a watermark dataset with the same channels"
        )
    n, n_wm = len(data), len(wm_data)
    batch = min(cfg.batch_size, n)
    steps = n // batch
    total = cfg.epochs * steps
    torch.manual_seed(cfg.seed)
    model = SimCLRModel(build_encoder(cfg.arch, int(data.images.shape[1])), proj_dim=cfg.proj_dim).to(device)
    head = WatermarkHead(model.rep_dim, wm.hidden).to(device)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = SimCLRAugment(cfg.image_size, min_scale=cfg.crop_min_scale)
    losses: list[float] = []
    wm_acc: list[float] = []
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        g = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 1)
        order = torch.randperm(n, generator=g)
        model.train()
        head.train()
        tot, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps),
            desc=f"wm-victim epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for i in bar:
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(cfg.lr, epoch * steps + i, total)
            x = to_float(data.images[order[i * batch : (i + 1) * batch]].to(device))
            wm_idx = torch.randint(0, n_wm, (min(wm.batch_size, n_wm),), generator=g)
            rotated, labels = rotation_task(to_float(wm_data.images[wm_idx].to(device)), g)
            rep, proj = model(torch.cat([augment(x), augment(x), rotated]))
            loss_c = _contrastive_loss(cfg, proj[:batch], proj[batch : 2 * batch])
            logits = head(rep[2 * batch :])
            loss = loss_c + wm.weight * F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            correct += int((logits.argmax(1) == labels).sum())
            seen += labels.shape[0]
        losses.append(tot / steps)
        wm_acc.append(correct / max(seen, 1))
        if cfg.progress:
            tqdm.write(
                f"wm-victim epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}, rotation acc {wm_acc[-1]:.3f}"
            )
    metadata = {
        "dataset": cfg.dataset,
        "split": "train",
        "train_size": n,
        "num_classes": data.num_classes,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "count": cfg.count,
        "epochs": cfg.epochs,
        "loss": cfg.loss,
        "temperature": cfg.resolved_temperature,
        "epoch_losses": losses,
        "watermark_train_accuracy": wm_acc,
        "train_seconds": round(time.perf_counter() - start, 3),
        "trained_by": "sslsteal_fast.defenses.watermark (SimCLR + rotation watermark)",
        **identity,
    }
    save_checkpoint(prefix, model.cpu(), metadata)
    save_head(prefix, head.cpu(), {"watermark": dataclasses.asdict(wm), "victim": str(prefix)})
    return prefix


@dataclass
class WatermarkVerdict:
    """Result of :func:`verify_watermark`: head accuracy on the suspect, binomial test, verdict."""

    accuracy: float
    correct: int
    n: int
    p_value: float
    verdict: str
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON / CSV)."""
        return dataclasses.asdict(self)


def verify_watermark(
    head: WatermarkHead,
    suspect: Any,
    images: torch.Tensor,
    *,
    alpha: float = 0.01,
    seed: int = 0,
    batch_size: int = 256,
) -> WatermarkVerdict:
    """Test a suspect for the victim's rotation watermark.

    Args:
        head: the victim's :class:`WatermarkHead`.
        suspect: an encoder ``nn.Module`` (tuple outputs: the first element) or a victim API with
            ``.query`` (queried, so billed); its representations must have ``head.rep_dim`` entries.
        images: uint8 or float (N, C, H, W) verification images the head never trained on.
        alpha: significance level; ``verdict`` is ``"stolen"`` when ``p_value < alpha``.
        seed: seeds the rotation angles.

    Returns:
        :class:`WatermarkVerdict` with the accuracy and the one-sided ``binomtest(correct, n, 0.5)`` p-value.
    """
    check_number("verify_watermark", "alpha", alpha, low=0.0, strict=True)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(
            f"verify_watermark: images must be a non-empty (N, C, H, W) tensor, got "
            f"{tuple(getattr(images, 'shape', ()))}"
        )
    x = to_float(images) if images.dtype == torch.uint8 else images.to(torch.float32)
    rotated, labels = rotation_task(x, torch.Generator().manual_seed(seed))
    reps = extract_features(suspect, rotated.clamp(0, 1), batch_size)
    if reps.shape[1] != head.rep_dim:
        raise ValueError(
            f"verify_watermark: the suspect's representations have {reps.shape[1]} entries but the head expects "
            f"{head.rep_dim}; verify a stolen copy in the victim's space (a StolenEncoder maps to the victim's dim)"
        )
    head.eval()
    with torch.no_grad():
        pred = head(reps).argmax(1)
    correct = int((pred == labels.cpu()).sum())
    n = int(labels.shape[0])
    p = float(binomtest(correct, n, 0.5, alternative="greater").pvalue)
    return WatermarkVerdict(correct / n, correct, n, p, "stolen" if p < alpha else "independent", float(alpha))
