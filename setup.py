"""Builds the native extension ``sslsteal_fast._C`` with torch's cpp_extension machinery (ninja).

Install with ``pip install --no-build-isolation -e .`` once torch is present: an isolated build
environment would fetch its own (CUDA) torch and compile against a torch you do not run.

Switches (environment variables):
  SSLSTEAL_FORCE_CUDA=1   build the CUDA kernels even when no GPU is visible (needs nvcc + CUDA torch)
  SSLSTEAL_NO_CUDA=1      never build the CUDA kernels
  SSLSTEAL_DEBUG=1        -O0 -g, assertions on (for gdb / sanitizers)
  SSLSTEAL_PORTABLE=1     no -march=native for the CPU kernels (for wheels run on other machines)
  TORCH_CUDA_ARCH_LIST    CUDA architectures (default "8.0;9.0+PTX": SASS for A100 (and, binary-compatible,
                          the sm_86 / sm_89 cards) and H100/H200, plus compute_90 PTX that the driver
                          JIT-compiles for newer GPUs such as sm_100 / sm_120)
  MAX_JOBS                parallel compile jobs (ninja)
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _extensions() -> tuple[list, dict]:
    import torch
    from torch.utils import cpp_extension

    debug = _flag("SSLSTEAL_DEBUG")
    force_cuda = _flag("SSLSTEAL_FORCE_CUDA")
    no_cuda = _flag("SSLSTEAL_NO_CUDA")
    if force_cuda and no_cuda:
        sys.exit("setup.py: SSLSTEAL_FORCE_CUDA and SSLSTEAL_NO_CUDA are both set; pick one")
    torch_has_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if force_cuda and not torch_has_cuda:
        sys.exit(
            "setup.py: SSLSTEAL_FORCE_CUDA=1 but torch is a CPU build or CUDA_HOME is not found "
            f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})"
        )
    with_cuda = not no_cuda and torch_has_cuda and (force_cuda or torch.cuda.is_available())
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""

    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))  # noqa: E731
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    if with_cuda:
        sources += rel("csrc/cuda/*.cu") + rel("csrc/cuda/*_cuda.cpp")

    defines = [
        f"-DSSLSTEAL_BUILD_DEBUG={int(debug)}",
        f"-DSSLSTEAL_WITH_CUDA={int(with_cuda)}",
        f'-DSSLSTEAL_CUDA_VERSION="{torch.version.cuda if with_cuda else ""}"',
        f'-DSSLSTEAL_CUDA_ARCHS="{archs}"',
        f'-DSSLSTEAL_TORCH_VERSION="{torch.__version__}"',
    ]
    opt = ["-O0", "-g", "-UNDEBUG"] if debug else ["-O3", "-DNDEBUG"]
    portable = _flag("SSLSTEAL_PORTABLE")
    # The package is built where it runs (pip from source), so the CPU epilogues may use the host's
    # full vector width (AVX2 / AVX-512: ~2x the SSE2 baseline for the fused exp passes).
    march = [] if portable or debug else ["-march=native"]
    cxx = opt + defines + march + ["-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
    nvcc = opt + defines + ["--expt-relaxed-constexpr", "-lineinfo"]

    print(
        "sslsteal_fast build: "
        f"torch {torch.__version__}, torch CUDA {torch.version.cuda}, CUDA_HOME {cpp_extension.CUDA_HOME}, "
        f"CUDA kernels {'ON' if with_cuda else 'OFF'}"
        f"{' (forced)' if force_cuda else ''}{' (disabled by SSLSTEAL_NO_CUDA)' if no_cuda else ''}, "
        f"arch list {archs or '-'}, debug {'ON' if debug else 'OFF'}, "
        f"CPU ISA {'portable' if not march else 'native'}, MAX_JOBS {os.environ.get('MAX_JOBS', 'auto')}, "
        f"{len(sources)} sources",
        flush=True,
    )

    ext_cls = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    ext = ext_cls(
        name="sslsteal_fast._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc} if with_cuda else {"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}
    return [ext], cmdclass


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
