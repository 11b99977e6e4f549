"""What every attack shares: the :class:`Attack` interface the steal loop drives, and its per-run state.

:func:`~sslsteal_fast.attacks.steal` owns everything common to every attack: validation, the budget
check before anything is billed, the thief (and its head), seeding, the optimiser and the epoch /
batch loop, loss checks, the measured bill and the checkpoint. An attack (one module of
:mod:`sslsteal_fast.attacks`) says only what is particular to it:

* :meth:`Attack.needed_queries` - the queries it will bill (checked against the victim's budget);
* :meth:`Attack.collect` - what it asks the victim before training (per-image answers, prototypes,
  labels; or nothing, when it queries while training), billed through :meth:`Run.query`;
* :meth:`Attack.batch_loss` - the loss of one batch of query images.

Optional hooks: :meth:`Attack.output_dim` (the space the stolen model maps to), :meth:`Attack.loss_function`
(attacks with a fixed loss), :meth:`Attack.check_victim`, :meth:`Attack.check_targets` and
:meth:`Attack.extra_modules` (trained heads that are not part of the stolen encoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from sslsteal_fast.attacks.losses import LossFn, make_loss
from sslsteal_fast.attacks.queries import QuerySet, update_hash
from sslsteal_fast.config import StealConfig
from sslsteal_fast.data import SimCLRAugment
from sslsteal_fast.models import StolenEncoder
from sslsteal_fast.util.checks import ArgumentTypeError
from sslsteal_fast.util.progress import progress_bar
from sslsteal_fast.victim import Victim

__all__ = ["Attack", "Run", "check_answers", "collect_answers"]


@dataclass
class Run:
    """One steal in progress: what the loop built and what the attack reads and fills.

    Attributes:
        victim: the victim being billed.
        queries: the first ``budget`` query images.
        cfg: the resolved configuration.
        stolen: the model being trained.
        loss_fn: the loss (``cfg.loss`` or the caller's callable).
        augment: the local augmentation of the stolen model's inputs (None when ``cfg.augment`` is off).
        views: the augmentation an attack sends to the victim or uses for its own views (always on).
        device: where training runs.
        out_dim: the victim's answer dimension (None for an attack whose answers are not vectors).
        progress: whether to show progress bars.
        targets: per-image training targets (answers, prototypes or labels) once :meth:`Attack.collect`
            has them (on ``device``); None for an attack that queries while training.
        answers_used: victim answers the training consumed so far.
        query_sha: the query set's SHA-256 (set by whoever read the images first).
        state: the attack's own scratch space (a memory of negatives, ...).
    """

    victim: Victim
    queries: QuerySet
    cfg: StealConfig
    stolen: StolenEncoder
    loss_fn: LossFn
    augment: SimCLRAugment | None
    views: SimCLRAugment
    device: torch.device
    out_dim: int | None
    progress: bool
    targets: torch.Tensor | None = None
    answers_used: int = 0
    query_sha: str | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Send ``x`` (n, C, H, W) to the victim (billed there) -> float32 (n, D) answers on ``device``."""
        answer = self.victim.query(x, client=self.cfg.client)
        check_answers(answer, int(x.shape[0]), self.out_dim)
        self.answers_used += int(x.shape[0])
        return answer.to(device=self.device, dtype=torch.float32)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """The stolen model's input for clean images ``x``: a fresh local augmentation, or ``x`` itself."""
        return x if self.augment is None else self.augment(x)

    def chunks(self, desc: str) -> Any:
        """The ``budget`` images in order, ``victim_batch_size`` at a time, as ``(rows, images)``; hashes them.

        The hash of what was read becomes :attr:`query_sha` once the iteration is complete.
        """
        digest = self.queries.new_hash()
        size = self.cfg.victim_batch_size
        bar = progress_bar(
            range(0, self.queries.budget, size),
            total=math.ceil(self.queries.budget / size),
            desc=desc,
            unit="batch",
            leave=False,
            disable=not self.progress,
        )
        for start in bar:
            rows = torch.arange(start, min(start + size, self.queries.budget))
            batch = self.queries.fetch(rows)
            update_hash(digest, batch)
            yield rows, batch
        self.query_sha = digest.hexdigest()


class Attack:
    """An attack: what it sends to the victim, what it trains on, and the loss of one batch.

    Subclasses set :attr:`name` (its entry in :data:`sslsteal_fast.config.ATTACK_SPECS`) and implement
    :meth:`collect` and :meth:`batch_loss`; the other methods have the defaults of an attack that
    queries each image once and trains on vectors in the victim's space with ``cfg.loss``.
    """

    name: ClassVar[str]
    #: Whether a caller's loss callable (``steal(..., loss=)``) may replace ``cfg.loss``.
    takes_custom_loss: ClassVar[bool] = True

    def needed_queries(self, cfg: StealConfig) -> int:
        """Queries this steal bills (refused up front when the victim's budget has fewer left)."""
        return cfg.budget

    def cost(self, cfg: StealConfig) -> str:
        """How :meth:`needed_queries` comes about, for the refusal message; and how to lower it."""
        return f"{cfg.budget} images, each sent once"

    def lower(self, cfg: StealConfig) -> str:
        """What lowers the bill (for the refusal message)."""
        return "lower the budget"

    def loss_function(self, cfg: StealConfig) -> LossFn:
        """The named loss of ``cfg`` (a caller's callable replaces it when :attr:`takes_custom_loss`)."""
        return make_loss(cfg.loss, cfg.temperature)

    def check_victim(self, victim: Victim) -> None:
        """Refuse a victim this attack cannot steal from (before anything is billed)."""

    def output_dim(self, victim: Victim) -> int | None:
        """The dimension the stolen model must map to (None: the thief's own, no head)."""
        return int(victim.output_dim)

    def check_targets(self, targets: torch.Tensor, cfg: StealConfig, out_dim: int | None) -> None:
        """Refuse precomputed ``targets`` that are not (>= budget, out_dim) answers of this victim."""
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

    def use_targets(self, run: Run, targets: torch.Tensor) -> None:
        """Train on precomputed ``targets`` (their first ``budget`` rows) instead of querying."""
        run.targets = targets[: run.cfg.budget].to(device=run.device, dtype=torch.float32)
        run.answers_used = run.cfg.budget

    def extra_modules(self, run: Run) -> list[nn.Module]:
        """Trained modules besides the stolen model (a classifier head); built on ``run.device``."""
        return []

    def collect(self, run: Run) -> None:
        """Query the victim before training (billed) and set ``run.targets``; nothing for attacks that
        query while training."""
        raise NotImplementedError

    def batch_loss(self, run: Run, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The loss of the clean images ``x`` (float, on ``run.device``), rows ``index`` of the query set."""
        raise NotImplementedError


def collect_answers(run: Run) -> None:
    """Query each of the ``budget`` images once, in order; ``run.targets`` = the (budget, D) answers."""
    answers = [run.query(batch) for _, batch in run.chunks("querying victim")]
    run.targets = torch.cat(answers)


def check_answers(answers: torch.Tensor, rows: int, out_dim: int | None) -> None:
    """Refuse victim answers that are not (rows, out_dim) (the victim advertised another dimension)."""
    if not isinstance(answers, torch.Tensor):
        raise ArgumentTypeError(f"steal: the victim must answer with a tensor, got {type(answers).__name__}")
    if answers.dim() != 2 or answers.shape[0] != rows or answers.shape[1] != out_dim:
        raise ValueError(
            f"steal: the victim advertises output_dim {out_dim} but answered {rows} rows with shape "
            f"{tuple(answers.shape)}; fix the victim's output_dim"
        )
