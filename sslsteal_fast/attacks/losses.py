"""Stealing losses: small, validated ``nn.Module`` objects comparing stolen and victim outputs.

Every loss is called as ``loss(stolen, target)`` with ``stolen`` the stolen model's output and
``target`` the victim's answer for the same images, both (B, D) float tensors, and returns a scalar.
Only ``stolen`` needs gradients; ``target`` is a constant.

Losses from Dziedzic et al., *On the Difficulty of Defending Self-Supervised Learning against Model
Extraction* (ICML 2022), Sec. 3 and App. C:

* :class:`MSELoss` - mean squared error on the raw vectors, averaged over all B * D entries.
* :class:`InfoNCELoss` - NT-Xent over the 2B L2-normalised rows of ``[stolen; target]``: each row's only
  positive is its partner, the other 2B - 2 rows (stolen and victim alike) are negatives; tau = 0.07.
  Runs the fused native op :func:`sslsteal_fast.ops.info_nce`.
* :class:`SoftNNLoss` - Soft Nearest Neighbour loss (Frosst, Papernot & Hinton, ICML 2019) over the
  unnormalised rows ``z = [stolen; target]`` with labels ``arange(B).repeat(2)`` (row i's only
  same-label row is its partner), squared Euclidean distance, T = 100. Native op
  :func:`sslsteal_fast.ops.soft_nn`.
* :class:`WassersteinLoss` - the paper's 1-D CDF distance between sum-normalised vectors.
* :class:`CosineLoss` - ``1 - cos(stolen_i, target_i)`` averaged over rows.

Later losses:

* :class:`BarlowTwinsLoss` - Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation of the
  batch-standardised stolen and victim outputs pulled to the identity; off-diagonal weight 5e-3.
* :class:`SoftCrossEntropyLoss` - soft cross-entropy between ``softmax(target / T)`` and
  ``log_softmax(stolen / T)``, scaled by T^2 (Hinton, Vinyals & Dean 2015); T = 20. The stolen output
  is compared with the victim's - the reference code compared it with itself.
* :class:`ContStealLoss` - Cont-Steal (Sha et al., CVPR 2023): InfoNCE between stolen and victim
  outputs whose negatives are the other images' answers in the batch plus a memory of the victim's
  answers to earlier batches (:mod:`sslsteal_fast.attacks.cont_steal`); the native ``info_nce`` op.

:func:`~sslsteal_fast.attacks.steal` also takes any callable ``loss(stolen, target) -> scalar tensor``
(:data:`LossFn`). A loss says how many rows a batch needs with a ``min_batch`` attribute (default 1;
the contrastive losses need 2, since each row's negatives are the other rows), and names itself in
results with :func:`loss_name`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sslsteal_fast import ops
from sslsteal_fast.config import BARLOW_TWINS_LAMBDA, LOSSES, TEMPERATURES, loss_temperature
from sslsteal_fast.util.checks import ArgumentTypeError, check_choice, check_int, check_number

__all__ = [
    "DEFAULT_TEMPERATURES",
    "LOSSES",
    "BarlowTwinsLoss",
    "ContStealLoss",
    "CosineLoss",
    "InfoNCELoss",
    "LossFn",
    "MSELoss",
    "SoftCrossEntropyLoss",
    "SoftNNLoss",
    "WassersteinLoss",
    "loss_name",
    "make_loss",
    "min_batch",
]

#: A stealing loss: ``loss(stolen (B, D), target (B, D)) -> scalar tensor`` (with grad through ``stolen``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The paper's temperatures of the contrastive losses (one definition: :data:`sslsteal_fast.config.TEMPERATURES`).
DEFAULT_TEMPERATURES = TEMPERATURES


def _check_pair(owner: str, stolen: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("stolen", stolen), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise ArgumentTypeError(f"{owner}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{owner}: {name} must be a non-empty (B, D) matrix, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ArgumentTypeError(f"{owner}: {name} must be a floating-point tensor, got {t.dtype}")
    if stolen.shape != target.shape:
        raise ValueError(
            f"{owner}: stolen {tuple(stolen.shape)} and target {tuple(target.shape)} must have the same (B, D) shape; "
            "give the stolen model an output layer of the victim's dimension"
        )


class MSELoss(nn.Module):
    """Mean squared error ``mean((stolen - target)^2)`` over all B * D entries (PyTorch ``MSELoss``).

    Shapes: stolen (B, D), target (B, D) -> scalar.
    """

    name = "mse"

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("MSELoss", stolen, target)
        return F.mse_loss(stolen, target.to(stolen.dtype))


class _ContrastiveLoss(nn.Module):
    """A contrastive stealing loss: a temperature (default: the paper's for ``name``), validated once."""

    name: str
    #: Each row's negatives are the other rows of the batch: one row alone has none.
    min_batch = 2

    def __init__(self, temperature: float | None = None) -> None:
        super().__init__()
        t = TEMPERATURES[self.name] if temperature is None else temperature
        self.temperature = check_number(f"{type(self).__name__}: temperature", t, low=0.0, strict=True)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class InfoNCELoss(_ContrastiveLoss):
    """InfoNCE / NT-Xent over ``[stolen; target]`` (Chen et al. 2020; stealing use: Dziedzic et al. 2022).

    Rows are L2-normalised; row i of ``stolen`` and row i of ``target`` are positives of each other and
    all other 2B - 2 rows are negatives. Per row ``-log(exp(s_ip/tau) / sum_{k != i} exp(s_ik/tau))``,
    averaged over the 2B rows. Identical stolen and target rows that are mutually orthogonal give the
    minimum; all rows identical gives ``log(2B - 1)``.

    Shapes: stolen (B, D), target (B, D) -> scalar. ``temperature`` tau > 0 (paper: 0.07).
    """

    name = "info_nce"

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("InfoNCELoss", stolen, target)
        return ops.info_nce(stolen, target.to(stolen.dtype), self.temperature)


class SoftNNLoss(_ContrastiveLoss):
    """Soft Nearest Neighbour loss (Frosst, Papernot & Hinton 2019) on ``z = [stolen; target]``.

    Labels ``arange(B).repeat(2)``: each row's only same-label row is its partner. Unnormalised rows,
    squared Euclidean distances ``d``; per row ``-log(exp(-d_ip/T) / sum_{k != i} exp(-d_ik/T))``,
    averaged over the 2B rows.

    Shapes: stolen (B, D), target (B, D) -> scalar. ``temperature`` T > 0 (paper: 100 at CIFAR scale,
    1000-10000 for ImageNet-scale representations).
    """

    name = "soft_nn"

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("SoftNNLoss", stolen, target)
        z = torch.cat([stolen, target.to(stolen.dtype)], 0)
        labels = torch.arange(stolen.shape[0], device=z.device).repeat(2)
        return ops.soft_nn(z, labels, self.temperature)


class WassersteinLoss(nn.Module):
    """The paper's "Wasserstein" loss: a 1-D CDF (earth mover's) distance between feature histograms.

    Each row is turned into a distribution over the D feature indices and the L1 distance between the
    two cumulative sums is taken along the features (the 1-D Wasserstein-1 distance with unit spacing),
    then averaged over rows::

        p = (|x| + eps) / sum(|x| + eps)        # per row, for x in (stolen, target)
        loss = mean_b sum_d |cumsum(p_s)_d - cumsum(p_t)_d|

    Making it well-defined: the paper divides by the plain sum, which is valid for post-ReLU pooled
    features (all >= 0, as every encoder of :mod:`sslsteal_fast.models` and every victim output
    produces). Here ``|x|`` is used so that outputs with negative entries (a stolen model with a linear
    output layer, a victim whose defense adds zero-mean noise) still give a distribution - on
    non-negative inputs ``|x| = x``, so it is exactly the paper's formula there - and ``eps`` (default
    1e-6 per feature) is added so that an all-zero row becomes the uniform distribution instead of 0/0.
    For rows whose sum is much larger than ``D * eps`` the effect of ``eps`` is negligible.

    Shapes: stolen (B, D), target (B, D) -> scalar in [0, D - 1].
    """

    name = "wasserstein"

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = check_number("WassersteinLoss: eps", eps, low=0.0, strict=True)

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        mass = x.abs() + self.eps
        return torch.cumsum(mass / mass.sum(dim=1, keepdim=True), dim=1)

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("WassersteinLoss", stolen, target)
        return (self._cdf(stolen) - self._cdf(target.to(stolen.dtype))).abs().sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class CosineLoss(nn.Module):
    """``mean_b (1 - cos(stolen_b, target_b))``; a zero row has similarity 0. Range [0, 2].

    Shapes: stolen (B, D), target (B, D) -> scalar.
    """

    name = "cosine"

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("CosineLoss", stolen, target)
        return (1.0 - F.cosine_similarity(stolen, target.to(stolen.dtype), dim=1, eps=1e-8)).mean()


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021, Eq. 1-2) between stolen and victim outputs.

    Each output is standardised over the batch, feature by feature (``(z - mean_b) / sqrt(var_b + eps)``,
    the biased variance, as the reference implementation's affine-free BatchNorm), and the (D, D)
    cross-correlation ``C = z_s^T z_v / B`` is pulled to the identity::

        loss = sum_i (1 - C_ii)^2 + lambda * sum_i sum_{j != i} C_ij^2

    ``lambda`` = 5e-3 (the paper's). A feature constant over the batch (a dead ReLU channel of the
    victim) standardises to 0 and contributes the constant 1 to the first sum, never NaN.

    Shapes: stolen (B, D), target (B, D) -> scalar; B >= 2 (a variance needs two rows).
    """

    name = "barlow_twins"
    min_batch = 2

    def __init__(self, off_diagonal_weight: float = BARLOW_TWINS_LAMBDA, eps: float = 1e-5) -> None:
        super().__init__()
        self.off_diagonal_weight = check_number("BarlowTwinsLoss: off_diagonal_weight", off_diagonal_weight, low=0.0)
        self.eps = check_number("BarlowTwinsLoss: eps", eps, low=0.0, strict=True)

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + self.eps)

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("BarlowTwinsLoss", stolen, target)
        if stolen.shape[0] < 2:
            raise ValueError("BarlowTwinsLoss: needs at least 2 rows (it standardises over the batch), got 1")
        c = self._standardise(stolen).T @ self._standardise(target.to(stolen.dtype)) / stolen.shape[0]
        diagonal = torch.diagonal(c)
        on = (1.0 - diagonal).pow(2).sum()
        off = c.pow(2).sum() - diagonal.pow(2).sum()
        return on + self.off_diagonal_weight * off

    def extra_repr(self) -> str:
        return f"off_diagonal_weight={self.off_diagonal_weight}"


class SoftCrossEntropyLoss(nn.Module):
    """Soft cross-entropy of the stolen output against the victim's, at temperature T (Hinton et al. 2015).

    Knowledge distillation's soft-target loss (Hinton, Vinyals & Dean, *Distilling the Knowledge in a
    Neural Network*, 2015, Sec. 2), with the representation in place of the logits::

        loss = T^2 * mean_b ( -sum_d softmax(target_b / T)_d * log_softmax(stolen_b / T)_d )

    The T^2 factor keeps the gradients' size independent of T (Sec. 2); T = 20, the temperature of the
    paper's MNIST distillation (Sec. 3). Unlike the reference code's soft cross-entropy, which compared
    the stolen output with itself, the target is the victim's answer.

    Shapes: stolen (B, D), target (B, D) -> scalar. ``temperature`` T > 0.
    """

    name = "soft_ce"

    def __init__(self, temperature: float | None = None) -> None:
        super().__init__()
        t = TEMPERATURES[self.name] if temperature is None else temperature
        self.temperature = check_number("SoftCrossEntropyLoss: temperature", t, low=0.0, strict=True)

    def forward(self, stolen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair("SoftCrossEntropyLoss", stolen, target)
        t = self.temperature
        soft = F.softmax(target.to(stolen.dtype) / t, dim=1)
        return -(soft * F.log_softmax(stolen / t, dim=1)).sum(dim=1).mean() * (t * t)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class ContStealLoss(InfoNCELoss):
    """Cont-Steal's contrastive loss (Sha, He, Yu, Backes & Zhang, CVPR 2023) with a memory of negatives.

    The rows of ``stolen`` and ``target`` (the victim's answers, same images) are anchors; each anchor's
    only positive is its partner (the same image through the other encoder), and its negatives are
    every other batch row - the stolen and victim outputs of the other images - and every row of
    ``memory``, victim answers to other images kept from earlier batches. Cosine similarities ``s``,
    temperature tau; per anchor ``-log(exp(s_ip/tau) / sum_{k != i} exp(s_ik/tau))``, averaged over
    the 2B anchors (memory rows are negatives only, never anchors)::

        rows = [stolen; target; memory]   # all L2-normalised

    It runs the fused native :func:`sslsteal_fast.ops.info_nce` (O(n D) memory, no n x n matrix):
    ``info_nce([stolen; m_1], [target; m_2])`` with the memory split into halves ``m_1, m_2`` puts
    each memory row once among the rows, and its per-row output keeps the 2B anchors' terms. An odd
    memory drops its first (oldest) row. Without memory it is :class:`InfoNCELoss`.

    Shapes: stolen (B, D), target (B, D), memory (M, D) or None -> scalar. ``temperature``: the
    package's InfoNCE temperature (0.07) by default.
    """

    def forward(  # type: ignore[override]
        self, stolen: torch.Tensor, target: torch.Tensor, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pair("ContStealLoss", stolen, target)
        target = target.to(stolen.dtype)
        if memory is not None and (
            not isinstance(memory, torch.Tensor) or memory.dim() != 2 or memory.shape[1] != stolen.shape[1]
        ):
            raise ValueError(
                f"ContStealLoss: memory must be (M, {stolen.shape[1]}), got {tuple(getattr(memory, 'shape', ()))}"
            )
        if memory is None or memory.shape[0] < 2:
            return ops.info_nce(stolen, target, self.temperature)
        memory = memory[memory.shape[0] % 2 :].to(stolen.dtype)
        half = memory.shape[0] // 2
        b = stolen.shape[0]
        rows = ops.info_nce(
            torch.cat([stolen, memory[:half]]), torch.cat([target, memory[half:]]), self.temperature, "none"
        )
        return torch.cat([rows[:b], rows[b + half : 2 * b + half]]).mean()


def make_loss(name: str, temperature: float | None = None) -> nn.Module:
    """Build a stealing loss by name (one of :data:`LOSSES`).

    ``temperature`` overrides the default of the losses that have one (info_nce: 0.07, soft_nn: 100,
    soft_ce: 20); it is an error to give one for a loss without a temperature.
    """
    check_choice("loss", name, LOSSES)
    t = loss_temperature(name, temperature)
    if name == "info_nce":
        return InfoNCELoss(t)
    if name == "soft_nn":
        return SoftNNLoss(t)
    if name == "soft_ce":
        return SoftCrossEntropyLoss(t)
    plain = {"mse": MSELoss, "wasserstein": WassersteinLoss, "cosine": CosineLoss, "barlow_twins": BarlowTwinsLoss}
    return plain[name]()


_NAMED = (MSELoss, InfoNCELoss, SoftNNLoss, WassersteinLoss, CosineLoss, BarlowTwinsLoss, SoftCrossEntropyLoss)


def loss_name(loss: LossFn) -> str:
    """How results name a loss: its name for this module's losses, ``"custom:<qualified name>"`` otherwise."""
    if isinstance(loss, _NAMED):
        return loss.name
    target = loss if callable(loss) and hasattr(loss, "__qualname__") else type(loss)
    return f"custom:{getattr(target, '__module__', '?')}.{target.__qualname__}"


def min_batch(loss: LossFn) -> int:
    """Rows a batch of ``loss`` needs: its ``min_batch`` attribute (an int >= 1), else 1."""
    return check_int(f"{loss_name(loss)}: min_batch", getattr(loss, "min_batch", 1), low=1)
