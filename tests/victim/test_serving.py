"""OnnxVictim: exact billing, budget all-or-nothing, cache, input validation, providers, defenses."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sslsteal_fast.testing import FOREIGN_ATOL
from sslsteal_fast.victim import BudgetExceeded, Defense, OnnxVictim, physical_cores, serving
from tests.helpers import linear_encoder, pooled_encoder, two_output_model

D = 5
WEIGHT = np.random.default_rng(0).standard_normal((48, D)).astype(np.float32)


@pytest.fixture(scope="module")
def linear_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_encoder(tmp_path_factory.mktemp("foreign") / "linear.onnx", WEIGHT)


def expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), 48).astype(np.float64) @ WEIGHT.astype(np.float64)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 4, 4), dtype=np.float32)


def state(v: OnnxVictim) -> tuple:
    return (v.queries_used, v.remaining, v.forward_passes, v.cache_hits, v.bills)


# ---------------------------------------------------------------- foreign models, shapes, layouts
def test_serves_hand_built_foreign_model(linear_path: Path) -> None:
    v = OnnxVictim(linear_path)
    assert v.input_shape == (3, 4, 4)
    assert v.output_dim == D
    assert v.providers == ["CPUExecutionProvider"]
    x = images(7)
    out = v.query(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (7, D)
    np.testing.assert_allclose(out.numpy(), expected(x), atol=FOREIGN_ATOL)


def test_numpy_and_torch_inputs_agree(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, cache_size=0)
    x = images(4)
    t = torch.from_numpy(x.copy())
    a, b = v.query(x), v.query(t)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a non-contiguous tensor view is fine too
    wide = torch.from_numpy(images(4, seed=1)).repeat(1, 1, 1, 2)[..., ::2]
    assert not wide.is_contiguous()
    np.testing.assert_allclose(v.query(wide).numpy(), expected(wide.contiguous().numpy()), atol=FOREIGN_ATOL)


def test_uint8_is_scaled_to_unit_range(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, cache_size=0)
    u = np.random.default_rng(3).integers(0, 256, size=(6, 3, 4, 4), dtype=np.uint8)
    as_float = torch.from_numpy(u).float() / 255
    torch.testing.assert_close(v.query(u), v.query(as_float), rtol=0, atol=0)
    torch.testing.assert_close(v.query(torch.from_numpy(u)), v.query(as_float), rtol=0, atol=0)
    assert v.queries_used == 24


def test_dynamic_spatial_dims_and_symbolic_output(tmp_path: Path) -> None:
    v = OnnxVictim(pooled_encoder(tmp_path / "pool.onnx"))
    assert v.input_shape == (3, None, None)
    assert v.output_dim == 3
    assert v.forward_passes == 0  # the shape probe is not metered
    for h, w in ((4, 4), (9, 5)):
        x = images(1)[:, :, :1, :1] + np.zeros((2, 3, h, w), np.float32)
        np.testing.assert_allclose(v.query(x).numpy(), x.mean(axis=(2, 3)), atol=FOREIGN_ATOL)
    with pytest.raises(ValueError, match=r"\(N, 3, \*, \*\)"):
        v.query(np.zeros((1, 4, 4, 4), np.float32))


def test_fixed_batch_model_and_rank4_output(tmp_path: Path) -> None:
    v = OnnxVictim(linear_encoder(tmp_path / "b1.onnx", WEIGHT, batch=1, out_rank4=True))
    assert v.output_dim == D
    x = images(5)
    np.testing.assert_allclose(v.query(x).numpy(), expected(x), atol=FOREIGN_ATOL)
    assert v.forward_passes == 5


def test_chunking_matches_single_batch(linear_path: Path) -> None:
    x = images(10)
    small = OnnxVictim(linear_path, batch_size=3).query(x)
    big = OnnxVictim(linear_path, batch_size=256).query(x)
    torch.testing.assert_close(small, big, rtol=1e-6, atol=1e-6)


def test_rejects_models_that_are_not_one_in_one_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one image input and one representation output"):
        OnnxVictim(two_output_model(tmp_path / "two.onnx"))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"budget": -1}, ValueError),
        ({"budget": 2.5}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"cache_size": -1}, ValueError),
        ({"intra_op_threads": 0}, ValueError),
        ({"providers": []}, ValueError),
        ({"defenses": [42]}, TypeError),
    ],
)
def test_constructor_arguments(linear_path: Path, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        OnnxVictim(linear_path, **kwargs)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        OnnxVictim(tmp_path / "nope.onnx")


# ---------------------------------------------------------------- bad inputs bill nothing
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (np.zeros((3, 4, 4), np.float32), ValueError, "rank 3"),
        (np.zeros((2, 1, 4, 4), np.float32), ValueError, "shape"),
        (np.zeros((2, 3, 5, 4), np.float32), ValueError, "shape"),
        (np.zeros((2, 3, 4, 4), np.float64), ValueError, "dtype"),
        (np.zeros((2, 3, 4, 4), np.int64), ValueError, "dtype"),
        (torch.zeros((2, 3, 4, 4), dtype=torch.float16), ValueError, "dtype"),
        (torch.zeros((2, 3, 4, 4), dtype=torch.bool), ValueError, "dtype"),
        (np.full((2, 3, 4, 4), np.nan, np.float32), ValueError, "NaN"),
        (np.full((2, 3, 4, 4), np.inf, np.float32), ValueError, "NaN"),
        ([[0.0]], TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_inputs_raise_and_bill_nothing(linear_path: Path, bad: object, error: type, match: str) -> None:
    v = OnnxVictim(linear_path, budget=100)
    before = state(v)
    with pytest.raises(error, match=match) as info:
        v.query(bad)  # type: ignore[arg-type]
    if error is ValueError and match in ("rank 3", "shape", "dtype"):
        assert "(N, 3, 4, 4)" in str(info.value)
    assert state(v) == before == (0, 100, 0, 0, {})


def test_bad_client_name(linear_path: Path) -> None:
    v = OnnxVictim(linear_path)
    with pytest.raises(ValueError, match="client"):
        v.query(images(1), client="")
    assert v.queries_used == 0


def test_empty_batch_is_free(linear_path: Path) -> None:
    calls: list[int] = []
    v = OnnxVictim(linear_path, budget=0, defenses=[lambda o, i, c: calls.append(1) or o])
    out = v.query(np.zeros((0, 3, 4, 4), np.float32))
    assert out.shape == (0, D) and out.dtype == torch.float32
    assert state(v) == (0, 0, 0, 0, {}) and calls == []


# ---------------------------------------------------------------- billing and budget
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.tuples(st.lists(st.integers(0, 7), max_size=9), st.sampled_from(["alice", "bob", "default"])),
        max_size=8,
    ),
    budget=st.one_of(st.none(), st.integers(0, 40)),
)
def test_billing_is_exact(linear_path: Path, batches: list[tuple[list[int], str]], budget: int | None) -> None:
    """Rows are drawn from a pool of 8 distinct images, so batches repeat rows within and across queries."""
    pool = images(8, seed=7)
    v = OnnxVictim(linear_path, budget=budget)
    used, seen, bills = 0, set(), {}
    for rows, client in batches:
        x = pool[rows]
        if budget is not None and used + len(rows) > budget:
            before = state(v)
            with pytest.raises(BudgetExceeded):
                v.query(x, client=client)
            assert state(v) == before
            continue
        out = v.query(x, client=client)
        np.testing.assert_allclose(out.numpy(), expected(x), atol=FOREIGN_ATOL)
        if rows:
            used += len(rows)
            bills[client] = bills.get(client, 0) + len(rows)
            seen.update(rows)
        assert v.queries_used == used
        assert v.remaining == (None if budget is None else budget - used)
        assert v.forward_passes == len(seen)  # each distinct image runs once
        assert v.cache_hits == used - len(seen)
        assert v.bills == bills
        assert all(v.billed(c) == n for c, n in bills.items())


def test_budget_is_all_or_nothing(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, budget=10)
    v.query(images(6), client="a")
    before = state(v)
    with pytest.raises(BudgetExceeded) as info:
        v.query(images(5, seed=1), client="b")
    assert (info.value.requested, info.value.remaining, info.value.client) == (5, 4, "b")
    assert state(v) == before == (6, 4, 6, 0, {"a": 6})
    assert v.billed("b") == 0
    # the refused rows were not run, so not cached: serving 4 of them now runs 4 rows
    v.query(images(5, seed=1)[:4], client="b")
    assert state(v) == (10, 0, 10, 0, {"a": 6, "b": 4})
    with pytest.raises(BudgetExceeded):
        v.query(images(1), client="a")  # even a cached row is billed, so it is refused too
    assert v.queries_used == 10


def test_failure_after_the_model_ran_bills_nothing(linear_path: Path) -> None:
    def broken(outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        raise RuntimeError("defense bug")

    v = OnnxVictim(linear_path, budget=10, defenses=[broken])
    with pytest.raises(RuntimeError, match="defense bug"):
        v.query(images(3))
    assert (v.queries_used, v.remaining, v.bills, v.cache_hits) == (0, 10, {}, 0)
    assert v.forward_passes == 3  # the rows did run (compute meter), but nothing was billed


def test_cache_hits_are_billed_but_not_run(linear_path: Path) -> None:
    v = OnnxVictim(linear_path)
    x = images(4)
    first = v.query(x)
    second = v.query(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert (v.queries_used, v.forward_passes, v.cache_hits) == (8, 4, 4)
    # duplicates inside one batch run once
    v.query(np.concatenate([images(2, seed=5)] * 3))
    assert (v.queries_used, v.forward_passes, v.cache_hits) == (14, 6, 8)
    # the returned tensor is the caller's: changing it does not change the cache
    second.add_(1000.0)
    torch.testing.assert_close(v.query(x), first, rtol=0, atol=0)


def test_cache_is_lru_bounded(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, cache_size=2)
    a, b, c = (images(1, seed=s) for s in range(3))
    for row in (a, b, a, c):  # a was used more recently than b, so c evicts b
        v.query(row)
    assert v.forward_passes == 3
    v.query(a)
    assert v.forward_passes == 3
    v.query(b)
    assert v.forward_passes == 4


def test_cache_can_be_disabled(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, cache_size=0)
    x = images(3)
    v.query(x)
    v.query(x)
    assert (v.queries_used, v.forward_passes, v.cache_hits) == (6, 6, 0)


def test_accounting_is_thread_safe(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, budget=1000)
    pool = images(16)
    rng = np.random.default_rng(0)
    plans = [[rng.integers(0, 16, size=rng.integers(1, 6)) for _ in range(25)] for _ in range(4)]

    def work(client: str, plan: list[np.ndarray]) -> None:
        for rows in plan:
            v.query(pool[rows], client=client)

    threads = [threading.Thread(target=work, args=(f"c{i}", plan)) for i, plan in enumerate(plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = {f"c{i}": int(sum(len(r) for r in plan)) for i, plan in enumerate(plans)}
    assert v.bills == total
    assert v.queries_used == sum(total.values()) == 1000 - v.remaining
    assert v.forward_passes + v.cache_hits == v.queries_used
    assert v.forward_passes <= 16


# ---------------------------------------------------------------- defenses
def test_defenses_apply_in_order_on_every_query(linear_path: Path) -> None:
    log: list[tuple[str, str]] = []

    class Shift:
        def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
            log.append(("shift", client))
            assert inputs.dtype == torch.float32 and inputs.shape[1:] == (3, 4, 4)
            return outputs + 1.0

    def double(outputs: torch.Tensor, inputs: torch.Tensor, client: str) -> torch.Tensor:
        log.append(("double", client))
        return outputs * 2.0

    assert isinstance(Shift(), Defense)
    v = OnnxVictim(linear_path, defenses=[Shift(), double])
    x = images(3)
    for _ in range(2):  # the second query is all cache hits: defenses still run
        out = v.query(x, client="eve")
        np.testing.assert_allclose(out.numpy(), (expected(x) + 1.0) * 2.0, atol=4 * FOREIGN_ATOL)
    assert log == [("shift", "eve"), ("double", "eve")] * 2
    assert v.forward_passes == 3


def test_defense_breaking_the_contract_bills_nothing(linear_path: Path) -> None:
    v = OnnxVictim(linear_path, defenses=[lambda o, i, c: o[:1]])
    with pytest.raises(ValueError, match=r"\(3, D\)"):
        v.query(images(3))
    assert v.queries_used == 0


# ---------------------------------------------------------------- providers and threads
def test_warns_loudly_when_cuda_silently_falls_back(linear_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend onnxruntime-gpu and a GPU are present: the default is then CUDA, and the session
    # (really CPU-only here) falls back to CPU.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(serving, "_gpu_present", lambda: True)
    assert serving.default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.warns(RuntimeWarning, match="CUDA was requested or expected"):
        v = OnnxVictim(linear_path)
    assert v.providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(v.query(images(2)).numpy(), expected(images(2)), atol=FOREIGN_ATOL)


def test_explicit_cpu_request_is_respected(linear_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(serving, "_gpu_present", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = OnnxVictim(linear_path, providers=["CPUExecutionProvider"])
    assert v.providers == ["CPUExecutionProvider"]


def test_warns_when_cuda_requested_without_gpu_build(linear_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.warns(RuntimeWarning, match="onnxruntime-gpu"):
        OnnxVictim(linear_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_no_warning_on_plain_cpu(linear_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA build would expect CUDA")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = OnnxVictim(linear_path, providers=["CPUExecutionProvider"])
    assert v.providers == ["CPUExecutionProvider"]


def test_session_is_tuned_for_throughput(linear_path: Path) -> None:
    v = OnnxVictim(linear_path)
    opts = v._session.get_session_options()
    assert opts.intra_op_num_threads == physical_cores() >= 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
