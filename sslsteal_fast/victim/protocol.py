"""What every consumer of a victim needs: the :class:`Victim` protocol, an in-process victim, billed querying.

Any object with the :class:`Victim` attributes works: :class:`sslsteal_fast.victim.OnnxVictim` (the
served model, ONNX Runtime) and :class:`LocalVictim` (an ``nn.Module`` in this process, for white-box
baselines and tests) both do, with the same accounting: ``queries_used`` counts billed rows and
``forward_passes`` counts rows actually run through the model.

Two attributes are optional, read through a function so that any victim works without them:
``remaining`` (queries left in the budget, None when unlimited; :func:`remaining_budget`) lets a
caller refuse a job the budget cannot pay for before anything is billed, and ``sha256`` (the served
file's content hash; :func:`victim_sha256`, which falls back to hashing ``path``) identifies the
victim in what is stolen from it.

Whether answers are the representation or the projection-head output is the victim's choice: an
ONNX file exported with the head (or a ``LocalVictim`` wrapping ``encoder + head``) answers with the
head's output, and stealing then targets that space (the paper's "victim returns its projection
output" variant). Nothing in the attack changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from sslsteal_fast.data import to_float
from sslsteal_fast.util.checks import ArgumentTypeError, check_client, check_positive_int
from sslsteal_fast.util.files import file_sha256
from sslsteal_fast.util.progress import progress_bar

__all__ = ["LocalVictim", "Victim", "query_victim", "remaining_budget", "victim_sha256"]


@runtime_checkable
class Victim(Protocol):
    """A black-box encoder API that bills every row it answers.

    ``input_shape`` is (C, H, W), a dimension None where the model accepts any size;
    ``output_dim`` is D; ``query(x)`` maps images (N, C, H, W) - uint8, or float in [0, 1] - to
    float32 (N, D) on the CPU and bills N rows to ``client``.

    Optional (not part of the runtime check): ``remaining`` (int, or None when unlimited) and
    ``sha256`` (str); see :func:`remaining_budget` and :func:`victim_sha256`.
    """

    input_shape: tuple[int | None, int | None, int | None]
    output_dim: int
    queries_used: int
    forward_passes: int

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor: ...


class LocalVictim:
    """An in-process encoder behind the :class:`Victim` interface, with the same accounting.

    The encoder is run in eval mode under ``torch.no_grad`` (BatchNorm uses its running statistics,
    which are never updated). Every row of every query is billed and run (no cache), so
    ``queries_used == forward_passes``. ``input_shape`` defaults to ``(encoder.in_channels, None, None)``
    (None = any spatial size); ``output_dim`` to ``encoder.rep_dim``, else it is read from one unbilled
    eval-mode forward pass on zeros. The encoder must return one (B, D) tensor: wrap a
    ``SimCLRModel`` (which returns ``(rep, proj)``) to serve either output.

    Args:
        encoder: maps float (B, C, H, W) in [0, 1] to (B, D).
        batch_size: rows per forward pass.
        device: where the encoder runs (it is moved there).
        input_shape: (C, H, W) to advertise; needed when ``encoder`` has no ``in_channels``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        *,
        input_shape: tuple[int | None, int | None, int | None] | None = None,
    ) -> None:
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"LocalVictim: encoder must be an nn.Module, got {type(encoder).__name__}")
        check_positive_int("LocalVictim: batch_size", batch_size)
        self.encoder = encoder.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        if input_shape is None:
            input_shape = (int(getattr(encoder, "in_channels", 3)), None, None)
        if len(input_shape) != 3 or input_shape[0] is None:
            raise ValueError(f"LocalVictim: input_shape must be (C, H, W) with C given, got {input_shape!r}")
        c, h, w = (None if v is None else int(v) for v in input_shape)
        self.input_shape: tuple[int | None, int | None, int | None] = (c, h, w)
        dim = getattr(encoder, "rep_dim", None)
        if not isinstance(dim, int):
            probe = torch.zeros(2, c, h or 32, w or 32, device=self.device)
            with torch.no_grad():
                dim = int(self.encoder(probe).shape[1])
        self.output_dim: int = dim
        self.queries_used = 0
        self.forward_passes = 0

    def query(self, x: torch.Tensor, client: str = "default") -> torch.Tensor:
        """Images (N, C, H, W), uint8 or float in [0, 1] -> float32 (N, D) on the CPU; bills N rows.

        ``client`` is accepted for interface parity and not used (a local victim has no defenses).
        """
        check_client(client)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"LocalVictim.query: expected images (N, C, H, W), got {getattr(x, 'shape', type(x))}")
        for got, want in zip(x.shape[1:], self.input_shape, strict=True):
            if want is not None and got != want:
                raise ValueError(f"LocalVictim.query: the victim takes images {self.input_shape}, got {tuple(x.shape)}")
        outs = []
        self.encoder.eval()
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                chunk = to_float(x[start : start + self.batch_size].to(self.device))
                outs.append(self.encoder(chunk).float().cpu())
        n = int(x.shape[0])
        self.queries_used += n
        self.forward_passes += n
        if not outs:
            return torch.zeros(0, self.output_dim)
        return torch.cat(outs)


def remaining_budget(victim: object) -> int | None:
    """Rows ``victim`` will still bill before its budget refuses: its ``remaining`` attribute.

    None when the victim has no budget (``remaining`` is None) or does not say (no such attribute,
    as for :class:`LocalVictim`). :class:`~sslsteal_fast.victim.OnnxVictim` has it.
    """
    value = getattr(victim, "remaining", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"victim.remaining must be an int or None, got {value!r}")
    return max(0, int(value))


def victim_sha256(victim: object) -> str | None:
    """The victim's content hash: its ``sha256`` attribute, else the SHA-256 of the file at its ``path``.

    None when neither is known (an in-process :class:`LocalVictim`, a stand-in for cached answers).
    """
    sha = getattr(victim, "sha256", None)
    if isinstance(sha, str) and sha:
        return sha
    path = getattr(victim, "path", None)
    if isinstance(path, (str, os.PathLike)) and Path(path).is_file():
        return file_sha256(path)
    return None


def query_victim(
    victim: Victim,
    images: torch.Tensor,
    batch_size: int = 256,
    client: str = "default",
    *,
    progress: bool = False,
) -> torch.Tensor:
    """Send ``images`` (N, C, H, W) uint8 to the victim in chunks; returns float32 (N, D) on the CPU.

    Each row is sent - and billed - exactly once. Chunks keep memory bounded and let a progress bar
    move; the victim batches internally as it likes.
    """
    check_positive_int("query_victim: batch_size", batch_size)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"query_victim: images must be (N, C, H, W), got {getattr(images, 'shape', type(images))}")
    outs: list[torch.Tensor] = []
    starts = progress_bar(
        range(0, images.shape[0], batch_size), desc="querying victim", unit="batch", leave=False, disable=not progress
    )
    for start in starts:
        answer = victim.query(images[start : start + batch_size], client=client)
        outs.append(answer.to(torch.float32).cpu())
    if not outs:
        return torch.zeros(0, int(victim.output_dim))
    return torch.cat(outs)
