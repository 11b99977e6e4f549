#!/usr/bin/env bash
# One command for a machine with a GPU and a CUDA build of torch (`make gpu-check`):
#   1. build + run the torch-free kernel self-test (csrc/cuda/tests/kernel_harness.cu) with nvcc;
#   2. build the extension with the CUDA kernels (pip install --no-build-isolation -e .);
#   3. run the whole pytest suite (CUDA-marked tests enabled: they skip only without a GPU);
#   4. run the GPU benchmarks, each printing its targets with PASS / FAIL (the JSON files keep the rows):
#      benchmarks/bench_cuda.py (losses, n = 2^20, top-k, pairwise_distance, fp32 accuracy; bench-cuda.json),
#      benchmarks/bench_sweep_gpu.py (the demo sweep on cuda vs cpu; bench-sweep-gpu.json) and
#      benchmarks/bench_serving.py --device cuda (OnnxVictim's CUDA provider vs eager; bench-serving-gpu.json).
# Environment: PYTHON (default .venv/bin/python, else python3), MAX_JOBS, TORCH_CUDA_ARCH_LIST,
# GPU_CHECK_QUICK=1 (smaller loss grid and top-k bank, the quick demo grid), GPU_CHECK_SKIP_BENCH=1,
# GPU_CHECK_OUT (the folder for the benchmarks' JSON files; default the repository root).
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
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package even where step 2 fell back to build_ext
  out="${GPU_CHECK_OUT:-.}"
  mkdir -p "$out"
  quick=()
  [[ "${GPU_CHECK_QUICK:-0}" == "1" ]] && quick=(--quick)
  failed=()
  run_bench() {  # name, then the command; a failing benchmark does not stop the others
    local name="$1" start=$SECONDS
    shift
    "$@" || failed+=("$name")
    echo "-- $name: $((SECONDS - start)) s"
  }
  run_bench bench_cuda "$PY" benchmarks/bench_cuda.py ${quick[@]+"${quick[@]}"} --json "$out/bench-cuda.json"
  run_bench bench_sweep_gpu "$PY" benchmarks/bench_sweep_gpu.py ${quick[@]+"${quick[@]}"} --json "$out/bench-sweep-gpu.json"
  run_bench bench_serving "$PY" benchmarks/bench_serving.py --device cuda --batch-sizes 256 1024 \
    --json "$out/bench-serving-gpu.json"
  if ((${#failed[@]})); then
    echo "gpu-check: benchmarks failed: ${failed[*]}"
    exit 1
  fi
fi
echo "gpu-check: done"
