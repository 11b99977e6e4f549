// Argument validation shared by every kernel (CPU and CUDA glue). The Python wrappers in
// sslsteal_fast/ops validate first with friendlier messages; these checks keep direct
// torch.ops.sslsteal_fast.* calls from ever reaching a kernel with bad input.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "metric.h"

namespace sslsteal {

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// A (rows, features) matrix of a floating dtype with at least one feature.
inline void check_matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, name, " must be a 2-D (rows, features) tensor, got ", t.dim(), " dims");
  TORCH_CHECK(is_float_dtype(t.scalar_type()), name, " must be float32, float64, bfloat16 or float16, got ",
              t.scalar_type());
  TORCH_CHECK(t.size(1) > 0, name, " must have at least one feature column");
}

inline void check_same(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.device() == b.device(), an, " is on ", a.device(), " but ", bn, " is on ", b.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), an, " is ", a.scalar_type(), " but ", bn, " is ", b.scalar_type());
  TORCH_CHECK(a.size(1) == b.size(1), an, " and ", bn, " must have the same feature dimension, got ", a.size(1),
              " and ", b.size(1));
}

inline void check_temperature(double t) {
  TORCH_CHECK(std::isfinite(t) && t > 0, "temperature must be a finite number > 0, got ", t);
}

inline void check_labels(const at::Tensor& labels, const at::Tensor& z) {
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == z.size(0), "labels must be 1-D with one entry per row of z (",
              z.size(0), ")");
  TORCH_CHECK(labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt,
              "labels must be int64 or int32, got ", labels.scalar_type());
  TORCH_CHECK(labels.device() == z.device(), "labels are on ", labels.device(), " but z is on ", z.device());
}

// Loss-row gradients: (n,) in the input dtype, since the forward's loss rows are in it and autograd
// hands back a gradient of the same dtype.
inline void check_grad_rows(const at::Tensor& g, int64_t n, at::ScalarType input) {
  TORCH_CHECK(g.dim() == 1 && g.size(0) == n, "grad_rows must have shape (", n, ",)");
  TORCH_CHECK(g.scalar_type() == input, "grad_rows must be ", input, " (the input dtype), got ", g.scalar_type());
}

// Per-row statistics saved by a forward: (n,) in the statistics dtype.
inline void check_stats(const at::Tensor& s, int64_t n, const char* name) {
  TORCH_CHECK(s.dim() == 1 && s.size(0) == n, name, " must have shape (", n, ",)");
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble, name, " must be float32 or float64");
}

// The schema's metric string as a Metric; topk_similarity has no "euclidean" (same order as sqeuclidean).
inline Metric parse_metric(const char* op, c10::string_view metric, bool allow_euclidean) {
  if (metric == "sqeuclidean") return Metric::kSqEuclidean;
  if (metric == "cosine") return Metric::kCosine;
  if (allow_euclidean && metric == "euclidean") return Metric::kEuclidean;
  TORCH_CHECK(false, "sslsteal_fast::", op, ": metric must be ",
              allow_euclidean ? "'sqeuclidean', 'euclidean' or 'cosine'" : "'cosine' or 'sqeuclidean'", ", got '",
              std::string(metric), "'");
}

// Float32 statistics for every input dtype except float64.
inline at::ScalarType stat_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace sslsteal
