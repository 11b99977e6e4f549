// The whole C++ contract of sslsteal_fast on one screen: every op schema, and the Python module.
//
// Kernels live in cpu/<op>_cpu.cpp and cuda/<op>_cuda.cpp and register themselves for their
// dispatch key with TORCH_LIBRARY_IMPL, so no routing code here branches on the device. Autograd
// and fake (shape-only) kernels are registered from Python (sslsteal_fast/ops/_native.py).
//
// Shapes: n rows, D features. "Stats" are per-row log-sum-exp values in float32 (float64 for
// float64 inputs): lse_all over k != i, lse_pos over the same-label k != i (-inf when row i has no
// same-label partner). Backward ops recompute similarity tiles from them; no n x n buffer is kept.
//
// Rules every kernel follows on every device; checks.h holds the checks, and the CPU kernels and the
// CUDA glue call the same ones:
//   * Tensors: matrices are float32, float64, bfloat16 or float16 with D >= 1, and those of one call
//     share a dtype; every tensor of a call is on one device; temperature is finite and > 0. Loss
//     rows and gradients are in the input dtype; a backward's grad_rows must be in it too (autograd
//     passes it so), and its lse_all / lse_pos in the stats dtype.
//   * n = 0: the loss ops (info_nce_fwd/bwd, soft_nn_fwd/bwd) need at least one row (B >= 1,
//     n >= 1) and raise otherwise, like the Python API. pairwise_distance returns an empty (N, M)
//     when N or M is 0. topk_similarity returns empty (0, k) values and indices for N = 0 queries
//     and needs 1 <= k <= M, so an empty bank raises.
//   * Metrics: the strings below, parsed once into the Metric enum of metric.h.
//   * Numerics (numerics.h, shared by both devices): a row with a NaN or +-inf entry makes every
//     distance, similarity, logit and log-sum-exp it enters NaN, and NaN statistics give NaN
//     gradients; topk_similarity orders NaN like torch.topk (larger than every number) and always
//     returns k real rows. Squared distances are taken about a common shift of the rows (no
//     cancellation far from the origin), and top-k squared distances are recomputed directly.
//   * Errors: RuntimeError "sslsteal_fast::<op>: <argument> ...", the same text on both devices.
#include <torch/extension.h>

#include "build_config.h"

TORCH_LIBRARY(sslsteal_fast, m) {
  // (N, D), (M, D) -> (N, M); metric in {"sqeuclidean", "euclidean", "cosine"}.
  m.def("pairwise_distance(Tensor x, Tensor y, str metric) -> Tensor");
  // a, b: (B, D). Rows of [a; b] are L2-normalised; row i's positive is row (i + B) mod 2B.
  // -> (loss_rows (2B,), lse_all (2B,), lse_pos (2B,)).
  m.def("info_nce_fwd(Tensor a, Tensor b, float temperature) -> (Tensor, Tensor, Tensor)");
  // grad_rows (2B,) in a's dtype, the forward's stats -> (grad_a (B, D), grad_b (B, D)).
  m.def(
      "info_nce_bwd(Tensor grad_rows, Tensor a, Tensor b, Tensor lse_all, Tensor lse_pos, "
      "float temperature) -> (Tensor, Tensor)");
  // z: (n, D) unnormalised, labels: (n,) int64/int32; logits are -||z_i - z_k||^2 / T.
  // -> (loss_rows (n,) (0 where no positive), lse_all (n,), lse_pos (n,)).
  m.def("soft_nn_fwd(Tensor z, Tensor labels, float temperature) -> (Tensor, Tensor, Tensor)");
  // grad_rows (n,) in z's dtype, the forward's stats -> grad_z (n, D).
  m.def(
      "soft_nn_bwd(Tensor grad_rows, Tensor z, Tensor labels, Tensor lse_all, Tensor lse_pos, "
      "float temperature) -> Tensor");
  // queries (N, D), bank (M, D) -> (values (N, k), indices (N, k) int64), best first;
  // metric in {"cosine" (largest similarity), "sqeuclidean" (smallest distance)}; 1 <= k <= M.
  m.def("topk_similarity(Tensor queries, Tensor bank, int k, str metric) -> (Tensor, Tensor)");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["debug"] = SSLSTEAL_BUILD_DEBUG != 0;
  info["with_cuda"] = SSLSTEAL_WITH_CUDA != 0;
  info["cuda_version"] = std::string(SSLSTEAL_CUDA_VERSION);
  info["cuda_arch_list"] = std::string(SSLSTEAL_CUDA_ARCHS);
  info["compiler"] = std::string(SSLSTEAL_COMPILER);
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["built_with_torch"] = std::string(SSLSTEAL_TORCH_VERSION);
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sslsteal_fast native ops (registered as torch.ops.sslsteal_fast.*)";
  m.def("build_info", &build_info, "What this extension was compiled with.");
}
