"""The probe pipeline: features -> linear + kNN probes (:func:`probe_features`), and the calls built on it.

Every evaluation in the package goes through :func:`probe_features` with a
:class:`~sslsteal_fast.config.ProbeConfig`: the ``probe`` command, sweep cells, the victim's own
score, the honest user's score on defended answers and the untrained-encoder floor. What differs is
only where the features come from (an encoder, a served victim, a defended API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sslsteal_fast.config import ProbeConfig
from sslsteal_fast.data import ImageDataset
from sslsteal_fast.probes.classifiers import ProbeResult, knn_probe, linear_probe
from sslsteal_fast.probes.features import extract_features
from sslsteal_fast.probes.fidelity import fidelity
from sslsteal_fast.probes.splits import check_disjoint
from sslsteal_fast.util.checks import ArgumentTypeError
from sslsteal_fast.victim import Victim

__all__ = ["EncoderFeatures", "ProbeConfig", "ProbeScores", "evaluate_encoder", "probe_encoder", "probe_features"]


@dataclass
class ProbeScores:
    """Both probes' results on one train/test pair of features."""

    linear: ProbeResult
    knn: ProbeResult

    def as_dict(self) -> dict[str, float]:
        """``probe_top1``, ``probe_top5``, ``knn_top1``, ``knn_top5`` (fractions)."""
        return {
            "probe_top1": self.linear.top1,
            "probe_top5": self.linear.top5,
            "knn_top1": self.knn.top1,
            "knn_top5": self.knn.top5,
        }


def probe_features(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    config: ProbeConfig = ProbeConfig(),
) -> ProbeScores:
    """Fit the linear and kNN probes on ``(train_x, train_y)`` and score them on ``(test_x, test_y)``.

    Shapes: train_x (N, D) float, train_y (N,) int64 in [0, num_classes); test_x (M, D), test_y (M,).
    Non-finite features (an encoder that diverged) are refused: no probe can score them honestly.
    """
    if not isinstance(config, ProbeConfig):
        raise ArgumentTypeError(f"probe_features: config must be a ProbeConfig, got {type(config).__name__}")
    for where, x in (("train", train_x), ("test", test_x)):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            bad = int((~torch.isfinite(x)).any(dim=-1).sum()) if x.dim() == 2 else int((~torch.isfinite(x)).sum())
            if bad:
                raise ValueError(
                    f"probe_features: {bad} of the {len(x)} {where} feature rows are NaN or infinite; the encoder "
                    "diverged or was given non-finite input, and its probe accuracy would be meaningless"
                )
    linear = linear_probe(
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes,
        epochs=config.epochs,
        lr=config.lr,
        weight_decay=config.weight_decay,
        optimizer=config.optimizer,
        seed=config.seed,
    )
    knn = knn_probe(train_x, train_y, test_x, test_y, num_classes, k=config.knn_k, temperature=config.knn_temperature)
    return ProbeScores(linear, knn)


@dataclass
class EncoderFeatures:
    """An encoder's features on a train/test pair and its probes on them (reusable across comparisons).

    Attributes:
        train: float32 (N_train, D); test: float32 (N_test, D).
        linear: the linear probe's result; knn: the kNN probe's result.
    """

    train: torch.Tensor
    test: torch.Tensor
    linear: ProbeResult
    knn: ProbeResult


def _check_datasets(train: ImageDataset, test: ImageDataset) -> None:
    for name, ds in (("train", train), ("test", test)):
        if not isinstance(ds, ImageDataset):
            raise TypeError(f"{name} must be an ImageDataset, got {type(ds).__name__}")
    if train.num_classes != test.num_classes:
        raise ValueError(
            f"train ({train.name}) has {train.num_classes} classes but test ({test.name}) has {test.num_classes}; "
            "probe with two splits of one task"
        )
    if train.images.shape[1:] != test.images.shape[1:]:
        raise ValueError(
            f"train images are {tuple(train.images.shape[1:])} but test images are {tuple(test.images.shape[1:])}"
        )
    check_disjoint(train, test)


def probe_encoder(
    encoder: nn.Module | Victim,
    train: ImageDataset,
    test: ImageDataset,
    config: ProbeConfig = ProbeConfig(),
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> EncoderFeatures:
    """Features of ``train`` and ``test`` (computed once, eval mode) and both probes on them.

    A victim (``OnnxVictim``) is queried - and billed - for every image of both splits. Splits that
    share an image are refused (:func:`~sslsteal_fast.probes.check_disjoint`).
    """
    _check_datasets(train, test)
    train_x = extract_features(encoder, train.images, config.batch_size, device, progress=progress)
    test_x = extract_features(encoder, test.images, config.batch_size, device, progress=progress)
    scores = probe_features(train_x, train.labels, test_x, test.labels, train.num_classes, config)
    return EncoderFeatures(train_x, test_x, scores.linear, scores.knn)


def evaluate_encoder(
    encoder: nn.Module | Victim,
    train: ImageDataset,
    test: ImageDataset,
    config: ProbeConfig = ProbeConfig(),
    *,
    victim: nn.Module | Victim | EncoderFeatures | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``encoder`` on a downstream task (``train`` to fit the probes, ``test`` held out).

    Returns a flat dict: ``probe_top1``, ``probe_top5``, ``knn_top1``, ``knn_top5`` (fractions),
    ``rep_dim``, ``train_size``, ``test_size``. With ``victim`` (a module, a served victim, or its
    :class:`EncoderFeatures` from :func:`probe_encoder` - pass those to score many stolen encoders
    against one victim without recomputing it) also ``victim_probe_top1``, ``victim_probe_top5``,
    ``victim_knn_top1``, ``agreement`` (fraction of test rows where both linear probes agree) and, when
    the representation dimensions match, ``fidelity_cosine`` and ``fidelity_l2`` on the test split
    (None otherwise).
    """
    mine = probe_encoder(encoder, train, test, config, device=device, progress=progress)
    out: dict[str, Any] = {
        **ProbeScores(mine.linear, mine.knn).as_dict(),
        "rep_dim": int(mine.train.shape[1]),
        "train_size": len(train),
        "test_size": len(test),
    }
    if victim is None:
        return out
    ref = (
        victim
        if isinstance(victim, EncoderFeatures)
        else probe_encoder(victim, train, test, config, device=device, progress=progress)
    )
    if ref.test.shape[0] != mine.test.shape[0]:
        raise ValueError(
            f"victim features cover {ref.test.shape[0]} test rows but the test split has {mine.test.shape[0]}; "
            "compute them with probe_encoder on the same splits"
        )
    out.update(
        victim_probe_top1=ref.linear.top1,
        victim_probe_top5=ref.linear.top5,
        victim_knn_top1=ref.knn.top1,
        agreement=float((mine.linear.predictions == ref.linear.predictions).float().mean()),
        fidelity_cosine=None,
        fidelity_l2=None,
    )
    if ref.test.shape == mine.test.shape:
        fid = fidelity(mine.test, ref.test)
        out.update(fidelity_cosine=fid.cosine, fidelity_l2=fid.l2)
    return out
