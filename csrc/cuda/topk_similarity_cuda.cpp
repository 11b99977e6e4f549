// CUDA dispatch-key glue for topk_similarity (values' backward is composed in Python).
// When k is too large for the kernel's shared-memory lists on this device, a chunked ATen path
// (cuBLAS matmul + topk per 65536-row block, stable merge) gives the same contract.
// "sqeuclidean": queries and bank are shifted by the queries' distance_shift before the search (one
// shifted copy of the bank, O(M D)), and the k winners' distances are then recomputed directly
// (../numerics.h), exactly as on the CPU.
#include <torch/library.h>

#include "glue.h"

namespace sslsteal_cuda {
namespace {

using at::Tensor;

Tensor unit_rows(const Tensor& t) { return t / t.norm(2, {1}, true).clamp_min(1e-12); }

std::tuple<Tensor, Tensor> topk_chunked_aten(const Tensor& q, const Tensor& bank, int64_t k, bool cosine) {
  constexpr int64_t kChunk = 65536;
  const Tensor qn = cosine ? unit_rows(q) : q;
  const Tensor qsq = cosine ? Tensor() : sslsteal::sq_norms(q).unsqueeze(1);
  Tensor best_v, best_i;
  for (int64_t start = 0; start < bank.size(0); start += kChunk) {
    const int64_t len = std::min(kChunk, bank.size(0) - start);
    const Tensor block = bank.narrow(0, start, len);
    // clamp_min keeps NaN; at::topk and the stable sort order NaN as the largest value, like the kernel.
    Tensor scores = cosine ? at::mm(qn, unit_rows(block).t())
                           : (qsq + sslsteal::sq_norms(block).unsqueeze(0) - 2 * at::mm(q, block.t())).clamp_min(0);
    auto [v, i] = at::topk(scores, std::min(k, len), 1, /*largest=*/cosine, /*sorted=*/true);
    i = i + start;
    if (!best_v.defined()) {
      best_v = v;
      best_i = i;
      continue;
    }
    const Tensor cat_v = at::cat({best_v, v}, 1), cat_i = at::cat({best_i, i}, 1);
    const Tensor order = std::get<1>(at::sort(cat_v, /*stable=*/true, 1, /*descending=*/cosine)).narrow(1, 0, k);
    best_v = cat_v.gather(1, order);
    best_i = cat_i.gather(1, order);
  }
  return {best_v, best_i};
}

std::tuple<Tensor, Tensor> topk_similarity_cuda(const Tensor& q_in, const Tensor& bank_in, int64_t k,
                                                c10::string_view metric_name) {
  const char* op = "topk_similarity";
  const Metric metric = sslsteal::check_topk_inputs(op, q_in, bank_in, k, metric_name);
  const int64_t N = q_in.size(0), M = bank_in.size(0), D = q_in.size(1);
  sslsteal::check_max_rows(op, bank_in, "bank", 0x7ffffffeLL, "int32 bank indices in the CUDA kernel");
  const bool cosine = metric == Metric::kCosine;
  const c10::cuda::CUDAGuard guard(q_in.device());
  Tensor q = q_in.contiguous(), bank = bank_in.contiguous();
  const int device = q.device().index();
  const DType dt = glue::dtype_of(q, op);
  if (N == 0) return {at::empty({0, k}, q.options()), at::empty({0, k}, q.options().dtype(at::kLong))};
  if (!cosine) {
    const Tensor shift = sslsteal::distance_shift(q);
    q = glue::shifted(q, shift);
    bank = glue::shifted(bank, shift);
  }
  Tensor values, indices;
  if (!topk_supported(dt, k, device)) {
    std::tie(values, indices) = topk_chunked_aten(q, bank, k, cosine);
  } else {
    values = at::empty({N, k}, q.options());
    indices = at::empty({N, k}, q.options().dtype(at::kLong));
    Tensor ws = glue::scratch(topk_workspace_bytes(dt, N, M, k, device), q);
    glue::check_status(
        topk_similarity(dt, glue::fp32_mode(q), metric, q.data_ptr(), bank.data_ptr(), N, M, D, k, values.data_ptr(),
                        indices.data_ptr<int64_t>(), ws.data_ptr(), device, glue::stream_for(q)),
        op);
  }
  if (cosine) return {values, indices};
  return sslsteal::exact_sqeuclidean_topk(q_in, bank_in, values, indices);
}

}  // namespace
}  // namespace sslsteal_cuda

TORCH_LIBRARY_IMPL(sslsteal_fast, CUDA, m) { m.impl("topk_similarity", &sslsteal_cuda::topk_similarity_cuda); }
