"""The billing rules every served victim shares (victim/billing.py): reserve, settle all-or-nothing, release."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsteal_fast.defenses import SimilarityDetector
from sslsteal_fast.serve import ServerState, SqliteLedger
from sslsteal_fast.victim import BudgetExceeded, MemoryLedger, OnnxVictim
from tests.helpers import linear_onnx


def _raw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(n, 4), torch.zeros(n, 3, 4, 4)


def test_concurrent_reservations_never_pass_the_budget() -> None:
    ledger = MemoryLedger(budget=50)
    got, lock = [], threading.Lock()

    def grab() -> None:
        for _ in range(10):
            try:
                r = ledger.reserve("c", 3)
            except BudgetExceeded as exc:
                assert exc.remaining < 3
                return
            with lock:
                got.append(r)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 and ledger.reserved("c") == 48 and ledger.remaining("c") == 2
    for r in got[:10]:
        ledger.settle(r, (), *_raw(3))
    for r in got[10:]:
        r.release()
    assert ledger.billed("c") == 30 and ledger.reserved("c") == 0 and ledger.remaining("c") == 20


def test_a_failing_defense_releases_and_bills_nothing() -> None:
    ledger = MemoryLedger(budget=10)

    def broken(outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        return outputs.double()  # not float32: breaks the contract

    with ledger.reserve("c", 4) as r, pytest.raises(TypeError):
        ledger.settle(r, (broken,), *_raw(4))
    assert (ledger.bills, ledger.reserved("c"), ledger.remaining("c")) == ({}, 0, 10)
    with pytest.raises(RuntimeError, match="not open"):
        ledger.settle(r, (), *_raw(4))
    assert ledger.reserve("c", 0).open is False  # an empty query reserves nothing


def test_a_failed_outer_commit_undoes_every_bill_and_defense_record(tmp_path: Path) -> None:
    state = ServerState(tmp_path)
    state.add_key("a", 100)
    ledger = SqliteLedger(state)
    ledger.know("a", 100)
    detector = SimilarityDetector(threshold=0.5, state=state.store)
    with pytest.raises(RuntimeError, match="disk"):
        with ledger.transaction():  # a batch: two requests settled, then the commit fails
            for _ in range(2):
                r = ledger.reserve("a", 3)
                ledger.settle(r, (detector,), *_raw(3))
            assert ledger.billed("a") == 6
            raise RuntimeError("disk full")
    assert ledger.billed("a") == 0 and ledger.reserved("a") == 0 and ledger.remaining("a") == 100
    assert state.usage("a")["billed"] == 0 and detector.bills == {} and len(detector.history("a")[0]) == 0
    with ledger.transaction():
        ledger.settle(ledger.reserve("a", 5), (detector,), *_raw(5))
    reopened = SqliteLedger(ServerState(tmp_path))
    reopened.know("a", 100)
    assert reopened.billed("a") == 5 and reopened.remaining("a") == 95 and detector.bills == {"a": 5}


def test_onnx_victim_bills_through_its_ledger_and_can_sleep_its_threads(tmp_path: Path) -> None:
    path = linear_onnx(tmp_path / "lin.onnx", dim=4)
    victim = OnnxVictim(path, budget=5, spin=False)
    config = victim._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert config == "0"
    victim.query(np.zeros((3, 3, 4, 4), np.float32), client="x")
    assert victim.ledger.bills == {"x": 3} and victim.remaining == 2
    with pytest.raises(BudgetExceeded):
        victim.query(np.ones((3, 3, 4, 4), np.float32), client="y")
    victim.budget = 10
    assert victim.remaining == 7 and victim.ledger.reserved("y") == 0
    with pytest.raises(ValueError):
        OnnxVictim(path, spin="no")  # type: ignore[arg-type]
