"""Output perturbations: keyed Gaussian noise, quantisation, top-k sparsification (and the identity).

Every defense here is a callable ``defense(outputs (N, D), inputs (N, C, H, W), client) -> (N, D)``
(the :class:`~sslsteal_fast.victim.Defense` protocol) built from a frozen, validated config dataclass;
an invalid parameter raises ``ValueError`` at construction.

Keyed noise. :class:`GaussianNoise` draws each row's noise from a generator seeded with
``blake2b(key=secret, client || input bytes)``: the same client sending the same image gets the same
noise every time, so averaging repeated queries removes nothing, while another client (or another
image) gets independent noise. Without the secret the seeds cannot be predicted. With a
:class:`~sslsteal_fast.defenses.state.DefenseState` the secret is stored there, so the noise
survives a restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from sslsteal_fast.defenses.base import ConfiguredDefense
from sslsteal_fast.defenses.state import DefenseState, secret_for
from sslsteal_fast.util.checks import check_client, check_int, check_number

__all__ = [
    "GaussianNoise",
    "GaussianNoiseConfig",
    "KeyedNoise",
    "NoDefense",
    "Quantize",
    "QuantizeConfig",
    "TopKConfig",
    "TopKSparsify",
]


class KeyedNoise:
    """Standard-normal noise rows that are a keyed function of (client, input row).

    Args:
        key: the secret (16-64 bytes); keep it private, or the noise can be predicted and removed.
        purpose: a label mixed into the hash, so two defenses with the same key draw unrelated noise.
    """

    def __init__(self, key: bytes, purpose: str) -> None:
        if not isinstance(key, bytes) or not 16 <= len(key) <= 64:
            raise ValueError(f"KeyedNoise: key must be 16-64 bytes, got {type(key).__name__} of length {len(key)}")
        self._key = key
        self._person = hashlib.blake2b(purpose.encode(), digest_size=16).digest()

    def seeds(self, inputs: torch.Tensor, client: str) -> list[int]:
        """One 63-bit seed per row of ``inputs`` (float32 (N, ...)), keyed by the secret and ``client``."""
        check_client(client)
        rows = np.ascontiguousarray(inputs.detach().cpu().numpy(), dtype=np.float32).reshape(inputs.shape[0], -1)
        prefix = client.encode() + b"\x00" + np.asarray(rows.shape[1:], dtype=np.int64).tobytes()
        out = []
        for row in rows:
            h = hashlib.blake2b(key=self._key, person=self._person, digest_size=8)
            h.update(prefix)
            h.update(row.data)
            out.append(int.from_bytes(h.digest(), "little") >> 1)
        return out

    def normal(self, inputs: torch.Tensor, client: str, dim: int) -> torch.Tensor:
        """float32 (N, dim) standard-normal noise, row i a function of (secret, client, inputs[i])."""
        seeds = self.seeds(inputs, client)
        out = torch.empty(len(seeds), dim, dtype=torch.float32)
        g = torch.Generator()
        for i, seed in enumerate(seeds):
            g.manual_seed(seed)
            out[i] = torch.randn(dim, generator=g)
        return out


@dataclass(frozen=True)
class _NoParameters:
    """The identity defense has no parameters."""


class NoDefense(ConfiguredDefense):
    """The identity defense (the ``"none"`` row of a study): returns the outputs unchanged."""

    name = "none"
    Config = _NoParameters

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        return outputs


@dataclass(frozen=True)
class GaussianNoiseConfig:
    """``outputs + mean + sigma * z`` with keyed z ~ N(0, I). The paper's setting is mean 5, sigma 0.5.

    ``mean`` is a constant shift (a probe that standardises its inputs undoes it); ``sigma`` is in the
    units of the served representation.
    """

    sigma: float = 0.5
    mean: float = 0.0

    def __post_init__(self) -> None:
        check_number("GaussianNoise: sigma", self.sigma, low=0.0)
        check_number("GaussianNoise: mean", self.mean)


class GaussianNoise(ConfiguredDefense):
    """Keyed, per-(client, input) deterministic Gaussian noise on the served representations.

    Args:
        config / sigma, mean: :class:`GaussianNoiseConfig`.
        key: the secret for the keyed hash; None takes (or creates) the secret ``noise`` in ``state``.
        state: where the secret lives (path or store); None with ``key=None`` means a fresh random secret.
    """

    name = "noise"
    Config = GaussianNoiseConfig

    def __init__(
        self,
        config: GaussianNoiseConfig | None = None,
        /,
        *,
        key: bytes | None = None,
        state: DefenseState | str | None = None,
        **params: float,
    ) -> None:
        super().__init__(config, **params)
        self._noise = KeyedNoise(secret_for(key, state, "noise"), "gaussian-noise")

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        z = self._noise.normal(inputs, client, outputs.shape[1])
        return outputs + self.config.mean + self.config.sigma * z


#: ``decimals`` bounds: the decimal exponent range of float32, the served dtype (beyond it every
#: answer would round to zero, or rounding would overflow to inf / NaN).
QUANTIZE_DECIMALS = 38
#: The most ``levels``: float32 cannot tell more than 2**24 steps of one span apart.
QUANTIZE_LEVELS = 1 << 24


@dataclass(frozen=True)
class QuantizeConfig:
    """Exactly one of: ``decimals`` (round to that many decimals, in [-38, 38]) or ``levels``
    (2 to 2**24 uniform levels between each row's min and max)."""

    decimals: int | None = None
    levels: int | None = None

    def __post_init__(self) -> None:
        if (self.decimals is None) == (self.levels is None):
            raise ValueError("Quantize: give exactly one of decimals or levels")
        if self.decimals is not None:
            check_int("Quantize: decimals", self.decimals, low=-QUANTIZE_DECIMALS, high=QUANTIZE_DECIMALS)
        if self.levels is not None:
            check_int("Quantize: levels", self.levels, low=2, high=QUANTIZE_LEVELS)


class Quantize(ConfiguredDefense):
    """Round the served representations (to ``decimals``, or to ``levels`` levels per row).

    Rounding to decimals is computed in float64, so scaling by ``10**decimals`` cannot overflow for
    any finite float32 answer.
    """

    name = "quantize"
    Config = QuantizeConfig

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        if self.config.decimals is not None:
            return torch.round(outputs.to(torch.float64), decimals=self.config.decimals).to(torch.float32)
        steps = float(self.config.levels - 1)
        lo = outputs.min(dim=1, keepdim=True).values
        span = (outputs.max(dim=1, keepdim=True).values - lo).clamp_min(1e-12)
        return lo + torch.round((outputs - lo) / span * steps) / steps * span


@dataclass(frozen=True)
class TopKConfig:
    """Keep the ``k`` largest-magnitude coordinates of each row, zero the rest (k >= D: unchanged)."""

    k: int = 32

    def __post_init__(self) -> None:
        check_int("TopKSparsify: k", self.k, low=1)


class TopKSparsify(ConfiguredDefense):
    """Top-k sparsification of the served representations."""

    name = "topk"
    Config = TopKConfig

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        if self.config.k >= outputs.shape[1]:
            return outputs
        idx = outputs.abs().topk(self.config.k, dim=1).indices
        out = torch.zeros_like(outputs)
        return out.scatter_(1, idx, outputs.gather(1, idx))
