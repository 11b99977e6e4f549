"""Fixtures of the HTTP API tests: a small exported encoder, keys, real servers on 127.0.0.1, a time bound per test.

Every server here is a real ``sslsteal serve`` process on an ephemeral port (``--port 0``, the URL
read from its first stdout line), shut down when its fixture ends, one ORT thread each.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from sslsteal_fast.serve.process import ServerProcess
from sslsteal_fast.victim import export_onnx
from tests.helpers import TinyEncoder

#: Seconds any one test of the API may take (server start-up included).
TEST_TIMEOUT_S = 90
#: The encoder's input: (3, 8, 8) images -> 16-d representations.
SHAPE = (3, 8, 8)


@pytest.fixture(autouse=True)
def _time_bound() -> Iterator[None]:
    """Fail a test that runs longer than TEST_TIMEOUT_S (SIGALRM; the fixtures still shut their servers down)."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"the test ran longer than {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def encoder_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder exported by the package's own export code."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "tiny.onnx"
    export_onnx(TinyEncoder().eval(), path, SHAPE, arch="tiny")
    return path


@pytest.fixture
def start_server(encoder_onnx: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(state, *args, port=0)`` -> a running server; every one is stopped when the test ends."""
    started: list[ServerProcess] = []

    def start(state: Path, *args: str, port: int = 0) -> ServerProcess:
        server = ServerProcess(encoder_onnx, state, "--threads", "1", *args, port=port, timeout=TEST_TIMEOUT_S)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=10)
