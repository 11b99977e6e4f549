"""Model extraction: steal a self-supervised encoder from its answers under a query budget.

>>> victim = OnnxVictim("victim.onnx")                  # or LocalVictim(encoder)
>>> result = steal(victim, load_dataset("shapes"), StealConfig(loss="info_nce", budget=1000, epochs=20))
>>> result.stolen, result.billed_queries, result.victim_forward_passes
>>> result.save("stolen")                                  # stolen.safetensors + stolen.json (provenance)

Any thief and any loss: ``steal(victim, queries, cfg, thief=my_resnet, loss=my_loss)``; the thief gets
a trained linear head when its dimension is not the victim's (``result.encoder`` is the thief alone).

Attacks (``StealConfig.attack``), one module each over the shared loop of :mod:`sslsteal_fast.attacks.steal`
(:mod:`sslsteal_fast.attacks.base`): :mod:`~sslsteal_fast.attacks.direct` (the paper's),
:mod:`~sslsteal_fast.attacks.prototype` (RDA-style), :mod:`~sslsteal_fast.attacks.consistency`
(StolenEncoder), :mod:`~sslsteal_fast.attacks.cont_steal` (Cont-Steal) and
:mod:`~sslsteal_fast.attacks.label_only` (Knockoff-style, from a :class:`LabelVictim`).

Losses: :mod:`sslsteal_fast.attacks.losses`; the training loop and query strategies:
:mod:`sslsteal_fast.attacks.steal`; the query sets it reads: :mod:`sslsteal_fast.attacks.queries`. The victim side of the contract (:class:`Victim`,
:class:`LocalVictim`, :func:`query_victim`) lives in :mod:`sslsteal_fast.victim` and is re-exported here.
"""

from __future__ import annotations

from sslsteal_fast.attacks.base import Attack, Run
from sslsteal_fast.attacks.losses import (
    DEFAULT_TEMPERATURES,
    LOSSES,
    BarlowTwinsLoss,
    ContStealLoss,
    CosineLoss,
    InfoNCELoss,
    LossFn,
    MSELoss,
    SoftCrossEntropyLoss,
    SoftNNLoss,
    WassersteinLoss,
    loss_name,
    make_loss,
)
from sslsteal_fast.attacks.queries import QueryInput, QuerySet
from sslsteal_fast.attacks.steal import (
    ATTACKS,
    DEFAULT_BATCH_SIZES,
    DEFAULT_LRS,
    STRATEGIES,
    StealConfig,
    StealResult,
    StolenEncoder,
    make_attack,
    steal,
)
from sslsteal_fast.victim import LabelVictim, LinearHead, LocalVictim, Victim, query_victim

__all__ = [
    "ATTACKS",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LRS",
    "DEFAULT_TEMPERATURES",
    "LOSSES",
    "STRATEGIES",
    "Attack",
    "BarlowTwinsLoss",
    "ContStealLoss",
    "CosineLoss",
    "InfoNCELoss",
    "LabelVictim",
    "LinearHead",
    "LocalVictim",
    "LossFn",
    "MSELoss",
    "QueryInput",
    "QuerySet",
    "Run",
    "SoftCrossEntropyLoss",
    "SoftNNLoss",
    "StealConfig",
    "StealResult",
    "StolenEncoder",
    "Victim",
    "WassersteinLoss",
    "loss_name",
    "make_attack",
    "make_loss",
    "query_victim",
    "steal",
]
