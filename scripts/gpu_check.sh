#!/usr/bin/env bash
# One command for a machine with a GPU and a CUDA build of torch (`make gpu-check`):
#   1. build + run the torch-free kernel self-test (csrc/cuda/tests/kernel_harness.cu) with nvcc;
#   2. build the extension with the CUDA kernels (pip install --no-build-isolation -e .);
#   3. run the whole pytest suite (CUDA-marked tests enabled: they skip only without a GPU);
#   4. run the CUDA benchmarks and print their tables (bench-cuda.json keeps the rows).
# Environment: PYTHON (default .venv/bin/python, else python3), MAX_JOBS, TORCH_CUDA_ARCH_LIST,
# GPU_CHECK_QUICK=1 (smaller benchmark grid), GPU_CHECK_SKIP_BENCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)"; then
  echo "gpu-check: needs a visible GPU and a CUDA build of torch ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1))"
  exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
CAP=$("$PY" -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')")
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}"
export MAX_JOBS="${MAX_JOBS:-8}"

echo "== 1/4 kernel self-test (nvcc, sm_${CAP})"
NVCC="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$NVCC" -std=c++17 -O3 --expt-relaxed-constexpr -Icsrc -gencode "arch=compute_${CAP},code=sm_${CAP}" \
  csrc/cuda/tests/kernel_harness.cu csrc/cuda/*.cu -o "$TMP/harness"
"$TMP/harness"

echo "== 2/4 build the extension with CUDA kernels"
"$PY" -m pip install -q "setuptools>=77" wheel ninja pybind11  # pyproject uses the SPDX licence form
"$PY" -m pip uninstall -q -y onnxruntime 2>/dev/null || true  # onnxruntime-gpu only: the two share one module
SSLSTEAL_FORCE_CUDA=1 "$PY" -m pip install -q --no-build-isolation -e ".[gpu,test]" \
  || SSLSTEAL_FORCE_CUDA=1 "$PY" setup.py build_ext --inplace
"$PY" - <<'PYEOF'
import torch
import sslsteal_fast
from sslsteal_fast.ops._native import has_kernel, load_error
info = sslsteal_fast.build_info() if hasattr(sslsteal_fast, "build_info") else None
print("build_info:", info)
if not has_kernel("cuda"):
    raise SystemExit(f"gpu-check: the extension has no CUDA kernels ({load_error()})")
PYEOF

echo "== 3/4 pytest (CUDA tests enabled)"
"$PY" -m pytest -q -rs

if [[ "${GPU_CHECK_SKIP_BENCH:-0}" != "1" ]]; then
  echo "== 4/4 CUDA benchmarks"
  bench_args=(--json bench-cuda.json)
  [[ "${GPU_CHECK_QUICK:-0}" == "1" ]] && bench_args+=(--quick)
  "$PY" benchmarks/bench_cuda.py "${bench_args[@]}"
fi
echo "gpu-check: done"
