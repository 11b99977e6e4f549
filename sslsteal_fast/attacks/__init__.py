"""Model extraction: steal a self-supervised encoder from its answers under a query budget.

>>> victim = OnnxVictim("victim.onnx")                  # or LocalVictim(encoder)
>>> result = steal(victim, load_dataset("shapes"), StealConfig(loss="info_nce", budget=1000, epochs=20))
>>> result.stolen, result.billed_queries, result.victim_forward_passes

Losses: :mod:`sslsteal_fast.attacks.losses`; victims and billed querying:
:mod:`sslsteal_fast.attacks.victims`; the training loop and strategies: :mod:`sslsteal_fast.attacks.steal`.
"""

from __future__ import annotations

from sslsteal_fast.attacks.losses import (
    DEFAULT_TEMPERATURES,
    LOSSES,
    CosineLoss,
    InfoNCELoss,
    MSELoss,
    SoftNNLoss,
    WassersteinLoss,
    make_loss,
)
from sslsteal_fast.attacks.steal import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_LRS,
    STRATEGIES,
    StealConfig,
    StealResult,
    StolenEncoder,
    steal,
)
from sslsteal_fast.attacks.victims import LocalVictim, Victim, query_victim

__all__ = [
    "LOSSES",
    "STRATEGIES",
    "DEFAULT_TEMPERATURES",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LRS",
    "MSELoss",
    "InfoNCELoss",
    "SoftNNLoss",
    "WassersteinLoss",
    "CosineLoss",
    "make_loss",
    "Victim",
    "LocalVictim",
    "query_victim",
    "StealConfig",
    "StealResult",
    "StolenEncoder",
    "steal",
]
