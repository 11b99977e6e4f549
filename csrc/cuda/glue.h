// Helpers shared by the CUDA torch glue files (*_cuda.cpp): dtype mapping, the float32 product mode,
// the current stream, scratch from the caching allocator and the launch-status check. Argument
// validation is not here: the glue calls the same checks as the CPU kernels (../checks.h), and the
// same ATen numerics (../numerics.h: the distance shift, the exact top-k distances).
// Built only when torch has CUDA.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

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

// float32 products follow PyTorch's own setting for float32 matmuls on CUDA.
inline Fp32Mode fp32_mode() { return at::globalContext().allowTF32CuBLAS() ? Fp32Mode::kTf32 : Fp32Mode::kTf32x3; }

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
