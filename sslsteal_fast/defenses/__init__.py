"""Defenses for a served encoder and ownership verification of suspect encoders.

Output defenses implement :class:`sslsteal_fast.victim.Defense` (``defense(outputs, inputs, client)``)
and plug into ``OnnxVictim(defenses=[...])``; each is built from a validated, frozen config:

>>> victim = OnnxVictim("victim.onnx", defenses=[make_defense("detection:threshold=0.6", state="state.sqlite")])

* :class:`GaussianNoise` (keyed per client and input), :class:`Quantize`, :class:`TopKSparsify`;
* :class:`SimilarityDetector` (the paper's query-similarity detection, growing per-client bank);
* :class:`CoverageDefense` (B4B-style coverage-priced noise plus per-client remapping);
* :class:`DefenseState`: per-client state in SQLite that survives a restart.

Ownership: :mod:`~sslsteal_fast.defenses.watermark` (rotation watermark, binomial test) and
:mod:`~sslsteal_fast.defenses.dataset_inference` (GMM + Welch t-test). Studies:
:mod:`~sslsteal_fast.defenses.study`.
"""

from __future__ import annotations

from sslsteal_fast.defenses.coverage import CoverageConfig, CoverageDefense, client_transform
from sslsteal_fast.defenses.dataset_inference import (
    DatasetInferenceResult,
    GaussianMixture,
    dataset_inference,
    welch_verdict,
)
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
    "make_defense",
    "parse_spec",
    "DefenseState",
    "open_state",
    "KeyedNoise",
    "NoDefense",
    "GaussianNoise",
    "GaussianNoiseConfig",
    "Quantize",
    "QuantizeConfig",
    "TopKSparsify",
    "TopKConfig",
    "SimilarityDetector",
    "DetectorConfig",
    "GrowingBank",
    "DetectionMetrics",
    "detection_metrics",
    "CoverageDefense",
    "CoverageConfig",
    "client_transform",
    "GaussianMixture",
    "DatasetInferenceResult",
    "dataset_inference",
    "welch_verdict",
    "run_defense_demo",
]


def run_defense_demo(out_dir: str, quick: bool = False, progress: bool = True) -> dict:
    """See :func:`sslsteal_fast.defenses.study.run_defense_demo` (imported lazily: it pulls in training)."""
    from sslsteal_fast.defenses.study import run_defense_demo as run

    return run(out_dir, quick=quick, progress=progress)
