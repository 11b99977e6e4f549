"""Serve an ONNX encoder as a billed API: :class:`OnnxVictim`.

Any ONNX model with one image input ``(N, C, H, W)`` (float) and one output ``(N, ...)`` (flattened
to ``(N, D)``) can be served, not only the ones :func:`~sslsteal_fast.victim.export_onnx` writes. A
graph that expects its images resized or normalised can be served with a :class:`Preprocess` step
(applied before the model, the cache and every defense).

Execution providers are explicit (after qdrant/fastembed's ``OnnxModel``): CUDA when the installed
onnxruntime has it *and* a GPU is present, else CPU. A provider name onnxruntime does not know is an
error (listing the available ones), as is a request none of whose providers this onnxruntime build
has; if CUDA was asked for or expected but the session ended up on CPU only, a loud
:class:`RuntimeWarning` says so (and why). Threads are set for throughput (intra-op = physical
cores, sequential execution, all graph optimisations incl. the NCHWc layout transformer); on CUDA
the input and output are bound with IO binding.

ONNX Runtime comes from one of two extras, never both (they share the ``onnxruntime`` module, and
with both installed the CUDA provider can disappear): ``sslsteal_fast[cpu]`` (``onnxruntime``) or
``sslsteal_fast[gpu]`` (``onnxruntime-gpu``). Without either, serving raises an ImportError saying
so. A visible GPU served on the CPU by default (only the CPU runtime, or both installed) is a loud
one-time RuntimeWarning with the command that fixes the install.

A GPU thief's CUDA tensors are answered on their device: with a CUDA session and no host-side step
(response cache, :class:`Preprocess`, defenses) the query is validated on the GPU and bound to the
session in place (IO binding into a torch CUDA buffer), so neither images nor answers cross to the
host; otherwise the query goes through the host path and the answer is moved back to the device.

Billing: every input row is one billed query, cache hits included (an API bills what it serves).
The rules are :mod:`sslsteal_fast.victim.billing`'s (:class:`~sslsteal_fast.victim.billing.Ledger`,
shared with the HTTP server): here a :class:`~sslsteal_fast.victim.billing.MemoryLedger`, one budget
for all clients. A query either succeeds completely or changes no bill: the budget is checked before anything runs,
and bills are only written after the model, the cache and every defense have succeeded and the
answer is known to be finite. Stateful defenses record a query in one transaction that commits
only then too (:func:`~sslsteal_fast.victim.defense_api.defense_transaction`), so a failed query
leaves no trace in their state either. Queries are serialised by a lock (ONNX Runtime already uses
every core for one batch), so a victim can be shared by threads. ``forward_passes`` meters compute,
not money: it counts rows the model actually ran, which is fewer than ``queries_used`` when the
cache answers (and, if a defense fails after the model ran, includes those rows -- they did run,
and their raw outputs stay cached -- while no bill moves).

Refused before anything runs (nothing billed): a client id :func:`~sslsteal_fast.util.checks.check_client`
rejects; images of the wrong type, dtype or shape; NaN or infinite pixels; and numpy *masked*
arrays. A mask has no meaning for an image query, and its values under the mask would escape the
finiteness check (numpy's reductions skip them) while the model still saw them, so a masked array
is refused outright instead of being silently unmasked: pass ``np.ma.filled(x, value)`` or
``x.data`` to say which values to send. Refused after the model ran (nothing billed): an answer
with NaN or infinite values, whether the model or a defense produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

try:  # one of the extras: sslsteal_fast[cpu] (onnxruntime) or sslsteal_fast[gpu] (onnxruntime-gpu)
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state
except ImportError:  # neither installed: the rest of the package works, serving says what to install
    ort = None  # type: ignore[assignment]
    _ort_state = None

from sslsteal_fast.util.checks import (
    ArgumentTypeError,
    check_bool,
    check_choice,
    check_client,
    check_int,
    check_number,
    check_positive_int,
)
from sslsteal_fast.util.files import file_sha256
from sslsteal_fast.victim.billing import BudgetExceeded, MemoryLedger
from sslsteal_fast.victim.defense_api import Defense
from sslsteal_fast.victim.train import gpu_visible

__all__ = [
    "RESIZE_MODES",
    "BudgetExceeded",
    "OnnxVictim",
    "Preprocess",
    "ResponseCache",
    "default_providers",
    "physical_cores",
    "require_onnxruntime",
]

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_ORT_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}

ProviderSpec = str | tuple[str, dict[str, Any]]

_NO_CUDA = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu instead of onnxruntime)"
_SWAP_RUNTIME = (
    "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'sslsteal_fast[gpu]' (onnxruntime-gpu alone)"
)
_NO_RUNTIME = (
    "ONNX Runtime is not installed; install exactly one of `pip install 'sslsteal_fast[cpu]'` (onnxruntime) "
    "or `pip install 'sslsteal_fast[gpu]'` (onnxruntime-gpu, for CUDA)"
)
# What onnxruntime raises for a file that is not a loadable model (each a plain Exception subclass).
_MODEL_ERRORS = tuple(
    getattr(_ort_state, name)
    for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NotImplemented")
    if hasattr(_ort_state, name)
)
_RUNTIME_WARNED = False

#: ``torch.nn.functional.interpolate`` modes :class:`Preprocess` may resize with.
RESIZE_MODES = ("bilinear", "bicubic", "area", "nearest", "nearest-exact")
_ANTIALIAS_MODES = ("bilinear", "bicubic")


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted; affinity respected)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            blocks = fh.read().strip().split("\n\n")
    except OSError:
        return len(allowed)
    for block in blocks:
        fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()))
        if fields.get("processor", "").isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def _gpu_present() -> bool:
    return torch.cuda.is_available() or gpu_visible()


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module; an ImportError saying which extra to install when there is none."""
    if ort is None:
        raise ImportError(_NO_RUNTIME)
    return ort


def default_providers() -> list[str]:
    """``[CUDA, CPU]`` when onnxruntime has the CUDA provider and a GPU is present, else ``[CPU]``.

    A GPU with only the CPU runtime (or with both ``onnxruntime`` and ``onnxruntime-gpu`` installed,
    which share one module and can lose the CUDA provider) is a loud one-time RuntimeWarning saying
    how to fix the install.
    """
    available = require_onnxruntime().get_available_providers()
    if CUDA in available and _gpu_present():
        return [CUDA, CPU]
    if _gpu_present():
        if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
            why = f"both onnxruntime and onnxruntime-gpu are installed and the CUDA provider is lost; {_SWAP_RUNTIME}"
        else:
            why = f"only the CPU onnxruntime is installed; {_SWAP_RUNTIME}"
        _warn_runtime_once(f"OnnxVictim: a GPU is visible but the victim is served on the CPU -- {why}")
    return [CPU]


def _warn_runtime_once(message: str) -> None:
    global _RUNTIME_WARNED
    if _RUNTIME_WARNED:
        return
    _RUNTIME_WARNED = True
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _provider_name(p: ProviderSpec) -> str:
    return p if isinstance(p, str) else p[0]


def _check_providers(providers: Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    """The provider request, checked: well-formed, known to onnxruntime, at least one available here."""
    ort = require_onnxruntime()
    requested = list(providers) if providers is not None else default_providers()
    if not requested:
        raise ValueError("providers must name at least one execution provider")
    known, available = ort.get_all_providers(), ort.get_available_providers()
    names = []
    for p in requested:
        ok = isinstance(p, str) or (
            isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], Mapping)
        )
        if not ok:
            raise ArgumentTypeError(f"an execution provider must be a name or (name, options dict), got {p!r}")
        name = _provider_name(p)
        if name not in known:
            short = {k.lower().removesuffix("executionprovider"): k for k in known}
            hint = f" (did you mean {short[name.lower()]!r}?)" if name.lower() in short else ""
            raise ValueError(
                f"unknown ONNX Runtime execution provider {name!r}{hint}; this onnxruntime {ort.__version__} "
                f"has: {', '.join(available)}"
            )
        names.append(name)
    if not any(n in available for n in names):
        why = f" -- {_NO_CUDA}" if CUDA in names else ""
        raise ValueError(
            f"none of the execution providers {names} is available in this onnxruntime {ort.__version__} "
            f"(available: {', '.join(available)}){why}"
        )
    return requested


def _refuse_masked(name: str, value: object) -> None:
    if np.ma.isMaskedArray(value):
        raise ArgumentTypeError(
            f"{name} must not be a numpy masked array (its masked values would escape the checks); "
            "pass np.ma.filled(x, value) or x.data"
        )


def _per_channel(name: str, value: Any) -> tuple[float, ...]:
    """A number or a non-empty sequence of numbers -> a tuple of finite floats (float32-representable)."""
    _refuse_masked(name, value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values: Sequence[Any] = (value,)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        values = value
    else:
        raise ArgumentTypeError(f"{name} must be a number or a sequence of numbers (one per channel), got {value!r}")
    if not values:
        raise ValueError(f"{name} must have at least one entry (one per channel), got {value!r}")
    out = []
    for i, v in enumerate(values):
        f = check_number(f"{name}[{i}]", v.item() if isinstance(v, np.generic) else v)
        if not np.isfinite(np.float32(f)):
            raise ValueError(f"{name}[{i}] must fit in float32, got {f!r}")
        out.append(f)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """What a served graph does not do itself: resize and normalise every query before the model.

    Applied to each query after uint8 images are scaled to [0, 1] (float queries are taken as
    they are), in this order:

    1. resize to ``size`` with :func:`torch.nn.functional.interpolate` (``mode``, ``antialias``;
       ``align_corners=False``), unless the images already have that size;
    2. normalise per channel: ``(x - mean) / std``.

    The model, the response cache and every defense see the result (``inputs`` of a defense are
    the preprocessed images); billing does not change (one query per row).

    Args:
        mean: one number (every channel) or one per channel.
        std: likewise; every entry > 0.
        size: ``(H, W)`` or ``S`` for ``(S, S)``; ``"model"`` for the model's declared input size
            (the model must declare one); None: no resizing. With a size, the victim accepts
            images of any spatial size (its ``input_shape`` says ``(C, None, None)``).
        mode: one of :data:`RESIZE_MODES`; needs a ``size``.
        antialias: antialiased downsampling (``bilinear`` and ``bicubic`` only; like PIL's and
            torchvision's resizing); pass False with the other modes.

    Raises:
        ValueError / ArgumentTypeError: any argument out of range or of the wrong type (masked
            arrays included); the victim also refuses a ``mean``/``std`` with neither 1 nor C entries
            and a ``size`` unlike a model's fixed one.
    """

    mean: float | Sequence[float] = 0.0
    std: float | Sequence[float] = 1.0
    size: int | tuple[int, int] | str | None = None
    mode: str = "bilinear"
    antialias: bool = True

    def __post_init__(self) -> None:
        mean = _per_channel("Preprocess: mean", self.mean)
        std = _per_channel("Preprocess: std", self.std)
        if not all(s > 0 and np.float32(s) > 0 for s in std):
            raise ValueError(f"Preprocess: std must be positive (and not 0 in float32), got {std!r}")
        if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
            raise ValueError(f"Preprocess: mean and std have {len(mean)} and {len(std)} entries; give one or C each")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "size", self._size(self.size))
        check_choice("Preprocess mode", self.mode, RESIZE_MODES)
        check_bool("Preprocess: antialias", self.antialias)
        if self.size is None and (self.mode != "bilinear" or not self.antialias):
            raise ValueError("Preprocess: mode and antialias say how to resize; give a size to resize to")
        if self.antialias and self.mode not in _ANTIALIAS_MODES:
            raise ValueError(
                f"Preprocess: antialias applies to bilinear and bicubic resizing only; pass antialias=False "
                f"with mode={self.mode!r}"
            )

    def _entries(self, name: str) -> tuple[float, ...]:
        """``mean`` or ``std`` as normalised by ``__post_init__`` (a tuple of floats)."""
        return cast(tuple[float, ...], getattr(self, name))

    @staticmethod
    def _size(size: Any) -> tuple[int, int] | str | None:
        if size is None or size == "model":
            return size
        if isinstance(size, str):
            raise ValueError(f"Preprocess: size must be (H, W), an int, 'model' or None, got {size!r}")
        if isinstance(size, Sequence):
            if len(size) != 2:
                raise ValueError(f"Preprocess: size must be (H, W), got {size!r}")
            return (check_int("Preprocess: size[0]", size[0], low=1), check_int("Preprocess: size[1]", size[1], low=1))
        side = check_int("Preprocess: size", size, low=1)
        return (side, side)

    def for_model(self, model_shape: tuple[int | None, int | None, int | None]) -> Preprocess:
        """This step checked against a model taking ``(C, H, W)`` (None: any), with ``size='model'`` resolved."""
        c, h, w = model_shape
        for name, values in (("mean", self._entries("mean")), ("std", self._entries("std"))):
            if c is not None and len(values) not in (1, c):
                raise ValueError(f"Preprocess: {name} has {len(values)} entries but the model takes {c} channels")
        if self.size == "model":
            if h is None or w is None:
                raise ValueError(
                    f"Preprocess: size='model' needs a model with a fixed input size, this one takes "
                    f"{'*' if h is None else h}x{'*' if w is None else w} images; give size=(H, W)"
                )
            return dataclasses.replace(self, size=(h, w))
        if isinstance(self.size, tuple) and (
            (h is not None and self.size[0] != h) or (w is not None and self.size[1] != w)
        ):
            raise ValueError(f"Preprocess: resizes to {self.size[0]}x{self.size[1]} but the model takes {h}x{w} images")
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> float32 (N, C, H', W'), C-contiguous, as the model takes it."""
        if self.size == "model":
            raise ValueError("Preprocess: size='model' is resolved by the victim (Preprocess.for_model)")
        x = images
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            align = {"align_corners": False} if self.mode in _ANTIALIAS_MODES else {}
            t = F.interpolate(torch.from_numpy(x), size=self.size, mode=self.mode, antialias=self.antialias, **align)
            x = t.numpy()
        means, stds = self._entries("mean"), self._entries("std")
        if any(m != 0.0 for m in means) or any(s != 1.0 for s in stds):
            mean = np.asarray(means, dtype=np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(stds, dtype=np.float32).reshape(1, -1, 1, 1)
            with np.errstate(over="ignore", invalid="ignore"):  # the victim refuses non-finite results
                x = (x - mean) / std
        return np.ascontiguousarray(x, dtype=np.float32)


class OnnxVictim:
    """A victim encoder behind an API: validated, billed, cached and defended ONNX Runtime inference.

    Args:
        path: the ``.onnx`` file (one float image input ``(N, C, H, W)``, one output ``(N, ...)``).
        budget: the most queries (rows) that may be billed in total, or None for unlimited.
        providers: ONNX Runtime execution providers (names or ``(name, options)``), in priority
            order; None picks :func:`default_providers`.
        batch_size: largest batch one model run gets (queries are split into such chunks). A model
            exported with a fixed batch size is always run at that size (padding the last chunk).
        defenses: output post-processors applied in order on every query (:class:`Defense`).
        cache_size: most rows the response cache keeps (least recently used evicted first); 0
            disables the cache (and the hashing of inputs).
        intra_op_threads: ONNX Runtime intra-op threads; None means :func:`physical_cores`.
        spin: whether ONNX Runtime's idle intra-op threads spin waiting for work (its default: the
            lowest latency for back-to-back runs) or sleep at once (what a server that shares the
            cores with other work wants).
        preprocess: a :class:`Preprocess` step (resize, normalise) run on every query before the
            model, the cache and the defenses; None: the images go to the model as they are.

    Attributes:
        input_shape: ``(C, H, W)`` of the images a query may have; a dimension is None where any
            size is accepted (the model's, or any H and W when ``preprocess`` resizes).
        model_input_shape: ``(C, H, W)`` the model itself takes (None where it accepts any).
        output_dim: D of the served ``(N, D)`` outputs.
        providers: the providers the session really uses.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is not a loadable ONNX model (the message names it) or not one this
            victim can serve; an unknown or unavailable execution provider; a bad argument.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        budget: int | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        batch_size: int = 256,
        defenses: Sequence[Defense] = (),
        *,
        cache_size: int = 16384,
        intra_op_threads: int | None = None,
        preprocess: Preprocess | None = None,
        spin: bool = True,
    ) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no ONNX model at {path}")
        if not path.is_file():
            raise ValueError(f"{path} is a folder or a special file, not an ONNX model file")
        if budget is not None:
            check_int("OnnxVictim: budget", budget, low=0)
        check_positive_int("OnnxVictim: batch_size", batch_size)
        check_int("OnnxVictim: cache_size", cache_size, low=0)
        for d in defenses:
            if not callable(d):
                raise TypeError(f"every defense must be callable as defense(outputs, inputs, client); got {d!r}")
        if preprocess is not None and not isinstance(preprocess, Preprocess):
            raise ArgumentTypeError(f"OnnxVictim: preprocess must be a Preprocess or None, got {preprocess!r}")
        threads = (
            physical_cores()
            if intra_op_threads is None
            else check_positive_int("OnnxVictim: intra_op_threads", intra_op_threads)
        )

        self.path = path
        self._sha256: str | None = None
        self.ledger = MemoryLedger(budget)
        self.batch_size = batch_size
        self.defenses: tuple[Defense, ...] = tuple(defenses)
        self.cache_size = cache_size

        requested = _check_providers(providers)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not check_bool("OnnxVictim: spin", spin):
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with warnings.catch_warnings():
            # onnxruntime warns (UserWarning) about unavailable providers; we say it louder below.
            warnings.simplefilter("ignore", UserWarning)
            try:
                self._session = ort.InferenceSession(str(path), sess_options=options, providers=requested)
            except _MODEL_ERRORS as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"{path}: not a valid ONNX model ({first})") from None
        self.providers: list[str] = list(self._session.get_providers())
        self._check_fallback(requested)
        self._on_cuda = CUDA in self.providers
        self._cuda_device = self._device_id(requested)

        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{path} must have one image input and one representation output; it has "
                f"{len(inputs)} inputs ({[i.name for i in inputs]}) and {len(outputs)} outputs"
            )
        inp, out = inputs[0], outputs[0]
        if inp.type not in _ORT_FLOAT_TYPES:
            raise ValueError(f"{path}: input {inp.name!r} has type {inp.type}; only float image inputs are served")
        if len(inp.shape) != 4:
            raise ValueError(f"{path}: input {inp.name!r} must be (N, C, H, W), the model declares {inp.shape}")
        self._in_name, self._out_name = inp.name, out.name
        self._in_dtype = _ORT_FLOAT_TYPES[inp.type]
        self._model_batch: int | None = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:])
        self.model_input_shape: tuple[int | None, int | None, int | None] = (dims[0], dims[1], dims[2])
        self.preprocess = None if preprocess is None else preprocess.for_model(self.model_input_shape)
        resizes = self.preprocess is not None and self.preprocess.size is not None
        self.input_shape: tuple[int | None, int | None, int | None] = (
            (dims[0], None, None) if resizes else self.model_input_shape
        )
        self.output_dim: int = self._find_output_dim(out.shape)

        self._lock = threading.RLock()
        self.cache = ResponseCache(cache_size, self.output_dim)
        self._forward_passes = 0
        self._cache_hits = 0

    # ------------------------------------------------------------------ set-up helpers
    def _check_fallback(self, requested: list[ProviderSpec]) -> None:
        # CUDA is "expected" exactly when it is in the request: the default request has it whenever
        # onnxruntime-gpu and a GPU are present, and an explicit CPU-only request is respected.
        available = ort.get_available_providers()
        for name in dict.fromkeys(_provider_name(p) for p in requested):
            if name in self.providers:
                continue
            if name == CUDA:
                why = (
                    _NO_CUDA
                    if CUDA not in available
                    else "the CUDA provider failed to load (CUDA/cuDNN libraries missing or mismatched?)"
                )
                label, cost = "CUDA", " Serving will be much slower than on the GPU."
            else:
                why = f"this onnxruntime build has no {name}" if name not in available else f"{name} failed to load"
                label, cost = name, ""
            message = (
                f"OnnxVictim({self.path.name}): {label} was requested or expected but the session runs on "
                f"{self.providers} only -- {why}.{cost}"
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _device_id(self, requested: list[ProviderSpec]) -> int:
        for p in requested:
            if not isinstance(p, str) and p[0] == CUDA:
                return int(p[1].get("device_id", 0))
        return 0

    def _find_output_dim(self, shape: list[Any]) -> int:
        rest = shape[1:]
        if rest and all(isinstance(d, int) and d > 0 for d in rest):
            return int(np.prod(rest))
        # Symbolic feature dims: run one zero image (not metered: it is not a query).
        c, h, w = (d if d is not None else 32 for d in self.model_input_shape)
        probe = np.zeros((self._model_batch or 1, c, h, w), dtype=np.float32)
        return int(self._run(probe).shape[1])

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the served ONNX file, computed once (what a stolen encoder records as its victim)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    # ------------------------------------------------------------------ accounting
    @property
    def budget(self) -> int | None:
        """The most queries (rows) that may be billed in total, or None for unlimited (settable)."""
        return self.ledger.budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        if value is not None:
            check_int("OnnxVictim: budget", value, low=0)
        with self._lock:
            self.ledger.budget = value

    @property
    def queries_used(self) -> int:
        """Billed queries (rows) so far, over all clients."""
        return self.ledger.total

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget, or None when unlimited."""
        return self.ledger.remaining()

    @property
    def forward_passes(self) -> int:
        """Rows the model actually ran (cache hits excluded)."""
        return self._forward_passes

    @property
    def cache_hits(self) -> int:
        """Served rows answered by the response cache (or by an identical row of the same query)."""
        return self._cache_hits

    @property
    def bills(self) -> dict[str, int]:
        """Billed queries per client (a copy)."""
        return self.ledger.bills

    def billed(self, client: str) -> int:
        """Billed queries of one client (0 if it never queried)."""
        return self.ledger.billed(client)

    def __repr__(self) -> str:
        return (
            f"OnnxVictim({self.path.name!r}, input_shape={self.input_shape}, output_dim={self.output_dim}, "
            f"providers={self.providers}, queries_used={self.queries_used}, remaining={self.remaining})"
        )

    # ------------------------------------------------------------------ serving
    def _expected(self) -> str:
        c, h, w = ("*" if d is None else d for d in self.input_shape)
        return f"(N, {c}, {h}, {w})"

    def prepare(self, x: Any) -> np.ndarray:
        """Validate a query and return it, preprocessed, as a C-contiguous float32 (N, C, H, W) array (a copy).

        Raises what :meth:`query` raises for a query it refuses before anything runs (nothing billed).
        """
        expected = self._expected()
        _refuse_masked("query", x)
        if isinstance(x, torch.Tensor):
            if x.dtype not in (torch.float32, torch.uint8):
                raise ValueError(f"query dtype must be float32 or uint8 with shape {expected}, got {x.dtype}")
            arr = x.detach().cpu().numpy()
        elif isinstance(x, np.ndarray):
            arr = x
        else:
            raise TypeError(f"query must be a torch.Tensor or numpy.ndarray of shape {expected}, got {type(x)}")
        if arr.dtype not in (np.float32, np.uint8):
            raise ValueError(f"query dtype must be float32 or uint8 with shape {expected}, got {arr.dtype}")
        self._check_query_shape(tuple(arr.shape), expected)
        if arr.dtype == np.uint8:
            images = np.ascontiguousarray(arr, dtype=np.float32) / np.float32(255.0)
        elif not np.isfinite(arr).all():
            raise ValueError("query contains NaN or infinite values")
        else:
            images = np.array(arr, dtype=np.float32, order="C", copy=True)
        if self.preprocess is None or images.shape[0] == 0:
            return images
        images = self.preprocess(images)
        if not np.isfinite(images).all():
            raise ValueError("preprocessing produced non-finite values (NaN or inf) from this query (a tiny std?)")
        return images

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One model run on (n, C, H, W) float32; returns (n, D) float32."""
        n = batch.shape[0]
        feed = batch if self._in_dtype == np.float32 else batch.astype(self._in_dtype)
        if self._model_batch is not None and n != self._model_batch:
            pad = np.zeros((self._model_batch - n, *feed.shape[1:]), dtype=feed.dtype)
            feed = np.concatenate([feed, pad])
        if self._on_cuda:
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(
                self._in_name, ort.OrtValue.ortvalue_from_numpy(feed, "cuda", self._cuda_device)
            )
            binding.bind_output(self._out_name, "cuda", self._cuda_device)
            self._session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self._session.run([self._out_name], {self._in_name: feed})[0]
        out = np.asarray(out)[:n]
        return np.ascontiguousarray(out.reshape(n, -1), dtype=np.float32)

    def _run_chunked(self, rows: np.ndarray) -> np.ndarray:
        step = self._model_batch or self.batch_size
        parts = [self._run(rows[i : i + step]) for i in range(0, len(rows), step)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Raw model outputs (n, D) float32 for prepared ``rows`` (:meth:`prepare`), in chunks; metered.

        No cache, no defenses, no billing, no finiteness check: the caller checks (:func:`check_finite`)
        before anything is cached or served.
        """
        out = self._run_chunked(rows)
        self._forward_passes += len(rows)
        return out

    def _run_checked(self, rows: np.ndarray) -> np.ndarray:
        """Run the model on ``rows`` (metered) and refuse non-finite outputs before they are cached."""
        out = self.run(rows)
        check_finite(out)
        return out

    def _serves_on_device(self, x: Any) -> bool:
        """Whether ``x`` is answered on the GPU without a host round trip: a CUDA tensor, a CUDA session,
        and nothing that runs on the host (the response cache, a Preprocess step, defenses)."""
        return (
            isinstance(x, torch.Tensor)
            and x.is_cuda
            and self._on_cuda
            and self.cache_size == 0
            and self.preprocess is None
            and not self.defenses
        )

    def _check_query_shape(self, shape: tuple[int, ...], expected: str) -> None:
        """A query's shape must be (N, C, H, W) matching the served input, with non-empty images."""
        if len(shape) != 4:
            raise ValueError(f"query must have shape {expected}, got rank {len(shape)} shape {shape}")
        for got, want in zip(shape[1:], self.input_shape, strict=True):
            if want is not None and got != want:
                raise ValueError(f"query must have shape {expected}, got {shape}")
        if 0 in shape[1:]:
            raise ValueError(f"query must have shape {expected} with non-empty images, got {shape}")

    def _device_input(self, x: torch.Tensor) -> torch.Tensor:
        """A CUDA query validated on its device -> float32 (N, C, H, W), contiguous, on the session's GPU."""
        expected = self._expected()
        if x.dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"query dtype must be float32 or uint8 with shape {expected}, got {x.dtype}")
        self._check_query_shape(tuple(x.shape), expected)
        x = x.detach().to(torch.device("cuda", self._cuda_device))
        if x.dtype == torch.uint8:
            return (x.float() / 255.0).contiguous()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("query contains NaN or infinite values")
        return x.contiguous().clone()

    def _run_device(self, batch: torch.Tensor) -> torch.Tensor:
        """One model run with IO binding on the session's GPU: (n, C, H, W) CUDA float32 -> (n, D) CUDA float32."""
        n = batch.shape[0]
        feed = (
            batch
            if self._in_dtype == np.float32
            else batch.to(torch.float16 if self._in_dtype == np.float16 else torch.float64)
        )
        if self._model_batch is not None and n != self._model_batch:
            feed = torch.cat([feed, feed.new_zeros((self._model_batch - n, *feed.shape[1:]))])
        feed = feed.contiguous()
        out = torch.empty((feed.shape[0], self.output_dim), dtype=torch.float32, device=feed.device)
        torch.cuda.current_stream(feed.device).synchronize()  # ORT reads the buffer on its own stream
        binding = self._session.io_binding()
        binding.bind_input(self._in_name, "cuda", self._cuda_device, self._in_dtype, tuple(feed.shape), feed.data_ptr())
        binding.bind_output(self._out_name, "cuda", self._cuda_device, np.float32, self._out_shape(out), out.data_ptr())
        self._session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out[:n]

    def _out_shape(self, out: torch.Tensor) -> tuple[int, ...]:
        """The graph's output shape for a flat (B, D) buffer: its declared rank, batch B."""
        declared = self._session.get_outputs()[0].shape
        rest = [d for d in declared[1:]]
        if all(isinstance(d, int) and d > 0 for d in rest):
            return (out.shape[0], *rest)
        return (out.shape[0], self.output_dim)

    def _query_on_device(self, x: torch.Tensor, client: str) -> torch.Tensor:
        """:meth:`query` for a CUDA tensor on a CUDA session: validated, run and checked on the GPU."""
        xs = self._device_input(x)
        n = xs.shape[0]
        if n == 0:
            return torch.empty((0, self.output_dim), dtype=torch.float32, device=xs.device)
        with self._lock, self.ledger.reserve(client, n) as reservation:
            step = self._model_batch or self.batch_size
            parts = [self._run_device(xs[i : i + step]) for i in range(0, n, step)]
            out = torch.cat(parts) if len(parts) > 1 else parts[0]
            self._forward_passes += n
            if not bool(torch.isfinite(out).all()):
                raise ValueError(NON_FINITE_ANSWER)
            self.ledger.settle(reservation, (), out, xs)  # no defenses here: the bill alone
        logger.debug("served %d rows to %r on the GPU", n, client)
        return out

    def query(self, x: torch.Tensor | np.ndarray, client: str = "default") -> torch.Tensor:
        """Serve representations for a batch of images and bill ``client`` one query per row.

        Args:
            x: (N, C, H, W) torch tensor or numpy array; float32 in the model's layout, or uint8
                (scaled to [0, 1] by /255). An empty batch (N = 0) is valid and free: it returns a
                (0, D) tensor, runs nothing and bills nothing.
            client: whom to bill.

        Returns:
            float32 tensor (N, D), after the defenses; every value finite. On the CPU, except for a
            CUDA tensor ``x``: then the answer is on ``x``'s device. With a CUDA session and neither a
            response cache (``cache_size=0``), a Preprocess step nor defenses, such a query is bound
            to the session on the GPU (IO binding) and never leaves it; otherwise it goes through
            the host and the answer is moved back. Billing is the same either way.

        Raises:
            TypeError: ``x`` is not a tensor/array, or is a numpy masked array.
            ValueError: a client id :func:`~sslsteal_fast.util.checks.check_client` refuses; wrong
                rank, channels, spatial size or dtype, or NaN/inf; an answer (from the model or a
                defense) with NaN/inf values. Nothing is billed or recorded by a defense.
            BudgetExceeded: the rows would pass the budget; nothing served or billed.
        """
        check_client(client)
        if self._serves_on_device(x):
            return self._query_on_device(x, client)
        served = self._query_host(x, client)
        if isinstance(x, torch.Tensor) and x.is_cuda:
            return served.to(x.device)
        return served

    def _query_host(self, x: torch.Tensor | np.ndarray, client: str) -> torch.Tensor:
        """:meth:`query` through the host: numpy validation, the cache, preprocessing and the defenses."""
        xs = self.prepare(x)
        n = xs.shape[0]
        if n == 0:
            return torch.empty((0, self.output_dim), dtype=torch.float32)
        with self._lock, self.ledger.reserve(client, n) as reservation:
            out, ran, hits = self._serve_raw(xs)
            # The defenses run in their transaction; the bill is recorded only once they all succeeded.
            served = self.ledger.settle(reservation, self.defenses, torch.from_numpy(out), torch.from_numpy(xs))
            self._cache_hits += hits
        logger.debug("served %d rows to %r (%d run, %d cached)", n, client, ran, hits)
        return served

    def _serve_raw(self, xs: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Raw model outputs for ``xs`` via the cache; returns (outputs, rows run, cache hits)."""
        plan = self.cache.plan(xs)
        if plan.runs_all:
            fresh = self._run_checked(xs)
        else:
            fresh = self._run_checked(xs[plan.first]) if plan.keys else np.empty((0, self.output_dim), np.float32)
        return self.cache.fill(plan, fresh), plan.misses, plan.hits


NON_FINITE_ANSWER = "the model produced non-finite outputs (NaN or inf) for this query; nothing was served"


def check_finite(out: np.ndarray) -> None:
    """Refuse a raw answer with NaN or infinite values (it is never cached, served or billed)."""
    if not np.isfinite(out).all():
        raise ValueError(NON_FINITE_ANSWER)


@dataclasses.dataclass
class CachePlan:
    """How one query is answered by a :class:`ResponseCache`: what it has, what the model must run.

    ``out`` (N, D) holds the cached rows already; each distinct missing row is ``keys[i]``, answering
    the query's rows ``rows[i]`` (``first`` lists the first of each, the rows to run); ``hits`` counts
    the rows the model does not run.
    """

    out: np.ndarray
    keys: list[bytes | None]
    rows: list[list[int]]
    hits: int

    @property
    def first(self) -> list[int]:
        return [r[0] for r in self.rows]

    @property
    def misses(self) -> int:
        """Rows the model has to run (distinct missing rows)."""
        return len(self.rows)

    @property
    def runs_all(self) -> bool:
        """Every row runs, in order (no cache): the query itself is what the model gets."""
        return self.misses == self.out.shape[0] and self.hits == 0 and all(k is None for k in self.keys)


class ResponseCache:
    """The response cache of a served victim: raw model outputs by the content hash of their input row.

    Least recently used rows are evicted first beyond ``size`` rows; ``size`` 0 disables it (no
    hashing; every row runs). Identical rows of one query run once. Not thread-safe: the victim (or
    server) that owns it serialises its use. Only finite outputs may be stored (:func:`check_finite`).
    """

    def __init__(self, size: int, dim: int) -> None:
        self.size = check_int("ResponseCache: size", size, low=0)
        self.dim = dim
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def key(row: np.ndarray) -> bytes:
        """The content hash of one prepared image row (shape included)."""
        h = hashlib.blake2b(digest_size=20)
        h.update(np.asarray(row.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(row).data)
        return h.digest()

    def plan(self, xs: np.ndarray) -> CachePlan:
        """Look every row of the prepared query ``xs`` (N, C, H, W) up; nothing is stored yet."""
        n = xs.shape[0]
        out = np.empty((n, self.dim), dtype=np.float32)
        if self.size == 0:
            return CachePlan(out, [None] * n, [[i] for i in range(n)], 0)
        missing: dict[bytes, list[int]] = {}
        for i in range(n):
            key = self.key(xs[i])
            cached = self._rows.get(key)
            if cached is not None:
                self._rows.move_to_end(key)
                out[i] = cached
            else:
                missing.setdefault(key, []).append(i)
        # A row answered by an identical row of the same query counts as a hit too (it is not run).
        return CachePlan(out, list(missing), list(missing.values()), n - len(missing))

    def fill(self, plan: CachePlan, fresh: np.ndarray) -> np.ndarray:
        """The whole answer: ``plan.out`` with the model's ``fresh`` rows (one per missing key) put in and cached."""
        if plan.runs_all:
            return fresh
        for key, rows, value in zip(plan.keys, plan.rows, fresh, strict=True):
            plan.out[rows] = value
            if key is not None:
                self._rows[key] = value.copy()
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)
        return plan.out
