"""Billing on a real server: concurrent clients racing for the last units, rate limits, restarts, SIGKILL under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from sslsteal_fast.serve.process import ServerProcess
from sslsteal_fast.testing import EXPORT_RTOL, FOREIGN_ATOL
from sslsteal_fast.victim import BudgetExceeded, HttpVictim, OnnxVictim, wire
from tests.helpers import add_keys
from tests.serve.conftest import SHAPE

Start = Callable[..., ServerProcess]


def images(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8))


def test_concurrent_clients_racing_for_the_last_units_never_overspend(tmp_path: Path, start_server: Start) -> None:
    keys = add_keys(tmp_path, racer={"budget": 50, "defenses": ["detection:threshold=0.99"]}, other={"budget": 1000})
    server = start_server(tmp_path, "--max-wait-ms", "50")
    batches_before = httpx.get(f"{server.url}/healthz").json()["batches"]
    received = {"racer": 0, "other": 0}
    lock = threading.Lock()

    def race(worker: int) -> int:
        name = "racer" if worker % 4 else "other"
        refused = 0
        with HttpVictim(server.url, keys[name]) as victim:
            for i in range(8 if name == "other" else 100):
                try:
                    out = victim.query(images(3, seed=1000 * worker + i))
                except BudgetExceeded as exc:
                    assert exc.remaining < 3
                    refused += 1
                    break
                assert out.shape == (3, 16)
                with lock:
                    received[name] += 3
        return refused

    with ThreadPoolExecutor(16) as pool:
        refusals = sum(pool.map(race, range(16)))
    assert refusals == 12  # every racer stopped on the budget
    batching = httpx.get(f"{server.url}/healthz").json()
    assert batching["batched_rows"] == 48 + 96  # every answered row ran once (all images distinct)
    assert batching["batches"] - batches_before < (48 + 96) // 3  # concurrent requests shared model runs
    with HttpVictim(server.url, keys["racer"]) as racer:
        usage = racer.usage()
        assert usage["billed"] == received["racer"] == 48 and usage["remaining"] == 2
        assert usage["defenses"][0]["rows_scored"] == 48  # the defense saw exactly the billed rows
        with pytest.raises(BudgetExceeded) as refused:
            racer.query(images(3, seed=1))
        assert refused.value.remaining == 2
        racer.query(images(2, seed=2))
        assert racer.usage()["billed"] == 50 and racer.remaining == 0
    with HttpVictim(server.url, keys["other"]) as other:
        assert other.usage()["billed"] == received["other"] == 4 * 8 * 3


def test_a_rate_limit_is_429_with_retry_after_and_bills_nothing(tmp_path: Path, start_server: Start) -> None:
    keys = add_keys(tmp_path, slow={"budget": 1000, "rate_limit": 10})
    server = start_server(tmp_path)
    body, headers = wire.encode(images(8, seed=0).numpy())
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {keys['slow']}"}, timeout=30) as c:
        assert c.post("/v1/embed", content=body, headers=headers).status_code == 200  # 10 - 8 = 2 left
        assert c.post("/v1/embed", content=body, headers=headers).status_code == 200  # 2 - 8: into debt
        limited = c.post("/v1/embed", content=body, headers=headers)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert 0 < limited.json()["retry_after"] <= 1.0
        assert c.get("/v1/usage").json()["billed"] == 16
    with HttpVictim(server.url, keys["slow"]) as victim:
        start = time.monotonic()
        victim.query(images(8, seed=1))  # waits for the bucket, then goes through
        assert time.monotonic() - start >= 0.5
        assert victim.usage()["billed"] == 24


def test_a_restart_keeps_bills_defense_state_and_receipts(tmp_path: Path, start_server: Start) -> None:
    keys = add_keys(tmp_path, alice={"budget": 100, "defenses": ["detection:threshold=0.95,policy=monitor"]})
    first = start_server(tmp_path)
    x = images(6, seed=3)
    body, headers = wire.encode(x.numpy())
    auth = {"Authorization": f"Bearer {keys['alice']}"}
    with httpx.Client(base_url=first.url, headers=auth, timeout=30) as c:
        sent = c.post("/v1/embed", content=body, headers={**headers, "X-Request-Id": "before-crash"})
        assert sent.status_code == 200
        before = c.get("/v1/usage").json()
    first.kill()  # SIGKILL: no shutdown
    second = start_server(tmp_path)
    with httpx.Client(base_url=second.url, headers=auth, timeout=30) as c:
        after = c.get("/v1/usage").json()
        assert after == before and after["billed"] == 6 and after["remaining"] == 94
        assert after["defenses"][0]["rows_scored"] == 6
        replay = c.get("/v1/receipts/before-crash")
        assert replay.status_code == 200 and replay.content == sent.content and replay.headers["X-Replayed"] == "1"
        # The same id again is answered from its receipt, not billed a second time.
        again = c.post("/v1/embed", content=body, headers={**headers, "X-Request-Id": "before-crash"})
        assert again.content == sent.content and c.get("/v1/usage").json()["billed"] == 6
        # The detector's history survived: the same images now score as repeats (cosine 1 to the stored bank).
        c.post("/v1/embed", content=body, headers=headers)
        assert c.get("/v1/usage").json()["defenses"][0] == {
            "spec": "detection:threshold=0.95,policy=monitor",
            "name": "detection",
            "rows_seen": 12,
            "rows_scored": 12,
            "flagged": before["defenses"][0]["flagged"] + 6,
            "threshold": 0.95,
        }


def test_sigkill_under_load_loses_no_bill_and_bills_nothing_unreceived(tmp_path: Path, start_server: Start) -> None:
    keys = add_keys(tmp_path, a={"budget": 10**6}, b={"budget": 10**6})
    server = start_server(tmp_path, "--max-wait-ms", "10")
    port, target = server.port, 400
    received = {"a": 0, "b": 0}
    replayed = {"a": 0, "b": 0}
    lock = threading.Lock()

    def load(worker: int) -> None:
        name = "ab"[worker % 2]
        with HttpVictim(server.url, keys[name], retries=10, backoff=0.2) as victim:
            i = 0
            while received[name] < target:
                out = victim.query(images(5, seed=10_000 * worker + i))
                i += 1
                assert out.shape == (5, 16) and torch.isfinite(out).all()
                with lock:
                    received[name] += 5
            with lock:
                replayed[name] += victim.replayed

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    while sum(received.values()) < 100:
        time.sleep(0.01)
    server.kill()  # mid-load: requests queued, running, committing and being sent
    killed_at = dict(received)
    start_server(tmp_path, "--max-wait-ms", "10", port=port)
    for t in threads:
        t.join(timeout=80)
    assert not any(t.is_alive() for t in threads)
    assert all(received[k] > killed_at[k] for k in received)  # the load went on after the restart
    for name, key in keys.items():
        with HttpVictim(f"http://127.0.0.1:{port}", key) as victim:
            assert victim.usage()["billed"] == received[name], (name, received, replayed)


def test_a_lost_answer_is_asked_for_by_its_receipt_not_sent_and_billed_twice(
    tmp_path: Path, start_server: Start, encoder_onnx: Path
) -> None:
    keys = add_keys(tmp_path, impatient={"budget": 100})
    server = start_server(tmp_path, "--max-wait-ms", "1500")  # a lone request waits 1.5 s for company
    x = images(4, seed=9)
    with HttpVictim(server.url, keys["impatient"], timeout=0.5, backoff=0.2) as victim:
        out = victim.query(x)  # times out after it was sent: asks (409 in progress ... 200 from the receipt)
        assert victim.replayed == 1 and victim.queries_used == 4
        assert victim.usage()["billed"] == 4 and victim.usage()["requests"] == 1
    local = OnnxVictim(encoder_onnx).query(x)
    torch.testing.assert_close(out, local, rtol=EXPORT_RTOL, atol=FOREIGN_ATOL)
