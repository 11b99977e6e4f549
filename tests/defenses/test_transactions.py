"""Defense state is transactional: one query's records commit together, only once it is served and
billed; a failed query leaves no trace; victims in several threads or processes share one state file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslsteal_fast.defenses import CoverageDefense, DefenseState, SimilarityDetector
from sslsteal_fast.victim import BudgetExceeded, Defense, OnnxVictim
from tests.helpers import images_for, linear_onnx

KEY = b"t" * 32
CENTER = torch.full((48,), 0.5)  # centred images: distinct random images are far apart, repeats identical


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_onnx(tmp_path_factory.mktemp("tx") / "lin.onnx")


def detector(state: DefenseState | str, policy: str = "monitor") -> SimilarityDetector:
    return SimilarityDetector(threshold=0.95, policy=policy, feature="input", center=CENTER, state=state)


def table_counts(path: Path) -> dict[str, int]:
    """Rows of every defense table (bank: stored query rows), read with a connection of its own."""
    with sqlite3.connect(str(path)) as conn:
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("detections", "buckets", "bills")
        }
        counts["bank"] = conn.execute("SELECT COALESCE(SUM(rows), 0) FROM bank").fetchone()[0]
    return counts


EMPTY = {"detections": 0, "buckets": 0, "bills": 0, "bank": 0}


# ---------------------------------------------------------------- a failed query leaves no trace
def _break_defense(victim: OnnxVictim, monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    def broken(outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        raise RuntimeError("defense bug")

    monkeypatch.setattr(victim, "defenses", (*victim.defenses, broken))
    return RuntimeError


def _nan_defense(victim: OnnxVictim, monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    monkeypatch.setattr(victim, "defenses", (*victim.defenses, lambda o, i, c: o * float("nan")))
    return ValueError


def _break_model(victim: OnnxVictim, monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    def fail(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("model run failed")

    monkeypatch.setattr(victim, "_run", fail)
    return RuntimeError


def _exhaust_budget(victim: OnnxVictim, monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    monkeypatch.setattr(victim, "budget", 0)
    return BudgetExceeded


@pytest.mark.parametrize("failure", [_break_defense, _nan_defense, _break_model, _exhaust_budget])
def test_failed_query_leaves_no_trace_and_a_retry_is_not_a_repeat(tmp_path, onnx_path, monkeypatch, failure):
    path = tmp_path / "state.sqlite"
    store = DefenseState(path)
    det, cov = detector(store), CoverageDefense(n_bits=6, state=store)
    victim = OnnxVictim(onnx_path, defenses=[det, cov])
    x = images_for(6)
    with monkeypatch.context() as patch:
        error = failure(victim, patch)
        with pytest.raises(error):
            victim.query(x, client="c")
    assert victim.bills == {} and victim.queries_used == 0
    assert table_counts(path) == EMPTY
    assert det.bank_size("c") == 0 and cov.coverage("c") == 0.0 and det.bills == {} and cov.bills == {}
    victim.query(x, client="c")  # the retry is the client's first sight of these images
    scores, flags = det.history("c")
    assert len(scores) == 6 and not flags.any()
    assert det.bills == cov.bills == victim.bills == {"c": 6}
    assert table_counts(path)["bank"] == table_counts(path)["detections"] == 6


# ---------------------------------------------------------------- one query, one transaction
def _fail_inserts_into(path: Path, table: str) -> None:
    with sqlite3.connect(str(path)) as conn:
        conn.execute(
            f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk died'); END"
        )


def test_detector_records_commit_in_one_transaction(tmp_path):
    path = tmp_path / "state.sqlite"
    det = detector(str(path))
    _fail_inserts_into(path, "detections")  # the bank block is written first, the detections second
    with pytest.raises(sqlite3.IntegrityError, match="disk died"):
        det(torch.zeros(5, 16), images_for(5), "c")
    assert table_counts(path) == EMPTY
    assert det.bank_size("c") == 0
    with sqlite3.connect(str(path)) as conn:
        conn.execute("DROP TRIGGER fail_detections")
    det(torch.zeros(5, 16), images_for(5), "c")
    assert table_counts(path) == {"detections": 5, "buckets": 0, "bills": 1, "bank": 5}
    assert not det.history("c")[1].any()  # the failed attempt left nothing in memory either


def test_records_of_defenses_sharing_a_state_commit_together(tmp_path, onnx_path):
    path = tmp_path / "state.sqlite"
    store = DefenseState(path)
    det, cov = detector(store), CoverageDefense(n_bits=6, state=store)
    victim = OnnxVictim(onnx_path, defenses=[det, cov])
    _fail_inserts_into(path, "buckets")  # the coverage defense, after the detector has written everything
    with pytest.raises(sqlite3.IntegrityError, match="disk died"):
        victim.query(images_for(5), client="c")
    assert table_counts(path) == EMPTY and victim.bills == {}
    assert det.bank_size("c") == 0 and cov.coverage("c") == 0.0


def _record_then_die(state_path: str) -> None:
    """Child process: die (SIGKILL) in the middle of the detector's writes of one query."""
    det = detector(state_path)
    real = DefenseState.record_detections

    def killed(self: DefenseState, *args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
        real(self, *args, **kwargs)

    DefenseState.record_detections = killed  # type: ignore[method-assign]
    det(torch.zeros(5, 16), images_for(5), "c")


def test_a_kill_mid_query_leaves_all_or_nothing(tmp_path):
    path = tmp_path / "state.sqlite"
    DefenseState(path).close()
    child = multiprocessing.get_context("spawn").Process(target=_record_then_die, args=(str(path),))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert table_counts(path) == EMPTY
    det = detector(str(path))
    assert det.bank_size("c") == 0
    det(torch.zeros(5, 16), images_for(5), "c")
    assert len(det.history("c")[0]) == det.bank_size("c") == 5


# ---------------------------------------------------------------- several victims, one state file, one client
DISTINCT = 24  # distinct images; every victim sends each of them once, in its own order and batches


def _plan(worker: int) -> list[torch.Tensor]:
    order = torch.randperm(DISTINCT, generator=torch.Generator().manual_seed(worker))
    return list(torch.split(order, 1 + worker))  # worker 0 sends rows one by one, worker 1 in pairs, ...


def _serve(victim: OnnxVictim, worker: int) -> None:
    pool = images_for(DISTINCT, seed=11)
    for rows in _plan(worker):
        victim.query(pool[rows], client="shared")


def _check_shared_state(path: Path, victims_bills: list[dict[str, int]], workers: int) -> None:
    served = DISTINCT * workers
    assert sum(b.get("shared", 0) for b in victims_bills) == served
    store = DefenseState(path)
    det, cov = detector(store), CoverageDefense(n_bits=6, state=store, key=KEY)
    assert det.bills == cov.bills == {"shared": served}
    scores, flags = det.history("shared")
    assert len(scores) == det.bank_size("shared") == served
    # every image reached the shared bank once per victim: all sightings after the first are repeats
    assert int(flags.sum()) == served - DISTINCT
    with sqlite3.connect(str(path)) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM detections ORDER BY seq")]
    assert seqs == list(range(served))


def _defenses(store: DefenseState | str) -> list[Defense]:
    state = DefenseState(store) if isinstance(store, str) else store
    return [detector(state), CoverageDefense(n_bits=6, state=state, key=KEY)]


def _victim(onnx_path: Path, defenses: list[Defense]) -> OnnxVictim:
    return OnnxVictim(onnx_path, defenses=defenses, intra_op_threads=1)


@pytest.mark.parametrize("share", ["file", "store", "defenses"])
def test_victims_in_threads_share_a_state_and_a_client(tmp_path, onnx_path, share):
    """``file``: each victim opens the state file itself; ``store``: they share one DefenseState
    object; ``defenses``: they share the defense objects themselves."""
    path = tmp_path / "state.sqlite"
    common = DefenseState(path)
    shared = _defenses(common)

    def defenses() -> list[Defense]:
        if share == "file":
            return _defenses(str(path))
        return _defenses(common) if share == "store" else shared

    victims = [_victim(onnx_path, defenses()) for _ in range(3)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(victims))

    def work(victim: OnnxVictim, worker: int) -> None:
        start.wait()
        try:
            _serve(victim, worker)
        except BaseException as exc:  # collected: the test reports every worker's failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v, i)) for i, v in enumerate(victims)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_shared_state(path, [v.bills for v in victims], len(victims))


def _process_worker(onnx_path: str, state_path: str, worker: int, start: Any, results: Any) -> None:
    """Child process: open the (new) state at the same moment as the others, serve, report the bills."""
    try:
        start.wait()
        victim = _victim(Path(onnx_path), _defenses(state_path))  # opened at once: a fresh file, a new secret
        _serve(victim, worker)
        results.put((worker, victim.bills, None))
    except BaseException as exc:  # reported to the parent
        results.put((worker, {}, repr(exc)))


def test_victims_in_processes_share_a_state_file_and_a_client(tmp_path, onnx_path):
    path = tmp_path / "state.sqlite"
    ctx = multiprocessing.get_context("spawn")
    workers = 2
    start, results = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(str(onnx_path), str(path), i, start, results)) for i in range(workers)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert [error for _, _, error in outcomes] == [None] * workers
    _check_shared_state(path, [bills for _, bills, _ in outcomes], workers)
