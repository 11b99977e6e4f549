"""The source distribution carries what a build from scratch needs, and the package's metadata files exist.

`make dist-check` goes further (builds a wheel from the sdist and imports it); that compiles the
extension, so it is not part of the test suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Files a build or a user of the sdist needs, beyond the Python package itself.
REQUIRED = ("setup.py", "pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE", "CITATION.cff", "CHANGELOG.md")


def _native_sources() -> list[str]:
    exts = {".h", ".cpp", ".cu", ".cuh"}
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.suffix in exts)


def _checkout_copy(dest: Path) -> Path:
    """The checkout's files (tracked and not ignored) without build leftovers: setuptools reuses a stale
    ``*.egg-info/SOURCES.txt``, which would hide a file the manifest forgets."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to know which files are the sources")
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkout_copy(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def sdist_members(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    src = checkout
    out = tmp_path_factory.mktemp("sdist")
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = proc.stdout.strip().splitlines()[-1]
    with tarfile.open(out / name) as tar:
        members = tar.getnames()
    top = members[0].split("/")[0]
    return {m.removeprefix(top + "/") for m in members}


def test_sdist_has_every_native_source_and_header(sdist_members: set[str]) -> None:
    sources = _native_sources()
    assert any(s.startswith("csrc/cuda/") for s in sources) and any(s.endswith(".h") for s in sources)
    missing = [s for s in sources if s not in sdist_members]
    assert not missing, f"sdist lacks {missing}"


def test_sdist_has_build_files_metadata_and_package_data(sdist_members: set[str]) -> None:
    missing = [f for f in REQUIRED if f not in sdist_members]
    assert not missing, f"sdist lacks {missing}"
    assert "sslsteal_fast/py.typed" in sdist_members
    assert any(m.startswith("sslsteal_fast/sweep/configs/") and m.endswith(".toml") for m in sdist_members)
    assert not any(m.endswith((".so", ".pyc", ".onnx")) for m in sdist_members)


@pytest.fixture(scope="module")
def wheel_files(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a wheel installs, without compiling the extension: setuptools' build_py (package + data files)."""
    out = tmp_path_factory.mktemp("build-lib")
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sdist_and_wheel_ship_every_sweep_config(sdist_members: set[str], wheel_files: Path) -> None:
    configs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sslsteal_fast" / "sweep" / "configs").rglob("*.toml"))
    assert "sslsteal_fast/sweep/configs/demo.toml" in configs
    assert "sslsteal_fast/sweep/configs/paper/cifar10-resnet18.toml" in configs
    assert not [c for c in configs if c not in sdist_members], "the sdist lacks sweep configs"
    assert not [c for c in configs if not (wheel_files / c).is_file()], "the wheel lacks sweep configs"


def test_license_is_mit_in_spdx_form() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'license = "MIT"' in text and 'license-files = ["LICENSE"]' in text
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_citation_cites_the_paper() -> None:
    cff = (ROOT / "CITATION.cff").read_text()
    assert "preferred-citation:" in cff
    assert "On the Difficulty of Defending Self-Supervised Learning against Model Extraction" in cff
    assert "Dziedzic" in cff and "2022" in cff


def test_python_dash_m_runs_the_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sslsteal_fast", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    from sslsteal_fast import __version__

    assert __version__ in proc.stdout


def test_sdist_and_wheel_ship_the_pretrained_victims(sdist_members: set[str], wheel_files: Path) -> None:
    """The demo's packaged victims (weights, metadata, manifest) travel with the package."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sslsteal_fast" / "pretrained").rglob("*") if p.is_file())
    assert "sslsteal_fast/pretrained/manifest.json" in files
    assert "sslsteal_fast/pretrained/demo/victim.safetensors" in files
    assert not [f for f in files if f not in sdist_members], "the sdist lacks pretrained files"
    assert not [f for f in files if not (wheel_files / f).is_file()], "the wheel lacks pretrained files"
