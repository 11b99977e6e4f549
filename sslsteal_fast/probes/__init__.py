"""How good is an encoder: linear and kNN probes on frozen features, and fidelity to a victim.

>>> res = evaluate_encoder(stolen, load_dataset("shapes", "train"), load_dataset("shapes", "test"), victim=victim)
>>> res["probe_top1"], res["knn_top1"], res["fidelity_cosine"]

Every evaluation goes through one pipeline: :func:`probe_features` with a :class:`ProbeConfig`. A
probe's test split may not share an image with its train split (:func:`check_disjoint`).
"""

from __future__ import annotations

from sslsteal_fast.config import ProbeConfig
from sslsteal_fast.probes.baselines import supervised_encoder, untrained_encoder
from sslsteal_fast.probes.classifiers import OPTIMIZERS, ProbeResult, knn_probe, linear_probe
from sslsteal_fast.probes.evaluate import EncoderFeatures, ProbeScores, evaluate_encoder, probe_encoder, probe_features
from sslsteal_fast.probes.features import extract_features
from sslsteal_fast.probes.fidelity import Fidelity, fidelity
from sslsteal_fast.probes.splits import check_disjoint

__all__ = [
    "OPTIMIZERS",
    "EncoderFeatures",
    "Fidelity",
    "ProbeConfig",
    "ProbeResult",
    "ProbeScores",
    "check_disjoint",
    "evaluate_encoder",
    "extract_features",
    "fidelity",
    "knn_probe",
    "linear_probe",
    "probe_encoder",
    "probe_features",
    "supervised_encoder",
    "untrained_encoder",
]
