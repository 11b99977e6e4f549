"""``HttpVictim`` drives a real ``sslsteal steal`` on built-in data, and the command line of the API (keys, extras)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sslsteal_fast.cli import main
from sslsteal_fast.serve.process import ServerProcess
from sslsteal_fast.util.extras import MissingExtra
from sslsteal_fast.victim import HttpVictim, OnnxVictim
from tests.helpers import add_keys

Start = Callable[..., ServerProcess]


def test_http_victim_drives_a_real_steal(tmp_path: Path, start_server: Start, encoder_onnx: Path, capsys) -> None:
    keys = add_keys(tmp_path / "state", thief={"budget": 100})
    key_file = tmp_path / "thief.key"
    key_file.write_text(keys["thief"] + "\n")
    server = start_server(tmp_path / "state")
    out = tmp_path / "stolen"
    argv = ["steal", "--victim", server.url, "--key-file", str(key_file), "--queries", "shapes", "--budget", "64"]
    argv += ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "--out", str(out), "--json", "--quiet"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["victim"] == server.url and result["billed_queries"] == 64 and result["image_size"] == 8
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["steal"]["victim_sha256"] == OnnxVictim(encoder_onnx).sha256  # what was stolen, named by its content
    with HttpVictim(server.url, keys["thief"]) as victim:
        assert victim.usage()["billed"] == 64
        # The budget refuses a steal it cannot pay for before anything is sent.
        again = [*argv[: argv.index("--out")], "--out", str(tmp_path / "again"), "--budget", "64"]
        assert main(again) == 2
        assert "budget" in capsys.readouterr().err
        assert victim.usage()["billed"] == 64


def test_steal_refuses_a_url_without_a_key_and_local_defenses(tmp_path: Path, capsys) -> None:
    base = ["steal", "--victim", "http://127.0.0.1:9", "--queries", "shapes", "--out", str(tmp_path / "x")]
    assert main(base) == 2
    assert "--key-file" in capsys.readouterr().err
    key = tmp_path / "k"
    key.write_text("ssk_0123456789abcdef_secret\n")
    assert main([*base, "--key-file", str(key), "--defense", "noise:sigma=1"]) == 2
    assert "server" in capsys.readouterr().err
    assert main(["steal", "--victim", str(tmp_path / "v.onnx"), "--key-file", str(key), *base[3:]]) == 2
    assert "--key-file only applies with a --victim URL" in capsys.readouterr().err


def test_keys_add_shows_the_key_once_and_stores_only_its_hash(tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    assert main(["keys", "add", "--state", str(state), "--client", "alice", "--budget", "10", "--quiet"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("ssk_") and len(key) > 40 and "\n" not in key
    argv = ["keys", "add", "--state", str(state), "--client", "bob", "--budget", "5", "--defense", "noise:sigma=0.5"]
    assert main([*argv, "--rate-limit", "3", "--quiet"]) == 0
    bob = capsys.readouterr().out.strip()
    assert main(["keys", "add", "--state", str(state), "--client", "alice", "--budget", "1"]) == 2
    assert "already has a key" in capsys.readouterr().err
    assert main(["keys", "add", "--state", str(state), "--client", "eve", "--budget", "1", "--defense", "bogus"]) == 2
    assert "unknown defense" in capsys.readouterr().err
    assert main(["keys", "list", "--state", str(state), "--json"]) == 0
    listed = capsys.readouterr().out
    clients = json.loads(listed)["clients"]
    assert [(c["client"], c["budget"], c["billed"], c["remaining"]) for c in clients] == [
        ("alice", 10, 0, 10),
        ("bob", 5, 0, 5),
    ]
    assert clients[1]["defenses"] == ["noise:sigma=0.5"] and clients[1]["rate_limit"] == 3
    assert main(["keys", "list", "--state", str(state)]) == 0
    shown = listed + capsys.readouterr().out
    with sqlite3.connect(state / "server.sqlite") as conn:
        dump = "\n".join(conn.iterdump())  # every table, blobs in hex
    for k in (key, bob):
        secret = k.rsplit("_", 1)[1]
        assert secret not in shown and secret not in dump and k.encode().hex() not in dump.lower()
        assert hashlib.sha256(k.encode()).hexdigest() in dump.lower()  # what is kept instead


def test_without_the_serve_extra_serve_says_how_to_install_it(tmp_path: Path, encoder_onnx: Path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from sslsteal_fast.cli import main\n"
        f"sys.exit(main(['serve', {str(encoder_onnx)!r}, '--state', {str(tmp_path)!r}]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'sslsteal_fast[serve]'" in lines[0], run.stderr


def test_without_httpx_http_victim_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # as if it were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'sslsteal_fast\[serve\]'"):
        HttpVictim("http://127.0.0.1:9", "ssk_0123456789abcdef_secret")
