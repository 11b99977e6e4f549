#!/usr/bin/env bash
# Compile-check the CUDA sources without a GPU or a CUDA build of torch (`make cuda-check`).
#   1. every csrc/cuda/*.cu with nvcc -c for sm_80, sm_86 and sm_90 (override: CUDA_CHECK_ARCHS="80 86 90"),
#      all warnings as errors; sm_86 (99 KiB of shared memory per block, like sm_89 / sm_120) builds the
#      same kernels, and its devices run the backward's small-tile layout. Per kernel and arch, ptxas's
#      registers / spills / static shared memory, in a table at the end (CUDA_CHECK_VERBOSE=1: also
#      the raw ptxas lines as they come);
#   2. the torch-free GPU self-test csrc/cuda/tests/kernel_harness.cu, compiled and linked, and the
#      host-only table of each contrastive kernel layout's dynamic shared memory (tests/smem_report.cu);
#   3. best effort: the torch glue (csrc/cuda/*_cuda.cpp) through `g++ -fsyntax-only` against the
#      installed torch headers (a CPU torch ships the c10/cuda headers; only the generated
#      cuda_cmake_macros.h is missing and is stubbed). Skipped with a note when torch is absent.
# Exits 0 with a message when nvcc is not installed; non-zero on the first compile error.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$NVCC" ]]; then
  echo "cuda-check: nvcc not found; skipping (install the CUDA toolkit to compile-check csrc/cuda)"
  exit 0
fi

ARCHS="${CUDA_CHECK_ARCHS:-80 86 90}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FLAGS=(-std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr -lineinfo -Icsrc -Werror all-warnings -Xcompiler -Wall)
VERBOSE="${CUDA_CHECK_VERBOSE:-0}"
: > "$TMP/ptxas"

echo "cuda-check: $("$NVCC" --version | tail -n 2 | head -n 1)"
shopt -s nullglob
sources=(csrc/cuda/*.cu)
if [[ ${#sources[@]} -eq 0 ]]; then
  echo "cuda-check: no csrc/cuda/*.cu files"; exit 1
fi
fail=0
for arch in $ARCHS; do
  objs=()
  for src in "${sources[@]}"; do
    obj="$TMP/sm${arch}_$(basename "${src%.cu}").o"
    start=$SECONDS
    if "$NVCC" "${FLAGS[@]}" -Xptxas -v -gencode "arch=compute_${arch},code=sm_${arch}" -c "$src" -o "$obj" \
        2> "$TMP/log"; then
      echo "  ok    sm_${arch}  $src  ($((SECONDS - start)) s)"
      [[ "$VERBOSE" == "1" ]] && grep -E "registers|spill" "$TMP/log" | sed 's/^/        /' || true
      # Per entry function: "Compiling entry function 'NAME' for 'sm_XY'", "N bytes spill stores",
      # "Used R registers, ... S bytes smem" -> one TSV row (arch, registers, spill bytes, smem, name).
      awk -v arch="sm_${arch}" '
        /Compiling entry function/ { split($0, q, "'"'"'"); name = q[2]; spill = 0 }
        /spill stores/ { spill = $5 }
        /Used [0-9]+ registers/ {
          smem = 0
          if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
          for (i = 1; i <= NF; i++) if ($(i + 1) == "registers,") regs = $i
          if (name != "") printf "%s\t%s\t%s\t%s\t%s\n", arch, regs, spill, smem, name
          name = ""
        }' "$TMP/log" >> "$TMP/ptxas" || true
      objs+=("$obj")
    else
      echo "  FAIL  sm_${arch}  $src"; sed 's/^/        /' "$TMP/log"; fail=1
    fi
  done
  if [[ $fail -eq 0 && -f csrc/cuda/tests/kernel_harness.cu ]]; then
    if "$NVCC" "${FLAGS[@]}" -gencode "arch=compute_${arch},code=sm_${arch}" csrc/cuda/tests/kernel_harness.cu \
        "${objs[@]}" -o "$TMP/harness_sm${arch}" 2> "$TMP/log"; then
      echo "  ok    sm_${arch}  csrc/cuda/tests/kernel_harness.cu (compiled + linked)"
    else
      echo "  FAIL  sm_${arch}  csrc/cuda/tests/kernel_harness.cu"; sed 's/^/        /' "$TMP/log"; fail=1
    fi
  fi
done

# Per-kernel resource table: registers, spill stores and static shared memory per arch (the kernels'
# tiles live in dynamic shared memory, sized per launch: see the smem_report table below).
if [[ -s "$TMP/ptxas" ]]; then
  echo "cuda-check: ptxas resources per kernel (regs / spill bytes / static smem bytes)"
  demangle=cat; command -v c++filt >/dev/null && demangle=c++filt
  cut -f5 "$TMP/ptxas" | "$demangle" | sed -E 's/^void //; s/sslsteal_cuda::detail:://g; s/\(anonymous namespace\):://g; s/\(.*$//' \
    > "$TMP/names"
  paste "$TMP/ptxas" "$TMP/names" | awk -F'\t' '{ printf "  %-7s %4s regs %5s spill %6s smem  %s\n", $1, $2, $3, $4, $6 }'
fi
if [[ $fail -eq 0 && -f csrc/cuda/tests/smem_report.cu ]]; then
  # Host-only: PTX for one arch is enough (the layouts do not depend on it), nothing runs on a GPU.
  if "$NVCC" -std=c++17 -O0 --expt-relaxed-constexpr -Icsrc -gencode "arch=compute_80,code=compute_80" \
      csrc/cuda/tests/smem_report.cu -o "$TMP/smem_report" 2> "$TMP/log" && "$TMP/smem_report" > "$TMP/smem"; then
    echo "cuda-check: $(head -n 1 "$TMP/smem")"; tail -n +2 "$TMP/smem"
  else
    echo "  FAIL  csrc/cuda/tests/smem_report.cu"; sed 's/^/        /' "$TMP/log"; fail=1
  fi
fi

# Best-effort syntax check of the torch glue.
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if incs=$("$PY" -c "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))" 2>/dev/null) \
    && command -v g++ >/dev/null; then
  mkdir -p "$TMP/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$TMP/stub/c10/cuda/impl/cuda_cmake_macros.h"
  cuda_inc=""
  for c in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$NVCC")")")" /usr/local/cuda; do
    if [[ -n "$c" && -f "$c/include/cuda_runtime.h" ]]; then cuda_inc="$c/include"; break; fi
  done
  inc_flags=(-I"$TMP/stub"); for d in $incs; do inc_flags+=(-I"$d"); done
  for src in csrc/cuda/*_cuda.cpp; do
    if g++ -std=c++17 -fsyntax-only -Wall -Wno-c++20-extensions -Icsrc -I"$cuda_inc" "${inc_flags[@]}" "$src" 2> "$TMP/log"; then
      echo "  ok    g++ -fsyntax-only  $src"
    else
      echo "  FAIL  g++ -fsyntax-only  $src"; sed 's/^/        /' "$TMP/log"; fail=1
    fi
  done
else
  echo "  skip  torch glue syntax check (no importable torch or no g++)"
fi

if [[ $fail -ne 0 ]]; then
  echo "cuda-check: FAILED"; exit 1
fi
echo "cuda-check: all CUDA sources compile for: $(for a in $ARCHS; do printf 'sm_%s ' "$a"; done)"
