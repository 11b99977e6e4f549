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

Training is a :class:`WatermarkHook` of the one SimCLR loop (:mod:`sslsteal_fast.victim.train`), so
a watermarked victim trains, resumes, caches and exports like any other. Files: the victim
checkpoint (``<out>.safetensors`` + ``<out>.json``, with the watermark settings in its metadata)
and the head (``<out>.wm-head.safetensors`` + ``<out>.wm-head.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.stats import binomtest
from torch import nn

from sslsteal_fast.config import VictimTrainConfig, WatermarkConfig
from sslsteal_fast.data import ImageDataset, load_dataset, to_float
from sslsteal_fast.models import SimCLRModel, checkpoint_paths
from sslsteal_fast.ownership.verdict import Verdict, check_alpha, decide
from sslsteal_fast.probes import extract_features
from sslsteal_fast.util.checks import check_positive_int
from sslsteal_fast.util.files import save_tensors, write_json
from sslsteal_fast.victim import TrainHook, Victim, train_victim

__all__ = [
    "WatermarkConfig",
    "WatermarkHead",
    "WatermarkHook",
    "WatermarkVerdict",
    "head_paths",
    "load_head",
    "rotate",
    "rotation_task",
    "save_head",
    "train_watermarked_victim",
    "verify_watermark",
]

_HEAD_FORMAT = "sslsteal_fast.wm-head/1"


class WatermarkHead(nn.Module):
    """``Linear(rep_dim, hidden) - ReLU - Linear(hidden, 2)``: representation -> rotation-half logits."""

    def __init__(self, rep_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.rep_dim = check_positive_int("WatermarkHead: rep_dim", rep_dim)
        self.hidden = check_positive_int("WatermarkHead: hidden", hidden)
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
    """Write the head's weights and JSON metadata next to the victim checkpoint ``prefix`` (atomically)."""
    weights, meta_path = head_paths(prefix)
    meta = {**metadata, "rep_dim": head.rep_dim, "hidden": head.hidden, "format": _HEAD_FORMAT}
    save_tensors(weights, dict(head.state_dict()), meta)
    write_json(meta_path, meta)


def load_head(prefix: str | Path) -> tuple[WatermarkHead, dict[str, Any]]:
    """The watermark head saved with victim ``prefix`` (eval mode, CPU) and its metadata."""
    weights, meta_path = head_paths(prefix)
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"no watermark head for {prefix}: expected {weights.name} and {meta_path.name} (train the victim "
            "with the rotation watermark: train_watermarked_victim, or [victim.train.watermark] in a sweep)"
        )
    meta = json.loads(meta_path.read_text())
    head = WatermarkHead(int(meta["rep_dim"]), int(meta["hidden"]))
    head.load_state_dict(load_file(str(weights)), strict=True)
    return head.eval(), meta


class WatermarkHook(TrainHook):
    """The rotation watermark as a :class:`~sslsteal_fast.victim.TrainHook` of victim training.

    Each step adds ``wm.batch_size`` watermark images, each rotated by a uniform angle, to the
    forward pass, and ``wm.weight`` times the head's cross-entropy on their representations to the
    loss. The head (:class:`WatermarkHead`) shares the optimiser and is written next to the
    checkpoint by :meth:`finish` (:func:`head_paths`).
    """

    name = "watermark"

    def __init__(self, wm: WatermarkConfig = WatermarkConfig()) -> None:
        self.wm = wm
        self._images: torch.Tensor | None = None
        self._head: WatermarkHead | None = None
        self._labels: torch.Tensor | None = None
        self._correct = 0
        self._seen = 0

    def identity(self) -> dict[str, Any]:
        return dataclasses.asdict(self.wm)

    def setup(self, cfg: VictimTrainConfig, model: SimCLRModel, data: ImageDataset, device: torch.device) -> nn.Module:
        wm = self.wm
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
        self._images = wm_data.images
        self._head = WatermarkHead(model.rep_dim, wm.hidden)
        self._device = device
        return self._head

    def extra_inputs(self, generator: torch.Generator) -> torch.Tensor:
        assert self._images is not None
        n = self._images.shape[0]
        index = torch.randint(0, n, (min(self.wm.batch_size, n),), generator=generator)
        rotated, self._labels = rotation_task(to_float(self._images[index].to(self._device)), generator)
        return rotated

    def loss(self, rep: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        assert self._head is not None and self._labels is not None
        logits = self._head(rep)
        self._correct += int((logits.argmax(1) == self._labels).sum())
        self._seen += int(self._labels.shape[0])
        return self.wm.weight * F.cross_entropy(logits, self._labels)

    def end_epoch(self) -> dict[str, float]:
        accuracy = self._correct / max(self._seen, 1)
        self._correct = self._seen = 0
        return {"rotation_accuracy": accuracy}

    def artifacts(self, prefix: Path) -> tuple[Path, ...]:
        return head_paths(prefix)

    def finish(self, prefix: Path, metadata: dict[str, Any]) -> None:
        assert self._head is not None
        save_head(prefix, self._head.cpu(), {"watermark": dataclasses.asdict(self.wm), "victim": str(prefix)})


def train_watermarked_victim(cfg: VictimTrainConfig, wm: WatermarkConfig = WatermarkConfig()) -> Path:
    """Train (or resume, or find finished) a SimCLR victim with the rotation watermark; returns its prefix.

    The same run as :func:`~sslsteal_fast.victim.train_victim` with a :class:`WatermarkHook`.
    """
    return train_victim(cfg, [WatermarkHook(wm)])


@dataclass(kw_only=True)
class WatermarkVerdict(Verdict):
    """Result of :func:`verify_watermark`: the head's accuracy on the suspect (``correct`` of ``n``)."""

    accuracy: float
    correct: int
    n: int


def verify_watermark(
    head: WatermarkHead,
    suspect: nn.Module | Victim,
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
    check_alpha("verify_watermark: alpha", alpha)
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
    return WatermarkVerdict(
        accuracy=correct / n, correct=correct, n=n, p_value=p, verdict=decide(p, alpha), alpha=float(alpha)
    )
