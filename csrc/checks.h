// The one argument-validation layer of the native ops: the CPU kernels (cpu/*.cpp) and the CUDA glue
// (cuda/*_cuda.cpp) call the same per-op checks below, so both dispatch keys accept and refuse the
// same calls with the same messages. The Python wrappers in sslsteal_fast/ops validate first with
// friendlier messages; these checks keep direct torch.ops.sslsteal_fast.* calls from ever reaching a
// kernel with bad input.
//
// Every message reads "sslsteal_fast::<op>: <argument> ..." and names the argument. The checks are
// device-neutral: a call that mixes cpu and cuda tensors dispatches to the CUDA key, and the CUDA
// glue refuses it here before any pointer is read.
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

// Float32 statistics for every input dtype except float64.
inline at::ScalarType stat_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// ---- building blocks --------------------------------------------------------------------------

inline void check_same_device(const char* op, const at::Tensor& t, const char* name, const at::Tensor& ref,
                              const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "sslsteal_fast::", op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device(), "; move every tensor to the same device");
}

// A (rows, features) matrix of a floating dtype with at least one feature column (any number of rows).
inline void check_matrix(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, "sslsteal_fast::", op, ": ", name, " must be a 2-D (rows, features) tensor, got shape ",
              t.sizes());
  TORCH_CHECK(is_float_dtype(t.scalar_type()), "sslsteal_fast::", op, ": ", name,
              " must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
  TORCH_CHECK(t.size(1) > 0, "sslsteal_fast::", op, ": ", name, " must have at least one feature column");
}

// Two matrices on one device, of one dtype and with one feature dimension D.
inline void check_matrix_pair(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                              const char* bn) {
  check_matrix(op, a, an);
  check_matrix(op, b, bn);
  check_same_device(op, b, bn, a, an);
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "sslsteal_fast::", op, ": ", bn, " is ", b.scalar_type(), " but ", an,
              " is ", a.scalar_type(), "; pass one dtype");
  TORCH_CHECK(a.size(1) == b.size(1), "sslsteal_fast::", op, ": ", an, " and ", bn,
              " must have the same feature dimension D, got ", a.size(1), " and ", b.size(1));
}

inline void check_temperature(const char* op, double t) {
  TORCH_CHECK(std::isfinite(t) && t > 0, "sslsteal_fast::", op, ": temperature must be a finite number > 0, got ", t);
}

// A per-row vector: shape (n,) and exactly `dtype`, on ref's device.
inline void check_row_vector(const char* op, const at::Tensor& t, const char* name, int64_t n, at::ScalarType dtype,
                             const at::Tensor& ref, const char* ref_name) {
  check_same_device(op, t, name, ref, ref_name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n && t.scalar_type() == dtype, "sslsteal_fast::", op, ": ", name,
              " must have shape (", n, ",) and dtype ", dtype, ", got shape ", t.sizes(), " and dtype ",
              t.scalar_type());
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

// A row limit of one kernel (not of the op): `why` says whose.
inline void check_max_rows(const char* op, const at::Tensor& t, const char* name, int64_t max_rows, const char* why) {
  TORCH_CHECK(t.size(0) <= max_rows, "sslsteal_fast::", op, ": ", name, " has ", t.size(0), " rows; at most ", max_rows,
              " supported (", why, ")");
}

// ---- per-op contracts (the schemas in sslsteal_fast.cpp) ----------------------------------------

// info_nce_fwd / info_nce_bwd: a, b (B, D) of one device and dtype, B >= 1 (the n = 0 rule).
inline void check_info_nce_inputs(const char* op, const at::Tensor& a, const at::Tensor& b, double temperature) {
  check_matrix_pair(op, a, "a", b, "b");
  TORCH_CHECK(a.size(0) == b.size(0), "sslsteal_fast::", op, ": a and b must have the same batch size B, got ",
              a.size(0), " and ", b.size(0));
  TORCH_CHECK(a.size(0) > 0, "sslsteal_fast::", op, ": a and b must have at least one row, got B = 0");
  check_temperature(op, temperature);
}

// soft_nn_fwd / soft_nn_bwd: z (n, D) with n >= 1 (the n = 0 rule), labels (n,) int64 or int32 on z's device.
inline void check_soft_nn_inputs(const char* op, const at::Tensor& z, const at::Tensor& labels, double temperature) {
  check_matrix(op, z, "z");
  TORCH_CHECK(z.size(0) > 0, "sslsteal_fast::", op, ": z must have at least one row, got n = 0");
  check_same_device(op, labels, "labels", z, "z");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == z.size(0), "sslsteal_fast::", op,
              ": labels must be 1-D with one entry per row of z (", z.size(0), "), got shape ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt, "sslsteal_fast::", op,
              ": labels must be int64 or int32, got ", labels.scalar_type());
  check_temperature(op, temperature);
}

// What a loss backward gets besides its inputs x (n rows in all): grad_rows in x's dtype (the
// forward's loss rows are in it, and autograd hands back a gradient of the same dtype), and the
// forward's lse_all / lse_pos in the statistics dtype.
inline void check_loss_bwd_vectors(const char* op, const at::Tensor& grad_rows, const at::Tensor& lse_all,
                                   const at::Tensor& lse_pos, int64_t n, const at::Tensor& x, const char* x_name) {
  check_row_vector(op, grad_rows, "grad_rows", n, x.scalar_type(), x, x_name);
  check_row_vector(op, lse_all, "lse_all", n, stat_dtype(x.scalar_type()), x, x_name);
  check_row_vector(op, lse_pos, "lse_pos", n, stat_dtype(x.scalar_type()), x, x_name);
}

// pairwise_distance: x (N, D), y (M, D) of one device and dtype.
inline Metric check_pairwise_distance_inputs(const char* op, const at::Tensor& x, const at::Tensor& y,
                                             c10::string_view metric) {
  check_matrix_pair(op, x, "x", y, "y");
  return parse_metric(op, metric, /*allow_euclidean=*/true);
}

// topk_similarity: queries (N, D), bank (M, D) of one device and dtype, 1 <= k <= M.
inline Metric check_topk_inputs(const char* op, const at::Tensor& queries, const at::Tensor& bank, int64_t k,
                                c10::string_view metric) {
  check_matrix_pair(op, queries, "queries", bank, "bank");
  const Metric m = parse_metric(op, metric, /*allow_euclidean=*/false);
  TORCH_CHECK(k >= 1 && k <= bank.size(0), "sslsteal_fast::", op, ": k must be in [1, M = ", bank.size(0),
              "] (bank rows), got k = ", k);
  return m;
}

}  // namespace sslsteal
