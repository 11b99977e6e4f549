"""The settings a user chooses: names, the paper's defaults, and the configuration of each stage.

Everything here is plain Python (no torch), so the command line can offer these choices and
defaults, and sweep files can be validated, without loading the ML stack. Each name and default is
defined once, here; the stages import them.

* ``*Config`` classes are validated dataclasses of settings (``ValueError`` naming the field).
* A *spec* elsewhere in the package is a short string a user writes to name a thing: a dataset
  spec (``"cifar10:~/data"``), a defense spec (``"noise:sigma=0.5"``).

Defaults follow Dziedzic et al., *On the Difficulty of Defending Self-Supervised Learning against
Model Extraction* (ICML 2022), App. C, unless a field's comment says otherwise.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from sslsteal_fast.util.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive_int,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LRS",
    "DEVICES",
    "ENGINES",
    "HONEST_CLIENT",
    "LOSSES",
    "MAX_DATASET_BYTES",
    "MAX_IMAGES",
    "MAX_IMAGE_SIZE",
    "MAX_SEED",
    "OPTIMIZERS",
    "REP_DIMS",
    "STRATEGIES",
    "TEMPERATURES",
    "THIEF_CLIENT",
    "VICTIM_LOSSES",
    "ProbeConfig",
    "StealConfig",
    "VictimTrainConfig",
    "WatermarkConfig",
    "check_device",
    "check_seed",
]

# ------------------------------------------------------------------------------------------ names

#: Encoder architectures of :func:`sslsteal_fast.models.build_encoder`.
ARCHITECTURES = ("small", "resnet18", "resnet34", "resnet50")
#: Representation dimension of each architecture (what a victim API of that architecture returns).
REP_DIMS = {"small": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048}
#: Stealing losses (:mod:`sslsteal_fast.attacks.losses`).
LOSSES = ("mse", "info_nce", "soft_nn", "wasserstein", "cosine")
#: Contrastive losses a victim can be trained with (:mod:`sslsteal_fast.victim.train`).
VICTIM_LOSSES = ("info_nce", "soft_nn")
#: The paper's temperatures at CIFAR scale; only the two contrastive losses have one.
TEMPERATURES = {"info_nce": 0.07, "soft_nn": 100.0}
#: Query strategies of :func:`sslsteal_fast.attacks.steal` (see :class:`StealConfig`).
STRATEGIES = ("query-once", "augmented")
#: The paper's batch sizes: 64 for the losses on single pairs, 256 for the contrastive ones.
DEFAULT_BATCH_SIZES = {"mse": 64, "wasserstein": 64, "cosine": 64, "info_nce": 256, "soft_nn": 256}
#: The paper's Adam learning rates: 1e-3, 3e-4 for InfoNCE.
DEFAULT_LRS = {"mse": 1e-3, "wasserstein": 1e-3, "cosine": 1e-3, "info_nce": 3e-4, "soft_nn": 1e-3}
#: Optimisers of the linear probe.
OPTIMIZERS = ("lbfgs", "adam")
#: The client names experiments bill: a legitimate downstream user and the attacker.
HONEST_CLIENT = "honest"
THIEF_CLIENT = "thief"

# ------------------------------------------------------------------------------------------ bounds

#: Largest seed: results stores keep seeds in SQLite INTEGER columns (signed 64-bit) and torch
#: generators take at most 2**64 - 1, so 2**63 - 1 is the largest value both accept.
MAX_SEED = 2**63 - 1
#: Largest side (pixels) a dataset's images may be loaded at: datasets are held in memory as uint8
#: (N, C, H, W) tensors; the paper's encoders take 32 px, ImageNet's 224 px.
MAX_IMAGE_SIZE = 1024
#: Most images one dataset may hold (held in memory; the largest standard set read here, SVHN
#: ``extra``, has 531,131).
MAX_IMAGES = 10_000_000
#: Most memory one dataset's images may take once loaded (N x C x size x size bytes).
MAX_DATASET_BYTES = 64 * 2**30


#: The device settings every stage takes: ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``,
#: ``cuda`` and ``cuda:N``. Results do not depend on the device beyond float rounding, so the device
#: never enters a run's identity (checkpoints, cache entries, sweep cell ids).
DEVICES = ("auto", "cpu", "cuda")
_DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")
#: How a sweep's cells run: this machine's process pool, or Ray tasks (``[run] engine``).
ENGINES = ("local", "ray")


def check_device(name: str, value: Any) -> str:
    """``value`` if it is a device setting (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); else an error naming ``name``."""
    if not isinstance(value, str) or not _DEVICE_SPEC.fullmatch(value):
        raise ValueError(f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    return value


def check_seed(name: str, value: Any) -> int:
    """``value`` if it is an int in ``[0, MAX_SEED]``; else an error naming ``name``."""
    check_int(name, value)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"{name} must be an int >= 0 and <= 2**63 - 1 (seeds are stored as signed 64-bit integers), got {value!r}"
        )
    return int(value)


# ------------------------------------------------------------------------------------------ victim

#: VictimTrainConfig fields that do not change the result (a run may resume with other values).
_RESUME_FREE = ("out", "device", "progress")
#: Fields added after the first release: left out of a run's identity at their default, so the victims
#: cached (and checkpoints written) before them keep their identity.
_LATER_FIELDS = {"rotation": 0.0, "translate": 0.0, "min_zoom": 1.0, "grayscale_p": 0.2}


@dataclass
class VictimTrainConfig:
    """Everything that defines a SimCLR victim training run (all of it is recorded in the checkpoint).

    ``dataset``: a :func:`~sslsteal_fast.data.load_dataset` spec; its ``train`` split is used,
    resized to ``image_size``; ``count`` limits the number of training images (for ``shapes`` it is
    how many are generated) and ``data_seed`` is the dataset's generation / subset seed.
    ``crop_min_scale``: smallest random-resized-crop area (the paper's 0.08 by default).
    ``rotation`` (degrees either way), ``translate`` (fraction of the side) and ``min_zoom`` (scale
    factor drawn from [min_zoom, 1]): a random affine step before the crop, off by default as in the
    paper, for data whose classes ignore pose (:class:`~sslsteal_fast.data.SimCLRAugment`).
    ``grayscale_p``: probability that a view is turned grey (the paper's 0.2; higher makes colour a
    weaker cue to tell images apart).
    ``temperature``: ``None`` means the loss's default (:data:`TEMPERATURES`). ``out``: checkpoint
    prefix. ``device``: ``"cpu"``, ``"cuda"``, ... or ``"auto"`` (CUDA when available).
    """

    dataset: str = "shapes"
    out: str = "runs/victim"
    arch: str = "small"
    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    temperature: float | None = None
    loss: str = "info_nce"
    seed: int = 0
    image_size: int = 32
    count: int | None = None
    data_seed: int = 0
    proj_dim: int = 128
    crop_min_scale: float = 0.08
    rotation: float = 0.0
    translate: float = 0.0
    min_zoom: float = 1.0
    grayscale_p: float = 0.2
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_choice("arch", self.arch, ARCHITECTURES)
        check_choice("loss", self.loss, VICTIM_LOSSES)
        for field in ("epochs", "image_size", "proj_dim"):
            check_positive_int(f"{name}.{field}", getattr(self, field))
        check_int(f"{name}.batch_size", self.batch_size, low=2)  # contrastive learning needs negatives
        check_seed(f"{name}.seed", self.seed)
        check_seed(f"{name}.data_seed", self.data_seed)
        if self.count is not None:
            check_int(f"{name}.count", self.count, low=2)
        self.lr = check_number(f"{name}.lr", self.lr, low=0.0, strict=True)
        self.weight_decay = check_number(f"{name}.weight_decay", self.weight_decay, low=0.0)
        self.crop_min_scale = check_number(f"{name}.crop_min_scale", self.crop_min_scale, low=0.0, high=1.0)
        if self.crop_min_scale == 0.0:
            raise ValueError(f"{name}.crop_min_scale must be in (0, 1], got 0.0")
        self.rotation = check_number(f"{name}.rotation", self.rotation, low=0.0, high=180.0)
        self.translate = check_number(f"{name}.translate", self.translate, low=0.0, high=1.0)
        self.min_zoom = check_number(f"{name}.min_zoom", self.min_zoom, low=0.0, high=1.0)
        if self.min_zoom == 0.0:
            raise ValueError(f"{name}.min_zoom must be in (0, 1], got 0.0")
        self.grayscale_p = check_number(f"{name}.grayscale_p", self.grayscale_p, low=0.0, high=1.0)
        if self.temperature is not None:
            self.temperature = check_number(f"{name}.temperature", self.temperature, low=0.0, strict=True)
        check_bool(f"{name}.progress", self.progress)
        check_device(f"{name}.device", self.device)
        self.out = str(self.out)

    @property
    def resolved_temperature(self) -> float:
        """The temperature in use: the given one, else the loss's default."""
        return float(self.temperature if self.temperature is not None else TEMPERATURES[self.loss])

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result (everything but out, device and progress display)."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in _RESUME_FREE and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])
        }


@dataclass(frozen=True)
class WatermarkConfig:
    """The rotation watermark trained into a victim (Dziedzic et al. 2022, Sec. 6).

    ``dataset``/``split``/``count``/``data_seed``: the rotation task's images (None = the victim's
    own training set); ``weight``: the rotation loss's weight next to the contrastive loss;
    ``batch_size``: rotated images per step; ``hidden``: the head's hidden width.
    """

    dataset: str | None = None
    split: str = "train"
    count: int | None = None
    data_seed: int = 0
    weight: float = 1.0
    batch_size: int = 128
    hidden: int = 128

    def __post_init__(self) -> None:
        check_number("WatermarkConfig.weight", self.weight, low=0.0, strict=True)
        check_int("WatermarkConfig.batch_size", self.batch_size, low=2)
        check_positive_int("WatermarkConfig.hidden", self.hidden)
        check_seed("WatermarkConfig.data_seed", self.data_seed)
        if self.count is not None:
            check_int("WatermarkConfig.count", self.count, low=2)


# ------------------------------------------------------------------------------------------ attack


@dataclass
class StealConfig:
    """How to steal. ``None`` fields resolve to the paper's per-loss defaults (recorded in the result).

    Attributes:
        loss: one of :data:`LOSSES`.
        arch: the stolen model's architecture (one of :data:`ARCHITECTURES`); it need not be the victim's.
        budget: number of distinct query images (the first ``budget`` rows of the query set).
        epochs: passes over the budget (paper: 100).
        batch_size: None -> :data:`DEFAULT_BATCH_SIZES`; clipped to the budget.
        lr: Adam learning rate; None -> :data:`DEFAULT_LRS`.
        temperature: None -> :data:`TEMPERATURES` (info_nce, soft_nn); an error for the other losses.
        strategy: ``"query-once"``: each image is sent once and its answer cached, augmentations are
            local and free; ``"augmented"``: augmented views are sent every epoch, each billed (the
            paper's accounting).
        augment: apply ``SimCLRAugment`` to the stolen model's inputs (and, in ``"augmented"``, to what
            is sent to the victim).
        augment_strength: ``SimCLRAugment(strength=...)`` in [0, 1] (scales colour jitter; crops, flips and
            blur are always the paper's); 1.0 = the paper's SimCLR augmentations.
        weight_decay: Adam weight decay (paper: 0).
        victim_batch_size: rows per call to ``victim.query`` when filling the query-once cache.
        client: the client name queries are billed to.
        seed: seeds the stolen model's initialisation, batch order and augmentations (the caller's
            global RNG state is left untouched).
        device: where the stolen model trains: ``"auto"`` (CUDA when torch sees a GPU, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Not part of a result's identity (results
            agree across devices up to float rounding).
    """

    loss: str = "info_nce"
    arch: str = "small"
    budget: int = 9000
    epochs: int = 100
    batch_size: int | None = None
    lr: float | None = None
    temperature: float | None = None
    strategy: str = "query-once"
    augment: bool = True
    augment_strength: float = 1.0
    weight_decay: float = 0.0
    victim_batch_size: int = 256
    client: str = "default"
    seed: int = 0
    device: str = "auto"

    def resolved(self) -> StealConfig:
        """A validated copy with every ``None`` replaced by its default; raises ValueError on bad fields."""
        check_choice("loss", self.loss, LOSSES)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("architecture", self.arch, ARCHITECTURES)
        for field in ("budget", "epochs", "victim_batch_size"):
            check_positive_int(f"StealConfig.{field}", getattr(self, field))
        check_seed("StealConfig.seed", self.seed)
        if self.batch_size is not None:
            check_positive_int("StealConfig.batch_size", self.batch_size)
        if self.lr is not None:
            check_number("StealConfig.lr", self.lr, low=0.0, strict=True)
        check_number("StealConfig.augment_strength", self.augment_strength, low=0.0, high=1.0)
        check_number("StealConfig.weight_decay", self.weight_decay, low=0.0)
        check_bool("StealConfig.augment", self.augment)
        check_device("StealConfig.device", self.device)
        if not isinstance(self.client, str) or not self.client:
            raise ValueError(f"StealConfig.client must be a non-empty string, got {self.client!r}")
        return dataclasses.replace(
            self,
            batch_size=self.batch_size if self.batch_size is not None else DEFAULT_BATCH_SIZES[self.loss],
            lr=float(self.lr) if self.lr is not None else DEFAULT_LRS[self.loss],
            temperature=loss_temperature(self.loss, self.temperature),
        )


def loss_temperature(loss: str, temperature: float | None) -> float | None:
    """The temperature a stealing loss runs at: ``temperature``, else the paper's; None for losses without one.

    Raises ValueError for a temperature given to a loss that has none, or one that is not > 0.
    """
    if loss not in TEMPERATURES:
        if temperature is not None:
            raise ValueError(
                f"loss {loss!r} has no temperature (only {', '.join(TEMPERATURES)} do); drop the temperature"
            )
        return None
    if temperature is None:
        return TEMPERATURES[loss]
    return check_number("temperature", temperature, low=0.0, strict=True)


# ------------------------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class ProbeConfig:
    """How an encoder is scored on a downstream task (:func:`sslsteal_fast.probes.probe_features`).

    Linear probe: multinomial logistic regression on standardised frozen features, ``epochs``
    full-batch iterations of ``optimizer`` (``"lbfgs"``, or ``"adam"`` seeded with ``seed``), ``lr``
    None for the optimiser's default, L2 ``weight_decay``. kNN probe: weighted cosine vote of the
    ``knn_k`` nearest training rows, weight ``exp(similarity / knn_temperature)`` (InstDisc, Wu et al.
    2018). ``batch_size``: images per forward pass when features are extracted.
    """

    epochs: int = 100
    lr: float | None = None
    weight_decay: float = 1e-4
    optimizer: str = "lbfgs"
    knn_k: int = 200
    knn_temperature: float = 0.07
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("ProbeConfig.epochs", self.epochs)
        if self.lr is not None:
            check_number("ProbeConfig.lr", self.lr, low=0.0, strict=True)
        check_number("ProbeConfig.weight_decay", self.weight_decay, low=0.0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive_int("ProbeConfig.knn_k", self.knn_k)
        check_number("ProbeConfig.knn_temperature", self.knn_temperature, low=0.0, strict=True)
        check_positive_int("ProbeConfig.batch_size", self.batch_size)
        check_seed("ProbeConfig.seed", self.seed)
