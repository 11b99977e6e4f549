// Helpers shared by the CUDA torch glue files (*_cuda.cpp): argument checks with messages that name
// the op and the argument, dtype mapping, the current stream, and scratch from the caching allocator.
// Built only when torch has CUDA.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <string>

#include "../checks.h"
#include "kernels.h"

namespace sslsteal_cuda {
namespace glue {

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

inline at::ScalarType stat_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_cuda(const at::Tensor& t, const char* op, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK(t.is_cuda(), "sslsteal_fast::", op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device(), "; move every tensor to the same CUDA device");
  TORCH_CHECK(t.device() == ref.device(), "sslsteal_fast::", op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device(), "; move every tensor to the same CUDA device");
}

inline void check_matrix(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2, "sslsteal_fast::", op, ": ", name, " must be 2-D (rows, features), got shape ", t.sizes());
  TORCH_CHECK(t.size(1) > 0, "sslsteal_fast::", op, ": ", name, " must have at least one feature column");
  dtype_of(t, op);
}

inline void check_same_dtype(const at::Tensor& a, const char* na, const at::Tensor& b, const char* nb, const char* op) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "sslsteal_fast::", op, ": ", na, " is ", a.scalar_type(), " but ", nb,
              " is ", b.scalar_type(), "; pass one dtype");
}

inline void check_temperature(double temperature, const char* op) {
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, "sslsteal_fast::", op,
              ": temperature must be a finite number > 0, got ", temperature);
}

inline void check_vector(const at::Tensor& t, int64_t n, at::ScalarType dtype, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "sslsteal_fast::", op, ": ", name, " must have shape (", n, ",), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "sslsteal_fast::", op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
}

inline void check_status(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "sslsteal_fast::", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// Scratch through torch's caching allocator (freed to the cache when the tensor dies; stream-ordered).
inline at::Tensor scratch(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, like.options().dtype(at::kByte));
}

inline cudaStream_t stream_for(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

}  // namespace glue
}  // namespace sslsteal_cuda
