"""The HTTP API's contract on a real server: keys, formats, limits, refusals that bill nothing, receipts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from sslsteal_fast.serve.process import ServerProcess
from sslsteal_fast.testing import EXPORT_RTOL, FOREIGN_ATOL
from sslsteal_fast.victim import HttpVictim, OnnxVictim, wire
from tests.helpers import add_keys
from tests.serve.conftest import SHAPE, TEST_TIMEOUT_S

MAX_ROWS = 16
MAX_BODY = int(0.05 * 2**20)


@pytest.fixture(scope="module")
def api(encoder_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    state = tmp_path_factory.mktemp("api-state")
    keys = add_keys(state, alice={"budget": 1000}, bob={"budget": 1000}, carol={"budget": 1000})
    args = ("--threads", "1", "--max-rows", str(MAX_ROWS), "--max-body-mb", "0.05")
    with ServerProcess(encoder_onnx, state, *args, timeout=TEST_TIMEOUT_S) as server:
        yield server.url, keys


def _http(url: str, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def usage(url: str, key: str) -> dict:
    with _http(url, key) as c:
        return c.get("/v1/usage").json()


def post(url: str, key: str, array: np.ndarray, fmt: str = "raw", **headers: str) -> httpx.Response:
    body, h = wire.encode(array, fmt)
    with _http(url, key) as c:
        return c.post("/v1/embed", content=body, headers={**h, **headers})


def answer(r: httpx.Response) -> torch.Tensor:
    return torch.from_numpy(np.array(wire.decode(r.content, r.headers["content-type"], r.headers)))


def test_healthz_and_docs_need_no_key(api: tuple[str, dict[str, str]]) -> None:
    url, _ = api
    with _http(url) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
    assert {"/v1/embed", "/v1/usage", "/v1/model", "/healthz"} <= set(spec["paths"])
    assert wire.RAW in spec["paths"]["/v1/embed"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize("path", ["/v1/model", "/v1/usage", "/v1/receipts/abc"])
def test_a_bad_or_missing_key_is_401(api: tuple[str, dict[str, str]], path: str) -> None:
    url, keys = api
    forged = keys["alice"][:-4] + ("AAAA" if not keys["alice"].endswith("AAAA") else "BBBB")
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Basic {keys['alice']}"},
    ):
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.get(path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert keys["alice"] not in r.text and "error" in r.json()
    with _http(url) as c:
        r = c.post("/v1/embed", content=images(2).tobytes(), headers={"X-Shape": "2,3,8,8", "X-Dtype": "uint8"})
    assert r.status_code == 401


def test_a_key_sees_only_its_own_usage_and_receipts(api: tuple[str, dict[str, str]]) -> None:
    url, keys = api
    before_bob = usage(url, keys["bob"])
    r = post(url, keys["alice"], images(3, seed=1), **{"X-Request-Id": "alice-1"})
    assert r.status_code == 200 and r.headers["X-Billed"] == "3"
    alice, bob = usage(url, keys["alice"]), usage(url, keys["bob"])
    assert alice["client"] == "alice" and alice["billed"] >= 3
    assert bob == before_bob and bob["client"] == "bob"
    assert "alice" not in json.dumps(bob)
    with _http(url, keys["bob"]) as c:
        assert c.get("/v1/receipts/alice-1").status_code == 404  # bob cannot see alice's answer
    with _http(url, keys["alice"]) as c:
        again = c.get("/v1/receipts/alice-1")
    assert again.status_code == 200 and again.headers["X-Replayed"] == "1"
    assert again.content == r.content  # the same answer, not billed again
    assert usage(url, keys["alice"])["billed"] == alice["billed"]


def test_answers_match_the_in_process_victim_in_every_format(
    api: tuple[str, dict[str, str]], encoder_onnx: Path
) -> None:
    url, keys = api
    x = images(5, seed=2)
    local = OnnxVictim(encoder_onnx, cache_size=0).query(x).numpy()
    for fmt in ("raw", "npy", "json"):
        r = post(url, keys["carol"], x, fmt)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(wire.FORMATS[fmt])
        torch.testing.assert_close(answer(r), torch.from_numpy(local), rtol=EXPORT_RTOL, atol=FOREIGN_ATOL)
    floats = (x / np.float32(255)).astype(np.float32)  # float32 images in [0, 1]: the same answer
    got = answer(post(url, keys["carol"], floats))
    torch.testing.assert_close(got, torch.from_numpy(local), rtol=EXPORT_RTOL, atol=FOREIGN_ATOL)


def test_oversized_requests_are_413_and_bill_nothing(api: tuple[str, dict[str, str]]) -> None:
    url, keys = api
    before = usage(url, keys["carol"])
    too_many = post(url, keys["carol"], images(MAX_ROWS + 1))
    assert too_many.status_code == 413 and str(MAX_ROWS) in too_many.json()["error"]
    big = np.zeros(MAX_BODY // 4 + 1000, np.float32)  # over the byte limit whatever its shape says
    r = post(url, keys["carol"], big.reshape(1, -1))
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert usage(url, keys["carol"]) == before


def _raw(url: str, key: str, body: bytes, **headers: str) -> httpx.Response:
    with _http(url, key) as c:
        return c.post("/v1/embed", content=body, headers={"Content-Type": wire.RAW, **headers})


def test_malformed_bodies_wrong_shapes_and_dtypes_are_400_and_bill_nothing(api: tuple[str, dict[str, str]]) -> None:
    url, keys = api
    key = keys["carol"]
    before = usage(url, key)
    x = images(2)
    npy64 = io.BytesIO()
    np.save(npy64, x.astype(np.float64))
    cases = {
        "no shape header": _raw(url, key, x.tobytes(), **{"X-Dtype": "uint8"}),
        "shape not ints": _raw(url, key, x.tobytes(), **{"X-Shape": "2,3,eight,8", "X-Dtype": "uint8"}),
        "length mismatch": _raw(url, key, x.tobytes()[:-1], **{"X-Shape": "2,3,8,8", "X-Dtype": "uint8"}),
        "wrong dtype": _raw(url, key, x.astype(np.int16).tobytes(), **{"X-Shape": "2,3,8,8", "X-Dtype": "int16"}),
        "wrong size": post(url, key, images(2)[:, :, :4, :4].copy()),
        "wrong channels": post(url, key, np.zeros((2, 1, 8, 8), np.uint8)),
        "wrong rank": post(url, key, np.zeros((2, 192), np.uint8)),
        "float64 npy": _raw(url, key, npy64.getvalue(), **{"Content-Type": wire.NPY}),
        "truncated npy": _raw(url, key, npy64.getvalue()[:40], **{"Content-Type": wire.NPY}),
        "not json": _raw(url, key, b"{shape", **{"Content-Type": wire.JSON}),
        "bad base64": _raw(
            url, key, json.dumps({"shape": [1], "dtype": "uint8", "data": "@@"}).encode(), **{"Content-Type": wire.JSON}
        ),
    }
    for name, r in cases.items():
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert r.json()["error"], name
        assert "Traceback" not in r.text and 'File "' not in r.text, name
    assert _raw(url, key, b"x", **{"Content-Type": "text/plain"}).status_code == 415
    assert usage(url, key) == before


def test_nan_and_inf_are_400_and_bill_nothing(api: tuple[str, dict[str, str]]) -> None:
    url, keys = api
    before = usage(url, keys["carol"])
    for bad in (np.nan, np.inf):
        x = np.full((3, *SHAPE), 0.5, np.float32)
        x[1, 0, 0, 0] = bad
        r = post(url, keys["carol"], x)
        assert r.status_code == 400 and "NaN" in r.json()["error"]
    assert usage(url, keys["carol"]) == before


def test_an_empty_batch_is_free(api: tuple[str, dict[str, str]]) -> None:
    url, keys = api
    before = usage(url, keys["carol"])
    for fmt in ("raw", "npy", "json"):
        r = post(url, keys["carol"], np.zeros((0, *SHAPE), np.uint8), fmt)
        assert r.status_code == 200 and r.headers["X-Billed"] == "0"
        assert answer(r).shape == (0, 16)
    assert usage(url, keys["carol"]) == before


def test_http_victim_is_a_victim(api: tuple[str, dict[str, str]], encoder_onnx: Path) -> None:
    url, keys = api
    with HttpVictim(url, keys["bob"]) as victim:
        local = OnnxVictim(encoder_onnx)
        assert victim.input_shape == SHAPE and victim.output_dim == local.output_dim
        assert victim.sha256 == local.sha256 and victim.max_rows == MAX_ROWS
        before = victim.remaining
        x = torch.from_numpy(images(MAX_ROWS * 2 + 3, seed=5))  # more than one request's worth
        out = victim.query(x, client="thief")
        torch.testing.assert_close(out, local.query(x), rtol=EXPORT_RTOL, atol=FOREIGN_ATOL)
        assert victim.queries_used == len(x) and victim.remaining == before - len(x)
        assert victim.forward_passes == len(x)  # all new rows
        victim.query(x[:4])
        assert victim.queries_used == len(x) + 4 and victim.forward_passes == len(x)  # cache hits, billed
        with pytest.raises(ValueError, match="NaN"):
            victim.query(torch.full((2, *SHAPE), float("nan")))
        assert victim.queries_used == len(x) + 4
