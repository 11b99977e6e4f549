"""derive_seed: independent, reproducible streams per (seed, purpose)."""

from __future__ import annotations

import pytest

from sslsteal_fast.util.seeding import derive_seed


def test_purposes_and_seeds_give_different_reproducible_seeds() -> None:
    seeds = {(s, p): derive_seed(s, p) for s in range(4) for p in ("thief-init", "thief-order", "untrained-floor")}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**63 for v in seeds.values())
    assert derive_seed(3, "thief-init") == seeds[(3, "thief-init")]
    assert derive_seed(0, "thief-init") != 0


@pytest.mark.parametrize("seed, purpose", [(-1, "x"), (1.5, "x"), (True, "x"), (0, ""), (0, None)])
def test_bad_arguments_are_refused(seed, purpose) -> None:
    with pytest.raises(ValueError, match="derive_seed"):
        derive_seed(seed, purpose)
