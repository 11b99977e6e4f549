"""One call to score an encoder: linear probe, kNN probe and, against a victim, fidelity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sslsteal_fast.attacks.victims import Victim
from sslsteal_fast.data import ImageDataset
from sslsteal_fast.probes.classifiers import ProbeResult, knn_probe, linear_probe
from sslsteal_fast.probes.features import extract_features
from sslsteal_fast.probes.fidelity import fidelity

__all__ = ["EncoderFeatures", "probe_encoder", "evaluate_encoder"]


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


def probe_encoder(
    encoder: nn.Module | Victim,
    train: ImageDataset,
    test: ImageDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    probe_epochs: int = 100,
    knn_k: int = 200,
    knn_temperature: float = 0.07,
    seed: int = 0,
    progress: bool = False,
) -> EncoderFeatures:
    """Features of ``train`` and ``test`` (computed once, eval mode) and both probes on them.

    A victim (``OnnxVictim``) is queried - and billed - for every image of both splits.
    """
    _check_datasets(train, test)
    train_x = extract_features(encoder, train.images, batch_size, device, progress=progress)
    test_x = extract_features(encoder, test.images, batch_size, device, progress=progress)
    linear = linear_probe(train_x, train.labels, test_x, test.labels, train.num_classes, epochs=probe_epochs, seed=seed)
    knn = knn_probe(train_x, train.labels, test_x, test.labels, train.num_classes, k=knn_k, temperature=knn_temperature)
    return EncoderFeatures(train_x, test_x, linear, knn)


def evaluate_encoder(
    encoder: nn.Module | Victim,
    train: ImageDataset,
    test: ImageDataset,
    *,
    victim: nn.Module | Victim | EncoderFeatures | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    probe_epochs: int = 100,
    knn_k: int = 200,
    knn_temperature: float = 0.07,
    seed: int = 0,
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
    kwargs: dict[str, Any] = dict(
        batch_size=batch_size,
        device=device,
        probe_epochs=probe_epochs,
        knn_k=knn_k,
        knn_temperature=knn_temperature,
        seed=seed,
        progress=progress,
    )
    mine = probe_encoder(encoder, train, test, **kwargs)
    out: dict[str, Any] = {
        "probe_top1": mine.linear.top1,
        "probe_top5": mine.linear.top5,
        "knn_top1": mine.knn.top1,
        "knn_top5": mine.knn.top5,
        "rep_dim": int(mine.train.shape[1]),
        "train_size": len(train),
        "test_size": len(test),
    }
    if victim is None:
        return out
    ref = victim if isinstance(victim, EncoderFeatures) else probe_encoder(victim, train, test, **kwargs)
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
