"""Independent random streams derived from one user seed (numpy's ``SeedSequence``, no torch).

Two parts of an experiment seeded with the same number must not draw the same stream: a thief
initialised with ``torch.manual_seed(0)`` would start from the very weights of a victim initialised
with ``torch.manual_seed(0)`` (same architecture), and inherit its representation for free. Each
consumer therefore derives its own seed from ``(seed, purpose)``.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` (a short name), a pure function of ``(seed, purpose)``.

    Different purposes give unrelated streams for the same ``seed``, and different seeds for the same
    purpose too. The result fits ``torch.manual_seed`` and ``torch.Generator.manual_seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"derive_seed: seed must be a non-negative int, got {seed!r}")
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"derive_seed: purpose must be a non-empty string, got {purpose!r}")
    tag = zlib.crc32(purpose.encode())
    state = np.random.SeedSequence([seed, tag, 0x5EED]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1)
