"""Model extraction: steal a self-supervised encoder from its answers under a query budget.

>>> victim = OnnxVictim("victim.onnx")                  # or LocalVictim(encoder)
>>> result = steal(victim, load_dataset("shapes"), StealConfig(loss="info_nce", budget=1000, epochs=20))
>>> result.stolen, result.billed_queries, result.victim_forward_passes

Losses: :mod:`sslsteal_fast.attacks.losses`; the training loop and query strategies:
:mod:`sslsteal_fast.attacks.steal`. The victim side of the contract (:class:`Victim`,
:class:`LocalVictim`, :func:`query_victim`) lives in :mod:`sslsteal_fast.victim` and is re-exported here.
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
from sslsteal_fast.victim import LocalVictim, Victim, query_victim

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LRS",
    "DEFAULT_TEMPERATURES",
    "LOSSES",
    "STRATEGIES",
    "CosineLoss",
    "InfoNCELoss",
    "LocalVictim",
    "MSELoss",
    "SoftNNLoss",
    "StealConfig",
    "StealResult",
    "StolenEncoder",
    "Victim",
    "WassersteinLoss",
    "make_loss",
    "query_victim",
    "steal",
]
