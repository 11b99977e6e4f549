"""SimCLR victim training (``sslsteal train-victim``): one loop, resumable, with hooks for extra losses.

Two augmented views per image (:class:`~sslsteal_fast.data.SimCLRAugment`), an encoder + projection
head (:class:`~sslsteal_fast.models.SimCLRModel`), the package's fused contrastive loss
(:func:`sslsteal_fast.ops.info_nce`, NT-Xent, tau = 0.07; or :func:`sslsteal_fast.ops.soft_nn` with
each image's two views as the positive pair), Adam, and a cosine learning-rate schedule evaluated per
step over exactly ``epochs * steps_per_epoch`` steps (it never wraps around).

Hooks (:class:`TrainHook`) add a task to the same loop: each step a hook may contribute extra images,
which go through the model in the same forward pass as the views, and a loss on their outputs that
is added to the contrastive loss; its trainable module shares the optimiser, is saved in the
training state and so resumes with the run. The rotation watermark
(:class:`sslsteal_fast.ownership.WatermarkHook`) is one, so a watermarked victim trains, resumes,
caches and exports like any other.

Reproducibility and resuming. The seed fixes the weight initialisation, and every epoch re-seeds the
global RNG (used by the augmentations) and the epoch generator (shuffling, and whatever hooks draw)
from ``(seed, epoch)``; so the RNG state at an epoch boundary is a function of the config, and a run
resumed from its epoch-k state is bit-for-bit the run that was never interrupted. After each epoch
the model, the hooks' modules, the optimiser state and the progress are written atomically to
``<out>.train-state.safetensors`` (tensors, with the JSON bookkeeping in its header; never pickle).
Re-running with the same ``out`` resumes from there; when the final checkpoint (``<out>.safetensors``
+ ``<out>.json``, via :func:`~sslsteal_fast.models.save_checkpoint`) and every hook's files exist,
the call returns at once. The state file is removed once the final checkpoint is written.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslsteal_fast import ops
from sslsteal_fast.config import VICTIM_LOSSES, VictimTrainConfig, check_device
from sslsteal_fast.data import ImageDataset, SimCLRAugment, images_sha256, load_dataset, resolve_spec, to_float
from sslsteal_fast.models import SimCLRModel, build_encoder, checkpoint_paths, save_checkpoint
from sslsteal_fast.util.checks import ArgumentTypeError
from sslsteal_fast.util.files import load_tensors, save_tensors
from sslsteal_fast.util.progress import progress_bar, progress_write

logger = logging.getLogger(__name__)

__all__ = [
    "LOSSES",
    "TrainHook",
    "VictimTrainConfig",
    "gpu_visible",
    "is_finished",
    "resolve_device",
    "run_identity",
    "state_path",
    "train_victim",
    "training_views",
]

#: The contrastive losses a victim trains with.
LOSSES = VICTIM_LOSSES
_STATE_FORMAT = "sslsteal_fast.victim-train-state/1"
_STATE_HEADER = "state"


class TrainHook:
    """An extra task trained jointly with SimCLR (subclass and override what you need).

    Lifecycle, driven by :func:`train_victim`:

    1. :meth:`setup` once, after the model is built: load data, build the trainable module (returned;
       its parameters join the optimiser after the model's, and its state is saved and resumed).
    2. Every step, :meth:`extra_inputs` may return float images (B', C, H, W) on the device; they go
       through the model after the two views. :meth:`loss` gets the representations and projections
       of exactly those rows and returns the loss to add (already weighted). Draw any randomness from
       the ``generator`` passed in (the epoch generator), never the global RNG, so resuming stays exact.
    3. :meth:`end_epoch` returns this epoch's metrics (recorded per epoch in the checkpoint metadata).
    4. :meth:`finish` writes the hook's own files next to the checkpoint (:meth:`artifacts` lists them).

    ``name`` keys the hook in the metadata, the training state and the victim cache;
    :meth:`identity` is everything that determines its effect on the result.
    """

    name: str = "hook"

    def identity(self) -> dict[str, Any]:
        return {}

    def setup(self, cfg: VictimTrainConfig, model: SimCLRModel, data: ImageDataset, device: torch.device) -> nn.Module:
        raise NotImplementedError

    def extra_inputs(self, generator: torch.Generator) -> torch.Tensor | None:
        return None

    def loss(self, rep: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def end_epoch(self) -> dict[str, float]:
        return {}

    def artifacts(self, prefix: Path) -> tuple[Path, ...]:
        return ()

    def finish(self, prefix: Path, metadata: dict[str, Any]) -> None:
        return None


@dataclass
class _Progress:
    epochs_done: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    hook_metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: float = 0.0


def state_path(out: str | Path) -> Path:
    """Where the per-epoch training state of run ``out`` lives."""
    weights, _ = checkpoint_paths(out)
    return weights.with_name(weights.name.replace(".safetensors", ".train-state.safetensors"))


def run_identity(cfg: VictimTrainConfig, hooks: Sequence[TrainHook] = ()) -> dict[str, Any]:
    """What determines a run's result: the config's identity, plus each hook's (when there are hooks).

    Every entry point (training, the victim cache) goes through here, so bad arguments fail here.
    """
    if not isinstance(cfg, VictimTrainConfig):
        raise ArgumentTypeError(f"train_victim: cfg must be a VictimTrainConfig, got {type(cfg).__name__}")
    names = [getattr(h, "name", None) for h in hooks]
    if not all(isinstance(h, TrainHook) for h in hooks) or len(set(names)) != len(names):
        raise ValueError(f"train_victim: hooks must be TrainHook objects with distinct names, got {list(hooks)!r}")
    identity = cfg.identity()
    if hooks:
        identity["hooks"] = {h.name: h.identity() for h in hooks}
    return identity


def resolve_device(device: str | torch.device) -> torch.device:
    """A device setting as a torch device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    ``"auto"`` is CUDA whenever torch sees a GPU, else the CPU; when a GPU is visible to the system
    (``nvidia-smi``, ``/dev/nvidiactl`` or ``CUDA_VISIBLE_DEVICES``) but this torch has no CUDA, it
    warns once, loudly, saying how to install a CUDA build. A CUDA device that is not there is a
    ``ValueError``. Every stage (victim training, stealing, probes, the sweep, the CLI) resolves its
    ``device`` here.
    """
    if isinstance(device, torch.device):
        device = str(device)
    check_device("device", device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        _warn_cpu_torch_on_gpu_machine()
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available (no GPU visible, or torch built without CUDA); "
                "use device 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: there are only {count} CUDA device(s)")
    return dev


_CPU_TORCH_WARNED = False


def gpu_visible() -> bool:
    """Whether the system shows an NVIDIA GPU, whatever torch was built with."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    if Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir():
        return True
    return _nvidia_smi_lists_a_gpu()


@functools.lru_cache(maxsize=1)
def _nvidia_smi_lists_a_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def _warn_cpu_torch_on_gpu_machine() -> None:
    """``auto`` chose the CPU: say so, once and loudly, when the machine has a GPU torch cannot use."""
    global _CPU_TORCH_WARNED
    if _CPU_TORCH_WARNED or not gpu_visible():
        return
    _CPU_TORCH_WARNED = True
    if torch.version.cuda is None:
        message = (
            f"sslsteal_fast: a GPU is visible but this torch {torch.__version__} is a CPU-only build, so "
            "device 'auto' runs on the CPU (much slower). Install a CUDA build of torch, e.g. "
            "`pip install torch --index-url https://download.pytorch.org/whl/cu128` (pick the CUDA version "
            "of your driver at https://pytorch.org/get-started/locally/), then rebuild the extension."
        )
    else:
        message = (
            f"sslsteal_fast: a GPU is visible but torch {torch.__version__} (CUDA {torch.version.cuda}) cannot "
            "use it (torch.cuda.is_available() is False: a driver older than torch's CUDA, or no device "
            "permissions?), so device 'auto' runs on the CPU (much slower). Check `nvidia-smi` and "
            "`python -c 'import torch; torch.cuda.init()'`."
        )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x51C1A]).generate_state(1)[0])


def training_views(cfg: VictimTrainConfig) -> SimCLRAugment:
    """The view generator a run of ``cfg`` trains with (ownership tests reuse it: the owner knows its recipe)."""
    return SimCLRAugment(
        cfg.image_size,
        min_scale=cfg.crop_min_scale,
        rotation=cfg.rotation,
        translate=cfg.translate,
        min_zoom=cfg.min_zoom,
        grayscale_p=cfg.grayscale_p,
    )


def _cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``total`` (clamped: no wrap-around)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def _contrastive_loss(cfg: VictimTrainConfig, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Loss of two projected views (B, proj_dim) each; row i of p1 and row i of p2 are positives."""
    t = cfg.resolved_temperature
    if cfg.loss == "info_nce":
        return ops.info_nce(p1, p2, temperature=t)
    pairs = torch.arange(p1.shape[0], device=p1.device).repeat(2)
    return ops.soft_nn(torch.cat([p1, p2]), pairs, temperature=t)


# ------------------------------------------------------------------------------------ state save/load


def _save_state(
    path: Path,
    identity: dict[str, Any],
    modules: dict[str, nn.Module],
    opt: torch.optim.Optimizer,
    prog: _Progress,
) -> None:
    tensors: dict[str, torch.Tensor] = {
        f"{prefix}.{k}": v.detach().clone() for prefix, mod in modules.items() for k, v in mod.state_dict().items()
    }
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{idx}.{name}"] = value.detach().clone()
    header = {
        "format": _STATE_FORMAT,
        "config": identity,
        "progress": dataclasses.asdict(prog),
        "param_groups": opt_state["param_groups"],
    }
    save_tensors(path, tensors, header, header=_STATE_HEADER)


def _load_state(path: Path, modules: dict[str, nn.Module], opt: torch.optim.Optimizer) -> tuple[dict, _Progress]:
    tensors, header = load_tensors(path, header=_STATE_HEADER)
    if header.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path} is not a train-victim state file (format {header.get('format')!r}); delete it")
    for prefix, mod in modules.items():
        head = prefix + "."
        mod.load_state_dict({k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": header["param_groups"]})
    return header["config"], _Progress(**header["progress"])


def _check_same_run(what: Path, saved: dict[str, Any], mine: dict[str, Any]) -> None:
    diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} there vs {mine.get(k)!r} now" for k in diff)
        raise ValueError(f"{what} belongs to a run with other settings ({detail}); use another --out or delete it")


def is_finished(prefix: str | Path, hooks: Sequence[TrainHook] = ()) -> bool:
    """Whether the checkpoint of run ``prefix`` and every hook's files exist."""
    prefix = Path(prefix)
    files = (*checkpoint_paths(prefix), *(p for h in hooks for p in h.artifacts(prefix)))
    return all(p.is_file() for p in files)


# ------------------------------------------------------------------------------------------- training


def train_victim(
    cfg: VictimTrainConfig,
    hooks: Sequence[TrainHook] = (),
    *,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> Path:
    """Train (or resume, or find finished) a SimCLR victim; returns the checkpoint prefix ``Path(cfg.out)``.

    ``hooks`` add tasks trained jointly (see :class:`TrainHook`). ``on_epoch_end(epoch, mean_loss)`` is
    called after each epoch's state is saved (epochs count from 1); an exception raised there stops
    training, and the next call resumes after that epoch.
    """
    identity = run_identity(cfg, hooks)
    prefix = Path(cfg.out)
    if is_finished(prefix, hooks):
        meta = json.loads(checkpoint_paths(prefix)[1].read_text())
        _check_same_run(checkpoint_paths(prefix)[1], _saved_identity(meta), identity)
        return prefix

    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, "train", size=cfg.image_size, count=cfg.count, seed=cfg.data_seed)
    n = len(data)
    if n < 2:
        raise ValueError(f"{cfg.dataset}: need at least 2 training images, got {n}")
    images = data.images.to(device)
    in_channels = int(images.shape[1])
    batch = min(cfg.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: every step has `batch` negatives pairs
    total_steps = cfg.epochs * steps_per_epoch

    torch.manual_seed(cfg.seed)
    model = SimCLRModel(build_encoder(cfg.arch, in_channels), proj_dim=cfg.proj_dim).to(device)
    modules: dict[str, nn.Module] = {"model": model}
    for hook in hooks:
        modules[f"hook.{hook.name}"] = hook.setup(cfg, model, data, device).to(device)
    channels_last = device.type == "cpu"  # ~1.5x faster convolutions on CPU
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for mod in modules.values() for p in mod.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = training_views(cfg)

    spath = state_path(prefix)
    prog = _Progress()
    if spath.is_file():
        saved, prog = _load_state(spath, modules, opt)
        _check_same_run(spath, saved, identity)

    for epoch in range(prog.epochs_done, cfg.epochs):
        start = time.perf_counter()
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 1)
        order = torch.randperm(n, generator=generator)
        for mod in modules.values():
            mod.train()
        total = 0.0
        bar = progress_bar(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not cfg.progress,
            leave=False,
        )
        for i in bar:
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(cfg.lr, epoch * steps_per_epoch + i, total_steps)
            x = to_float(images[order[i * batch : (i + 1) * batch].to(device)])
            extra = [hook.extra_inputs(generator) for hook in hooks]
            inputs = torch.cat([augment(x), augment(x), *(e for e in extra if e is not None)])
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            rep, proj = model(inputs)
            loss = _contrastive_loss(cfg, proj[:batch], proj[batch : 2 * batch])
            start_row = 2 * batch
            for hook, e in zip(hooks, extra, strict=True):
                if e is not None:
                    rows = slice(start_row, start_row + e.shape[0])
                    loss = loss + hook.loss(rep[rows], proj[rows])
                    start_row += e.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        prog.epochs_done = epoch + 1
        prog.epoch_losses.append(total / steps_per_epoch)
        for hook in hooks:
            for key, value in hook.end_epoch().items():
                prog.hook_metrics.setdefault(hook.name, {}).setdefault(key, []).append(value)
        prog.seconds += time.perf_counter() - start
        _save_state(spath, identity, modules, opt, prog)
        if cfg.progress:
            extras = "".join(
                f", {hook} {key} {values[-1]:.3f}"
                for hook, metrics in prog.hook_metrics.items()
                for key, values in metrics.items()
            )
            progress_write(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {prog.epoch_losses[-1]:.4f}{extras} ({prog.seconds:.1f} s)"
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, prog.epoch_losses[-1])

    metadata: dict[str, Any] = {
        "dataset": cfg.dataset,
        "split": "train",
        "train_size": n,
        "num_classes": data.num_classes,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "count": cfg.count,
        "epochs": cfg.epochs,
        "batch_size": batch,
        "steps": total_steps,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "loss": cfg.loss,
        "temperature": cfg.resolved_temperature,
        "crop_min_scale": cfg.crop_min_scale,
        "rotation": cfg.rotation,
        "translate": cfg.translate,
        "min_zoom": cfg.min_zoom,
        "grayscale_p": cfg.grayscale_p,
        "epoch_losses": prog.epoch_losses,
        "train_seconds": round(prog.seconds, 3),
        "torch": torch.__version__,
        "trained_by": "sslsteal train-victim (SimCLR" + "".join(f" + {h.name}" for h in hooks) + ")",
        "train_config": cfg.identity(),
        "train_data": {  # how to load the training images again, and their hash to check it
            "spec": resolve_spec(cfg.dataset),
            "split": "train",
            "options": {"size": cfg.image_size, "count": cfg.count, "seed": cfg.data_seed},
            "images_sha256": images_sha256(data.images),
        },
        "device": str(device),
    }
    if hooks:
        metadata["hooks"] = identity["hooks"]
        metadata["hook_metrics"] = prog.hook_metrics
    save_checkpoint(prefix, model.cpu(), metadata)
    for hook in hooks:
        hook.finish(prefix, metadata)
    spath.unlink(missing_ok=True)
    return prefix


def _saved_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The run identity a checkpoint's metadata records (see :func:`run_identity`)."""
    identity = dict(meta.get("train_config", {}))
    if "hooks" in meta:
        identity["hooks"] = meta["hooks"]
    return identity
