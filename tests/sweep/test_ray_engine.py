"""The Ray engine: the same rows as the process pool, retried dead workers, resumable driver kills, clear errors.

Each test that starts Ray bounds its own run time (subprocess timeouts, polling deadlines) and ends
its Ray instance: in-process through the sweep's own session, in a subprocess with the process, whose
Ray processes are then checked gone by process listing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sslsteal_fast.sweep import ResultStore, load_config, run_sweep
from sslsteal_fast.sweep.cell import CellTask
from sslsteal_fast.sweep.config import RunConfig
from sslsteal_fast.sweep.grid import RUN_DEPENDENT_COLUMNS, CellSink
from sslsteal_fast.sweep.ray_engine import cell_resources, check_address
from sslsteal_fast.sweep.store import CELL_COLUMNS
from sslsteal_fast.util.files import load_tensors
from sslsteal_fast.util.reaper import MARK_VARIABLE, marked_processes, reap
from tests.sweep.test_resume_kill import alive, committed

ROOT = Path(__file__).resolve().parents[2]
LINUX = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="lists processes through /proc")
needs_ray = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None, reason="needs the ray extra (pip install .[ray])"
)
#: Seconds any one Ray sweep of these tests may take before it counts as hung.
SWEEP_TIMEOUT_S = 240
#: Seconds Ray's processes get to disappear after their driver ends.
GONE_TIMEOUT_S = 30


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _sslsteal(*args: str) -> list[str]:
    return [sys.executable, "-m", "sslsteal_fast", *args]


def _rows(out: Path) -> dict[str, dict[str, object]]:
    with ResultStore(out / "results.sqlite") as store:
        return {r["cell_id"]: {k: v for k, v in r.items() if k not in RUN_DEPENDENT_COLUMNS} for r in store.cells()}


def _descendants(root: int) -> dict[int, bytes]:
    """pid -> cmdline of every live process below ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry.name)] = ppid
    found: dict[int, bytes] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = cmdlines.get(child, b"")
                frontier.append(child)
    return found


def _mark_of(pids: dict[int, bytes]) -> str | None:
    """The reaper mark in the environment of any of ``pids`` (the sweep's local Ray processes)."""
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(MARK_VARIABLE.encode() + b"="):
                return item.split(b"=", 1)[1].decode()
    return None


def _running_cells(driver: int) -> list[int]:
    """Ray workers below ``driver`` that are running a sweep cell right now (by their process title)."""
    return [pid for pid, cmd in _descendants(driver).items() if cmd.startswith(b"ray::sweep_cell")]


def _wait_for(condition: Callable[[], object], timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _assert_no_ray_left(mark: str | None, pids: dict[int, bytes]) -> None:
    """Neither the processes seen under the driver nor anything carrying its Ray mark is still running."""
    assert mark is not None, "the local Ray processes carry no reaper mark"

    def all_gone() -> bool:
        return not marked_processes(mark) and not [p for p in pids if alive(p)]

    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline and not all_gone():
        time.sleep(0.2)
    left = {p: pids.get(p, b"?")[:60] for p in set(marked_processes(mark)) | {p for p in pids if alive(p)}}
    for pid in left:  # do not leave them to the next test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"Ray processes outlived their sweep: {left}"


# --- configuration (no Ray needed) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"engine": "dask"}, "unknown RunConfig.engine 'dask'"),
        ({"engine": "local", "address": "auto"}, "needs engine = 'ray'"),
        ({"engine": "ray", "address": " "}, "RunConfig.address must be"),
        ({"engine": "ray", "num_cpus": 0}, "RunConfig.num_cpus must be"),
        ({"engine": "ray", "num_gpus": -0.5}, "RunConfig.num_gpus must be"),
        ({"engine": "ray", "num_gpus": 1.5}, "whole number of GPUs"),
        ({"engine": "ray", "max_retries": -1}, "RunConfig.max_retries must be"),
    ],
)
def test_bad_engine_settings_name_the_key(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig(**fields)  # type: ignore[arg-type]


def _node(cpus: float, gpus: float = 0) -> dict[str, object]:
    return {"Alive": True, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_cell_resources_share_gpus_in_fractions_and_count_slots() -> None:
    cpu = cell_resources(RunConfig(engine="ray", threads=2), [_node(8), _node(4)])
    assert (cpu.num_cpus, cpu.num_gpus, cpu.device, cpu.threads, cpu.slots) == (2, 0, "cpu", 2, 6)
    shared = cell_resources(RunConfig(engine="ray", device="cuda", cells_per_gpu=4), [_node(16, 2)])
    assert (shared.num_gpus, shared.device, shared.slots) == (0.25, "cuda", 8)
    auto = cell_resources(RunConfig(engine="ray", num_gpus=0.5, num_cpus=0.5), [_node(2, 1)])
    assert (auto.threads, auto.slots) == (1, 2)
    assert cell_resources(RunConfig(engine="ray"), [_node(4, 1)]).device == "cuda"  # auto: the cluster has GPUs


@pytest.mark.parametrize(
    ("run", "nodes", "message"),
    [
        (RunConfig(engine="ray", num_cpus=8), [_node(4)], "no Ray node can hold a cell of 8 CPU"),
        (RunConfig(engine="ray", num_gpus=1), [_node(4)], "no Ray node can hold a cell of 1 CPU"),
        (RunConfig(engine="ray", device="cpu", num_gpus=1), [_node(4, 1)], "contradicts device = 'cpu'"),
        (RunConfig(engine="ray", device="cuda", num_gpus=0), [_node(4, 1)], "needs RunConfig.num_gpus > 0"),
    ],
)
def test_cell_resources_refuse_what_would_pend_forever(run: RunConfig, nodes: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cell_resources(run, nodes)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("form", ["{}", "ray://{}"])
def test_an_unreachable_address_is_refused_quickly(form: str) -> None:
    address = form.format(f"127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(ValueError, match="cannot reach a Ray cluster at"):
        check_address(address)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("address", ["nonsense", "host:port", "ray://:80", "10.0.0.1:99999"])
def test_a_malformed_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="Ray address must be"):
        check_address(address)


def test_without_ray_the_engine_says_how_to_install_it(write_config: Callable[..., Path], tmp_path: Path) -> None:
    blocker = tmp_path / "no-ray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed here')\n")
    env = {**_env(), "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        _sslsteal("sweep", str(write_config()), "--out", str(tmp_path / "out"), "--engine", "ray"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'sslsteal_fast[ray]'" in lines[0], proc.stderr


def _task(cell_id: str) -> CellTask:
    return CellTask(
        **{f.name: None for f in dataclasses.fields(CellTask)}
        | {"cell_id": cell_id, "loss": "mse", "budget": 8, "query_dataset": "q", "seed": 0}
    )  # type: ignore[arg-type]


def test_a_cell_that_lands_twice_keeps_one_row_and_a_disagreement_is_reported(tmp_path: Path) -> None:
    row = {name: 0 for name, _ in CELL_COLUMNS if name != "finished_at"}
    row.update(
        cell_id="c1",
        loss="mse",
        query_dataset="q",
        defense="none",
        arch="small",
        strategy="query-once",
        config_json="{}",
        probe_top1=0.5,
        node="a",
    )
    lines: list[str] = []
    with ResultStore(tmp_path / "results.sqlite") as store:
        sink = CellSink(store, 3, progress=False, log=lines.append)
        sink.done(_task("c1"), row)
        sink.done(_task("c1"), {**row, "wall_time_s": 9.0, "node": "b"})  # a retry elsewhere: same result
        assert not lines and sink.duplicates == 1
        sink.done(_task("c1"), {**row, "probe_top1": 0.25})
        sink.close()
        assert len(store.cells()) == 1 and store.cells()[0]["probe_top1"] == 0.5 and store.cells()[0]["node"] == "a"
    assert len(lines) == 1 and "finished twice with different probe_top1" in lines[0]


# --- on a local Ray instance ---------------------------------------------------------------------------


@needs_ray
@LINUX
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "bad-address"])
def test_a_bad_address_is_one_line_and_exit_2(write_config: Callable[..., Path], tmp_path: Path, address: str) -> None:
    address = address.format(port=_closed_port())
    proc = subprocess.run(
        _sslsteal(
            "sweep", str(write_config()), "--out", str(tmp_path / "out"), "--engine", "ray", "--address", address
        ),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0], proc.stderr
    assert not (tmp_path / "out" / "results.sqlite").exists()  # refused before any work


@needs_ray
@LINUX
def test_ray_gives_the_rows_of_the_process_pool(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(losses=("mse", "info_nce"), budgets=(8, 16), defenses=("none", "detection:threshold=0.9"))
    config.write_text(config.read_text().replace("[run]\n", "[run]\nsave_encoders = true\n"))
    cfg = load_config(config)
    local = run_sweep(cfg, tmp_path / "local", progress=False, log=lambda m: None)
    ray_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, engine="ray"))
    lines: list[str] = []
    remote = run_sweep(ray_cfg, tmp_path / "ray", progress=False, log=lines.append)
    assert not local.failed and not remote.failed and remote.engine == "ray"
    assert any("cells as Ray tasks" in line for line in lines)
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(a) == 16 and a == b  # every result column, row for row (times and node aside)
    assert {r["node"] for r in ResultStore(tmp_path / "ray" / "results.sqlite").cells()} == {socket.gethostname()}
    # The outputs the workers made came back to the driver's folder, equal to the pool's.
    for kind in ("detections", "encoders"):
        files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / kind).iterdir())
        assert files and files == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray" / kind).iterdir())
        for f in files:
            if f.suffix == ".safetensors":
                x, y = load_tensors(tmp_path / "local" / f)[0], load_tensors(tmp_path / "ray" / f)[0]
                assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    # Bills and forward passes are the pool's: the answers were computed once by the driver.
    assert remote.answers.keys() == local.answers.keys()
    assert all(remote.answers[k]["forward_passes"] == local.answers[k]["forward_passes"] for k in local.answers)
    assert remote.engine_info["put_objects"] > 0


@needs_ray
@LINUX
def test_augmented_cells_bill_on_ray_what_they_bill_in_the_pool(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Augmented cells query their own defended victim (the ONNX file shipped to the worker): same bills."""
    config = write_config(
        losses=("mse",),
        budgets=(8,),
        steal_epochs=2,
        strategy="augmented",
        defenses=("none", "detection:threshold=0.9"),
    )
    cfg = load_config(config)
    run_sweep(cfg, tmp_path / "local", progress=False, log=lambda m: None)
    ray_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, engine="ray"))
    remote = run_sweep(ray_cfg, tmp_path / "ray", progress=False, log=lambda m: None)
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert not remote.failed and len(a) == 4 and a == b
    assert all(r["billed_queries"] == 16 and r["cell_forward_passes"] > 0 for r in b.values())  # 8 x 2 epochs


@needs_ray
@LINUX
def test_a_cell_that_raises_is_recorded_and_the_sweep_goes_on(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(losses=("mse",), budgets=(8, 16), steal_epochs=2)
    config.write_text(config.read_text().replace("[steal]\n", "[steal]\nlr = 1e30\n"))  # diverges: NaN loss
    proc = subprocess.run(
        _sslsteal("sweep", str(config), "--out", str(tmp_path / "out"), "--engine", "ray", "--quiet"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=SWEEP_TIMEOUT_S,
    )
    assert proc.returncode == 1, proc.stderr
    assert "4 cells failed" in proc.stderr
    with ResultStore(tmp_path / "out" / "results.sqlite") as store:
        failures = store.failures()
        assert not store.cells()
    assert len(failures) == 4 and len({f["cell_id"] for f in failures}) == 4
    assert all("FloatingPointError" in f["error"] and f["node"] == socket.gethostname() for f in failures)


@needs_ray
@LINUX
def test_a_killed_worker_is_retried_into_one_row(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(losses=("mse",), budgets=(16, 32), steal_epochs=60)
    out = tmp_path / "out"
    driver = subprocess.Popen(
        _sslsteal("sweep", str(config), "--out", str(out), "--engine", "ray", "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    seen: dict[int, bytes] = {}
    try:
        victims = _wait_for(lambda: _running_cells(driver.pid), SWEEP_TIMEOUT_S, "a cell to start", driver)
        seen.update(_descendants(driver.pid))
        mark = _mark_of(seen)
        os.kill(victims[0], signal.SIGKILL)  # a worker dies mid-cell
        _stdout, stderr = driver.communicate(timeout=SWEEP_TIMEOUT_S)
    finally:
        driver.kill()
        driver.wait(10)
    assert driver.returncode == 0, stderr
    rows = _rows(out)
    assert len(rows) == 4  # every cell, the killed one included, exactly once
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT cell_id) FROM cells").fetchone() == (4, 4)
        assert conn.execute("SELECT count(*) FROM failures").fetchone() == (0,)
    _assert_no_ray_left(mark, seen)


@needs_ray
@LINUX
def test_sigkill_the_driver_then_resume_leaves_no_ray_processes(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(losses=("mse", "info_nce"), budgets=(8, 16, 32), steal_epochs=20)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    cmd = _sslsteal("sweep", str(config), "--out", str(out), "--engine", "ray", "--quiet")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    seen: dict[int, bytes] = {}
    try:
        _wait_for(lambda: committed(db) >= 1 and _running_cells(driver.pid), SWEEP_TIMEOUT_S, "a cell", driver)
        seen.update(_descendants(driver.pid))
        mark = _mark_of(seen)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        driver.kill()
        driver.wait(10)
    before = committed(db)
    assert 1 <= before < 12
    _assert_no_ray_left(mark, seen)

    resumed = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    seen = {}
    try:
        _wait_for(lambda: _mark_of(_descendants(resumed.pid)), SWEEP_TIMEOUT_S, "Ray to start", resumed)
        seen.update(_descendants(resumed.pid))
        mark = _mark_of(seen)
        _stdout, stderr = resumed.communicate(timeout=SWEEP_TIMEOUT_S)
    finally:
        resumed.kill()
        resumed.wait(10)
    assert resumed.returncode == 0, stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT cell_id) FROM cells").fetchone() == (12, 12)
    _assert_no_ray_left(mark, seen)


@needs_ray
@LINUX
def test_a_sweep_joins_an_existing_cluster_and_leaves_it_running(
    write_config: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--address host:port`` runs the cells on a cluster started apart (``ray start --head``), which survives."""
    port = _closed_port()
    temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # Ray's socket paths must stay short
    mark = f"test-head-{os.getpid()}"
    env = {**_env(), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, MARK_VARIABLE: mark},
    )
    out = tmp_path_factory.mktemp("joined")
    try:
        _wait_for(lambda: _reachable(port), SWEEP_TIMEOUT_S, "the head node to listen", head)
        proc = subprocess.run(
            _sslsteal(
                "sweep",
                str(write_config(losses=("mse",), budgets=(8, 16))),
                "--out",
                str(out),
                "--address",
                f"127.0.0.1:{port}",
                "--json",
                "--quiet",
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=SWEEP_TIMEOUT_S,
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["engine"]["name"] == "ray" and summary["engine"]["address"] == f"127.0.0.1:{port}"
        assert summary["cells"]["done"] == 4 and summary["nodes"] == [socket.gethostname()]
        assert head.poll() is None and marked_processes(mark), "joining a cluster must not stop it"
    finally:
        reap(mark)
        head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)
    assert not marked_processes(mark)


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
