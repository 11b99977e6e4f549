"""Ownership tests, run after the fact on a suspect encoder: is it derived from the victim?

* :mod:`.watermark`: a rotation task trained into the victim (:class:`WatermarkHook`, a hook of the
  one SimCLR loop) and :func:`verify_watermark`, a one-sided binomial test of the victim's head on
  the suspect's representations;
* :mod:`.dataset_inference`: :func:`dataset_inference`, a Gaussian mixture fit to representations of
  the owner's private training data and a one-sided Welch t-test of the suspect's likelihoods on
  held-out private images against unseen ones, and :func:`alignment_inference`, the same test on how
  consistently the suspect represents augmented views of each image (:func:`view_alignment`).

Both accept an ``nn.Module`` or any :class:`~sslsteal_fast.victim.Victim` (queried, so billed) and
return a :class:`Verdict`.
"""

from __future__ import annotations

from sslsteal_fast.config import WatermarkConfig
from sslsteal_fast.ownership.dataset_inference import (
    COVARIANCES,
    DatasetInferenceResult,
    GaussianMixture,
    alignment_inference,
    dataset_inference,
    view_alignment,
    welch_verdict,
)
from sslsteal_fast.ownership.verdict import Verdict
from sslsteal_fast.ownership.watermark import (
    WatermarkHead,
    WatermarkHook,
    WatermarkVerdict,
    head_paths,
    load_head,
    rotate,
    rotation_task,
    save_head,
    train_watermarked_victim,
    verify_watermark,
)

__all__ = [
    "COVARIANCES",
    "DatasetInferenceResult",
    "GaussianMixture",
    "Verdict",
    "WatermarkConfig",
    "WatermarkHead",
    "WatermarkHook",
    "WatermarkVerdict",
    "alignment_inference",
    "dataset_inference",
    "head_paths",
    "load_head",
    "rotate",
    "rotation_task",
    "save_head",
    "train_watermarked_victim",
    "verify_watermark",
    "view_alignment",
    "welch_verdict",
]
