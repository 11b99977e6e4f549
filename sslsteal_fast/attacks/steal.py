"""Steal an encoder: train a fresh model on (query image, victim answer) pairs under a query budget.

Two query strategies (``StealConfig.strategy``):

* ``"query-once"`` (default): each of the ``budget`` query images is sent to the victim once and
  its answer cached; every epoch reuses the cache while the stolen model sees a fresh local
  augmentation of the clean image (``augment=True``) - local augmentations are free. Billed
  queries == victim forward passes == ``budget`` (fewer forward passes if the victim caches).
* ``"augmented"``: every epoch each image is augmented and the *view* is sent to the victim and
  billed, and the stolen model is trained on the same view - the paper's accounting, where the
  victim is re-queried every epoch: ``budget * epochs`` billed queries. With ``augment=False`` the
  clean images are re-sent every epoch (the reference code's re-query quirk, made explicit).

The stolen model is ``build_encoder(cfg.arch)``; when its representation dimension differs from the
victim's answers a ``Linear(rep_dim, victim_dim)`` output layer is appended (see
:class:`StolenEncoder`) so every loss compares vectors in the victim's space. With the same dimension
(e.g. a ``small`` thief for a ``small`` victim) there is no extra layer.

Accounting: ``billed_queries`` and ``victim_forward_passes`` are *measured* on the victim (the change
of ``victim.queries_used`` / ``victim.forward_passes`` during the call), never computed;
``answers_used`` is how many victim answers the training consumed (``budget`` for query-once, also
when ``targets`` are passed in from a shared cache; ``budget * epochs`` for augmented).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sslsteal_fast.attacks.losses import make_loss
from sslsteal_fast.config import DEFAULT_BATCH_SIZES, DEFAULT_LRS, STRATEGIES, StealConfig
from sslsteal_fast.data import ImageDataset, SimCLRAugment, to_float
from sslsteal_fast.models import StolenEncoder, build_encoder
from sslsteal_fast.victim import Victim, query_victim

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LRS",
    "STRATEGIES",
    "StealConfig",
    "StealResult",
    "StolenEncoder",
    "steal",
]


@dataclass
class StealResult:
    """What a steal produced and what it cost.

    Attributes:
        stolen: the trained :class:`StolenEncoder`, in eval mode, on ``config["device"]``.
        billed_queries: rows billed by the victim during this call (measured on the victim).
        victim_forward_passes: rows the victim actually ran during this call (measured).
        answers_used: victim answers the training consumed (budget, or budget * epochs if augmented).
        wall_time_s: wall-clock seconds of the whole call (querying included).
        seed: the seed used.
        config: the resolved :class:`StealConfig` as a dict (defaults filled in).
        history: mean training loss per epoch (len == epochs).
    """

    stolen: nn.Module
    billed_queries: int
    victim_forward_passes: int
    wall_time_s: float
    seed: int
    config: dict[str, Any]
    history: list[float]
    answers_used: int = 0


def _query_images(queries: ImageDataset | torch.Tensor) -> torch.Tensor:
    images = queries.images if isinstance(queries, ImageDataset) else queries
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(
            "steal: queries must be an ImageDataset or a uint8 tensor (N, C, H, W), got "
            f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
        )
    return images


def _check_victim_shape(victim: Victim, images: torch.Tensor) -> None:
    c, h, w = victim.input_shape
    _, ic, ih, iw = images.shape
    if c is not None and ic != c:
        raise ValueError(
            f"steal: the victim takes {c}-channel images but the queries have {ic}; load the query set with "
            f"channels={c} (or convert it with sslsteal_fast.data.convert_channels)"
        )
    if (h is not None and ih != h) or (w is not None and iw != w):
        raise ValueError(
            f"steal: the victim takes {h}x{w} images but the queries are {ih}x{iw}; load the query set with "
            f"size={h} (or resize it with sslsteal_fast.data.resize_images)"
        )


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of range(n) cut into ceil(n / batch_size) near-equal batches (none dropped)."""
    perm = torch.randperm(n, generator=generator)
    return list(torch.tensor_split(perm, math.ceil(n / batch_size)))


def steal(
    victim: Victim,
    queries: ImageDataset | torch.Tensor,
    cfg: StealConfig,
    *,
    targets: torch.Tensor | None = None,
    progress: bool = True,
) -> StealResult:
    """Train a stolen encoder on the first ``cfg.budget`` query images and the victim's answers.

    Args:
        victim: any :class:`~sslsteal_fast.victim.Victim` (``OnnxVictim``, ``LocalVictim``).
        queries: uint8 images (N, C, H, W) or an ``ImageDataset``; labels are never used.
        cfg: the configuration; ``None`` fields take the paper's defaults.
        targets: optional precomputed victim answers (>= budget, D) for those rows, in order (a sweep
            with nested budgets queries once for the largest budget and passes the cache). Only the
            first ``budget`` rows are used and the victim is not queried. Query-once only.
        progress: show a tqdm bar over epochs.

    Returns:
        :class:`StealResult`; ``result.stolen`` maps (B, C, H, W) float -> (B, victim.output_dim).

    Raises:
        ValueError: an unknown loss/strategy/architecture, a budget < 1 or larger than the query set,
            images the victim cannot take, or targets/answers whose dimension is not the victim's.
    """
    start_time = time.perf_counter()
    cfg = cfg.resolved()
    images = _query_images(queries)
    if cfg.budget > images.shape[0]:
        raise ValueError(
            f"steal: budget {cfg.budget} exceeds the {images.shape[0]} available query images; lower the budget "
            "or use a larger query set"
        )
    images = images[: cfg.budget]
    _check_victim_shape(victim, images)
    out_dim = int(victim.output_dim)
    if targets is not None:
        if cfg.strategy != "query-once":
            raise ValueError("steal: targets can only be reused with strategy='query-once'; drop targets")
        if not isinstance(targets, torch.Tensor) or targets.dim() != 2 or targets.shape[0] < cfg.budget:
            raise ValueError(
                f"steal: targets must be a (>= {cfg.budget}, D) tensor of victim answers, got "
                f"{tuple(getattr(targets, 'shape', ()))}"
            )
        if targets.shape[1] != out_dim:
            raise ValueError(
                f"steal: targets have dimension {targets.shape[1]} but the victim answers with {out_dim}; pass "
                "answers from this victim"
            )

    device = torch.device(cfg.device)
    assert cfg.batch_size is not None and cfg.lr is not None
    batch_size = min(cfg.batch_size, cfg.budget)
    loss_fn = make_loss(cfg.loss, cfg.temperature)
    queries_before, passes_before = int(victim.queries_used), int(victim.forward_passes)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        stolen = StolenEncoder(build_encoder(cfg.arch, int(images.shape[1])), out_dim).to(device)
        augment = SimCLRAugment(int(images.shape[-1]), strength=cfg.augment_strength) if cfg.augment else None

        cache: torch.Tensor | None = None
        if cfg.strategy == "query-once":
            if targets is not None:
                cache = targets[: cfg.budget].to(torch.float32)
            else:
                cache = query_victim(victim, images, cfg.victim_batch_size, cfg.client, progress=progress)
                _check_answers(cache, cfg.budget, out_dim)
            cache = cache.to(device)

        optimizer = torch.optim.Adam(stolen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        history: list[float] = []
        epochs = tqdm(
            range(cfg.epochs),
            desc=f"steal {cfg.loss} ({cfg.strategy}, {cfg.budget} queries)",
            unit="epoch",
            disable=not progress,
        )
        stolen.train()
        answers_used = cfg.budget if cache is not None else 0
        for epoch in epochs:
            total = 0.0
            for index in _batches(cfg.budget, batch_size, generator):
                x = to_float(images[index].to(device))
                if augment is not None:
                    x = augment(x)
                if cache is not None:
                    y = cache[index.to(device)]
                else:
                    y = victim.query(x, client=cfg.client).to(device=device, dtype=torch.float32)
                    _check_answers(y, x.shape[0], out_dim)
                    answers_used += x.shape[0]
                loss = loss_fn(stolen(x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"steal: the {cfg.loss} loss became {loss.item()} in epoch {epoch + 1}; lower the lr "
                        f"(now {cfg.lr}) or check the victim's answers"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * x.shape[0]
            history.append(total / cfg.budget)
            epochs.set_postfix(loss=f"{history[-1]:.4f}")
    stolen.eval()
    return StealResult(
        stolen=stolen,
        billed_queries=int(victim.queries_used) - queries_before,
        victim_forward_passes=int(victim.forward_passes) - passes_before,
        wall_time_s=time.perf_counter() - start_time,
        seed=cfg.seed,
        config=dataclasses.asdict(cfg),
        history=history,
        answers_used=answers_used,
    )


def _check_answers(answers: torch.Tensor, rows: int, out_dim: int) -> None:
    if answers.dim() != 2 or answers.shape[0] != rows or answers.shape[1] != out_dim:
        raise ValueError(
            f"steal: the victim advertises output_dim {out_dim} but answered {rows} rows with shape "
            f"{tuple(answers.shape)}; fix the victim's output_dim"
        )
