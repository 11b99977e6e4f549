# The project's vocabulary. Every target does its own set-up from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.sslsteal-installed
# The ONNX Runtime extra: gpu (onnxruntime-gpu) where nvidia-smi sees a GPU, else cpu (onnxruntime).
ORT_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: victim package-victims demo test bench bench-http bench-suite lint format cuda-check gpu-check dist-check install clean

# A virtualenv with torch and the package built in place (C++ extension included).
$(STAMP): setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.h csrc/cuda/*.cpp)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q numpy pybind11 ninja
	$(PIP) install -q --no-build-isolation -e ".[$(ORT_EXTRA),test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sslsteal demo --out demo-out

# Retrain the demo's packaged victim from its recorded recipe and compare it with the shipped weights
# (bit for bit on the machine that made them; elsewhere by linear probe within the recorded tolerance).
victim: $(STAMP)
	$(VENV)/bin/sslsteal train-victim --recipe demo --out runs/victim-demo

# Maintainers: retrain every packaged victim from scratch and rewrite sslsteal_fast/pretrained/.
package-victims: $(STAMP)
	$(PY) scripts/package_victims.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py --out .benchmarks-cpu.md
	$(PY) benchmarks/bench_cli.py

# The HTTP encoder API under load (a real `sslsteal serve` process; about 20 minutes on 2 cores).
bench-http: $(STAMP)
	$(PY) benchmarks/bench_http.py --out .benchmarks-http.md

# The same ops as pytest-benchmark suites (save/compare runs with --benchmark-autosave / --benchmark-compare).
bench-suite: $(STAMP)
	$(PY) -m pytest benchmarks/test_bench_ops.py --benchmark-enable --benchmark-only -p no:cacheprovider

# C++/CUDA sources under csrc/, formatted by .clang-format with the pinned clang-format wheel.
CSRC := $(shell find csrc -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)

lint: $(STAMP)
	$(VENV)/bin/ruff check sslsteal_fast tests benchmarks
	$(VENV)/bin/ruff format --check sslsteal_fast tests benchmarks
	$(VENV)/bin/clang-format --dry-run -Werror $(CSRC)

format: $(STAMP)
	$(VENV)/bin/ruff format sslsteal_fast tests benchmarks
	$(VENV)/bin/ruff check --fix sslsteal_fast tests benchmarks
	$(VENV)/bin/clang-format -i $(CSRC)

# Compile every .cu with nvcc for sm_80 and sm_90 (no GPU or CUDA torch needed).
cuda-check:
	bash scripts/cuda_check.sh

# Without a GPU: build the extension with its CUDA kernels against PyPI's CUDA torch in a separate
# venv (.venv-cuda), then run the op tests with that build (docs/CUDA.md, "Checks").
.PHONY: cuda-build-check
cuda-build-check:
	bash scripts/cuda_build_check.sh

# On a machine with a GPU and CUDA torch: build, run all tests with CUDA cases on, benchmark.
gpu-check:
	bash scripts/gpu_check.sh

# Build the sdist, build a wheel from it (compiles the extension from the sdist's own sources) and
# import the wheel's extension: proves the source distribution is complete.
dist-check: $(STAMP)
	bash scripts/dist_check.sh $(PY)

clean:
	rm -rf build dist *.egg-info sslsteal_fast/*.so $(STAMP)
