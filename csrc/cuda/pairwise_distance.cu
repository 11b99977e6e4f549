// pairwise_distance forward: one block per 128 x 128 (x 64 for f64) output tile, the similarity GEMM
// on tensor cores (tile_gemm.cuh) and a fused epilogue that turns <x_i, y_j> into the metric using
// per-row statistics computed once up front:
//   sqeuclidean: max(0, |x_i|^2 + |y_j|^2 - 2 <x_i, y_j>)   (clamped: cancellation can go below 0)
//   euclidean  : sqrt of the above
//   cosine     : 1 - <x_i, y_j> r_i r_j, r = 1 / max(|.|, 1e-12)  (F.normalize's convention)
// The clamp keeps NaN, and a non-finite row has a NaN squared norm, so its distances are NaN. The glue
// passes rows shifted by a common distance_shift for the squared metrics (csrc/numerics.h).
// The output N x M is the only O(N M) memory; the backward is composed from matmuls in Python.
#include "tile_gemm.cuh"

namespace sslsteal_cuda {
namespace detail {
namespace {

template <typename T, typename Acc>
__device__ __forceinline__ void store_pair(T* p, Acc a, Acc b) {
  p[0] = Num<T>::from_acc(a);
  p[1] = Num<T>::from_acc(b);
}
template <>
__device__ __forceinline__ void store_pair<float, float>(float* p, float a, float b) {
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
template <>
__device__ __forceinline__ void store_pair<double, double>(double* p, double a, double b) {
  *reinterpret_cast<double2*>(p) = make_double2(a, b);
}
template <>
__device__ __forceinline__ void store_pair<__nv_bfloat16, float>(__nv_bfloat16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
template <>
__device__ __forceinline__ void store_pair<__half, float>(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}

template <typename Acc>
__device__ __forceinline__ Acc metric_value(int metric, Acc s, Acc xv, Acc yv) {
  if (metric == static_cast<int>(Metric::kCosine)) return Acc(1) - s * xv * yv;
  const Acc d = clamp0(xv + yv - Acc(2) * s);
  return metric == static_cast<int>(Metric::kEuclidean) ? sqrt(d) : d;
}

template <class Mma>
__global__ void __launch_bounds__(kThreads)
    pairwise_distance_kernel(RowSrc<typename Mma::Elem> X, RowSrc<typename Mma::Elem> Y, int64_t D, int metric,
                             const typename Mma::Acc* xv, const typename Mma::Acc* yv, typename Mma::Elem* out,
                             int64_t col_blocks, bool vec) {
  using C = Cfg<Mma>;
  using T = typename Mma::Elem;
  using Acc = typename Mma::Acc;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane >> 2, t = lane & 3;
  // Consecutive blocks share the x row block, so its slices stay hot in L2 across the y tiles.
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) / col_blocks) * C::kBM;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) % col_blocks) * C::kBN;
  const int64_t N = X.rows, M = Y.rows;

  Acc acc[C::kMT][C::kNT][4];
  gemm_nt<Mma>(acc, X, row0, Y, col0, D, vec, reinterpret_cast<T*>(smem));

  const bool pairs = (M % 2) == 0;  // then (i * M + j) is even for even j: 2-element aligned stores
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t i = row0 + warp_m * 32 + mt * 16 + g + 8 * h;
      if (i >= N) continue;
      const Acc xi = xv[i];
      T* orow = out + i * M;
#pragma unroll
      for (int nt = 0; nt < C::kNT; ++nt) {
        const int64_t j = col0 + warp_n * C::kNT * 8 + nt * 8 + 2 * t;  // even
        if (j >= M) continue;
        const Acc v0 = metric_value(metric, acc[mt][nt][2 * h], xi, yv[j]);
        if (j + 1 < M) {
          const Acc v1 = metric_value(metric, acc[mt][nt][2 * h + 1], xi, yv[j + 1]);
          if (pairs) {
            store_pair<T, Acc>(orow + j, v0, v1);
          } else {
            orow[j] = Num<T>::from_acc(v0);
            orow[j + 1] = Num<T>::from_acc(v1);
          }
        } else {
          orow[j] = Num<T>::from_acc(v0);
        }
      }
    }
}

}  // namespace
}  // namespace detail

size_t pairwise_distance_workspace_bytes(DType dtype, int64_t N, int64_t M) {
  using namespace detail;
  return align256(static_cast<size_t>(N) * acc_size(dtype)) + align256(static_cast<size_t>(M) * acc_size(dtype));
}

cudaError_t pairwise_distance(DType dtype, Fp32Mode fp32_mode, Metric metric, const void* x, const void* y,
                              int64_t N, int64_t M, int64_t D, void* out, void* workspace, cudaStream_t stream) {
  using namespace detail;
  if (N == 0 || M == 0) return cudaSuccess;
  clear_stale_error();
  return dispatch_mma(dtype, fp32_mode, [&](auto mma) -> cudaError_t {
    using Mma = decltype(mma);
    using T = typename Mma::Elem;
    using Acc = typename Mma::Acc;
    using C = Cfg<Mma>;
    const RowSrc<T> X{static_cast<const T*>(x), static_cast<const T*>(x), N, N};
    const RowSrc<T> Y{static_cast<const T*>(y), static_cast<const T*>(y), M, M};
    Acc* xv = static_cast<Acc*>(workspace);
    Acc* yv = reinterpret_cast<Acc*>(static_cast<unsigned char*>(workspace) + align256(N * sizeof(Acc)));
    const int mode = metric == Metric::kCosine ? 1 : 0;
    SSL_CUDA_TRY(launch_row_norms(X, D, mode, xv, stream));
    SSL_CUDA_TRY(launch_row_norms(Y, D, mode, yv, stream));
    const int64_t row_blocks = (N + C::kBM - 1) / C::kBM;
    const int64_t col_blocks = (M + C::kBN - 1) / C::kBN;
    if (row_blocks * col_blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
    constexpr size_t smem = 2 * C::kStageElems * sizeof(T);
    auto kernel = pairwise_distance_kernel<Mma>;
    SSL_CUDA_TRY(allow_smem(kernel, smem));
    const bool vec = rows_vectorizable(X.p0, X.p1, D) && rows_vectorizable(Y.p0, Y.p1, D);
    kernel<<<static_cast<unsigned>(row_blocks * col_blocks), kThreads, smem, stream>>>(
        X, Y, D, static_cast<int>(metric), xv, yv, static_cast<T*>(out), col_blocks, vec);
    return cudaGetLastError();
  });
}

}  // namespace sslsteal_cuda
