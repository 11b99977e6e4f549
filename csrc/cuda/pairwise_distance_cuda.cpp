// CUDA dispatch-key glue for pairwise_distance (forward; the backward is composed in Python).
#include <torch/library.h>

#include "glue.h"

namespace sslsteal_cuda {
namespace {

at::Tensor pairwise_distance_cuda(const at::Tensor& x_in, const at::Tensor& y_in, c10::string_view metric_name) {
  const char* op = "pairwise_distance";
  const Metric metric = sslsteal::check_pairwise_distance_inputs(op, x_in, y_in, metric_name);
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  if (metric != Metric::kCosine && x.size(0) > 0 && y.size(0) > 0) {
    const at::Tensor shift = sslsteal::distance_shift(x, y);  // no cancellation far from the origin
    x = glue::shifted(x, shift);
    y = glue::shifted(y, shift);
  }
  const int64_t N = x.size(0), M = y.size(0), D = x.size(1);
  at::Tensor out = at::empty({N, M}, x.options());
  if (N == 0 || M == 0) return out;
  const DType dt = glue::dtype_of(x, op);
  at::Tensor ws = glue::scratch(pairwise_distance_workspace_bytes(dt, N, M), x);
  glue::check_status(pairwise_distance(dt, glue::fp32_mode(x), metric, x.data_ptr(), y.data_ptr(), N, M, D,
                                       out.data_ptr(), ws.data_ptr(), glue::stream_for(x)),
                     op);
  return out;
}

}  // namespace
}  // namespace sslsteal_cuda

TORCH_LIBRARY_IMPL(sslsteal_fast, CUDA, m) { m.impl("pairwise_distance", &sslsteal_cuda::pairwise_distance_cuda); }
