#!/usr/bin/env bash
# Build the sdist, then a wheel from that sdist alone (no access to the checkout), then import the
# wheel's compiled extension with the current environment's dependencies. Usage: dist_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
[[ "$PY" == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, venv kept
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
SDIST=$("$PY" -c "from setuptools import build_meta; print(build_meta.build_sdist('$TMP/sdist'))" | tail -1)
echo "sdist: $SDIST ($(tar tzf "$TMP/sdist/$SDIST" | wc -l) files)"
mkdir -p "$TMP/src" && tar xzf "$TMP/sdist/$SDIST" -C "$TMP/src"
(cd "$TMP/src"/*/ && SSLSTEAL_PORTABLE=1 "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$TMP/wheel")
"$PY" -m pip install -q --no-deps --target "$TMP/site" "$TMP"/wheel/*.whl
cd "$TMP" && PYTHONPATH="$TMP/site" "$PY" - <<'PYEOF'
import sslsteal_fast, torch
from sslsteal_fast.ops import _native
assert sslsteal_fast.__file__.startswith(__import__("os").environ["PYTHONPATH"]), sslsteal_fast.__file__
assert _native.has_kernel("cpu"), _native.load_error()
a, b = torch.randn(8, 4), torch.randn(8, 4)
print("wheel from sdist imports; native info_nce:", float(sslsteal_fast.ops.info_nce(a, b)))
print("typed:", __import__("importlib.resources").resources.files("sslsteal_fast").joinpath("py.typed").is_file())
PYEOF
