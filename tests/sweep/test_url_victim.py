"""A sweep against a running encoder API: ``[victim] url`` + ``key_file``, every query billed to the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslsteal_fast.serve.process import ServerProcess
from sslsteal_fast.sweep import load_config, run_sweep, write_outputs
from sslsteal_fast.victim import HttpVictim, OnnxVictim
from tests.helpers import add_keys
from tests.sweep.conftest import tiny_toml


def _url_toml(victim: Path, url: str, key_file: Path, **options: object) -> str:
    text = tiny_toml(victim, losses=("mse",), budgets=(8, 16), **options)  # type: ignore[arg-type]
    return text.replace(f'onnx = "{victim}"', f'url = "{url}"\nkey_file = "{key_file}"')


def test_a_sweep_steals_from_a_running_server(tiny_victim: Path, tmp_path: Path) -> None:
    keys = add_keys(tmp_path / "state", thief={"budget": 10**6})
    key_file = tmp_path / "thief.key"
    key_file.write_text(keys["thief"] + "\n")
    with ServerProcess(tiny_victim, tmp_path / "state", "--threads", "1", timeout=90) as server:
        path = tmp_path / "sweep.toml"
        path.write_text(_url_toml(tiny_victim, server.url, key_file))
        cfg = load_config(path)
        assert cfg.victim.url == server.url and cfg.victim.key_file == key_file
        run = run_sweep(cfg, tmp_path / "out", progress=False, log=lambda _: None)
        write_outputs(run)
        with HttpVictim(server.url, keys["thief"]) as api:
            billed = api.usage()["billed"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cells"]["done"] == 4 and summary["cells"]["failed"] == 0
    assert run.victim.source == "url" and run.victim.sha256 == OnnxVictim(tiny_victim).sha256
    # Every query went through the key: the two query sets' 16 images each, and the victim's probe images.
    assert billed == 2 * 16 + 100 + 50
    assert 0.0 <= summary["victim"]["top1"] <= 1.0


@pytest.mark.parametrize(
    "change, error",
    [
        ({"defenses": ("none", "noise:sigma=0.5")}, "defended by its server"),
        ({"strategy": "augmented"}, "query-once"),
    ],
)
def test_a_url_victim_refuses_what_only_a_local_victim_can_do(
    tiny_victim: Path, tmp_path: Path, change: dict, error: str
) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(_url_toml(tiny_victim, "http://127.0.0.1:9", tmp_path / "k", **change))
    with pytest.raises(ValueError, match=error):
        load_config(path)


def test_a_url_victim_needs_its_key_file(tiny_victim: Path, tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    text = _url_toml(tiny_victim, "http://127.0.0.1:9", tmp_path / "k")
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("key_file")))
    with pytest.raises(ValueError, match="key_file"):
        load_config(path)
    path.write_text(text.replace('url = "http://127.0.0.1:9"', 'url = "ftp://x"'))
    with pytest.raises(ValueError, match="victim.url"):
        load_config(path)
