"""The victim stage: train a SimCLR encoder, export it to ONNX, serve it as a billed, defended API.

* :mod:`.train`: the SimCLR training loop (resumable, with :class:`TrainHook` for extra tasks such as
  the rotation watermark); :mod:`.cache`: victims trained once per configuration and reused.
* :mod:`.export`: ``export_onnx`` writes and checks the file.
* :mod:`.serving`: :class:`OnnxVictim` serves any single-input, single-output ONNX encoder with
  exact billing, a budget, a response cache, optional preprocessing (:class:`Preprocess`) and
  output defenses.
* :mod:`.billing`: the billing rules every served victim follows (:class:`Ledger`: reserve before
  running, settle all-or-nothing, release on failure), shared by ``OnnxVictim`` and the HTTP server.
* :mod:`.http`: :class:`HttpVictim`, the same protocol spoken to an encoder API over HTTP
  (``sslsteal serve``), with its body formats in :mod:`.wire`.
* :mod:`.protocol`: the :class:`Victim` interface every consumer (attacks, probes, ownership tests)
  codes against, the in-process :class:`LocalVictim`, and billed chunked querying
  (:func:`query_victim`).
* :mod:`.labels`: :class:`LabelVictim`, a label-only API (the owner's :class:`LinearHead` on a victim).
* :mod:`.defense_api`: the :class:`Defense` plug-in protocol (and :class:`Transactional` for
  defenses with state); implementations live in :mod:`sslsteal_fast.defenses`.
"""

from __future__ import annotations

from sslsteal_fast.config import VictimTrainConfig
from sslsteal_fast.victim.billing import BudgetExceeded, Ledger, MemoryLedger, Reservation
from sslsteal_fast.victim.cache import CachedVictim, trained_victim
from sslsteal_fast.victim.defense_api import Defense, Transactional, apply_defenses, check_client, defense_transaction
from sslsteal_fast.victim.export import PARITY_TOLERANCE, export_onnx, max_relative_difference, read_metadata
from sslsteal_fast.victim.http import HttpVictim
from sslsteal_fast.victim.labels import LabelVictim, LinearHead
from sslsteal_fast.victim.protocol import LocalVictim, Victim, query_victim
from sslsteal_fast.victim.serving import OnnxVictim, Preprocess, ResponseCache, default_providers, physical_cores
from sslsteal_fast.victim.train import TrainHook, train_victim, training_views

__all__ = [
    "PARITY_TOLERANCE",
    "BudgetExceeded",
    "CachedVictim",
    "Defense",
    "HttpVictim",
    "LabelVictim",
    "Ledger",
    "LinearHead",
    "LocalVictim",
    "MemoryLedger",
    "OnnxVictim",
    "Preprocess",
    "Reservation",
    "ResponseCache",
    "TrainHook",
    "Transactional",
    "Victim",
    "VictimTrainConfig",
    "apply_defenses",
    "check_client",
    "default_providers",
    "defense_transaction",
    "export_onnx",
    "max_relative_difference",
    "physical_cores",
    "query_victim",
    "read_metadata",
    "train_victim",
    "trained_victim",
    "training_views",
]
