"""Sweep cells as Ray tasks: the same cells as the process pool, on a local Ray instance or a cluster.

``[run] engine = "ray"`` (``sslsteal sweep --engine ray [--address ADDR]``) changes only *where*
cells run. Everything else is the local engine's: the driver (the ``sslsteal sweep`` process)
prepares the data, the victim and its answers once, exactly as before, and is the single writer of
``results.sqlite``; a cell is :func:`.cell.run_cell`, unchanged.

**Session.** Without ``address`` a local Ray instance is started, sized to this machine
(``address="local"``, so a ``RAY_ADDRESS`` in the environment does not redirect it). Its processes
carry a :class:`~sslsteal_fast.util.reaper.Reaper` mark: if the driver is killed (SIGKILL
included), a watcher kills what Ray's own fate-sharing leaves behind (its agents), so no Ray process
outlives the sweep. With ``address`` (``auto``, ``host:port``, ``ray://host:port``) the driver joins
an existing cluster; the address is checked for reachability first (:data:`CONNECT_TIMEOUT_S`), so a
wrong one is a one-line error within seconds rather than Ray's long retries. When a driver on a
cluster dies, Ray ends its job and the job's tasks with it.

**Inputs** (query images, cached victim answers, probe data, the victim's own features, the ONNX
victim for augmented cells, the defense centre, the honest user's detection scores) are put in the
object store once per sweep, by the driver. A task is given references to them and the file
attributes (size, mtime) the driver saw: a worker on the driver's machine, or on a node sharing its
file system, reads the driver's file directly; any other node fetches the object once and keeps it
under its temp folder, content-addressed (:func:`_materialise`). Nothing is ever recomputed and the
victim is never queried again: a query-once cell's bill is its budget, as in the process pool.

**Outputs** (a detector cell's per-query scores, saved stolen encoders) are written by the worker to
a private temp folder and returned with the row; the driver writes them under ``--out`` and then
commits the row, so ``--out`` has one writer too.

**Resources and retries.** Each cell reserves ``num_cpus`` and ``num_gpus`` (:func:`cell_resources`;
fractions of a GPU let several small thieves share it) and runs with that many torch threads. A task
whose worker process or node dies is retried by Ray up to ``max_retries`` times; a cell that raises
is not (the same error would come back): it is recorded in the store's ``failures`` table and the
sweep goes on. A retried cell has the same seed, so the same result; if a cell still lands twice,
the store keeps one row (:class:`.grid.CellSink`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import socket
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from sslsteal_fast._version import __version__
from sslsteal_fast.sweep.cell import CellTask, run_cell, set_worker_device
from sslsteal_fast.sweep.config import RunConfig
from sslsteal_fast.sweep.grid import CellSink, available_cores
from sslsteal_fast.util.extras import require
from sslsteal_fast.util.files import atomic_write
from sslsteal_fast.util.reaper import Reaper

__all__ = [
    "CONNECT_TIMEOUT_S",
    "CellResources",
    "RaySession",
    "cell_resources",
    "check_address",
    "import_ray",
    "ray_session",
    "run_ray_cells",
]

#: Seconds to wait for a TCP connection to a cluster's address before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0
#: Seconds between two looks at finished tasks (a Ctrl-C is handled at least this often).
_WAIT_S = 1.0
#: CellTask fields that name an input file of the cell, shipped through the object store.
INPUT_FIELDS = (
    "queries_path",
    "answers_path",
    "onnx_path",
    "center_path",
    "probe_data_path",
    "victim_eval_path",
    "honest_detections_path",
)
#: Ray's logger that announces token authentication (on by default), which says nothing to a sweep that
#: starts and stops its own local instance.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: Appended to a failed join: Ray uses a cluster's token only when told to.
_AUTH_HINT = (
    " (a cluster with token authentication needs RAY_AUTH_MODE=token, and its token in ~/.ray/auth_token "
    "or RAY_AUTH_TOKEN, in the environment of the sweep)"
)
#: The name of a cell's Ray task (its workers' process title is ``ray::sweep_cell`` while it runs).
TASK_NAME = "sweep_cell"


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`~sslsteal_fast.util.extras.MissingExtra` saying how to install it."""
    return require("ray", "ray", "the Ray engine (engine = 'ray', --engine ray)")


def check_address(address: str) -> str:
    """``address`` if it has a Ray address's form and, for ``host:port``, something listens there.

    ``auto`` (the cluster this machine belongs to) is left to Ray. Anything else must be
    ``host:port`` or ``ray://host:port``; it is refused with a ``ValueError`` when no TCP connection
    to it opens within :data:`CONNECT_TIMEOUT_S`.
    """
    if address == "auto":
        return address
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Ray address must be 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {reason}") from exc
    return address


@dataclass
class RaySession:
    """A connected Ray driver: ``ray`` the module, ``address`` what it joined (``local``: an instance it started)."""

    ray: ModuleType
    address: str
    traffic: dict[str, int] = field(default_factory=lambda: {"put_bytes": 0, "put_objects": 0})


@contextlib.contextmanager
def ray_session(run: RunConfig, *, log: Any = print) -> Iterator[RaySession]:
    """Connect to Ray for the length of the block (see the module docstring), then shut down cleanly."""
    ray = import_ray()
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; the sweep manages its own connection")
    reaper: Reaper | None = None
    try:
        if run.address is None:
            reaper = Reaper()
            with _environ({**reaper.environ(), "RAY_USAGE_STATS_ENABLED": "0"}), _quiet(_RAY_AUTH_LOGGER):
                ray.init(
                    address="local",
                    num_cpus=available_cores(),
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=True,
                )
            address = "local"
        else:
            address = check_address(run.address)
            try:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                hint = "" if os.environ.get("RAY_AUTH_MODE") else _AUTH_HINT
                raise ValueError(f"cannot join the Ray cluster at {address!r}: {exc}{hint}") from exc
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        gpus = ray.cluster_resources().get("GPU", 0)
        log(f"sweep: Ray {ray.__version__} at {address}: {len(nodes)} node(s), {cpus} CPU(s), {gpus:g} GPU(s)")
        yield RaySession(ray, address)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if reaper is not None:
            reaper.finish()


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Logger ``name`` shows errors only for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` set for the block (the processes started in it inherit them)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class CellResources:
    """What one cell's task reserves, and so where it runs and with how many torch threads."""

    num_cpus: float
    num_gpus: float
    device: str
    threads: int
    slots: int


def cell_resources(run: RunConfig, nodes: list[dict[str, Any]]) -> CellResources:
    """A cell's reservation on a cluster of ``nodes`` (``ray.nodes()``): see :class:`.config.RunConfig`.

    Refuses (``ValueError``) a reservation no node can hold, which Ray would leave pending forever.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    cpus = run.num_cpus if run.num_cpus is not None else float(run.threads or 1)
    cluster_gpus = sum(r.get("GPU", 0) for r in alive)
    if run.num_gpus is not None:
        gpus = run.num_gpus
    elif run.device.startswith("cuda") or (run.device == "auto" and cluster_gpus > 0):
        gpus = 1.0 / run.cells_per_gpu if run.cells_per_gpu else 1.0
    else:
        gpus = 0.0
    if gpus > 0 and run.device == "cpu":
        raise ValueError(f"RunConfig.num_gpus = {gpus:g} contradicts device = 'cpu'")
    if run.device.startswith("cuda") and gpus == 0:
        raise ValueError(f"device = {run.device!r} needs RunConfig.num_gpus > 0 on the Ray engine")
    fits = [r for r in alive if r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus]
    if not fits:
        most = max((r.get("CPU", 0) for r in alive), default=0)
        most_gpu = max((r.get("GPU", 0) for r in alive), default=0)
        raise ValueError(
            f"no Ray node can hold a cell of {cpus:g} CPU(s) and {gpus:g} GPU(s) "
            f"(the largest node has {most:g} CPU(s), {most_gpu:g} GPU(s)); lower run.num_cpus / run.num_gpus"
        )
    slots = sum(int(min(r.get("CPU", 0) // cpus, r.get("GPU", 0) // gpus if gpus else math.inf) or 0) for r in fits)
    return CellResources(cpus, gpus, "cuda" if gpus > 0 else "cpu", max(1, int(cpus)), max(1, slots))


def run_ray_cells(session: RaySession, tasks: list[CellTask], sink: CellSink, run: RunConfig) -> list[str]:
    """Run ``tasks`` as Ray tasks into ``sink`` (the driver commits each row as it lands); returns failed ids."""
    ray = session.ray
    failed_before = len(sink.failed)
    res = cell_resources(run, ray.nodes())
    sink.log(
        f"sweep: {len(tasks)} cells as Ray tasks of {res.num_cpus:g} CPU(s) and {res.num_gpus:g} GPU(s) each "
        f"({res.slots} at a time, on {res.device}, {res.threads} torch thread(s)); a dead worker's cell is "
        f"retried up to {run.max_retries} time(s)"
    )
    shipped = _ship_inputs(session, tasks)
    remote = ray.remote(_sweep_cell).options(
        name=TASK_NAME,
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        max_retries=run.max_retries,
        retry_exceptions=False,
    )
    pending: dict[Any, CellTask] = {}
    for task in tasks:
        sent = dataclasses.replace(task, threads=res.threads, device=res.device, progress=False)
        files = {p: shipped[p] for f in INPUT_FIELDS if (p := getattr(task, f)) is not None}
        pending[remote.remote(sent, files, __version__)] = task
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_WAIT_S)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # its worker or node died, retries spent
                    sink.fail(task, f"{type(exc).__name__} after {run.max_retries} retries: {exc}")
                    continue
                if result["error"] is not None:  # the cell raised: its traceback, from the worker
                    sink.fail(task, result["error"], result["node"])
                else:
                    for path, data in result["files"].items():
                        atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
                    sink.done(task, result["row"])
    finally:
        for ref in pending:  # interrupted: stop what is still queued or running on the cluster
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
    return sink.failed[failed_before:]


def _ship_inputs(session: RaySession, tasks: list[CellTask]) -> dict[str, dict[str, Any]]:
    """Put every distinct input file of ``tasks`` in the object store once: path -> its reference and stat."""
    shipped: dict[str, dict[str, Any]] = {}
    for task in tasks:
        for f in INPUT_FIELDS:
            path = getattr(task, f)
            if path is None or path in shipped:
                continue
            data = Path(path).read_bytes()
            st = os.stat(path)
            shipped[path] = {
                "ref": session.ray.put(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
            session.traffic["put_bytes"] += len(data)
            session.traffic["put_objects"] += 1
    return shipped


def _sweep_cell(task: CellTask, files: dict[str, dict[str, Any]], driver_version: str) -> dict[str, Any]:
    """The Ray task: one cell on this worker, its inputs local.

    Returns ``{"row", "files", "error", "node"}``: the row and the output files (driver path -> bytes),
    or the traceback of a cell that raised (a returned error, not a raised one: Ray retries only
    a dead worker, and the traceback reads as the local engine's).
    """
    try:
        row, returned = _cell_here(task, files, driver_version)
    except Exception:  # noqa: BLE001 - a failed cell is recorded by the driver, the sweep goes on
        return {"row": None, "files": {}, "error": traceback.format_exc(), "node": socket.gethostname()}
    return {"row": row, "files": returned, "error": None, "node": row["node"]}


def _cell_here(
    task: CellTask, files: dict[str, dict[str, Any]], driver_version: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    if driver_version != __version__:
        raise RuntimeError(
            f"this Ray worker on {socket.gethostname()} has sslsteal_fast {__version__}, the driver "
            f"{driver_version}: install the same version on every node"
        )
    local = {path: _materialise(path, meta) for path, meta in files.items()}
    work = Path(tempfile.mkdtemp(prefix="sslsteal-cell-"))
    try:
        inputs = {f: local[p] for f in INPUT_FIELDS if (p := getattr(task, f)) is not None}
        outputs = {
            "encoder_prefix": None if task.encoder_prefix is None else str(work / "encoder"),
            "detections_path": None if task.detections_path is None else str(work / "detections.safetensors"),
        }
        set_worker_device(None)  # the task's device: Ray has made its GPU (if any) the only visible one
        torch.set_num_threads(task.threads)
        row = run_cell(dataclasses.replace(task, **inputs, **outputs))
        returned: dict[str, bytes] = {}
        if task.detections_path is not None and (work / "detections.safetensors").exists():
            returned[task.detections_path] = (work / "detections.safetensors").read_bytes()
        if task.encoder_prefix is not None:
            for produced in sorted(work.glob("encoder*")):
                returned[task.encoder_prefix + produced.name.removeprefix("encoder")] = produced.read_bytes()
        return row, returned
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _materialise(path: str, meta: dict[str, Any]) -> str:
    """A local path holding the driver's file ``path``: the driver's own when this node sees it unchanged,
    else a copy fetched once from the object store into a content-addressed temp folder."""
    try:
        st = os.stat(path)
        if st.st_size == meta["size"] and st.st_mtime_ns == meta["mtime_ns"]:
            return path
    except OSError:
        pass
    target = Path(tempfile.gettempdir()) / "sslsteal-ray-inputs" / meta["sha256"] / Path(path).name
    if not target.exists():
        import ray  # noqa: PLC0415 - only inside a Ray worker, where it is installed

        data = ray.get(meta["ref"])
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise RuntimeError(f"the object store returned a corrupt copy of {path}")
        atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))  # workers racing for it write the same bytes
    return str(target)
