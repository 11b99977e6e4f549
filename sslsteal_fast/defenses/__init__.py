"""Defenses that plug into a served victim, and their per-client state.

Every defense implements :class:`sslsteal_fast.victim.Defense` (``defense(outputs, inputs, client)``)
and plugs into ``OnnxVictim(defenses=[...])``; each is built from a validated, frozen config (or a
spec string, :func:`make_defense`):

>>> victim = OnnxVictim("victim.onnx", defenses=[make_defense("detection:threshold=0.6", state="state.sqlite")])

* :class:`GaussianNoise` (keyed per client and input), :class:`Quantize`, :class:`TopKSparsify`;
* :class:`SimilarityDetector` (the paper's query-similarity detection, growing per-client bank);
* :class:`CoverageDefense` (B4B-style coverage-priced noise plus per-client remapping);
* :class:`DefenseState`: per-client state in SQLite that survives a restart.

Ownership tests run after the fact (watermark, dataset inference) live in :mod:`sslsteal_fast.ownership`;
measuring defenses on an honest user and a thief is an experiment (:mod:`sslsteal_fast.sweep`).
"""

from __future__ import annotations

from sslsteal_fast.defenses.base import ConfiguredDefense, StatefulDefense
from sslsteal_fast.defenses.coverage import CoverageConfig, CoverageDefense, client_transform
from sslsteal_fast.defenses.detection import (
    DetectionMetrics,
    DetectorConfig,
    GrowingBank,
    SimilarityDetector,
    detection_metrics,
)
from sslsteal_fast.defenses.factory import DEFENSES, make_defense, parse_spec
from sslsteal_fast.defenses.perturb import (
    GaussianNoise,
    GaussianNoiseConfig,
    KeyedNoise,
    NoDefense,
    Quantize,
    QuantizeConfig,
    TopKConfig,
    TopKSparsify,
)
from sslsteal_fast.defenses.state import DefenseState, open_state

__all__ = [
    "DEFENSES",
    "ConfiguredDefense",
    "CoverageConfig",
    "CoverageDefense",
    "DefenseState",
    "DetectionMetrics",
    "DetectorConfig",
    "GaussianNoise",
    "GaussianNoiseConfig",
    "GrowingBank",
    "KeyedNoise",
    "NoDefense",
    "Quantize",
    "QuantizeConfig",
    "SimilarityDetector",
    "StatefulDefense",
    "TopKConfig",
    "TopKSparsify",
    "client_transform",
    "detection_metrics",
    "make_defense",
    "open_state",
    "parse_spec",
]
