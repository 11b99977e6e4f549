"""Failures inside the application: no traceback ever reaches a client, and an answer that may not be served bills nothing."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette's TestClient asks for httpx2, which the serve extra does not need
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from sslsteal_fast.serve.app import create_app
from sslsteal_fast.serve.service import Service
from sslsteal_fast.victim import wire
from tests.helpers import add_keys, linear_encoder


@pytest.fixture
def nan_model(tmp_path: Path) -> Path:
    """A foreign linear encoder whose weights hold a NaN: every answer is non-finite."""
    weight = np.ones((48, 4), np.float32)
    weight[0, 0] = np.nan
    return linear_encoder(tmp_path / "nan.onnx", weight)


@pytest.fixture
def client(nan_model: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Service, str]]:
    key = add_keys(tmp_path / "state", alice={"budget": 10})["alice"]
    service = Service(nan_model, tmp_path / "state", threads=1, max_wait_ms=0)
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client, service, key


def test_a_non_finite_answer_is_refused_and_billed_nothing(client: tuple[TestClient, Service, str]) -> None:
    c, _, _ = client
    body, headers = wire.encode(np.zeros((2, 3, 4, 4), np.uint8))
    r = c.post("/v1/embed", content=body, headers=headers)
    assert r.status_code == 422 and "non-finite" in r.json()["error"]
    usage = c.get("/v1/usage").json()
    assert usage["billed"] == 0 and usage["remaining"] == 10 and usage["in_flight"] == 0


def test_an_internal_error_is_a_500_without_its_traceback(
    client: tuple[TestClient, Service, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, service, key = client

    def broken(*_: object) -> None:
        raise RuntimeError(f"secret internals {key} at /srv/private/path.py")

    monkeypatch.setattr(service, "usage", broken)
    r = c.get("/v1/usage")
    assert r.status_code == 500 and r.json() == {"error": "internal server error"}
    assert "secret" not in r.text and "Traceback" not in r.text and key not in r.text
    monkeypatch.setattr(service.batcher, "submit", broken)
    body, headers = wire.encode(np.zeros((2, 3, 4, 4), np.uint8))
    r = c.post("/v1/embed", content=body, headers=headers)
    assert r.status_code == 500 and r.json() == {"error": "internal server error"}
    assert service.ledger.reserved("alice") == 0 and service.ledger.billed("alice") == 0  # its rows given back
