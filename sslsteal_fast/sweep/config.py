"""Sweep configuration: a TOML grid parsed into typed, validated dataclasses.

A sweep config has six tables (only ``[victim]``, ``[probe]`` and ``[grid]`` are required)::

    name = "demo"                        # label used in the table and plot titles

    [datasets.probe-train]               # named datasets, referenced by name below
    spec = "shapes"                      # anything sslsteal_fast.data.load_dataset accepts
    split = "train"                      # default "train"
    slice = [0, 2000]                    # optional [start, stop) rows taken after loading
    count = 5000                         # every other key is passed to load_dataset as an option

    [victim]                             # exactly one of onnx / checkpoint / [victim.train]
    onnx = "victim.onnx"                 # a served model (path relative to this file)
    checkpoint = "runs/victim"           # or a save_checkpoint prefix, exported to ONNX in --out
    train_size = 5000                    # optional: the victim's training-set size (for the table)
    [victim.train]                       # or a victim trained with SimCLR, cached by its config:
    dataset = "shapes"; count = 5000     # any VictimTrainConfig field (sslsteal_fast.victim.train)

    [probe]                              # downstream task for linear / kNN probes and fidelity
    train = "probe-train"; test = "probe-test"; epochs = 100; knn_k = 200

    [grid]                               # the cells: losses x budgets x query sets x seeds x defenses
    losses = ["mse", "info_nce"]; budgets = [250, 500, 1000]
    query_datasets = ["shapes", "shapes-ood"]; seeds = [0]; defenses = ["none"]

    [steal]                              # StealConfig fields shared by every cell
    arch = "small"; epochs = 20; strategy = "query-once"

    [run]
    workers = 2                          # parallel cells (process pool, spawn context)

A dataset reference that is not a key of ``[datasets]`` is read as a plain ``load_dataset`` spec
(split ``"train"``, no options). Every error is a ``ValueError`` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

__all__ = [
    "DatasetRef",
    "VictimSpec",
    "VictimTrainSpec",
    "ProbeSpec",
    "GridSpec",
    "StealSpec",
    "RunSpec",
    "SweepConfig",
    "load_config",
    "parse_config",
    "stable_hash",
    "STRATEGIES",
    "DEFENSES",
]

# Query strategies of sslsteal_fast.attacks.StealConfig.
STRATEGIES = ("query-once", "augmented")
# Output defenses a sweep can put in front of the victim: "none" or any spec
# sslsteal_fast.defenses.make_defense parses ("noise:sigma=0.5", "detection:threshold=0.6", ...).
DEFENSES = ("none", "noise", "quantize", "topk", "detection", "coverage")


def _defense_spec(where: str, value: Any) -> str:
    """A defense spec string, checked by building it once (errors name the key)."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a defense spec string such as 'none' or 'noise:sigma=0.5'")
    if value == "none":
        return value
    from sslsteal_fast.defenses import make_defense

    try:
        make_defense(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return value


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex SHA-256 prefix of the canonical JSON of ``obj`` (sorted keys): a stable content id."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@dataclass(frozen=True)
class DatasetRef:
    """How to load one dataset: ``load_dataset(spec, split, **options)[slice]``.

    ``name`` is the label used in results (the ``[datasets]`` key, or the spec itself).
    """

    name: str
    spec: str
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)
    slice: tuple[int, int] | None = None

    def key(self) -> dict[str, Any]:
        """Everything that determines the images (not the label): used in cache and cell ids."""
        return {"spec": self.spec, "split": self.split, "options": self.options, "slice": self.slice}

    def load(self) -> Any:
        """Load the dataset (an ``ImageDataset``), applying the row slice if any."""
        from sslsteal_fast.data import load_dataset

        ds = load_dataset(self.spec, split=self.split, **self.options)
        if self.slice is not None:
            start, stop = self.slice
            if stop > len(ds):
                raise ValueError(
                    f"dataset {self.name!r}: slice [{start}, {stop}) goes past its {len(ds)} images; "
                    "lower the slice or raise its count"
                )
            ds = ds.subset(slice(start, stop))
        return ds


# VictimTrainConfig fields a sweep config may not set (the sweep owns them).
_VICTIM_TRAIN_RESERVED = ("out", "device", "progress")


@dataclass(frozen=True)
class VictimTrainSpec:
    """A victim trained with SimCLR by the sweep (cached across runs, keyed by its full config).

    ``options`` are fields of :class:`sslsteal_fast.victim.train.VictimTrainConfig` (every field but
    ``out``, ``device`` and ``progress``); unset fields take that class's defaults. The victim trains
    on the ``train`` split of ``dataset`` loaded with ``size=image_size, count=count, seed=data_seed``.
    """

    options: dict[str, Any]

    def config(self, out: str = "", progress: bool = False) -> Any:
        """The ``VictimTrainConfig`` (validated by its constructor)."""
        from sslsteal_fast.victim.train import VictimTrainConfig

        return VictimTrainConfig(out=out, device="auto", progress=progress, **self.options)

    def key(self) -> dict[str, Any]:
        """Every result-determining field, defaults included (a changed default retrains)."""
        return {k: v for k, v in self.config().identity().items() if k != "out"}

    def __getattr__(self, name: str) -> Any:
        # dataset, arch, epochs, count, image_size, data_seed, ...: read from the resolved config.
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        return getattr(self.config(), name)

    def dataset_ref(self) -> DatasetRef:
        """The victim's training images, as a dataset reference (for the query-overlap check)."""
        cfg = self.config()
        options: dict[str, Any] = {"size": cfg.image_size, "seed": cfg.data_seed}
        if cfg.count is not None:
            options["count"] = cfg.count
        return DatasetRef(name=cfg.dataset, spec=cfg.dataset, split="train", options=options)


@dataclass(frozen=True)
class VictimSpec:
    """Where the victim comes from: an ONNX file, a checkpoint prefix, or a training spec."""

    onnx: Path | None = None
    checkpoint: Path | None = None
    train: VictimTrainSpec | None = None
    train_size: int | None = None
    batch_size: int = 256


@dataclass(frozen=True)
class ProbeSpec:
    """Downstream evaluation: linear probe, kNN probe and fidelity on ``test``."""

    train: DatasetRef
    test: DatasetRef
    epochs: int = 100
    lr: float | None = None
    knn_k: int = 200
    knn_temperature: float = 0.07
    batch_size: int = 256

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.key()
        d["test"] = self.test.key()
        return d


@dataclass(frozen=True)
class GridSpec:
    """The axes; one cell per element of their product."""

    losses: tuple[str, ...]
    budgets: tuple[int, ...]
    query_datasets: tuple[DatasetRef, ...]
    seeds: tuple[int, ...] = (0,)
    defenses: tuple[str, ...] = ("none",)

    @property
    def size(self) -> int:
        return len(self.losses) * len(self.budgets) * len(self.query_datasets) * len(self.seeds) * len(self.defenses)


@dataclass(frozen=True)
class StealSpec:
    """StealConfig fields shared by every cell (``None`` -> the attack's paper default)."""

    arch: str = "small"
    epochs: int = 20
    strategy: str = "query-once"
    batch_size: int | None = None
    lr: float | None = None
    temperature: float | None = None
    augment: bool = True


@dataclass(frozen=True)
class RunSpec:
    """How to execute: parallel cells, threads per worker, whether to keep stolen encoders."""

    workers: int = 1
    threads: int | None = None
    save_encoders: bool = False


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep, as parsed from TOML. ``raw`` keeps the original mapping for summary.json."""

    name: str
    victim: VictimSpec
    probe: ProbeSpec
    grid: GridSpec
    steal: StealSpec
    run: RunSpec
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    source: Path | None = None

    def with_workers(self, workers: int) -> SweepConfig:
        """A copy with ``run.workers`` replaced (the CLI's ``--workers``)."""
        _check_int("run.workers", workers, minimum=1)
        run = RunSpec(workers=workers, threads=self.run.threads, save_encoders=self.run.save_encoders)
        return SweepConfig(self.name, self.victim, self.probe, self.grid, self.steal, run, self.raw, self.source)


# --------------------------------------------------------------------------------------------- parsing


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file; relative paths inside resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: dict[str, Any], base_dir: str | Path = ".", source: Path | None = None) -> SweepConfig:
    """Validate a parsed TOML mapping into a :class:`SweepConfig` (``ValueError`` naming the key)."""
    from sslsteal_fast.attacks import LOSSES
    from sslsteal_fast.models import ARCHITECTURES

    base_dir = Path(base_dir)
    _check_keys("", raw, {"name", "datasets", "victim", "probe", "grid", "steal", "run"})
    for required in ("victim", "probe", "grid"):
        if required not in raw:
            raise ValueError(f"missing table [{required}]")
    name = raw.get("name", source.stem if source is not None else "sweep")
    if not isinstance(name, str) or not name:
        raise ValueError("name: expected a non-empty string")

    datasets = _table(raw, "datasets", "datasets")
    named: dict[str, DatasetRef] = {}
    for key, value in datasets.items():
        named[key] = _parse_dataset(f"datasets.{key}", key, value)

    def ref(where: str, value: Any) -> DatasetRef:
        if isinstance(value, str) and value:
            return named.get(value) or DatasetRef(name=value, spec=value)
        if isinstance(value, dict):
            return _parse_dataset(where, str(value.get("name", value.get("spec", where))), value)
        raise ValueError(f"{where}: expected a dataset name or a table with a 'spec' key, got {value!r}")

    # [victim]
    v = _table(raw, "victim", "victim")
    _check_keys("victim", v, {"onnx", "checkpoint", "train", "train_size", "batch_size"})
    sources = [k for k in ("onnx", "checkpoint", "train") if k in v]
    if len(sources) != 1:
        raise ValueError(
            "victim: give exactly one of 'onnx' (a served model), 'checkpoint' (a save_checkpoint prefix) "
            f"or a [victim.train] table; got {sources or 'none'}"
        )
    train_spec = None
    if "train" in v:
        t = _table(v, "train", "victim.train")
        from sslsteal_fast.victim.train import VictimTrainConfig

        allowed = {f.name for f in dataclasses.fields(VictimTrainConfig)} - set(_VICTIM_TRAIN_RESERVED)
        _check_keys("victim.train", t, allowed)
        if "dataset" not in t:
            raise ValueError("victim.train.dataset: required (the load_dataset spec the victim is trained on)")
        if not isinstance(t["dataset"], str) or not t["dataset"]:
            raise ValueError(f"victim.train.dataset: expected a load_dataset spec string, got {t['dataset']!r}")
        if "arch" in t:
            _choice("victim.train.arch", t["arch"], ARCHITECTURES)
        train_spec = VictimTrainSpec(dict(t))
        try:
            train_spec.config()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"victim.train: {exc}") from exc
    victim = VictimSpec(
        onnx=_path("victim.onnx", v["onnx"], base_dir) if "onnx" in v else None,
        checkpoint=_path("victim.checkpoint", v["checkpoint"], base_dir) if "checkpoint" in v else None,
        train=train_spec,
        train_size=_check_int("victim.train_size", v["train_size"], minimum=1) if "train_size" in v else None,
        batch_size=_check_int("victim.batch_size", v.get("batch_size", 256), minimum=1),
    )

    # [probe]
    p = _table(raw, "probe", "probe")
    _check_keys("probe", p, {"train", "test", "epochs", "lr", "knn_k", "knn_temperature", "batch_size"})
    for required in ("train", "test"):
        if required not in p:
            raise ValueError(f"probe.{required}: required (the downstream {required} dataset)")
    probe = ProbeSpec(
        train=ref("probe.train", p["train"]),
        test=ref("probe.test", p["test"]),
        epochs=_check_int("probe.epochs", p.get("epochs", 100), minimum=1),
        lr=_check_float("probe.lr", p["lr"]) if "lr" in p else None,
        knn_k=_check_int("probe.knn_k", p.get("knn_k", 200), minimum=1),
        knn_temperature=_check_float("probe.knn_temperature", p.get("knn_temperature", 0.07)),
        batch_size=_check_int("probe.batch_size", p.get("batch_size", 256), minimum=1),
    )

    # [grid]
    g = _table(raw, "grid", "grid")
    _check_keys("grid", g, {"losses", "budgets", "query_datasets", "seeds", "defenses"})
    for required in ("losses", "budgets", "query_datasets"):
        if required not in g:
            raise ValueError(f"grid.{required}: required (a non-empty list)")
    losses = tuple(_choice(f"grid.losses[{i}]", x, LOSSES) for i, x in enumerate(_list("grid.losses", g["losses"])))
    budgets = tuple(
        _check_int(f"grid.budgets[{i}]", x, minimum=1) for i, x in enumerate(_list("grid.budgets", g["budgets"]))
    )
    queries = tuple(
        ref(f"grid.query_datasets[{i}]", x) for i, x in enumerate(_list("grid.query_datasets", g["query_datasets"]))
    )
    seeds = tuple(
        _check_int(f"grid.seeds[{i}]", x, minimum=0) for i, x in enumerate(_list("grid.seeds", g.get("seeds", [0])))
    )
    defenses = tuple(
        _defense_spec(f"grid.defenses[{i}]", x)
        for i, x in enumerate(_list("grid.defenses", g.get("defenses", ["none"])))
    )
    for axis, values in (
        ("losses", losses),
        ("budgets", budgets),
        ("seeds", seeds),
        ("defenses", defenses),
        ("query_datasets", [q.name for q in queries]),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"grid.{axis}: contains duplicates {list(values)}")
    grid = GridSpec(losses, tuple(sorted(budgets)), queries, seeds, defenses)

    # [steal]
    s = _table(raw, "steal", "steal")
    _check_keys("steal", s, {"arch", "epochs", "strategy", "batch_size", "lr", "temperature", "augment"})
    augment = s.get("augment", True)
    if not isinstance(augment, bool):
        raise ValueError(f"steal.augment: expected true or false, got {augment!r}")
    steal = StealSpec(
        arch=_choice("steal.arch", s.get("arch", "small"), ARCHITECTURES),
        epochs=_check_int("steal.epochs", s.get("epochs", 20), minimum=1),
        strategy=_choice("steal.strategy", s.get("strategy", "query-once"), STRATEGIES),
        batch_size=_check_int("steal.batch_size", s["batch_size"], minimum=2) if "batch_size" in s else None,
        lr=_check_float("steal.lr", s["lr"]) if "lr" in s else None,
        temperature=_check_float("steal.temperature", s["temperature"]) if "temperature" in s else None,
        augment=augment,
    )

    # [run]
    r = _table(raw, "run", "run")
    _check_keys("run", r, {"workers", "threads", "save_encoders"})
    save = r.get("save_encoders", False)
    if not isinstance(save, bool):
        raise ValueError(f"run.save_encoders: expected true or false, got {save!r}")
    run = RunSpec(
        workers=_check_int("run.workers", r.get("workers", 1), minimum=1),
        threads=_check_int("run.threads", r["threads"], minimum=1) if "threads" in r else None,
        save_encoders=save,
    )
    return SweepConfig(name, victim, probe, grid, steal, run, raw=raw, source=source)


def _parse_dataset(where: str, name: str, value: Any) -> DatasetRef:
    if isinstance(value, str):
        return DatasetRef(name=name, spec=value)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table with a 'spec' key (or a spec string), got {value!r}")
    if "spec" not in value or not isinstance(value["spec"], str) or not value["spec"]:
        raise ValueError(f"{where}.spec: required, a load_dataset spec such as 'shapes' or 'cifar10:PATH'")
    split = value.get("split", "train")
    if not isinstance(split, str) or not split:
        raise ValueError(f"{where}.split: expected a split name such as 'train' or 'test', got {split!r}")
    rows = None
    if "slice" in value:
        sl = value["slice"]
        if (
            not isinstance(sl, list)
            or len(sl) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in sl)
            or not 0 <= sl[0] < sl[1]
        ):
            raise ValueError(f"{where}.slice: expected [start, stop] with 0 <= start < stop, got {sl!r}")
        rows = (sl[0], sl[1])
    options = {k: x for k, x in value.items() if k not in ("spec", "split", "slice", "name")}
    return DatasetRef(name=name, spec=value["spec"], split=split, options=options, slice=rows)


def _table(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"{prefix}{unknown[0]}: unknown key (allowed here: {', '.join(sorted(allowed))})")


def _list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list, got {value!r}")
    return value


def _check_int(where: str, value: Any, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _check_float(where: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{where}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return float(value)


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _path(where: str, value: Any, base_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a path string, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)
