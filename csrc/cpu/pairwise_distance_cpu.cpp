// Pairwise distances on the CPU: BLAS-backed mm's written straight into the output, one block of rows
// at a time, each followed at once by a fused, in-place epilogue (norm expansion, clamp, sqrt or
// cosine scaling) while the block is still in cache. Squared distances are taken about a common shift
// (numerics.h), so the extra memory is one shifted copy of x and y plus the two (N,) / (M,) norm
// vectors: the cost is one GEMM, an O((N + M) D) pass, and a cache-resident pass over the output.
// NaN statistics of non-finite rows pass through the NaN-keeping clamp (numerics.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "../checks.h"
#include "../numerics.h"

namespace sslsteal {
namespace {

template <typename T>
void distance_epilogue(T* out, int64_t n, int64_t m, const T* xn, const T* yn, Metric metric) {
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      T* row = out + i * m;
      const T xi = xn[i];
      if (metric == Metric::kCosine) {
        // xn / yn hold 1 / max(|row|, eps), as F.normalize does.
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) row[j] = T(1) - row[j] * xi * yn[j];
      } else if (metric == Metric::kEuclidean) {
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) row[j] = std::sqrt(clamp0(xi + yn[j] - T(2) * row[j]));
      } else {
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) row[j] = clamp0(xi + yn[j] - T(2) * row[j]);
      }
    }
  });
}

at::Tensor inverse_norms(const at::Tensor& x) { return x.norm(2, {1}).clamp_min(1e-12).reciprocal().contiguous(); }

at::Tensor pairwise_distance_cpu(const at::Tensor& x, const at::Tensor& y, c10::string_view metric_name) {
  const Metric metric = check_pairwise_distance_inputs("pairwise_distance", x, y, metric_name);
  const at::ScalarType ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor xc = x.to(ct);
  at::Tensor yc = y.to(ct);
  at::Tensor out = at::empty({x.size(0), y.size(0)}, xc.options());
  if (out.numel() == 0) return out.to(x.scalar_type());
  at::Tensor xn, yn;  // cosine: 1 / max(|row|, eps); squared metrics: |row - shift|^2 of the shifted rows
  if (metric == Metric::kCosine) {
    xn = inverse_norms(xc);
    yn = inverse_norms(yc);
  } else {
    // ATen's sub and (x * x).sum, the reference's own arithmetic: coincident rows then round alike.
    const at::Tensor shift = distance_shift(xc, yc);
    xc = xc - shift;
    yc = yc - shift;
    xn = sq_norms(xc);
    yn = sq_norms(yc);
  }
  const int64_t n = out.size(0), m = out.size(1);
  // Rows per block: ~8 MB of output (last-level cache) while keeping each mm large enough for BLAS
  // efficiency (128-row blocks cost ~15% in GEMM speed, 512-row ones ~4%).
  const int64_t rows = std::max<int64_t>(256, std::min<int64_t>(n, (int64_t(1) << 21) / std::max<int64_t>(1, m)));
  at::Tensor yt = yc.t();
  for (int64_t i0 = 0; i0 < n; i0 += rows) {
    const int64_t b = std::min(rows, n - i0);
    at::Tensor block = out.narrow(0, i0, b);
    at::mm_out(block, xc.narrow(0, i0, b), yt);
    AT_DISPATCH_FLOATING_TYPES(ct, "pairwise_distance_cpu", [&] {
      distance_epilogue<scalar_t>(block.data_ptr<scalar_t>(), b, m, xn.data_ptr<scalar_t>() + i0,
                                  yn.data_ptr<scalar_t>(), metric);
    });
  }
  return out.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(sslsteal_fast, CPU, m) { m.impl("pairwise_distance", &pairwise_distance_cpu); }

}  // namespace sslsteal
