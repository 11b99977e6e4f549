#!/usr/bin/env bash
# Build the extension WITH its CUDA kernels on a machine without a GPU, and run the op tests against
# that build (`make cuda-build-check`). `make cuda-check` compiles the .cu files alone; this also
# compiles the torch glue (csrc/cuda/*_cuda.cpp) with CUDAExtension, links everything against a CUDA
# build of torch and loads it, so a glue error or a missing symbol shows up without a GPU.
#   1. a separate virtualenv (.venv-cuda, override CUDA_VENV) with PyPI's torch: on Linux x86_64 that is
#      the CUDA build (torch 2.13.0: CUDA 13.0, ~530 MB plus the nvidia-* runtime wheels, ~3 GB in all);
#   2. `setup.py build_ext` with SSLSTEAL_FORCE_CUDA=1 and TORCH_CUDA_ARCH_LIST (default 9.0) into
#      build/cuda-build-check (the in-place CPU build of sslsteal_fast/_C*.so is left alone);
#   3. a staged copy of the package, its tests and pyproject.toml with that extension, where
#      `pytest tests/ops` runs: the CPU kernels of the CUDA build, the CUDA registrations present
#      (has_kernel("cuda")), the CUDA-marked tests skipped (no device).
# Needs nvcc of the CUDA major version torch was built with (CUDA_HOME, else the nvcc on PATH).
# Environment: PYTHON (to create the venv; default python3), CUDA_VENV, CUDA_TORCH_SPEC (default
# torch==2.13.0), TORCH_CUDA_ARCH_LIST, MAX_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CUDA_VENV:-.venv-cuda}"
SPEC="${CUDA_TORCH_SPEC:-torch==2.13.0}"
OUTDIR=build/cuda-build-check
start=$SECONDS

# CUDA_HOME: the toolkit root with include/cuda_runtime.h (an nvcc on PATH may be a wrapper script
# outside the toolkit, so its own location is tried last).
if [[ -z "${CUDA_HOME:-}" ]]; then
  NVCC="$(command -v nvcc || true)"
  for c in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "${NVCC:-/nonexistent}")")")"; do
    if [[ -x "$c/bin/nvcc" && -f "$c/include/cuda_runtime.h" ]]; then CUDA_HOME="$c"; break; fi
  done
  [[ -n "${CUDA_HOME:-}" ]] || { echo "cuda-build-check: no CUDA toolkit found (set CUDA_HOME)"; exit 1; }
fi
export CUDA_HOME

echo "== 1/3 $VENV with $SPEC (CUDA build, from PyPI)"
test -x "$VENV/bin/python" || "${PYTHON:-python3}" -m venv "$VENV"
PY="$(cd "$VENV" && pwd)/bin/python"  # absolute: the tests run from the staged copy
# --isolated: pip configuration that points at local CPU-only wheels (find-links) must not win here.
PIP=("$PY" -m pip --isolated --disable-pip-version-check)
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  "${PIP[@]}" install -q "$SPEC"
fi
"${PIP[@]}" install -q numpy pybind11 ninja "setuptools>=77" wheel pytest pytest-benchmark hypothesis
"$PY" -c "import torch; assert torch.version.cuda, 'torch is a CPU build'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU visible:', torch.cuda.is_available())"

echo "== 2/3 build with the CUDA kernels (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}, CUDA_HOME=$CUDA_HOME)"
rm -rf "$OUTDIR/lib" "$OUTDIR/pkg"
SSLSTEAL_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-2}" \
  "$PY" setup.py -q build_ext --build-lib "$OUTDIR/lib" --build-temp "$OUTDIR/temp"

echo "== 3/3 op tests against that build (staged in $OUTDIR/pkg)"
mkdir -p "$OUTDIR/pkg"
cp -r sslsteal_fast tests pyproject.toml "$OUTDIR/pkg/"
find "$OUTDIR/pkg" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$OUTDIR"/pkg/sslsteal_fast/_C*.so
cp "$OUTDIR"/lib/sslsteal_fast/_C*.so "$OUTDIR/pkg/sslsteal_fast/"
(
  cd "$OUTDIR/pkg"
  "$PY" - <<'PYEOF'
import sslsteal_fast
from sslsteal_fast.ops._native import has_kernel, load_error, native_available

assert native_available(), f"the CUDA build does not load: {load_error()}"
info = sslsteal_fast.build_info() if hasattr(sslsteal_fast, "build_info") else None
print("build_info:", info)
for key in ("cpu", "cuda"):
    assert has_kernel(key), f"no {key} kernels registered"
print("extension:", sslsteal_fast.__file__.rsplit("/", 1)[0], "CPU and CUDA kernels registered")
PYEOF
  "$PY" -m pytest -q -p no:cacheprovider tests/ops
)
echo "cuda-build-check: done in $((SECONDS - start)) s"
