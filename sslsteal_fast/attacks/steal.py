"""Steal an encoder: train a model on the victim's answers to query images under a query budget.

One loop for every attack (``StealConfig.attack``, one module each, see
:mod:`sslsteal_fast.attacks.base`): ``direct`` (the paper's, query-once or augmented), ``prototype``
(RDA-style mean answers over billed views), ``consistency`` (StolenEncoder), ``cont_steal``
(Cont-Steal, a memory of negatives) and ``label_only`` (Knockoff-style, argmax labels only). Here is
what they share: validation, the budget check before anything is billed, the thief and its head,
seeding, the optimiser and the epoch loop, loss checks, the measured bill and the checkpoint.

Query strategies of the ``direct`` attack (``StealConfig.strategy``):

* ``"query-once"`` (default): each of the ``budget`` query images is sent to the victim once and
  its answer cached; every epoch reuses the cache while the stolen model sees a fresh local
  augmentation of the clean image (``augment=True``) - local augmentations are free. Billed
  queries == victim forward passes == ``budget`` (fewer forward passes if the victim caches).
* ``"augmented"``: every epoch each image is augmented and the *view* is sent to the victim and
  billed, and the stolen model is trained on the same view - the paper's accounting, where the
  victim is re-queried every epoch: ``budget * epochs`` billed queries. With ``augment=False`` the
  clean images are re-sent every epoch (the reference code's re-query quirk, made explicit).

The thief is ``build_encoder(cfg.arch)``, or any ``nn.Module`` the caller passes (``thief=``). Its
output dimension is measured by one dry eval-mode forward pass on the first query image; when it
differs from the victim's a ``Linear(thief_dim, victim_dim)`` head is appended and trained with it
(:class:`StolenEncoder`, e.g. a 512-d ResNet-18 thief of a 2048-d ResNet-50 victim), so every loss
compares vectors in the victim's space. ``result.stolen`` is the thief with the head,
``result.encoder`` the thief alone, ``result.head`` the head (None when the dimensions agree). The
label-only attack has no head (its copy is the thief's own representation).

The loss is one of :data:`LOSSES` by name (``cfg.loss``) or any callable ``loss(stolen, victim_answers)
-> scalar tensor`` (``loss=``), checked once on the thief's output before anything is billed;
``cont_steal`` and ``label_only`` train with their own loss.

Queries are an :class:`ImageDataset`, a uint8 or float tensor, a numpy array or a map-style
``torch.utils.data.Dataset`` (see :mod:`sslsteal_fast.attacks.queries`), always read a batch at a time.

Accounting: ``billed_queries`` and ``victim_forward_passes`` are *measured* on the victim (the change
of ``victim.queries_used`` / ``victim.forward_passes`` during the call), never computed;
``answers_used`` is how many victim answers the training consumed (``budget`` for query-once, also
when ``targets`` are passed in from a shared cache; ``budget * epochs`` for augmented; ``budget *
views`` for prototype). A steal that the victim's remaining budget
(:func:`~sslsteal_fast.victim.protocol.remaining_budget`) cannot pay for is refused before anything
is billed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslsteal_fast.attacks.base import Attack, Run
from sslsteal_fast.attacks.consistency import ConsistencyAttack
from sslsteal_fast.attacks.cont_steal import ContStealAttack
from sslsteal_fast.attacks.direct import DirectAttack
from sslsteal_fast.attacks.label_only import LabelOnlyAttack
from sslsteal_fast.attacks.losses import LossFn, loss_name, min_batch
from sslsteal_fast.attacks.prototype import PrototypeAttack
from sslsteal_fast.attacks.queries import QueryInput, QuerySet
from sslsteal_fast.attacks.views import view_augment
from sslsteal_fast.config import ATTACKS, DEFAULT_BATCH_SIZES, DEFAULT_LRS, STRATEGIES, StealConfig
from sslsteal_fast.data import to_float
from sslsteal_fast.models import StolenEncoder, build_encoder, save_checkpoint
from sslsteal_fast.util.checks import ArgumentTypeError
from sslsteal_fast.util.progress import progress_bar
from sslsteal_fast.util.seeding import derive_seed
from sslsteal_fast.victim import Victim
from sslsteal_fast.victim.protocol import remaining_budget, victim_sha256
from sslsteal_fast.victim.train import resolve_device

__all__ = [
    "ATTACKS",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LRS",
    "STRATEGIES",
    "StealConfig",
    "StealResult",
    "StolenEncoder",
    "make_attack",
    "steal",
]

#: Every attack's implementation, by name (the names and their specs: :data:`sslsteal_fast.config.ATTACK_SPECS`).
_ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (DirectAttack, PrototypeAttack, ConsistencyAttack, ContStealAttack, LabelOnlyAttack)
}
assert tuple(_ATTACKS) == ATTACKS, "every attack of config.ATTACK_SPECS needs its module (and no other)"


def make_attack(name: str) -> Attack:
    """The attack called ``name`` (one of :data:`ATTACKS`)."""
    if name not in _ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}")
    return _ATTACKS[name]()


@dataclass
class StealResult:
    """What a steal produced and what it cost.

    Attributes:
        stolen: the trained :class:`StolenEncoder` (the thief, plus the linear head when its dimension is
            not the victim's), in eval mode, on ``config["device"]``: (B, C, H, W) -> (B, victim dim).
        billed_queries: rows billed by the victim during this call (measured on the victim).
        victim_forward_passes: rows the victim actually ran during this call (measured).
        answers_used: victim answers the training consumed (budget, or budget * epochs if augmented).
        wall_time_s: wall-clock seconds of the whole call (querying included).
        seed: the seed used.
        config: the resolved :class:`StealConfig` as a dict (defaults filled in); with a custom thief
            ``"arch"`` is its ``arch`` (or class name), with a custom loss ``"loss"`` is its
            :func:`~sslsteal_fast.attacks.losses.loss_name`.
        history: mean training loss per epoch (len == epochs).
        victim_sha256: the victim's content hash (:func:`~sslsteal_fast.victim.protocol.victim_sha256`),
            None when unknown.
        query_set: ``{"name", "budget", "sha256"}`` of the query images used (the first ``budget``;
            the hash is :meth:`QuerySet.sha256`).
        modules: other modules the attack trained, by name (``label_only``: ``"classifier"``, the
            thief's ``Linear(thief dim, classes)`` on its labels); not part of the checkpoint.
    """

    stolen: StolenEncoder
    billed_queries: int
    victim_forward_passes: int
    wall_time_s: float
    seed: int
    config: dict[str, Any]
    history: list[float]
    answers_used: int = 0
    victim_sha256: str | None = None
    query_set: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def encoder(self) -> nn.Module:
        """The stolen encoder without the head: the thief's own representation (B, thief dim)."""
        return self.stolen.encoder

    @property
    def head(self) -> nn.Linear | None:
        """The trained linear head from the thief's dimension to the victim's, or None when they agree."""
        return self.stolen.adapter

    def provenance(self) -> dict[str, Any]:
        """What was stolen from whom, how and at what cost (JSON-serialisable; saved under ``"steal"``)."""
        return {
            "victim_sha256": self.victim_sha256,
            "attack": self.config["attack"],
            "loss": self.config["loss"],
            "budget": self.config["budget"],
            "strategy": self.config["strategy"],
            "query_set": dict(self.query_set),
            "billed_queries": self.billed_queries,
            "victim_forward_passes": self.victim_forward_passes,
            "answers_used": self.answers_used,
            "seed": self.seed,
            "config": dict(self.config),
            "history": list(self.history),
        }

    def save(self, prefix: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Save ``stolen`` (head included) as a checkpoint; its JSON records :meth:`provenance` under ``"steal"``.

        ``metadata``: more JSON-serialisable keys to record. Load it back with
        :func:`~sslsteal_fast.models.load_checkpoint` (a custom thief: ``load_checkpoint(prefix, encoder=...)``).
        """
        save_checkpoint(prefix, self.stolen, {"steal": self.provenance(), **(metadata or {})})


def _check_victim_shape(victim: Victim, image_shape: tuple[int, int, int]) -> None:
    c, h, w = victim.input_shape
    ic, ih, iw = image_shape
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


def _check_budget(victim: Victim, cfg: StealConfig, attack: Attack, reuse_targets: bool) -> None:
    """Refuse, before anything is billed, a steal the victim's remaining budget cannot pay for."""
    if reuse_targets:
        return
    needed = attack.needed_queries(cfg)
    remaining = remaining_budget(victim)
    if remaining is not None and needed > remaining:
        raise ValueError(
            f"steal: this steal needs {needed} queries ({attack.cost(cfg)}) but the victim's budget has {remaining} "
            f"left; nothing was billed - {attack.lower(cfg)}"
        )


def _loss_function(cfg: StealConfig, attack: Attack, loss: LossFn | None, temperature_given: bool) -> LossFn:
    if loss is None:
        return attack.loss_function(cfg)
    if not attack.takes_custom_loss:
        raise ValueError(
            f"steal: the {attack.name} attack trains with its own loss ({cfg.loss}); drop the loss callable"
        )
    if not callable(loss):
        raise ArgumentTypeError(
            f"steal: loss must be a callable loss(stolen, victim_answers) -> scalar tensor, got {loss!r} (name a "
            "built-in loss with StealConfig.loss instead)"
        )
    if temperature_given:
        raise ValueError(
            "steal: StealConfig.temperature applies to the named losses only; a loss callable brings its own - "
            "drop the temperature"
        )
    return loss


def _check_loss_value(value: Any, name: str) -> torch.Tensor:
    """``value`` if it is a differentiable floating-point scalar tensor (finiteness is checked by the caller)."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ArgumentTypeError(f"steal: the loss {name} must return a floating-point scalar tensor, got {got}")
    if value.dim() != 0:
        raise ValueError(
            f"steal: the loss {name} must return a scalar (0-dim) tensor, got shape {tuple(value.shape)}; reduce "
            "it, e.g. with .mean()"
        )
    if not value.requires_grad:
        raise ValueError(
            f"steal: the loss {name} returned a tensor without grad; compute it from `stolen` with differentiable "
            "operations (no .detach(), .item() or torch.no_grad())"
        )
    return value


def _dry_loss(
    loss_fn: LossFn, name: str, stolen: StolenEncoder, queries: QuerySet, rows: int, device: torch.device
) -> None:
    """Check a loss callable once on the thief's outputs (standing in for the victim's), before any billing."""
    n = min(queries.budget, max(2, rows))
    x = to_float(queries.fetch(torch.arange(n)).to(device))
    was_training = stolen.training
    stolen.eval()
    try:
        with torch.no_grad():
            out = stolen(x)
    finally:
        stolen.train(was_training)
    stand_in = out.detach().roll(1, 0)
    try:
        value = loss_fn(out.detach().clone().requires_grad_(True), stand_in)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"steal: the loss {name} failed on a ({n}, {out.shape[1]}) pair of representations: {exc}"
        ) from exc
    value = _check_loss_value(value, name)
    if not torch.isfinite(value.detach()):
        raise ValueError(
            f"steal: the loss {name} returned {value.item()} on a ({n}, {out.shape[1]}) pair; it must be finite"
        )


def _build_stolen(
    thief: nn.Module | None, cfg: StealConfig, queries: QuerySet, out_dim: int | None, device: torch.device
) -> StolenEncoder:
    """The model to train: ``build_encoder(cfg.arch)`` or ``thief``, with a head when its dimension is not
    ``out_dim`` (None: the thief's own dimension, no head)."""
    channels = queries.image_shape[0]
    if thief is None:
        encoder = build_encoder(cfg.arch, channels)
        return StolenEncoder(encoder, encoder.rep_dim if out_dim is None else out_dim).to(device)
    if not isinstance(thief, nn.Module):
        raise ArgumentTypeError(f"steal: thief must be an nn.Module, got {type(thief).__name__}")
    thief.to(device)
    x = to_float(queries.fetch(torch.zeros(1, dtype=torch.int64)).to(device))
    was_training = thief.training
    thief.eval()
    try:
        with torch.no_grad():
            out = thief(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"steal: the thief failed on one query image of shape {tuple(x.shape)}: {exc}") from exc
    finally:
        thief.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1 or not out.is_floating_point():
        got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"steal: the thief must map images (B, C, H, W) to one float (B, D) tensor; on one query image it "
            f"returned {got} (wrap a model with several outputs to return its representation)"
        )
    dim = int(out.shape[1])
    out_dim = dim if out_dim is None else out_dim
    if isinstance(thief, StolenEncoder) and dim == out_dim:
        return thief
    return StolenEncoder(thief, out_dim, backbone_dim=dim, in_channels=channels).to(device)


def _batches(n: int, batch_size: int, generator: torch.Generator, min_rows: int = 1) -> list[torch.Tensor]:
    """A random permutation of range(n) cut into near-equal batches of about ``batch_size`` rows.

    None is dropped; there are ``ceil(n / batch_size)`` of them unless that would leave a batch under
    ``min_rows`` rows (e.g. 5 rows in batches of 2), in which case there are fewer, larger ones.
    """
    perm = torch.randperm(n, generator=generator)
    parts = math.ceil(n / batch_size)
    if n // parts < min_rows:
        parts = max(1, n // min_rows)
    return list(torch.tensor_split(perm, parts))


def steal(
    victim: Victim,
    queries: QueryInput,
    cfg: StealConfig,
    *,
    thief: nn.Module | None = None,
    loss: LossFn | None = None,
    targets: torch.Tensor | None = None,
    progress: bool = True,
) -> StealResult:
    """Train a stolen encoder on the first ``cfg.budget`` query images and the victim's answers.

    Args:
        victim: any :class:`~sslsteal_fast.victim.Victim` (``OnnxVictim``, ``LocalVictim``). If it has
            a ``remaining`` budget, a steal needing more queries is refused before anything is billed.
        queries: an ``ImageDataset``, images (N, C, H, W) as a uint8 or float ([0, 1]) tensor or numpy
            array, or a map-style ``Dataset`` of images or ``(image, label)`` items; read a batch at a
            time, labels never used (:mod:`sslsteal_fast.attacks.queries`).
        cfg: the configuration; ``None`` fields take the paper's defaults.
        thief: the model to train, any ``nn.Module`` mapping (B, C, H, W) float to (B, D); trained in
            place, on ``cfg.device``. None builds ``build_encoder(cfg.arch)``. Its D is measured by one
            eval-mode forward pass on the first query image; a linear head to the victim's dimension
            is added (and trained) when they differ.
        loss: a callable ``loss(stolen, victim_answers) -> scalar tensor`` (both (B, D)) used instead of
            ``cfg.loss``, which then only picks the defaults of ``batch_size`` and ``lr``. It is checked
            on the thief's own outputs before any billing; ``cfg.temperature`` must be None. A loss
            needing more rows per batch declares ``min_batch`` (as the contrastive losses do: 2).
        targets: optional precomputed victim answers (>= budget, D) for those rows, in order (a sweep
            with nested budgets queries once for the largest budget and passes the cache). Only the
            first ``budget`` rows are used and the victim is not queried. Query-once only; for the
            ``prototype`` attack, the prototypes (each image's mean answer over its seeded views);
            for ``label_only``, int64 (>= budget,) labels.
        progress: show progress over epochs (stderr; see :func:`~sslsteal_fast.util.progress.progress_bar`).

    Returns:
        :class:`StealResult`; ``result.stolen`` maps (B, C, H, W) float -> (B, victim.output_dim),
        ``result.encoder`` is the thief alone and ``result.head`` the linear head (or None);
        ``result.save(prefix)`` writes a checkpoint with the steal's provenance.

    Raises:
        ValueError: an unknown loss/strategy/architecture, a budget < 1 or larger than the query set or
            than the victim's remaining budget, a batch too small for the loss (contrastive losses need
            2 rows), images the victim cannot take, a thief or loss that does not return what it
            should, or targets/answers whose dimension is not the victim's (``ArgumentTypeError``, also
            a TypeError, for arguments of the wrong type).
        FloatingPointError: the loss became NaN or infinite during training.
    """
    start_time = time.perf_counter()
    if not isinstance(cfg, StealConfig):
        raise ArgumentTypeError(f"steal: cfg must be a StealConfig, got {type(cfg).__name__}")
    temperature_given = cfg.temperature is not None
    cfg = cfg.resolved()
    attack = make_attack(cfg.attack)
    loss_fn = _loss_function(cfg, attack, loss, temperature_given)
    name = loss_name(loss_fn) if loss is not None else cfg.loss
    query_set = QuerySet(queries, cfg.budget)
    attack.check_victim(victim)
    _check_victim_shape(victim, query_set.image_shape)
    out_dim = attack.output_dim(victim)
    if targets is not None:
        attack.check_targets(targets, cfg, out_dim)
    assert cfg.batch_size is not None and cfg.lr is not None
    batch_size = min(cfg.batch_size, cfg.budget)
    rows = min_batch(loss_fn)
    if batch_size < rows:
        why = f"batch_size {cfg.batch_size}" if cfg.batch_size < rows else f"budget {cfg.budget} (the largest batch)"
        raise ValueError(
            f"steal: the {name} loss needs at least {rows} rows per batch (each row's negatives are the other rows) "
            f"but got {why}; use a batch_size of at least {rows}"
        )
    _check_budget(victim, cfg, attack, targets is not None)

    device = resolve_device(cfg.device)
    queries_before, passes_before = int(victim.queries_used), int(victim.forward_passes)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        # The thief's own streams: seeding with cfg.seed itself would start a thief of the victim's
        # architecture from the victim's initial weights when both use the same seed.
        torch.manual_seed(derive_seed(cfg.seed, "thief-init"))
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "thief-order"))
        stolen = _build_stolen(thief, cfg, query_set, out_dim, device)
        if loss is not None:
            _dry_loss(loss_fn, name, stolen, query_set, rows, device)
        size = query_set.image_shape[-1]
        views = view_augment(cfg, size)
        run = Run(
            victim=victim,
            queries=query_set,
            cfg=cfg,
            stolen=stolen,
            loss_fn=loss_fn,
            augment=views if cfg.augment else None,
            views=views,
            device=device,
            out_dim=out_dim,
            progress=progress,
        )
        if targets is not None:
            attack.use_targets(run, targets)
        else:
            attack.collect(run)
        if run.query_sha is None:
            run.query_sha = query_set.sha256(cfg.victim_batch_size)

        extra = attack.extra_modules(run)
        parameters = [p for m in (stolen, *extra) for p in m.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        history: list[float] = []
        epochs = progress_bar(
            range(cfg.epochs),
            desc=f"steal {'' if attack.name == 'direct' else attack.name + ' '}{name} ({cfg.strategy}, {cfg.budget} queries)",
            unit="epoch",
            disable=not progress,
        )
        for m in (stolen, *extra):
            m.train()
        for epoch in epochs:
            total = 0.0
            for index in _batches(cfg.budget, batch_size, generator, rows):
                x = to_float(query_set.fetch(index).to(device))
                value = _check_loss_value(attack.batch_loss(run, index, x), name)
                if not torch.isfinite(value):
                    raise FloatingPointError(
                        f"steal: the {name} loss became {value.item()} in epoch {epoch + 1}; lower the lr "
                        f"(now {cfg.lr}) or check the victim's answers"
                    )
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                total += value.item() * x.shape[0]
            history.append(total / cfg.budget)
            epochs.set_postfix(loss=f"{history[-1]:.4f}")
    for m in (stolen, *extra):
        m.eval()
    config = dataclasses.asdict(cfg)
    if thief is not None:
        config["arch"] = stolen.arch
    if loss is not None:
        config.update(loss=name, temperature=getattr(loss_fn, "temperature", None))
    result = StealResult(
        stolen=stolen,
        billed_queries=int(victim.queries_used) - queries_before,
        victim_forward_passes=int(victim.forward_passes) - passes_before,
        wall_time_s=time.perf_counter() - start_time,
        seed=cfg.seed,
        config=config,
        history=history,
        answers_used=run.answers_used,
        victim_sha256=victim_sha256(victim),
        query_set={"name": query_set.name, "budget": cfg.budget, "sha256": run.query_sha},
        modules={k: v for k, v in run.state.items() if isinstance(v, nn.Module)},
    )
    stolen.provenance = result.provenance()
    return result
