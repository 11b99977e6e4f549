"""What the package's defenses share: parameters declared once, in a frozen ``Config`` dataclass.

A defense class names its ``Config`` and is built either from a config object or from the config's
fields as keywords (``GaussianNoise(sigma=0.5)`` is ``GaussianNoise(GaussianNoiseConfig(sigma=0.5))``);
the config validates itself. What is not a parameter (a secret key, a state store, a centre vector)
is a keyword-only argument of the defense itself. :func:`~sslsteal_fast.defenses.make_defense`
builds any of them from a spec string, whose keys are exactly the config's fields.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch

from sslsteal_fast.defenses.state import DefenseState, open_state, secret_for

__all__ = ["ConfiguredDefense", "StatefulDefense"]


class ConfiguredDefense:
    """Base of the configured defenses: ``self.config`` holds the validated parameters.

    Subclasses set ``name`` (the spec name) and ``Config`` (a frozen dataclass validating itself in
    ``__post_init__``) and implement ``__call__(outputs, inputs, client)`` (the
    :class:`~sslsteal_fast.victim.Defense` protocol).
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any = None, /, **params: Any) -> None:
        if config is None:
            config = self.Config(**params)
        elif params or not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__}: pass a {self.Config.__name__} or its fields as keywords, not both")
        self.config = config

    @classmethod
    def parameters(cls) -> tuple[str, ...]:
        """The parameter names (the ``Config``'s fields): the keys a spec may set."""
        return tuple(f.name for f in dataclasses.fields(cls.Config))

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{type(self).__name__}({fields})"


class StatefulDefense(ConfiguredDefense):
    """A configured defense that keeps per-client state and a secret, and may compare centred vectors.

    It is :class:`~sslsteal_fast.victim.defense_api.Transactional`: a call records its state changes
    in one transaction of ``state`` (joining the victim's, which commits only once the answer is
    served), and re-reads what other stores sharing the file committed before it.

    Args:
        config / **params: the defense's ``Config``.
        center: optional 1-D vector subtracted from what the defense compares (e.g. the mean
            representation of the owner's data).
        state: a :class:`~sslsteal_fast.defenses.DefenseState` or its path; the defense reloads its
            per-client state from it (None: a throw-away in-memory store).
        namespace: this defense's name inside the state (two defenses may share one database).
        key: an explicit secret; None takes (or creates) the state's secret ``namespace``.
    """

    def __init__(
        self,
        config: Any = None,
        /,
        *,
        center: torch.Tensor | None = None,
        state: DefenseState | str | None = None,
        namespace: str | None = None,
        key: bytes | None = None,
        **params: Any,
    ) -> None:
        super().__init__(config, **params)
        if center is not None and (not isinstance(center, torch.Tensor) or center.dim() != 1):
            raise ValueError(f"{type(self).__name__}: center must be a 1-D tensor (the mean feature vector)")
        self.center = None if center is None else center.detach().to(torch.float32).cpu()
        self.state = open_state(state)
        self.namespace = self.name if namespace is None else namespace
        self.key = secret_for(key, self.state, self.namespace)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction of this defense's state (see :meth:`DefenseState.transaction`)."""
        return self.state.transaction()
