"""A coverage-based defense in the spirit of Bucks-for-Buckets (B4B; Dubinski et al., NeurIPS 2023).

B4B's observation: a thief must cover much of the representation space, an honest user mostly
queries around one task. So the API

1. **measures coverage** per client: each served representation (minus ``center``) is hashed with
   ``n_bits`` keyed random hyperplanes (sign LSH, Charikar 2002) to one of ``2**n_bits`` buckets;
   coverage = occupied buckets / ``2**n_bits``, in [0, 1];
2. **adds noise that grows with coverage**: row i gets keyed Gaussian noise with standard deviation
   ``sigma_i = lam * coverage_i ** alpha`` (times the row's RMS when ``relative``, so ``lam`` is a
   noise-to-signal ratio and needs no knowledge of the representation's scale), where
   ``coverage_i`` is the client's coverage after row i. The noise is keyed by (client, input) as in
   :class:`~sslsteal_fast.defenses.GaussianNoise`, so re-asking does not average it away;
3. **remaps per client**: the answer is multiplied by a secret orthogonal matrix ``Q_c`` (a random
   rotation with random sign flips, drawn from a seed keyed by the client's name), so answers
   collected through several accounts live in different coordinate systems and do not simply
   combine (B4B's "remapping"; B4B uses affine maps, shuffles and padding). An orthogonal map keeps
   distances and inner products, so a single honest user's probe is unaffected; an attacker who sends
   the *same* images through two accounts can estimate the rotation between them (orthogonal
   Procrustes) - remapping raises the cost of Sybil attacks, it does not make them impossible.

B4B's exact cost function (a calibrated exponential of coverage) is replaced by the power law
above; ``alpha < 1`` punishes early coverage more, ``alpha > 1`` lets small users through nearly free.
Occupied buckets and bills are kept in the :class:`~sslsteal_fast.defenses.state.DefenseState`, one
transaction per query; at its start the client's buckets are brought up to date with what other
defenses sharing the state file have committed, so several victims serving one client price one
coverage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from sslsteal_fast.defenses.base import StatefulDefense
from sslsteal_fast.defenses.perturb import KeyedNoise
from sslsteal_fast.util.checks import check_bool, check_client, check_int, check_number

__all__ = ["CoverageConfig", "CoverageDefense", "client_transform"]


@dataclass(frozen=True)
class CoverageConfig:
    """Settings of :class:`CoverageDefense` (see the module docstring)."""

    n_bits: int = 12
    lam: float = 1.0
    alpha: float = 1.0
    relative: bool = True
    transform: bool = True

    def __post_init__(self) -> None:
        check_int("CoverageDefense: n_bits (2**n_bits buckets)", self.n_bits, low=1, high=30)
        check_number("CoverageDefense: lam", self.lam, low=0.0)
        check_number("CoverageDefense: alpha", self.alpha, low=0.0, strict=True)
        check_bool("CoverageDefense: relative", self.relative)
        check_bool("CoverageDefense: transform", self.transform)

    @property
    def buckets(self) -> int:
        """Number of LSH buckets."""
        return 1 << self.n_bits


def _seed(key: bytes, *parts: bytes) -> int:
    h = hashlib.blake2b(key=key, digest_size=8)
    for p in parts:
        h.update(len(p).to_bytes(4, "little") + p)
    return int.from_bytes(h.digest(), "little") >> 1


def client_transform(key: bytes, client: str, dim: int) -> torch.Tensor:
    """The secret orthogonal (dim, dim) float32 matrix of ``client`` (QR of a keyed Gaussian, sign-fixed,
    then random column sign flips)."""
    g = torch.Generator().manual_seed(_seed(key, b"transform", check_client(client).encode()))
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    flips = torch.randint(0, 2, (dim,), generator=g, dtype=torch.float64) * 2 - 1
    return (q * flips).to(torch.float32)


class CoverageDefense(StatefulDefense):
    """Coverage-priced noise plus a per-client secret remapping (B4B-style; see the module docstring).

    Args:
        config / n_bits, lam, alpha, relative, transform: :class:`CoverageConfig`.
        center: optional (D,) vector subtracted before hashing (e.g. the mean representation of the
            owner's data), so the hyperplanes pass through the data's centre.
        state: :class:`DefenseState` or path; occupied buckets and bills are reloaded from it, and
            the secret ``namespace`` (hyperplanes, noise, transforms) lives there.
        namespace: this defense's name inside the state.
        key: explicit secret instead of the state's.
    """

    name = "coverage"
    Config = CoverageConfig

    def __init__(self, config: CoverageConfig | None = None, /, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._noise = KeyedNoise(self.key, "coverage")
        self._planes: torch.Tensor | None = None
        self._transforms: dict[str, torch.Tensor] = {}
        self._occupied: dict[str, set[int]] = {}

    def _hyperplanes(self, dim: int) -> torch.Tensor:
        if self._planes is None or self._planes.shape[1] != dim:
            g = torch.Generator().manual_seed(_seed(self.key, b"planes", str(dim).encode()))
            self._planes = torch.randn(self.config.n_bits, dim, generator=g)
        return self._planes

    def bucket_ids(self, outputs: torch.Tensor) -> torch.Tensor:
        """LSH bucket of each row (int64 (N,), in [0, 2**n_bits))."""
        x = outputs.detach().to(torch.float32)
        if self.center is not None:
            x = x - self.center
        bits = (x @ self._hyperplanes(x.shape[1]).T > 0).to(torch.int64)
        return (bits << torch.arange(self.config.n_bits)).sum(dim=1)

    def _synced(self, client: str) -> set[int]:
        """``client``'s occupied buckets, with those other defenses sharing the state have committed."""
        occupied = self._occupied.setdefault(client, set())
        if self.state.bucket_count(self.namespace, client) != len(occupied):
            occupied |= self.state.client_buckets(self.namespace, client)
        return occupied

    def coverage(self, client: str) -> float:
        """Fraction of buckets ``client`` has occupied so far."""
        with self.state.lock:
            return len(self._synced(client)) / self.config.buckets

    def transform_for(self, client: str, dim: int) -> torch.Tensor:
        """``client``'s secret orthogonal (dim, dim) matrix (cached)."""
        q = self._transforms.get(client)
        if q is None or q.shape[0] != dim:
            q = self._transforms[client] = client_transform(self.key, client, dim)
        return q

    def sigmas(self, outputs: torch.Tensor, client: str) -> torch.Tensor:
        """Per-row noise std (N,) after updating ``client``'s coverage with these rows (in row order)."""
        check_client(client)
        ids = self.bucket_ids(outputs).tolist()
        cov = torch.empty(outputs.shape[0])
        with self.state.transaction():
            occupied = self._synced(client)
            new: list[int] = []
            self.state.on_rollback(lambda: occupied.difference_update(new))
            for i, b in enumerate(ids):
                if b not in occupied:
                    occupied.add(b)
                    new.append(b)
                cov[i] = len(occupied) / self.config.buckets
            self.state.add_buckets(self.namespace, client, new, int(outputs.shape[0]))
        sig = self.config.lam * cov.pow(self.config.alpha)
        if self.config.relative:
            sig = sig * outputs.detach().pow(2).mean(dim=1).sqrt()
        return sig

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        with self.state.transaction():
            sig = self.sigmas(outputs, client)
            out = outputs + sig[:, None] * self._noise.normal(inputs, client, outputs.shape[1])
            if self.config.transform:
                out = out @ self.transform_for(client, out.shape[1])
        return out

    @property
    def bills(self) -> dict[str, int]:
        """Rows seen per client."""
        return self.state.bills(self.namespace)
