// Build facts injected by setup.py / CMakeLists.txt as -D flags; defaults for other builds.
#pragma once

#ifndef SSLSTEAL_BUILD_DEBUG
#define SSLSTEAL_BUILD_DEBUG 0
#endif
#ifndef SSLSTEAL_WITH_CUDA
#define SSLSTEAL_WITH_CUDA 0
#endif
#ifndef SSLSTEAL_CUDA_VERSION
#define SSLSTEAL_CUDA_VERSION ""
#endif
#ifndef SSLSTEAL_CUDA_ARCHS
#define SSLSTEAL_CUDA_ARCHS ""
#endif
#ifndef SSLSTEAL_TORCH_VERSION
#define SSLSTEAL_TORCH_VERSION "unknown"
#endif
#define SSLSTEAL_STR2(x) #x
#define SSLSTEAL_STR(x) SSLSTEAL_STR2(x)
#if defined(__clang__)
#define SSLSTEAL_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define SSLSTEAL_COMPILER "gcc " SSLSTEAL_STR(__GNUC__) "." SSLSTEAL_STR(__GNUC_MINOR__)
#else
#define SSLSTEAL_COMPILER "unknown"
#endif
