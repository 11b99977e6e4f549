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

#include <string>
#include <type_traits>
#include <utility>

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
// allowTF32CuBLAS() raises ("mix of the legacy and new APIs"), so the new one is read where it exists.
// Its C++ spelling changed: Context::float32Precision(backend, op) takes strings on torch 2.9 and
// enums after, so the signature is detected rather than guessed from the version (whichever namespace
// the enums live in).
namespace fp32_api {

// Enum API: float32Precision(Float32Backend, Float32Op) -> Float32Precision.
template <typename C, typename R, typename B, typename O,
          std::enable_if_t<std::is_enum<R>::value && std::is_enum<B>::value && std::is_enum<O>::value, int> = 0>
bool matmul_is_tf32(R (C::*)(B, O) const, const C& ctx) {
  return ctx.float32Precision(B::CUDA, O::MATMUL) == R::TF32;
}

// String API (torch 2.9): float32Precision("cuda", "matmul") -> "ieee" / "tf32" / "none".
template <typename C>
bool matmul_is_tf32(std::string (C::*)(const std::string&, const std::string&) const, const C& ctx) {
  return ctx.float32Precision("cuda", "matmul") == "tf32";
}

template <typename C>
auto read(const C& ctx, int) -> decltype(matmul_is_tf32(&C::float32Precision, ctx)) {
  return matmul_is_tf32(&C::float32Precision, ctx);
}
// torch < 2.9: only the legacy getter exists (and never raises).
template <typename C>
bool read(const C& ctx, long) {
  return ctx.allowTF32CuBLAS();
}

template <typename C, typename = void>
struct HasNewApi : std::false_type {};
template <typename C>
struct HasNewApi<C, std::void_t<decltype(matmul_is_tf32(&C::float32Precision, std::declval<const C&>()))>>
    : std::true_type {};

}  // namespace fp32_api

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
static_assert(fp32_api::HasNewApi<at::Context>::value,
              "torch >= 2.9 without a recognised Context::float32Precision signature: the legacy "
              "allowTF32CuBLAS() would raise once torch.backends.cuda.matmul.fp32_precision is set");
#endif

inline bool torch_allows_tf32_matmul() { return fp32_api::read(at::globalContext(), 0); }

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
