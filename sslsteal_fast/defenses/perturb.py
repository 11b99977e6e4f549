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
import math
from dataclasses import dataclass

import numpy as np
import torch

from sslsteal_fast.defenses.state import DefenseState, open_state

__all__ = [
    "KeyedNoise",
    "NoDefense",
    "GaussianNoiseConfig",
    "GaussianNoise",
    "QuantizeConfig",
    "Quantize",
    "TopKConfig",
    "TopKSparsify",
    "check_number",
]


def check_number(owner: str, name: str, value: object, *, low: float | None = None, strict: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``owner.name`` if it is not finite or below ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (strict and value == low)):
        raise ValueError(f"{owner}: {name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def check_int(owner: str, name: str, value: object, low: int) -> int:
    """``value`` if it is an int >= ``low``, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    return value


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


def _secret(key: bytes | None, state: DefenseState | None, name: str) -> bytes:
    if key is not None:
        return key
    return open_state(state).secret(name)


class NoDefense:
    """The identity defense (the ``"none"`` row of a study): returns the outputs unchanged."""

    name = "none"

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        return outputs

    def __repr__(self) -> str:
        return "NoDefense()"


@dataclass(frozen=True)
class GaussianNoiseConfig:
    """``outputs + mean + sigma * z`` with keyed z ~ N(0, I). The paper's setting is mean 5, sigma 0.5.

    ``mean`` is a constant shift (a probe that standardises its inputs undoes it); ``sigma`` is in the
    units of the served representation.
    """

    sigma: float = 0.5
    mean: float = 0.0

    def __post_init__(self) -> None:
        check_number("GaussianNoise", "sigma", self.sigma, low=0.0)
        check_number("GaussianNoise", "mean", self.mean)


class GaussianNoise:
    """Keyed, per-(client, input) deterministic Gaussian noise on the served representations.

    Args:
        sigma, mean: see :class:`GaussianNoiseConfig`.
        key: the secret for the keyed hash; None takes (or creates) the secret ``noise`` in ``state``.
        state: where the secret lives (path or store); None with ``key=None`` means a fresh random secret.
    """

    name = "noise"

    def __init__(
        self,
        sigma: float = 0.5,
        mean: float = 0.0,
        *,
        key: bytes | None = None,
        state: DefenseState | str | None = None,
    ) -> None:
        self.config = GaussianNoiseConfig(sigma, mean)
        st = None if state is None else open_state(state)
        self._noise = KeyedNoise(_secret(key, st, "noise"), "gaussian-noise")

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        z = self._noise.normal(inputs, client, outputs.shape[1])
        return outputs + self.config.mean + self.config.sigma * z

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.config.sigma}, mean={self.config.mean})"


@dataclass(frozen=True)
class QuantizeConfig:
    """Exactly one of: ``decimals`` (round to that many decimals) or ``levels`` (>= 2 uniform levels
    between each row's min and max)."""

    decimals: int | None = None
    levels: int | None = None

    def __post_init__(self) -> None:
        if (self.decimals is None) == (self.levels is None):
            raise ValueError("Quantize: give exactly one of decimals or levels")
        if self.decimals is not None and (isinstance(self.decimals, bool) or not isinstance(self.decimals, int)):
            raise ValueError(f"Quantize: decimals must be an int, got {self.decimals!r}")
        if self.levels is not None:
            check_int("Quantize", "levels", self.levels, 2)


class Quantize:
    """Round the served representations (to ``decimals``, or to ``levels`` levels per row)."""

    name = "quantize"

    def __init__(self, decimals: int | None = None, levels: int | None = None) -> None:
        self.config = QuantizeConfig(decimals, levels)

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        if self.config.decimals is not None:
            return torch.round(outputs, decimals=self.config.decimals)
        steps = float(self.config.levels - 1)  # type: ignore[operator]
        lo = outputs.min(dim=1, keepdim=True).values
        span = (outputs.max(dim=1, keepdim=True).values - lo).clamp_min(1e-12)
        return lo + torch.round((outputs - lo) / span * steps) / steps * span

    def __repr__(self) -> str:
        return f"Quantize(decimals={self.config.decimals}, levels={self.config.levels})"


@dataclass(frozen=True)
class TopKConfig:
    """Keep the ``k`` largest-magnitude coordinates of each row, zero the rest (k >= D: unchanged)."""

    k: int = 32

    def __post_init__(self) -> None:
        check_int("TopKSparsify", "k", self.k, 1)


class TopKSparsify:
    """Top-k sparsification of the served representations."""

    name = "topk"

    def __init__(self, k: int = 32) -> None:
        self.config = TopKConfig(k)

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        if self.config.k >= outputs.shape[1]:
            return outputs
        idx = outputs.abs().topk(self.config.k, dim=1).indices
        out = torch.zeros_like(outputs)
        return out.scatter_(1, idx, outputs.gather(1, idx))

    def __repr__(self) -> str:
        return f"TopKSparsify(k={self.config.k})"
