"""How good is an encoder: linear and kNN probes on frozen features, and fidelity to a victim.

>>> res = evaluate_encoder(stolen, load_dataset("shapes", "train"), load_dataset("shapes", "test"), victim=victim)
>>> res["probe_top1"], res["knn_top1"], res["fidelity_cosine"]
"""

from __future__ import annotations

from sslsteal_fast.probes.classifiers import OPTIMIZERS, ProbeResult, knn_probe, linear_probe
from sslsteal_fast.probes.evaluate import EncoderFeatures, evaluate_encoder, probe_encoder
from sslsteal_fast.probes.features import extract_features
from sslsteal_fast.probes.fidelity import Fidelity, fidelity

__all__ = [
    "OPTIMIZERS",
    "ProbeResult",
    "linear_probe",
    "knn_probe",
    "extract_features",
    "Fidelity",
    "fidelity",
    "EncoderFeatures",
    "probe_encoder",
    "evaluate_encoder",
]
