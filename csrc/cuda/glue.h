// Helpers shared by the CUDA torch glue files (*_cuda.cpp): dtype mapping, the float32 product mode,
// the current stream, scratch from the caching allocator and the launch-status check. Argument
// validation is not here: the glue calls the same checks as the CPU kernels (../checks.h), and the
// same ATen numerics (../numerics.h: the distance shift, the exact top-k distances).
// Built only when torch has CUDA.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>

#include "../checks.h"
#include "../numerics.h"
#include "kernels.h"

namespace sslsteal_cuda {
namespace glue {

// The kernels' element type of t. Unreachable default after sslsteal::check_matrix; it keeps a
// future caller from launching on a dtype the kernels do not know.
inline DType dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kF32;
    case at::kDouble:
      return DType::kF64;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kHalf:
      return DType::kF16;
    default:
      TORCH_CHECK(false, "sslsteal_fast::", op, ": expected float32, float64, bfloat16 or float16, got ",
                  t.scalar_type());
  }
}

// Whether PyTorch's own float32 CUDA matmuls may use TF32. torch >= 2.9 has a per-backend precision
// API (torch.backends.cuda.matmul.fp32_precision); once it has been used, the legacy getter
// allowTF32CuBLAS() raises ("mix of the legacy and new APIs"), so read the new one where it exists.
// 2.9 spells backend and precision as strings, later releases as enums.
inline bool torch_allows_tf32_matmul() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
         at::Float32Precision::TF32;
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 9
  return at::globalContext().float32Precision("cuda", "matmul") == "tf32";
#else
  return at::globalContext().allowTF32CuBLAS();
#endif
}

// float32 products follow PyTorch's own setting for float32 matmuls on CUDA. Other dtypes do not read
// the setting at all (their kernels ignore the mode), so a bfloat16 call never depends on it.
inline Fp32Mode fp32_mode(const at::Tensor& t) {
  if (t.scalar_type() != at::kFloat) return Fp32Mode::kTf32x3;
  return torch_allows_tf32_matmul() ? Fp32Mode::kTf32 : Fp32Mode::kTf32x3;
}

inline void check_status(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "sslsteal_fast::", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// Scratch through torch's caching allocator (freed to the cache when the tensor dies; stream-ordered).
inline at::Tensor scratch(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, like.options().dtype(at::kByte));
}

// t minus a shift (D,), contiguous: the rows the squared-distance kernels read (../numerics.h).
inline at::Tensor shifted(const at::Tensor& t, const at::Tensor& shift) { return (t - shift).contiguous(); }

inline cudaStream_t stream_for(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

}  // namespace glue
}  // namespace sslsteal_cuda
