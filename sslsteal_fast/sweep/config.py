"""Sweep configuration: a TOML grid parsed into the package's own, validated configuration objects.

A sweep file has these tables (only ``[victim]``, ``[probe]`` and ``[grid]`` are required)::

    name = "demo"                        # label used in the table and plot titles

    [datasets.probe-train]               # named datasets, referenced by name below
    spec = "shapes"                      # anything sslsteal_fast.data.load_dataset accepts; a
                                         # path in it ("npz:data/x.npz") is relative to this file,
                                         # "{data_root}" in it is the data root (see below)
    split = "train"                      # default "train"
    slice = [0, 2000]                    # optional [start, stop) rows taken after loading
    count = 5000                         # every other key is passed to load_dataset as an option

    [victim]                             # exactly one of onnx / checkpoint / url / [victim.train]
    onnx = "victim.onnx"                 # a served model (path relative to this file)
    checkpoint = "runs/victim"           # or a save_checkpoint prefix, exported to ONNX in --out
    url = "http://127.0.0.1:8000"        # or a running encoder API (sslsteal serve), with
    key_file = "thief.key"               # the key its answers are billed to (defended by its server)
    train_size = 5000                    # optional: the victim's training-set size (for the table)
    [victim.train]                       # or a victim trained with SimCLR, cached by its config:
    dataset = "shapes"; count = 5000     # any VictimTrainConfig field (sslsteal_fast.config)
    [victim.train.watermark]             # optional: train the rotation watermark in (WatermarkConfig)
    dataset = "digits"

    [probe]                              # downstream task for linear / kNN probes and fidelity
    train = "probe-train"; test = "probe-test"; epochs = 100; knn_k = 200   # + any ProbeConfig field
                                         # the two may not share an image (checked by content)

    [grid]                               # the cells: losses x budgets x query sets x seeds x defenses
    losses = ["mse", "info_nce"]; budgets = [250, 500, 1000]
    query_datasets = ["shapes", "shapes-ood"]; seeds = [0]; defenses = ["none", "noise:sigma=0.5"]
    attacks = ["direct", "prototype"]    # optional axes: attacks (default ["direct"]), strategies and
    strategies = ["query-once"]          # thief_archs (default: [steal] strategy / arch, which they
    thief_archs = ["small", "resnet18"]  # replace); an attack with its own loss takes it once, not
                                         # once per grid.losses, and only the direct attack augments
    attack_losses = { prototype = ["mse"] }   # optional: an attack's own list in place of grid.losses

    [steal]                              # StealConfig fields shared by every cell (not loss/budget/seed)
    arch = "small"; epochs = 20; strategy = "query-once"

    [defenses]                           # what the owner gives its defenses
    center = "probe-train"               # their centre: the victim's mean answer on these images

    [run]
    workers = 2                          # parallel cells on the CPU (process pool, spawn context)
    device = "auto"                      # auto (CUDA when present), cpu, cuda (every GPU) or cuda:N
    data_root = "~/data"                 # what "{data_root}" stands for (relative: to this file);
                                         # load_config(data_root=...) / --data-root overrides it

**The data root.** A path written in the file (a dataset spec's ``PATH``, ``victim.onnx``,
``victim.checkpoint``) may contain ``{data_root}``: ``spec = "cifar10:{data_root}/cifar-10-batches-py"``.
It stands for the folder given to :func:`load_config` as ``data_root`` (``sslsteal sweep
--data-root DIR``), else ``[run] data_root``; a file that uses it without either is an error, and so
is a data root that is not a folder. So one file serves every machine, wherever its datasets are.

A dataset reference that is not a key of ``[datasets]`` is read as a plain ``load_dataset`` spec
with no options, and its split is ``"train"`` except for ``probe.test``, where it is ``"test"`` (as
in ``sslsteal probe``; so is an inline table's without a ``split``). A ``[datasets]`` table's split
is its own (default ``"train"``).

Everything that can be checked without reading data is checked at load, before any victim is
trained or queried: every error is a ``ValueError`` naming the offending key (a dataset path that
does not exist: ``FileNotFoundError``); field values are checked by the configuration objects
themselves (:mod:`sslsteal_fast.config`), dataset options and their bounds by
:func:`sslsteal_fast.data.check_dataset`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslsteal_fast.config import (
    ARCHITECTURES,
    ATTACK_SPECS,
    ATTACKS,
    ENGINES,
    LOSSES,
    MAX_IMAGES,
    STRATEGIES,
    THIEF_CLIENT,
    ProbeConfig,
    StealConfig,
    VictimTrainConfig,
    WatermarkConfig,
    check_device,
    check_seed,
)
from sslsteal_fast.data import ImageDataset, check_dataset, load_dataset, parse_spec, resolve_spec
from sslsteal_fast.defenses import make_defense
from sslsteal_fast.util.checks import check_bool, check_choice, check_int, check_number, check_positive_int

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

__all__ = [
    "DATA_ROOT",
    "GRID_OWNED",
    "RUN_OWNED",
    "DatasetRef",
    "GridConfig",
    "ProbeTask",
    "RunConfig",
    "SweepConfig",
    "VictimSource",
    "load_config",
    "parse_config",
]

#: StealConfig fields the grid sets per cell (a ``[steal]`` table may not).
GRID_OWNED = ("loss", "budget", "seed", "client", "attack")
#: StealConfig fields a ``[steal]`` table may set for every cell, or the grid axis named here per cell
#: (not both).
GRID_OR_STEAL = {"strategy": "strategies", "arch": "thief_archs"}
#: StealConfig fields the sweep sets per worker from ``[run]`` (a ``[steal]`` table may not).
RUN_OWNED = ("device",)
#: What a path in a sweep file writes for the data root (``--data-root`` / ``[run] data_root``).
DATA_ROOT = "{data_root}"
#: VictimTrainConfig fields a sweep config may not set (the sweep and the victim cache own them).
_VICTIM_TRAIN_RESERVED = ("out", "device", "progress")


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

    @property
    def rows(self) -> int | None:
        """How many images it holds, when the config says (its slice or its ``count``); else None."""
        if self.slice is not None:
            return self.slice[1] - self.slice[0]
        count = self.options.get("count")
        return count if isinstance(count, int) else None

    def describe(self) -> str:
        """``name (spec, split)``: how errors name it."""
        return f"{self.name!r} ({self.spec}, split {self.split!r})"

    def load(self) -> ImageDataset:
        """Load the dataset, applying the row slice if any."""
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


@dataclass(frozen=True)
class VictimSource:
    """Where the victim comes from: an ONNX file, a checkpoint prefix, a SimCLR training run, or an API.

    ``train`` (with an optional ``watermark``) is trained once per configuration in the victim cache
    (:func:`sslsteal_fast.victim.trained_victim`). ``url`` is a running encoder API
    (``sslsteal serve``) queried with the key in ``key_file``: every query -- the thief's answers
    and the victim's own evaluation -- goes through that key and is billed to it, and the API's
    defenses are its server's.
    """

    onnx: Path | None = None
    url: str | None = None
    key_file: Path | None = None
    checkpoint: Path | None = None
    train: VictimTrainConfig | None = None
    watermark: WatermarkConfig | None = None
    train_size: int | None = None
    batch_size: int = 256

    def train_data(self) -> DatasetRef | None:
        """The victim's training images, when the sweep trains it (for the query-overlap check)."""
        if self.train is None:
            return None
        t = self.train
        options: dict[str, Any] = {"size": t.image_size, "seed": t.data_seed}
        if t.count is not None:
            options["count"] = t.count
        return DatasetRef(name=t.dataset, spec=t.dataset, split="train", options=options)


@dataclass(frozen=True)
class ProbeTask:
    """The downstream task every encoder is scored on: ``config`` probes fit on ``train``, scored on ``test``."""

    train: DatasetRef
    test: DatasetRef
    config: ProbeConfig = ProbeConfig()

    def key(self) -> dict[str, Any]:
        return {"train": self.train.key(), "test": self.test.key(), **dataclasses.asdict(self.config)}


@dataclass(frozen=True)
class GridConfig:
    """The axes; one cell per element of their product, with two exceptions: an attack with its own
    loss (:attr:`~sslsteal_fast.config.AttackSpec.loss`) takes it instead of every entry of ``losses``,
    and an attack runs only the ``strategies`` it supports (:meth:`methods`).

    ``strategies`` and ``thief_archs`` are None when the file does not give them: every cell then has
    ``[steal]``'s strategy and arch.
    """

    losses: tuple[str, ...]
    budgets: tuple[int, ...]
    query_datasets: tuple[DatasetRef, ...]
    seeds: tuple[int, ...] = (0,)
    defenses: tuple[str, ...] = ("none",)
    attacks: tuple[str, ...] = ("direct",)
    strategies: tuple[str, ...] | None = None
    thief_archs: tuple[str, ...] | None = None
    attack_losses: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def losses_of(self, attack: str) -> tuple[str, ...]:
        """The losses ``attack`` runs with: its own (fixed) loss, its ``attack_losses`` entry, else ``losses``."""
        fixed = ATTACK_SPECS[attack].loss
        return (fixed,) if fixed is not None else dict(self.attack_losses).get(attack, self.losses)

    def methods(self, steal: StealConfig) -> list[tuple[str, str, str, str]]:
        """Every (attack, strategy, arch, loss) of the grid, in the order of its axes.

        Without ``strategies`` / ``thief_archs`` every attack has ``steal``'s strategy / arch (an attack
        that does not support that strategy is a configuration error, found when the file is parsed).
        """
        out = []
        for attack in self.attacks:
            spec = ATTACK_SPECS[attack]
            strategies = [s for s in self.strategies if s in spec.strategies] if self.strategies else [steal.strategy]
            for strategy in strategies:
                for arch in self.thief_archs or (steal.arch,):
                    for loss in self.losses_of(attack):
                        out.append((attack, strategy, arch, loss))
        return out

    @property
    def size(self) -> int:
        """How many cells the grid has (the count does not depend on ``[steal]``'s strategy or arch)."""
        methods = len(self.methods(StealConfig()))
        return methods * len(self.budgets) * len(self.query_datasets) * len(self.seeds) * len(self.defenses)


@dataclass(frozen=True)
class RunConfig:
    """How to execute: parallel cells, threads per worker, whether to keep stolen encoders, the device.

    ``device``: where cells steal and probe (``auto``: CUDA when torch sees a GPU; ``cuda`` uses
    every visible GPU, ``cuda:N`` only that one). With CUDA, cells are placed several per GPU as
    free memory allows (``cells_per_gpu`` overrides the estimate). The device never enters a cell's
    id: results agree across devices up to float rounding, so a sweep resumes on any device.
    ``data_root``: the folder ``{data_root}`` stands for in the file's paths (absolute once parsed:
    the ``data_root`` argument of :func:`load_config` when given, else the file's own).

    ``engine``: ``local`` runs cells in this machine's process pool (``workers`` of them); ``ray`` runs
    each cell as a Ray task (:mod:`.ray_engine`) on a local Ray instance or, with ``address``
    (``auto``, ``host:port`` or ``ray://host:port``), on an existing cluster. A Ray cell reserves
    ``num_cpus`` cores (default: ``threads``, else 1) and ``num_gpus`` GPUs (fractions let several small
    thieves share one; default: ``1 / cells_per_gpu`` on CUDA, else 1 when the cluster has GPUs and
    ``device`` allows them, else 0). A task whose worker dies is retried up to ``max_retries`` times; a
    cell that raises is not retried (its error is recorded). None of these enter a cell's id.
    """

    workers: int = 1
    threads: int | None = None
    save_encoders: bool = False
    device: str = "auto"
    cells_per_gpu: int | None = None
    data_root: str | None = None
    engine: str = "local"
    address: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        check_positive_int("RunConfig.workers", self.workers)
        if self.threads is not None:
            check_positive_int("RunConfig.threads", self.threads)
        check_bool("RunConfig.save_encoders", self.save_encoders)
        check_device("RunConfig.device", self.device)
        if self.cells_per_gpu is not None:
            check_positive_int("RunConfig.cells_per_gpu", self.cells_per_gpu)
        if self.data_root is not None and (not isinstance(self.data_root, str) or not self.data_root):
            raise ValueError(f"RunConfig.data_root must be a folder path string, got {self.data_root!r}")
        check_choice("RunConfig.engine", self.engine, ENGINES)
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(
                f"RunConfig.address must be 'auto', 'host:port' or 'ray://host:port', got {self.address!r}"
            )
        if self.address is not None and self.engine != "ray":
            raise ValueError("RunConfig.address is the Ray cluster to join: it needs engine = 'ray'")
        if self.num_cpus is not None:
            check_number("RunConfig.num_cpus", self.num_cpus, low=0, strict=True)
        if self.num_gpus is not None:
            gpus = check_number("RunConfig.num_gpus", self.num_gpus, low=0)
            if gpus > 1 and not gpus.is_integer():
                raise ValueError(f"RunConfig.num_gpus above 1 must be a whole number of GPUs, got {self.num_gpus!r}")
        check_int("RunConfig.max_retries", self.max_retries, low=0)


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep, as parsed from TOML. ``raw`` keeps the original mapping for summary.json.

    ``steal`` holds the fields shared by every cell; each cell sets :data:`GRID_OWNED` on a copy.
    ``defense_center``: the images whose mean victim answer is every defense's ``center`` (or None).
    """

    name: str
    victim: VictimSource
    probe: ProbeTask
    grid: GridConfig
    steal: StealConfig
    run: RunConfig
    defense_center: DatasetRef | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    source: Path | None = None

    def with_workers(self, workers: int) -> SweepConfig:
        """A copy with ``run.workers`` replaced (the CLI's ``--workers``)."""
        return dataclasses.replace(self, run=dataclasses.replace(self.run, workers=workers))

    def cell_steal(
        self,
        loss: str,
        budget: int,
        seed: int,
        attack: str = "direct",
        strategy: str | None = None,
        arch: str | None = None,
    ) -> StealConfig:
        """The StealConfig of one cell: the shared fields plus the cell's axes (billed to the thief).

        ``strategy`` / ``arch`` None: ``[steal]``'s.
        """
        return dataclasses.replace(
            self.steal,
            loss=loss,
            budget=budget,
            seed=seed,
            client=THIEF_CLIENT,
            attack=attack,
            strategy=strategy or self.steal.strategy,
            arch=arch or self.steal.arch,
        )

    def steal_key(self, attack: str = "direct", strategy: str | None = None, arch: str | None = None) -> dict[str, Any]:
        """The steal settings of a cell but its loss, budget and seed, as they enter cell ids.

        The fields only some attacks read enter the ids of those attacks' cells only
        (:meth:`~sslsteal_fast.config.StealConfig.identity`), and ``attack`` only when it is not
        ``direct``, so the cells of a grid without the later axes keep the ids they always had.
        The device does not change a result beyond float rounding, so it is not the run's: it is
        pinned to ``"cpu"``, the value every cell id was made with before the device moved to
        ``[run]``, so that sweeps started earlier resume on any device.
        """
        cell = self.cell_steal(self.steal.loss, 1, 0, attack, strategy, arch)
        shared = {k: v for k, v in cell.identity().items() if k not in GRID_OWNED}
        return {**shared, "device": "cpu"}


# --------------------------------------------------------------------------------------------- parsing


def load_config(path: str | Path, data_root: str | Path | None = None) -> SweepConfig:
    """Read and validate a sweep TOML file; relative paths inside resolve against its folder.

    ``data_root``: the folder ``{data_root}`` stands for in the file's paths (a relative one is
    taken from the current directory); it overrides the file's ``[run] data_root``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, base_dir=path.parent, source=path, data_root=data_root)


def parse_config(
    raw: dict[str, Any],
    base_dir: str | Path = ".",
    source: Path | None = None,
    data_root: str | Path | None = None,
) -> SweepConfig:
    """Validate a parsed TOML mapping into a :class:`SweepConfig` (``ValueError`` naming the key).

    ``data_root`` (see :func:`load_config`) overrides ``[run] data_root``.
    """
    base_dir = Path(base_dir)
    _check_keys("", raw, {"name", "datasets", "victim", "probe", "grid", "steal", "defenses", "run"})
    for required in ("victim", "probe", "grid"):
        if required not in raw:
            raise ValueError(f"missing table [{required}]")
    name = raw.get("name", source.stem if source is not None else "sweep")
    if not isinstance(name, str) or not name:
        raise ValueError("name: expected a non-empty string")

    r = _table(raw, "run")
    _check_keys("run", r, {f.name for f in dataclasses.fields(RunConfig)})
    paths = _Paths(base_dir, _data_root(r.get("data_root"), data_root, base_dir))

    named = {
        key: _parse_dataset(f"datasets.{key}", key, value, paths) for key, value in _table(raw, "datasets").items()
    }

    def ref(where: str, value: Any, split: str = "train") -> DatasetRef:
        """A ``[datasets]`` name, or else a spec string or inline table (of split ``split`` unless it says)."""
        if isinstance(value, str) and value:
            return named.get(value) or _parse_dataset(where, value, value, paths, split)
        if isinstance(value, dict):
            return _parse_dataset(where, str(value.get("name", value.get("spec", where))), value, paths, split)
        raise ValueError(f"{where}: expected a dataset name or a table with a 'spec' key, got {value!r}")

    victim = _parse_victim(_table(raw, "victim"), paths)

    p = _table(raw, "probe")
    probe_fields = {f.name for f in dataclasses.fields(ProbeConfig)}
    _check_keys("probe", p, {"train", "test"} | probe_fields)
    for required in ("train", "test"):
        if required not in p:
            raise ValueError(f"probe.{required}: required (the downstream {required} dataset)")
    probe = ProbeTask(
        train=ref("probe.train", p["train"]),
        test=ref("probe.test", p["test"], split="test"),
        config=_build("probe", ProbeConfig, {k: v for k, v in p.items() if k in probe_fields}),
    )
    if probe.train.key() == probe.test.key():
        raise ValueError(
            f"probe.test: the same images as probe.train ({probe.train.describe()}); score the probes on a held-out "
            "set, e.g. the dataset's 'test' split"
        )

    grid = _parse_grid(_table(raw, "grid"), ref)
    s = _table(raw, "steal")
    for field_name, axis in GRID_OR_STEAL.items():
        if field_name in s and getattr(grid, axis) is not None:
            raise ValueError(
                f"grid.{axis}: [steal] {field_name} sets it for every cell as well; give one of grid.{axis} and "
                f"steal.{field_name}"
            )
    largest = max(grid.budgets)
    for i, q in enumerate(grid.query_datasets):
        if q.rows is not None and q.rows < largest:
            raise ValueError(
                f"grid.query_datasets[{i}]: {q.name!r} has {q.rows} images but the largest budget is {largest}; give "
                "it more images (e.g. a larger 'count' in its [datasets] table) or lower grid.budgets"
            )

    if "device" in s:
        raise ValueError("[steal] device: the device is a [run] setting; write it as [run] device")
    _check_keys("steal", s, {f.name for f in dataclasses.fields(StealConfig)} - set(GRID_OWNED))
    steal = _build("steal", StealConfig, s)
    methods = grid.methods(steal)
    if not methods:
        raise ValueError(
            f"grid.strategies: none of {list(grid.strategies or (steal.strategy,))} is a strategy of the attacks "
            f"{list(grid.attacks)} (only direct has 'augmented')"
        )
    for attack, strategy, arch, loss in methods:  # validate every cell's configuration now, not when it runs
        cell = dataclasses.replace(
            steal, loss=loss, budget=grid.budgets[0], attack=attack, strategy=strategy, arch=arch
        )
        _build("steal", cell.resolved, {})

    d = _table(raw, "defenses")
    _check_keys("defenses", d, {"center"})
    center = ref("defenses.center", d["center"]) if "center" in d else None

    if victim.url is not None:
        _check_url_victim(grid, steal, center)
    root = None if paths.data_root is None else str(paths.data_root)
    run = _build("run", RunConfig, {**r, "data_root": root})
    return SweepConfig(name, victim, probe, grid, steal, run, center, raw=raw, source=source)


def _check_url_victim(grid: GridConfig, steal: StealConfig, center: DatasetRef | None) -> None:
    """An API victim is defended by its server and answers each query set once (query-once cells only)."""
    if grid.defenses != ("none",):
        raise ValueError(
            "grid.defenses: a victim.url API is defended by its server (sslsteal keys add --defense); "
            'leave grid.defenses = ["none"]'
        )
    if center is not None:
        raise ValueError("defenses.center: a victim.url API's defenses are its server's; remove [defenses] center")
    if steal.strategy != "query-once":
        raise ValueError(
            f"steal.strategy: {steal.strategy!r} cells query the victim themselves, which a victim.url sweep does "
            'not do; use strategy = "query-once"'
        )


def _parse_victim(v: dict[str, Any], paths: _Paths) -> VictimSource:
    _check_keys("victim", v, {"onnx", "checkpoint", "url", "key_file", "train", "train_size", "batch_size"})
    sources = [k for k in ("onnx", "checkpoint", "url", "train") if k in v]
    if len(sources) != 1:
        raise ValueError(
            "victim: give exactly one of 'onnx' (a served model), 'checkpoint' (a save_checkpoint prefix), "
            f"'url' (a running encoder API) or a [victim.train] table; got {sources or 'none'}"
        )
    url = v.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ValueError(f"victim.url: expected an http:// or https:// URL, got {url!r}")
    if (url is None) != ("key_file" not in v):
        raise ValueError(
            "victim.key_file: required with victim.url (the API key, e.g. from sslsteal keys add), only then"
        )
    train = watermark = None
    if "train" in v:
        t = dict(_table(v, "train", "victim.train"))
        wm = t.pop("watermark", None)
        allowed = {f.name for f in dataclasses.fields(VictimTrainConfig)} - set(_VICTIM_TRAIN_RESERVED)
        _check_keys("victim.train", t, allowed | {"watermark"})
        if "dataset" not in t:
            raise ValueError("victim.train.dataset: required (the load_dataset spec the victim is trained on)")
        if not isinstance(t["dataset"], str) or not t["dataset"]:
            raise ValueError(f"victim.train.dataset: expected a load_dataset spec string, got {t['dataset']!r}")
        t["dataset"] = _resolve_spec("victim.train.dataset", t["dataset"], paths)
        train = _build("victim.train", VictimTrainConfig, {**t, "device": "auto"})
        options = {"size": train.image_size, "seed": train.data_seed, "count": train.count}
        _check_dataset("victim.train", train.dataset, "train", options)
        if wm is not None:
            if not isinstance(wm, dict):
                raise ValueError("victim.train.watermark: expected a table of WatermarkConfig fields")
            _check_keys("victim.train.watermark", wm, {f.name for f in dataclasses.fields(WatermarkConfig)})
            wm = dict(wm)
            if isinstance(wm.get("dataset"), str):
                wm["dataset"] = _resolve_spec("victim.train.watermark.dataset", wm["dataset"], paths)
            watermark = _build("victim.train.watermark", WatermarkConfig, wm)
            if watermark.dataset is not None:
                wm_options = {"size": train.image_size, "seed": watermark.data_seed, "count": watermark.count}
                _check_dataset("victim.train.watermark", watermark.dataset, watermark.split, wm_options)
    return VictimSource(
        onnx=_path("victim.onnx", v["onnx"], paths) if "onnx" in v else None,
        url=url,
        key_file=_path("victim.key_file", v["key_file"], paths) if "key_file" in v else None,
        checkpoint=_path("victim.checkpoint", v["checkpoint"], paths) if "checkpoint" in v else None,
        train=train,
        watermark=watermark,
        train_size=check_positive_int("victim.train_size", v["train_size"]) if "train_size" in v else None,
        batch_size=check_positive_int("victim.batch_size", v.get("batch_size", 256)),
    )


def _parse_grid(g: dict[str, Any], ref: Any) -> GridConfig:
    _check_keys(
        "grid",
        g,
        {"losses", "budgets", "query_datasets", "seeds", "defenses", "attacks", "strategies", "thief_archs"}
        | {"attack_losses"},
    )
    for required in ("losses", "budgets", "query_datasets"):
        if required not in g:
            raise ValueError(f"grid.{required}: required (a non-empty list)")
    losses = tuple(
        check_choice(f"grid.losses[{i}]", x, LOSSES) for i, x in enumerate(_list("grid.losses", g["losses"]))
    )
    budgets = tuple(
        check_positive_int(f"grid.budgets[{i}]", x) for i, x in enumerate(_list("grid.budgets", g["budgets"]))
    )
    for i, b in enumerate(budgets):
        if b > MAX_IMAGES:
            raise ValueError(
                f"grid.budgets[{i}] = {b:,} is too large: a budget counts distinct query images, at most {MAX_IMAGES:,} "
                "(a query set is held in memory)"
            )
    queries = tuple(
        ref(f"grid.query_datasets[{i}]", x) for i, x in enumerate(_list("grid.query_datasets", g["query_datasets"]))
    )
    seeds = tuple(check_seed(f"grid.seeds[{i}]", x) for i, x in enumerate(_list("grid.seeds", g.get("seeds", [0]))))
    defenses = tuple(
        _defense_spec(f"grid.defenses[{i}]", x)
        for i, x in enumerate(_list("grid.defenses", g.get("defenses", ["none"])))
    )
    attacks = tuple(
        check_choice(f"grid.attacks[{i}]", x, ATTACKS)
        for i, x in enumerate(_list("grid.attacks", g.get("attacks", ["direct"])))
    )
    strategies = thief_archs = None
    if "strategies" in g:
        strategies = tuple(
            check_choice(f"grid.strategies[{i}]", x, STRATEGIES)
            for i, x in enumerate(_list("grid.strategies", g["strategies"]))
        )
    if "thief_archs" in g:
        thief_archs = tuple(
            check_choice(f"grid.thief_archs[{i}]", x, ARCHITECTURES)
            for i, x in enumerate(_list("grid.thief_archs", g["thief_archs"]))
        )
    attack_losses = _attack_losses(g.get("attack_losses", {}), attacks)
    for axis, values in (
        ("attacks", attacks),
        ("strategies", strategies or ()),
        ("thief_archs", thief_archs or ()),
        ("losses", losses),
        ("budgets", budgets),
        ("seeds", seeds),
        ("defenses", defenses),
        ("query_datasets", [q.name for q in queries]),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"grid.{axis}: contains duplicates {list(values)}")
    return GridConfig(
        losses, tuple(sorted(budgets)), queries, seeds, defenses, attacks, strategies, thief_archs, attack_losses
    )


def _attack_losses(value: Any, attacks: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``grid.attack_losses``: per attack of the grid that takes a loss, its own non-empty list of losses."""
    if not isinstance(value, dict):
        raise ValueError(f"grid.attack_losses: expected a table of attack = [losses], got {value!r}")
    out = []
    for attack, listed in value.items():
        where = f"grid.attack_losses.{attack}"
        if attack not in attacks:
            raise ValueError(f"{where}: {attack!r} is not one of grid.attacks {list(attacks)}")
        if ATTACK_SPECS[attack].loss is not None:
            raise ValueError(f"{where}: the {attack} attack always trains with {ATTACK_SPECS[attack].loss}; drop it")
        losses = tuple(check_choice(f"{where}[{i}]", x, LOSSES) for i, x in enumerate(_list(where, listed)))
        if len(set(losses)) != len(losses):
            raise ValueError(f"{where}: contains duplicates {list(losses)}")
        out.append((attack, losses))
    return tuple(out)


def _defense_spec(where: str, value: Any) -> str:
    """A defense spec string, checked by building it once (errors name the key)."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a defense spec string such as 'none' or 'noise:sigma=0.5'")
    try:
        make_defense(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return value


def _build(where: str, make: Any, values: dict[str, Any]) -> Any:
    """``make(**values)``, its validation errors speaking of the TOML table they came from.

    A message about a field (``ProbeConfig.epochs must be ...``) names the key (``probe.epochs must
    be ...``); any other is prefixed with the table.
    """
    try:
        return make(**values)
    except ValueError as exc:
        message = str(exc)
        for cls in (ProbeConfig, StealConfig, VictimTrainConfig, WatermarkConfig, RunConfig):
            if message.startswith(f"{cls.__name__}."):
                raise ValueError(message.replace(f"{cls.__name__}.", f"{where}.", 1)) from None
        raise ValueError(f"{where}: {message}") from None


def _parse_dataset(where: str, name: str, value: Any, paths: _Paths, default_split: str = "train") -> DatasetRef:
    """A dataset reference, checked (spec, split, options and their bounds) without reading any data."""
    if isinstance(value, str):
        value = {"spec": value}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table with a 'spec' key (or a spec string), got {value!r}")
    if "spec" not in value or not isinstance(value["spec"], str) or not value["spec"]:
        raise ValueError(f"{where}.spec: required, a load_dataset spec such as 'shapes' or 'cifar10:PATH'")
    split = value.get("split", default_split)
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
        if sl[1] > MAX_IMAGES:
            raise ValueError(f"{where}.slice: stop = {sl[1]:,} is past the {MAX_IMAGES:,} images a dataset may hold")
        rows = (sl[0], sl[1])
    options = {k: x for k, x in value.items() if k not in ("spec", "split", "slice", "name")}
    spec = _resolve_spec(f"{where}.spec", value["spec"], paths)
    _check_dataset(where, spec, split, options)
    if rows is not None and isinstance(options.get("count"), int) and rows[1] > options["count"]:
        raise ValueError(
            f"{where}.slice: [{rows[0]}, {rows[1]}) goes past its {options['count']} images; lower the slice or raise "
            "its count"
        )
    return DatasetRef(name=name, spec=spec, split=split, options=options, slice=rows)


@dataclass(frozen=True)
class _Paths:
    """How a path written in the file resolves: ``{data_root}`` replaced, then relative to ``base``."""

    base: Path
    data_root: Path | None

    def expand(self, where: str, text: str) -> str:
        """``text`` with :data:`DATA_ROOT` replaced by the data root (an error naming ``where`` without one)."""
        if DATA_ROOT not in text:
            return text
        if self.data_root is None:
            raise ValueError(
                f"{where}: {text!r} is under {DATA_ROOT}, but no data root is given: pass the folder that holds the "
                "datasets (sslsteal sweep --data-root DIR; load_config(..., data_root=DIR)) or set [run] data_root"
            )
        return text.replace(DATA_ROOT, str(self.data_root))

    def hint(self, written: str) -> str:
        """Where a relative or ``{data_root}`` path ``written`` was looked for (for not-found errors)."""
        if DATA_ROOT in written:
            return f"{DATA_ROOT} is the data root {self.data_root}"
        return "relative paths start at the config's folder"


def _data_root(in_file: Any, given: str | Path | None, base_dir: Path) -> Path | None:
    """The data root: ``given`` (relative: to the current directory), else ``[run] data_root`` (to the file)."""
    if given is not None:
        root = Path(given).expanduser().resolve()
        where = "the data root"
    elif in_file is not None:
        if not isinstance(in_file, str) or not in_file or DATA_ROOT in in_file:
            raise ValueError(f"run.data_root: expected a folder path string, got {in_file!r}")
        root = Path(in_file).expanduser()
        root = (root if root.is_absolute() else base_dir / root).resolve()
        where = "run.data_root"
    else:
        return None
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{where}: {root} {what} (it should hold the datasets the config reads)")
    return root


def _resolve_spec(where: str, spec: str, paths: _Paths) -> str:
    """``spec`` with ``{data_root}`` replaced and a relative dataset path made relative to the config's folder.

    A path that does not exist is a ``FileNotFoundError`` now, before any victim is trained or queried.
    """
    expanded = paths.expand(where, spec)
    try:
        resolved = resolve_spec(expanded, paths.base)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    name, path = parse_spec(resolved)
    if path is not None and not path.exists():
        raise FileNotFoundError(f"{where}: {name} data not found at {path} ({paths.hint(spec)})")
    return resolved


def _check_dataset(where: str, spec: str, split: str, options: dict[str, Any]) -> None:
    options = {k: v for k, v in options.items() if v is not None}
    try:
        check_dataset(spec, split, **options)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _table(parent: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where or key}: expected a table, got {type(value).__name__}")
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


def _path(where: str, value: Any, paths: _Paths) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a path string, got {value!r}")
    path = Path(paths.expand(where, value)).expanduser()
    return path if path.is_absolute() else (paths.base / path)
