// Numerics shared by the CPU kernels (cpu/*.cpp) and the CUDA glue (cuda/*_cuda.cpp). ATen only and
// device-neutral, so one definition serves both dispatch keys and the CPU tests exercise it. The
// plain-PyTorch mirror is sslsteal_fast/ops/reference.py (distance_shift, sq_norms), with the same
// contracts:
//
//   * Non-finite input propagates as NaN. A row whose squared norm is not finite (a NaN or +-inf
//     entry, or an overflow) gets a NaN squared norm (sq_norms), so every squared distance, SoftNN
//     logit and log-sum-exp it takes part in is NaN: never the 0 that max(0, NaN) gives, nor a
//     sign-dependent +inf. Cosine similarities of such a row are NaN through the normalisation.
//     Kernels clamp distances with clamp0 below (CUDA: PTX max.NaN), which keeps NaN.
//   * No cancellation far from the origin. Squared distances go through |x|^2 + |y|^2 - 2 <x, y>,
//     which in float32 loses every digit once |x|^2 dwarfs the distances (rows at an offset of 1e5:
//     |x|^2 ~ 1e11 against distances ~ 10). Distances do not change under a common shift, so every
//     squared-distance op first subtracts distance_shift() (the mean finite row) from both operands:
//     O(rows * D) passes. The shift is a constant for autograd (the distances do not depend on it).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace sslsteal {

// max(0, v) that keeps NaN, for squared distances out of the norm expansion (std::max(T(0), NaN) is 0).
template <typename T>
inline T clamp0(T v) {
  return v < T(0) ? T(0) : v;
}

// The mean of the rows of `a` and `b` (may be undefined) whose entries are all finite; zeros when there
// is none. Shape (D,), a's dtype and device, accumulated in float32 (float64 for float64). Subtracting
// it leaves rows about as far from 0 as their spread, wherever the point cloud sits. On the CPU a
// finite plain mean (no non-finite entry) is taken as it is, one pass; otherwise (and always on other
// devices, which avoids a host sync) the non-finite rows are masked out first.
inline at::Tensor distance_shift(const at::Tensor& a, const at::Tensor& b = at::Tensor()) {
  const at::ScalarType acc = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool has_b = b.defined() && b.size(0) > 0;
  if (a.is_cpu()) {
    at::Tensor total = a.sum(0, /*keepdim=*/false, acc);
    if (has_b) total = total + b.sum(0, /*keepdim=*/false, acc);
    const at::Tensor mean = total / double(std::max<int64_t>(1, a.size(0) + (has_b ? b.size(0) : 0)));
    if (at::isfinite(mean).all().item<bool>()) return mean.to(a.scalar_type());
  }
  at::Tensor total = at::zeros({a.size(1)}, a.options().dtype(acc));
  at::Tensor count = at::zeros({}, a.options().dtype(acc));
  for (const at::Tensor* m : {&a, &b}) {
    if (!m->defined() || m->size(0) == 0) continue;
    const at::Tensor finite = at::isfinite(*m).all(1, /*keepdim=*/true);
    total = total + at::where(finite, *m, at::zeros({}, m->options())).sum(0, /*keepdim=*/false, acc);
    count = count + finite.sum().to(acc);
  }
  return (total / count.clamp_min(1)).to(a.scalar_type());
}

// Squared row norms (rows,), contiguous; NaN for a row whose squared norm is not finite.
inline at::Tensor sq_norms(const at::Tensor& x) {
  at::Tensor s = (x * x).sum(1);
  return s.masked_fill_(at::isfinite(s).logical_not_(), std::numeric_limits<double>::quiet_NaN()).contiguous();
}

// topk_similarity "sqeuclidean": the selection ranks by the norm expansion; the k winners' values
// are then computed directly, sum_d (q_d - b_d)^2 in float64 (the difference of two close floats is
// exact, so this keeps full precision at any offset), rounded to the output dtype and put back in
// best-first order with ties to the smaller index and NaN last, as torch.sort orders them. A pair
// whose selection distance `keys` is NaN (a non-finite row) stays NaN, although the direct difference
// with an inf row would be +inf. Memory: one bounded block of gathered bank rows at a time.
inline std::tuple<at::Tensor, at::Tensor> exact_sqeuclidean_topk(const at::Tensor& queries, const at::Tensor& bank,
                                                                 const at::Tensor& keys, const at::Tensor& indices) {
  const int64_t n = indices.size(0), k = indices.size(1), d = queries.size(1);
  if (n == 0) return {keys.to(queries.scalar_type()), indices};
  at::Tensor exact = at::empty({n, k}, queries.options().dtype(at::kDouble));
  const int64_t per_chunk = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, k * d));
  for (int64_t q0 = 0; q0 < n; q0 += per_chunk) {
    const int64_t nq = std::min(per_chunk, n - q0);
    const at::Tensor picked =
        bank.index_select(0, indices.narrow(0, q0, nq).reshape({-1})).to(at::kDouble).view({nq, k, d});
    const at::Tensor q = queries.narrow(0, q0, nq).to(at::kDouble).unsqueeze(1);
    at::Tensor out = exact.narrow(0, q0, nq);
    at::sum_out(out, (picked - q).square_(), {2});
  }
  at::Tensor values = at::where(at::isnan(keys), keys.to(at::kDouble), exact).to(queries.scalar_type());
  // Stable sorts: by index first, then by value, so equal values keep the smaller index first.
  const at::Tensor by_index = std::get<1>(indices.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
  values = values.gather(1, by_index);
  at::Tensor idx = indices.gather(1, by_index);
  const at::Tensor by_value = std::get<1>(values.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
  return {values.gather(1, by_value), idx.gather(1, by_value)};
}

}  // namespace sslsteal
