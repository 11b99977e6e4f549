"""The interface between a served victim and its output defenses.

A defense post-processes what the API returns: it receives the model's raw representations for one
query, the (float32, model-layout) images that produced them and the client who asked, and returns
the representations to serve instead. :class:`~sslsteal_fast.victim.OnnxVictim` applies its
defenses in order, after the response cache, so every query (cache hits included) goes through them
and stateful defenses (similarity detection, per-client noise) see the whole query stream.
Implementations live in :mod:`sslsteal_fast.defenses`.

A defense that keeps state (a detection history, coverage buckets, its own bills) is also
:class:`Transactional`: the victim opens every such defense's transaction before the first defense
runs and commits them only once the whole answer is known to be servable, so a query that fails -
in any defense, or because an answer is not finite - leaves no trace in any defense's state, and
a retry is not mistaken for a repeat.

Client ids are checked in one place, :func:`~sslsteal_fast.util.checks.check_client` (re-exported
here), by the victim before anything runs and by the defenses that store or hash them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol, runtime_checkable

import torch

from sslsteal_fast.util.checks import check_client

__all__ = ["Defense", "Transactional", "apply_defenses", "check_client", "defense_transaction"]


@runtime_checkable
class Defense(Protocol):
    """A callable that post-processes served representations.

    Args (of ``__call__``):
        outputs: float32 (N, D) raw (or already partly defended) representations, on the CPU,
            all finite. The tensor is the defense's own to modify in place or replace.
        inputs: float32 (N, C, H, W) images exactly as the model received them (after the
            victim's preprocessing, if any); read-only.
        client: the name of the client the query is billed to (valid, see :func:`check_client`).

    Returns:
        float32 (N, D') finite tensor with the same number of rows; D' may differ from D (a defense
        may e.g. project), but most defenses keep D.
    """

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor: ...


@runtime_checkable
class Transactional(Protocol):
    """A defense whose state changes for one query are one transaction.

    ``transaction()`` returns a context manager: the state changes made while it is open are kept
    when it exits normally and all undone (in the store and in memory) when it exits with an
    exception. Transactions of defenses sharing one store join into one.
    """

    def transaction(self) -> AbstractContextManager[object]: ...


@contextmanager
def defense_transaction(defenses: Sequence[Defense]) -> Iterator[None]:
    """Open the transaction of every :class:`Transactional` defense (in order) for one query.

    Everything the defenses record inside is committed when the block exits normally and rolled
    back when it raises. Defenses sharing one store commit atomically together; separate stores
    commit one after the other (in reverse order).
    """
    with ExitStack() as stack:
        for defense in defenses:
            if isinstance(defense, Transactional):
                stack.enter_context(defense.transaction())
        yield


def apply_defenses(
    defenses: Sequence[Defense], outputs: torch.Tensor, inputs: torch.Tensor, client: str
) -> torch.Tensor:
    """Run ``defenses`` in order on ``outputs``, checking that each keeps the served contract.

    Raises:
        TypeError: a defense returned something other than a float32 tensor.
        ValueError: a defense returned a tensor that is not (N, D') with the same N, or one with
            NaN or infinite values (such an answer is never served).
    """
    n = outputs.shape[0]
    for defense in defenses:
        outputs = defense(outputs, inputs, client)
        name = getattr(defense, "__name__", type(defense).__name__)
        if not isinstance(outputs, torch.Tensor) or outputs.dtype != torch.float32:
            got = outputs.dtype if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise TypeError(f"defense {name!r} must return a float32 torch.Tensor, got {got}")
        if outputs.dim() != 2 or outputs.shape[0] != n:
            raise ValueError(f"defense {name!r} must return a ({n}, D) tensor, got {tuple(outputs.shape)}")
        if not bool(torch.isfinite(outputs).all()):
            raise ValueError(f"defense {name!r} returned non-finite values (NaN or inf); such an answer is not served")
    return outputs
