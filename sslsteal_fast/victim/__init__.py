"""The victim stage: export an encoder to ONNX and serve it as a billed, defended API.

``export_onnx`` writes and checks the file; :class:`OnnxVictim` serves any single-input,
single-output ONNX encoder with exact billing, a budget, a response cache and output defenses
(:class:`Defense`). Victim training (``train-victim``) lives in :mod:`sslsteal_fast.victim.train`.
"""

from __future__ import annotations

from sslsteal_fast.victim.defense_api import Defense, apply_defenses
from sslsteal_fast.victim.export import PARITY_TOLERANCE, export_onnx, max_relative_difference, read_metadata
from sslsteal_fast.victim.serving import BudgetExceeded, OnnxVictim, default_providers, physical_cores

__all__ = [
    "PARITY_TOLERANCE",
    "BudgetExceeded",
    "Defense",
    "OnnxVictim",
    "apply_defenses",
    "default_providers",
    "export_onnx",
    "max_relative_difference",
    "physical_cores",
    "read_metadata",
]
