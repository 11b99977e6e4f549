// Torch-free launch API of the sslsteal_fast CUDA kernels (CUDA runtime types only).
//
// The torch glue (*_cuda.cpp) validates tensors, makes them contiguous, allocates outputs and
// scratch through torch's caching allocator, and calls these launchers on the current stream. The
// kernels themselves (*.cu) include nothing from torch, so `nvcc -c` checks them on any machine.
//
// Conventions for every launcher:
//   * All matrices are dense row-major with the feature dimension D contiguous (row stride == D).
//   * `dtype` names the element type of every "T" pointer (inputs, loss rows, gradients). "Acc"
//     pointers (statistics, norms) are float32, or float64 when dtype == kF64.
//   * Launchers only enqueue work on `stream` and return the first CUDA error they saw (or
//     cudaSuccess); a stale error left by earlier work is cleared on entry, so the status is that
//     of this launcher's own launches. They never synchronise and never allocate: scratch is passed in, sized by the
//     matching *_workspace_bytes() query.
//   * Indices and sizes are int64_t; every global offset is computed in 64 bits.
//   * Results are deterministic: each output element is produced by exactly one thread block, and
//     every reduction runs in a fixed order (no floating-point atomics anywhere).
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "../metric.h"

namespace sslsteal_cuda {

enum class DType : int {
  kF32 = 0,  // float32; tensor-core path is TF32 (see Fp32Mode)
  kF64 = 1,  // float64; tensor-core path is DMMA (mma.sync m8n8k4 f64), bit-for-bit IEEE products
  kBF16 = 2,
  kF16 = 3,
};

// How float32 products are formed on tensor cores. PyTorch's own float32 matmul precision maps here:
// torch.backends.cuda.matmul.allow_tf32 == False (the default, "highest") selects kTf32x3, which
// splits each operand into a TF32 head and a TF32 tail and adds three products (error ~ fp32 SIMT);
// allow_tf32 == True selects kTf32 (one product, 10-bit mantissa, about 3x faster).
enum class Fp32Mode : int { kTf32x3 = 0, kTf32 = 1 };

using sslsteal::Metric;  // csrc/metric.h: one enum for the CPU and CUDA kernels

// ---------------------------------------------------------------------------------------------
// Contrastive losses (InfoNCE / NT-Xent and Soft Nearest Neighbour) share one driver.
//
// Rows: n rows of D features. Row r is read from `rows0 + r * D` when r < split, otherwise from
// `rows1 + (r - split) * D`; InfoNCE passes (a, b, split = B) so [a; b] is never materialised,
// SoftNN passes (z, z, split = n).
//
// Logits for k != i:
//   InfoNCE: L_ik = <x_i, x_k> * r_i * r_k / T, r = 1 / max(|x|, 1e-12) (F.normalize's eps), so
//            normalisation is folded into the epilogue and no normalised copy is stored.
//   SoftNN : L_ik = -max(0, |z_i|^2 + |z_k|^2 - 2 <z_i, z_k>) / T (the glue passes z shifted by its
//            distance_shift, csrc/numerics.h, so that float32 keeps its precision far from the origin).
// A non-finite row makes its logits NaN, and every log-sum-exp (loss row) that includes one is NaN.
// Positives: InfoNCE row i's only positive is its partner (i + B) mod n; SoftNN uses `labels`.
//   lse_all_i = logsumexp_{k != i} L_ik,  lse_pos_i = logsumexp_{k != i, y_k = y_i} L_ik (-inf if
//   no such k),  loss_i = lse_all_i - lse_pos_i (0 when lse_pos_i = -inf).
// ---------------------------------------------------------------------------------------------
struct ContrastiveArgs {
  DType dtype;
  Fp32Mode fp32_mode;
  bool soft_nn;           // false: InfoNCE logits and partner labels; true: SoftNN logits and `labels`
  const void* rows0;      // T (split, D)
  const void* rows1;      // T (n - split, D)
  int64_t split;          // first row served by rows1 (InfoNCE: B; SoftNN: n)
  int64_t n;              // rows (InfoNCE: 2B)
  int64_t D;              // features
  const int64_t* labels;  // (n,) SoftNN labels (any int64 values, compared for equality); nullptr for InfoNCE
  double temperature;     // T > 0
};

// Forward. Outputs (all length n): loss_rows (T), lse_all and lse_pos (Acc).
// workspace: contrastive_fwd_workspace_bytes(args) bytes, 256-byte aligned (holds one Acc per row).
size_t contrastive_fwd_workspace_bytes(const ContrastiveArgs& args);
cudaError_t contrastive_fwd(const ContrastiveArgs& args, void* loss_rows, void* lse_all, void* lse_pos, void* workspace,
                            cudaStream_t stream);

// Backward. grad_rows (n,) T: dLoss/dloss_rows (treated as 0 for rows whose lse_pos is -inf, as NaN
// when such a row's lse_all is NaN). NaN statistics give NaN gradients.
// lse_all, lse_pos (n,) Acc: the forward's statistics. Outputs: gradient rows r < split go to
// grad0 + r * D, rows r >= split to grad1 + (r - split) * D (T). InfoNCE: d/da, d/db; SoftNN: d/dz
// (grad1 = grad0 + split * D, split = n).
// workspace: contrastive_bwd_workspace_bytes(args, device) bytes. It holds O(n) row vectors plus
// one float32 (float64) D-wide accumulator row per row of the thread blocks that are resident at
// once (the backward kernel is persistent), i.e. min(n, resident_blocks * 128) * D * sizeof(Acc):
// independent of n once n exceeds what the GPU holds in flight.
size_t contrastive_bwd_workspace_bytes(const ContrastiveArgs& args, int device);
cudaError_t contrastive_bwd(const ContrastiveArgs& args, const void* grad_rows, const void* lse_all,
                            const void* lse_pos, void* grad0, void* grad1, void* workspace, int device,
                            cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// pairwise_distance: x (N, D), y (M, D) -> out (N, M) T.
//   sqeuclidean: max(0, |x|^2 + |y|^2 - 2 <x, y>); euclidean: its sqrt; cosine: 1 - <x, y> r_x r_y
//   with r = 1 / max(|.|, 1e-12) (a zero row has similarity 0). NaN for a pair with a non-finite row
//   (the clamp keeps NaN). The glue shifts x and y by a common distance_shift for the squared metrics.
// workspace: pairwise_distance_workspace_bytes(...) bytes (row norms of x and y, Acc).
// ---------------------------------------------------------------------------------------------
size_t pairwise_distance_workspace_bytes(DType dtype, int64_t N, int64_t M);
cudaError_t pairwise_distance(DType dtype, Fp32Mode fp32_mode, Metric metric, const void* x, const void* y, int64_t N,
                              int64_t M, int64_t D, void* out, void* workspace, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// topk_similarity: queries (N, D), bank (M, D) -> values (N, k) T, indices (N, k) int64, best first.
//   metric kCosine: largest <q, b> r_q r_b; kSqEuclidean: smallest max(0, |q|^2 + |b|^2 - 2 <q, b>).
//   Ties go to the smaller bank index. 1 <= k <= M, M < 2^31. torch.topk's order for non-finite rows:
//   a NaN score counts as larger than every number (first by cosine, last by distance), and every bank
//   row is a candidate, so all k results are real rows. The glue shifts queries and bank for
//   kSqEuclidean and recomputes the winners' distances directly (csrc/numerics.h).
// The bank is streamed once per query block: the grid is (query blocks) x (bank splits); each block
// keeps a sorted per-query list of its split's k best in shared memory and writes it out, and a
// merge kernel combines the `splits` sorted lists per query. Memory: O(N * splits * k) partials.
// topk_supported() is false when k is too large for the shared-memory lists on this device; the
// torch glue then uses a chunked ATen fallback.
// ---------------------------------------------------------------------------------------------
bool topk_supported(DType dtype, int64_t k, int device);
size_t topk_workspace_bytes(DType dtype, int64_t N, int64_t M, int64_t k, int device);
cudaError_t topk_similarity(DType dtype, Fp32Mode fp32_mode, Metric metric, const void* queries, const void* bank,
                            int64_t N, int64_t M, int64_t D, int64_t k, void* values, int64_t* indices, void* workspace,
                            int device, cudaStream_t stream);

}  // namespace sslsteal_cuda
