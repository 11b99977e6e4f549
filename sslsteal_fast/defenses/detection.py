"""Query-similarity detection (Dziedzic et al. 2022, Sec. 5): flag queries close to a client's earlier ones.

Each query row is scored by its largest cosine similarity to every earlier query of the same client
(earlier rows of the same batch included, in row order, so the score does not depend on how the
stream is cut into batches - unlike the reference code, which looked within one batch only). The
paper flags a row when ``(1 + cos) / 2 > 0.8``, i.e. ``cos > 0.6``: that is ``threshold=0.6`` here.
A flagged row's answer is replaced according to ``policy``:

* ``"junk"``: keyed N(junk_mean, junk_sigma) per coordinate (the paper: N(1000, sigma));
* ``"noise"``: the answer plus keyed N(0, noise_sigma);
* ``"refuse"``: an all-zero row (the served-API contract keeps one row per query, so a refusal is an
  empty answer, still billed);
* ``"monitor"``: unchanged (score and flag are still recorded).

Features compared: ``"output"`` (the representation as it reaches this defense) or ``"input"`` (the
flattened image). Both are non-negative, so raw cosines are high for everything; pass ``center``
(e.g. the mean representation of the owner's own data) to compare centred vectors.

The per-client bank is a :class:`GrowingBank`: preallocated float32 chunks that double up to
``chunk_rows`` rows and are then added one chunk at a time, searched with the native
:func:`sslsteal_fast.ops.topk_similarity` (k = 1) chunk by chunk, so it holds hundreds of thousands of
queries without copying or an N x M matrix. Scores, flags and the bank go to the
:class:`~sslsteal_fast.defenses.state.DefenseState`, so a restarted defense continues where it was.
Each query's bank block, scores, flags and bill are one transaction; at its start the client's bank
is brought up to date with the blocks other detectors sharing the state file have committed, so
several victims (threads or processes) serving one client score against one history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sslsteal_fast import ops
from sslsteal_fast.defenses.base import StatefulDefense
from sslsteal_fast.defenses.perturb import KeyedNoise
from sslsteal_fast.util.checks import check_choice, check_client, check_int, check_number

__all__ = [
    "FEATURES",
    "POLICIES",
    "DetectionMetrics",
    "DetectorConfig",
    "GrowingBank",
    "SimilarityDetector",
    "detection_metrics",
]

POLICIES = ("junk", "noise", "refuse", "monitor")
FEATURES = ("output", "input")
_BLOCK = 512  # rows scored at once (bounds the within-block similarity matrix)
_FIRST_CHUNK = 1024


class GrowingBank:
    """An append-only (M, dim) float32 bank in preallocated chunks (1024, 2048, ... then ``chunk_rows``)."""

    def __init__(self, dim: int, chunk_rows: int = 65536) -> None:
        self.dim = check_int("GrowingBank: dim", dim, low=1)
        self.chunk_rows = check_int("GrowingBank: chunk_rows", chunk_rows, low=1)
        self._chunks: list[torch.Tensor] = []
        self._filled: list[int] = []

    def __len__(self) -> int:
        return sum(self._filled)

    @property
    def capacity(self) -> int:
        """Rows allocated (filled or not)."""
        return sum(c.shape[0] for c in self._chunks)

    def append(self, rows: torch.Tensor) -> None:
        """Copy float (n, dim) ``rows`` in at the end."""
        if rows.dim() != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"GrowingBank: rows must be (n, {self.dim}), got {tuple(rows.shape)}")
        rows = rows.detach().to(torch.float32)
        i = 0
        while i < rows.shape[0]:
            if not self._chunks or self._filled[-1] == self._chunks[-1].shape[0]:
                size = min(self.chunk_rows, max(_FIRST_CHUNK, 2 * self.capacity)) if self._chunks else _FIRST_CHUNK
                self._chunks.append(torch.empty(min(size, self.chunk_rows), self.dim))
                self._filled.append(0)
            chunk, used = self._chunks[-1], self._filled[-1]
            take = min(chunk.shape[0] - used, rows.shape[0] - i)
            chunk[used : used + take] = rows[i : i + take]
            self._filled[-1] += take
            i += take

    def truncate(self, rows: int) -> None:
        """Keep only the first ``rows`` rows (drops what was appended after them)."""
        check_int("GrowingBank.truncate: rows", rows, low=0, high=len(self))
        kept = 0
        for i, filled in enumerate(self._filled):
            if kept + filled >= rows:
                self._filled[i] = rows - kept
                del self._chunks[i + 1 :], self._filled[i + 1 :]
                return
            kept += filled

    def views(self) -> list[torch.Tensor]:
        """The filled part of each chunk (views, no copy)."""
        return [c[:n] for c, n in zip(self._chunks, self._filled, strict=True) if n > 0]

    def max_cosine(self, queries: torch.Tensor) -> torch.Tensor:
        """Largest cosine similarity of each query row to the bank -> float32 (N,); -1 for an empty bank."""
        best = torch.full((queries.shape[0],), -1.0)
        for view in self.views():
            values, _ = ops.topk_similarity(queries, view, k=1, metric="cosine")
            best = torch.maximum(best, values[:, 0])
        return best


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of :class:`SimilarityDetector` (see the module docstring)."""

    threshold: float = 0.6
    policy: str = "junk"
    feature: str = "output"
    junk_mean: float = 1000.0
    junk_sigma: float = 1.0
    noise_sigma: float = 1.0
    chunk_rows: int = 65536

    def __post_init__(self) -> None:
        check_number("SimilarityDetector: threshold (a cosine)", self.threshold, low=-1.0, high=1.0)
        check_choice("SimilarityDetector policy", self.policy, POLICIES)
        check_choice("SimilarityDetector feature", self.feature, FEATURES)
        check_number("SimilarityDetector: junk_mean", self.junk_mean)
        check_number("SimilarityDetector: junk_sigma", self.junk_sigma, low=0.0)
        check_number("SimilarityDetector: noise_sigma", self.noise_sigma, low=0.0)
        check_int("SimilarityDetector: chunk_rows", self.chunk_rows, low=1)

    @property
    def paper_threshold(self) -> float:
        """The threshold on the paper's score ``(1 + cos) / 2``."""
        return (1.0 + self.threshold) / 2.0


class SimilarityDetector(StatefulDefense):
    """Flag and replace answers to queries that resemble the same client's earlier queries.

    Args:
        config / threshold, policy, feature, junk_mean, junk_sigma, noise_sigma, chunk_rows:
            :class:`DetectorConfig`.
        center: optional (F,) vector subtracted from the compared features (F = D for ``"output"``,
            C*H*W for ``"input"``).
        state: a :class:`DefenseState` or path; the bank, scores, flags and bills are reloaded from it.
        namespace: this defense's name inside the state (two detectors may share one database).
        key: secret for the keyed junk / noise (None: the state's secret ``detection``).
    """

    name = "detection"
    Config = DetectorConfig

    def __init__(self, config: DetectorConfig | None = None, /, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._noise = KeyedNoise(self.key, "detection")
        self._banks: dict[str, GrowingBank] = {}

    def _bank(self, client: str, dim: int) -> GrowingBank:
        bank = self._banks.get(client)
        if bank is None:
            bank = self._banks[client] = GrowingBank(dim, self.config.chunk_rows)
        elif bank.dim != dim:
            raise ValueError(f"SimilarityDetector: client {client!r} has {bank.dim}-d features, got {dim}-d")
        return bank

    def _sync(self, client: str) -> None:
        """Append the blocks of ``client``'s stored bank this detector has not seen (stored by a restart's
        predecessor or by another detector sharing the state)."""
        have = self._memory_rows(client)
        for block in self.state.bank_blocks(self.namespace, client, start=have):
            self._bank(client, block.shape[1]).append(torch.from_numpy(block.copy()))

    def _rewind(self, client: str, rows: int) -> None:
        if rows == 0:
            self._banks.pop(client, None)
        elif client in self._banks:
            self._banks[client].truncate(rows)

    def features(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The compared vectors (N, F): outputs or flattened inputs, minus ``center``."""
        x = outputs if self.config.feature == "output" else inputs.reshape(inputs.shape[0], -1)
        x = x.detach().to(torch.float32)
        if self.center is not None:
            if self.center.shape[0] != x.shape[1]:
                raise ValueError(
                    f"SimilarityDetector: center has {self.center.shape[0]} entries, features {x.shape[1]}"
                )
            x = x - self.center
        return x.contiguous()

    def score(self, feats: torch.Tensor, client: str) -> torch.Tensor:
        """Score (N,) rows against the bank and each other, appending them to ``client``'s bank in memory
        (calling the detector also records them in the state)."""
        bank = self._bank(client, feats.shape[1])
        scores = torch.empty(feats.shape[0])
        for start in range(0, feats.shape[0], _BLOCK):
            block = feats[start : start + _BLOCK]
            prior = bank.max_cosine(block)
            unit = F.normalize(block, dim=1)
            sims = unit @ unit.T
            sims = sims.masked_fill(torch.ones_like(sims, dtype=torch.bool).triu(), -1.0)
            within = sims.max(dim=1).values if block.shape[0] > 1 else torch.full((1,), -1.0)
            scores[start : start + block.shape[0]] = torch.maximum(prior, within).clamp(-1.0, 1.0)
            bank.append(block)
        return scores

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        check_client(client)
        feats = self.features(outputs, inputs)
        with self.state.transaction():
            self._sync(client)
            bank_start = self._memory_rows(client)
            self.state.on_rollback(lambda: self._rewind(client, bank_start))
            scores = self.score(feats, client)
            flagged = scores > self.config.threshold
            self.state.append_bank(self.namespace, client, bank_start, feats.numpy())
            self.state.record_detections(
                self.namespace, client, bank_start, scores.numpy(), flagged.numpy(), int(outputs.shape[0])
            )
        if not bool(flagged.any()) or self.config.policy == "monitor":
            return outputs
        out = outputs.clone()
        rows = flagged.nonzero()[:, 0]
        if self.config.policy == "refuse":
            out[rows] = 0.0
        else:
            z = self._noise.normal(inputs[rows], client, outputs.shape[1])
            if self.config.policy == "junk":
                out[rows] = self.config.junk_mean + self.config.junk_sigma * z
            else:
                out[rows] = out[rows] + self.config.noise_sigma * z
        return out

    # ---------------------------------------------------------------------------- history
    def history(self, client: str) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, flags)`` of every row ``client`` sent, in order (scores are cosines)."""
        return self.state.detections(self.namespace, client)

    @property
    def bills(self) -> dict[str, int]:
        """Rows seen per client."""
        return self.state.bills(self.namespace)

    def bank_size(self, client: str) -> int:
        """Rows in ``client``'s bank (as stored: every committed query, from every detector sharing the state)."""
        return self.state.bank_rows(self.namespace, client)

    def _memory_rows(self, client: str) -> int:
        return len(self._banks[client]) if client in self._banks else 0


@dataclass
class DetectionMetrics:
    """Detection quality against ground truth (positives = augmented repeats). NaN where undefined."""

    precision: float
    recall: float
    f1: float
    roc_auc: float
    positives: int
    negatives: int
    flagged: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (for CSV rows)."""
        return dict(self.__dict__)


def detection_metrics(
    scores: Sequence[float] | np.ndarray, flags: Sequence[bool] | np.ndarray, truth: Sequence[bool] | np.ndarray
) -> DetectionMetrics:
    """Precision, recall and F1 of ``flags`` and ROC-AUC of ``scores`` against ``truth`` (sklearn.metrics).

    Precision is NaN when nothing is flagged, recall and F1 NaN without positives, ROC-AUC NaN when
    ``truth`` has only one class.
    """
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    f = np.asarray(flags, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if not s.shape == f.shape == t.shape or s.ndim != 1:
        raise ValueError(
            f"detection_metrics: scores, flags and truth must be 1-D of one length, got {s.shape}, {f.shape}, {t.shape}"
        )
    pos, flagged = int(t.sum()), int(f.sum())
    nan = math.nan
    precision = float(precision_score(t, f, zero_division=0)) if flagged else nan
    recall = float(recall_score(t, f, zero_division=0)) if pos else nan
    f1 = float(f1_score(t, f, zero_division=0)) if pos else nan
    auc = float(roc_auc_score(t, s)) if 0 < pos < len(t) else nan
    return DetectionMetrics(precision, recall, f1, auc, pos, len(t) - pos, flagged)
