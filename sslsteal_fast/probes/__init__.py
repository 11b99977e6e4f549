"""How good is an encoder: linear and kNN probes on frozen features, and fidelity to a victim.

>>> res = evaluate_encoder(stolen, load_dataset("shapes", "train"), load_dataset("shapes", "test"), victim=victim)
>>> res["probe_top1"], res["knn_top1"], res["fidelity_cosine"]

Every evaluation goes through one pipeline: :func:`probe_features` with a :class:`ProbeConfig`.
"""

from __future__ import annotations

from sslsteal_fast.config import ProbeConfig
from sslsteal_fast.probes.classifiers import OPTIMIZERS, ProbeResult, knn_probe, linear_probe
from sslsteal_fast.probes.evaluate import EncoderFeatures, ProbeScores, evaluate_encoder, probe_encoder, probe_features
from sslsteal_fast.probes.features import extract_features
from sslsteal_fast.probes.fidelity import Fidelity, fidelity

__all__ = [
    "OPTIMIZERS",
    "EncoderFeatures",
    "Fidelity",
    "ProbeConfig",
    "ProbeResult",
    "ProbeScores",
    "evaluate_encoder",
    "extract_features",
    "fidelity",
    "knn_probe",
    "linear_probe",
    "probe_encoder",
    "probe_features",
]
