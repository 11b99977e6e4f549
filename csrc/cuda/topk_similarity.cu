// topk_similarity: stream a (possibly multi-million row) bank past blocks of 128 queries.
//
// Grid = (query blocks) x (bank splits), query block fastest, so the blocks resident at one moment
// walk the same bank tiles and each tile is read from DRAM about once and from L2 by the rest.
// Per bank tile: the 128 x kBN similarity tile on tensor cores (tile_gemm.cuh) -> scores ("keys",
// larger is better: cosine similarity, or minus the squared distance) parked in shared memory ->
// one thread per query scans its row against its current k-th best (the threshold) and inserts the
// rare winners into its sorted shared-memory list. After the split, the lists go to a partial buffer
// (N x splits x k) and a merge kernel takes, per query, the k best heads of the `splits` sorted lists.
// Ties: within a list a candidate must beat the k-th key strictly and is placed after equal keys;
// the merge prefers the lower split on equal keys. Splits cover increasing index ranges, so ties
// resolve to the smaller bank index, as in the reference.
//
// Non-finite rows (torch.topk's order: NaN is larger than every number; the CPU kernel's and the
// Python docstring's contract). Keys are never NaN: a NaN cosine becomes +inf (first; real cosines are
// clamped to finite), and a NaN distance -max_finite (last), below every real key since distances are
// capped at max_finite / 2 (the glue recomputes the winners' distances exactly, so the cap never
// shows). Every real key is therefore > -inf, the value of an empty list slot, so each list holds
// min(k, rows of its split) real rows, the splits hold M >= k real rows in all, and the merge always
// finds k of them: kNoIndex never reaches the output (the merge skips sentinel entries outright).
// The merge maps the two NaN sentinels back to NaN.
#include "tile_gemm.cuh"

namespace sslsteal_cuda {
namespace detail {
namespace {

constexpr int kMaxSplits = 64;
constexpr int32_t kNoIndex = 0x7fffffff;

template <class Mma>
struct TopkSmem {
  using C = Cfg<Mma>;
  using Acc = typename Mma::Acc;
  static constexpr int kLdS = C::kBN + 1;  // odd stride: thread q reads row q, column c -> bank (q + c) % 32
  static constexpr size_t kStages = 2 * C::kStageElems * sizeof(typename Mma::Elem);
  static constexpr size_t kScores = static_cast<size_t>(C::kBM) * kLdS * sizeof(Acc);
  static constexpr size_t kLists = (((kStages > kScores ? kStages : kScores) + 15) / 16) * 16;
  static size_t bytes(int64_t k) { return kLists + static_cast<size_t>(k) * C::kBM * (sizeof(Acc) + sizeof(int32_t)); }
};

template <class Mma>
__global__ void __launch_bounds__(kThreads)
    topk_partial_kernel(RowSrc<typename Mma::Elem> Q, RowSrc<typename Mma::Elem> Bk, int64_t D, bool cosine,
                        const typename Mma::Acc* qv, const typename Mma::Acc* bv, int k, int64_t q_blocks,
                        int64_t tiles_per_split, int splits, typename Mma::Acc* part_v, int32_t* part_i,
                        bool vec) {
  using C = Cfg<Mma>;
  using S = TopkSmem<Mma>;
  using T = typename Mma::Elem;
  using Acc = typename Mma::Acc;
  extern __shared__ __align__(16) unsigned char smem[];
  T* stages = reinterpret_cast<T*>(smem);
  Acc* scores = reinterpret_cast<Acc*>(smem);  // aliases the stages: used only between GEMMs
  Acc* lv = reinterpret_cast<Acc*>(smem + S::kLists);  // [k][kBM]: thread q's j-th best at j * kBM + q
  int32_t* li = reinterpret_cast<int32_t*>(lv + static_cast<int64_t>(k) * C::kBM);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane >> 2, t = lane & 3;
  const int64_t qb = static_cast<int64_t>(blockIdx.x) % q_blocks;
  const int sp = static_cast<int>(static_cast<int64_t>(blockIdx.x) / q_blocks);
  const int64_t q0 = qb * C::kBM;
  const int64_t N = Q.rows, M = Bk.rows;
  const int64_t n_tiles = (M + C::kBN - 1) / C::kBN;
  const int64_t tile_lo = sp * tiles_per_split;
  const int64_t tile_hi = tile_lo + tiles_per_split < n_tiles ? tile_lo + tiles_per_split : n_tiles;
  const Acc ninf = neg_inf<Acc>();

  for (int64_t e = threadIdx.x; e < static_cast<int64_t>(k) * C::kBM; e += kThreads) {
    lv[e] = ninf;
    li[e] = kNoIndex;
  }
  const int64_t my_q = q0 + threadIdx.x;  // the query this thread scans for (threads < kBM)
  const bool scanner = threadIdx.x < C::kBM && my_q < N;

  for (int64_t tile = tile_lo; tile < tile_hi; ++tile) {
    const int64_t col0 = tile * C::kBN;
    Acc acc[C::kMT][C::kNT][4];
    gemm_nt<Mma>(acc, Q, q0, Bk, col0, D, vec, stages);  // ends with a barrier: stages are free
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int lr = warp_m * 32 + mt * 16 + g + 8 * h;
        const int64_t i = q0 + lr;
        const Acc qi = i < N ? qv[i] : Acc(0);
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int lc = warp_n * C::kNT * 8 + nt * 8 + 2 * t + e;
            const int64_t j = col0 + lc;
            Acc key = ninf;
            if (j < M) {
              const Acc s = acc[mt][nt][2 * h + e];
              if (cosine) {
                // NaN -> +inf (first); a finite-row cosine that overflowed (a dot product of rows
                // near float's range) is clamped into [-max_finite, max_finite], so no real key is
                // -inf (the empty-slot sentinel, which the strict insert would skip) or +inf.
                const Acc c = s * qi * bv[j];
                const Acc big = max_finite<Acc>();
                key = c != c ? -ninf : (c < -big ? -big : (c > big ? big : c));
              } else {
                const Acc d = clamp0(qi + bv[j] - Acc(2) * s);
                const Acc cap = Acc(0.5) * max_finite<Acc>();
                key = d != d ? -max_finite<Acc>() : -(d < cap ? d : cap);
              }
            }
            scores[lr * S::kLdS + lc] = key;
          }
      }
    __syncthreads();
    if (scanner) {
      const Acc* row = scores + threadIdx.x * S::kLdS;
      const int cols = static_cast<int>(M - col0 < C::kBN ? M - col0 : C::kBN);
      Acc thr = lv[(k - 1) * C::kBM + threadIdx.x];
      for (int c = 0; c < cols; ++c) {
        const Acc v = row[c];
        if (v > thr) {  // strict: an equal key arrived earlier with a smaller index and keeps its place
          int j = k - 1;
          while (j > 0 && lv[(j - 1) * C::kBM + threadIdx.x] < v) {
            lv[j * C::kBM + threadIdx.x] = lv[(j - 1) * C::kBM + threadIdx.x];
            li[j * C::kBM + threadIdx.x] = li[(j - 1) * C::kBM + threadIdx.x];
            --j;
          }
          lv[j * C::kBM + threadIdx.x] = v;
          li[j * C::kBM + threadIdx.x] = static_cast<int32_t>(col0 + c);
          thr = lv[(k - 1) * C::kBM + threadIdx.x];
        }
      }
    }
    __syncthreads();  // the next GEMM overwrites `scores`
  }
  if (scanner) {
    const int64_t base = (my_q * splits + sp) * static_cast<int64_t>(k);
    for (int j = 0; j < k; ++j) {
      part_v[base + j] = lv[j * C::kBM + threadIdx.x];
      part_i[base + j] = li[j * C::kBM + threadIdx.x];
    }
  }
}

// Per query: k-way selection over `splits` sorted lists of k (value, index) pairs.
template <typename T>
__global__ void __launch_bounds__(128)
    topk_merge_kernel(const typename Num<T>::Acc* part_v, const int32_t* part_i, int64_t N, int splits, int k,
                      bool cosine, T* values, int64_t* indices) {
  using Acc = typename Num<T>::Acc;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= N) return;
  int head[kMaxSplits];
  for (int s = 0; s < splits; ++s) head[s] = 0;
  const int64_t base = q * splits * static_cast<int64_t>(k);
  for (int j = 0; j < k; ++j) {
    int best = -1;
    Acc bv = 0;
    int32_t bi = kNoIndex;
    for (int s = 0; s < splits; ++s) {
      if (head[s] >= k) continue;
      const int64_t at = base + static_cast<int64_t>(s) * k + head[s];
      const Acc v = part_v[at];
      const int32_t id = part_i[at];
      if (id == kNoIndex) continue;  // an empty slot: the rest of this list is empty too
      if (best < 0 || v > bv || (v == bv && id < bi)) {
        best = s;
        bv = v;
        bi = id;
      }
    }
    if (best < 0) {  // unreachable (M >= k real rows); a defined result rather than an out-of-range read
      values[q * k + j] = Num<T>::from_acc(quiet_nan<Acc>());
      indices[q * k + j] = 0;
      continue;
    }
    ++head[best];
    // The sentinels of NaN scores (see the top of the file) back to NaN.
    const Acc nan = quiet_nan<Acc>();
    values[q * k + j] =
        Num<T>::from_acc(cosine ? (bv == -neg_inf<Acc>() ? nan : bv) : (bv == -max_finite<Acc>() ? nan : -bv));
    indices[q * k + j] = bi;
  }
}

struct TopkPlan {
  int64_t q_blocks, tiles_per_split;
  int splits;
};

template <class Mma>
TopkPlan topk_plan(int64_t N, int64_t M, int device) {
  using C = Cfg<Mma>;
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 1;
  TopkPlan plan;
  plan.q_blocks = (N + C::kBM - 1) / C::kBM;
  const int64_t n_tiles = (M + C::kBN - 1) / C::kBN;
  // Aim for ~2 blocks per SM in flight; every split streams at least one tile; splits <= kMaxSplits.
  int64_t splits = (2 * static_cast<int64_t>(sms) + plan.q_blocks - 1) / plan.q_blocks;
  splits = splits < 1 ? 1 : splits;
  splits = splits > kMaxSplits ? kMaxSplits : splits;
  splits = splits > n_tiles ? n_tiles : splits;
  plan.tiles_per_split = (n_tiles + splits - 1) / splits;
  plan.splits = static_cast<int>((n_tiles + plan.tiles_per_split - 1) / plan.tiles_per_split);
  return plan;
}

}  // namespace
}  // namespace detail

bool topk_supported(DType dtype, int64_t k, int device) {
  using namespace detail;
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return false;
  if (k < 1 || k > (1 << 20)) return false;
  size_t need = 0;
  dispatch_mma(dtype, Fp32Mode::kTf32, [&](auto mma) -> cudaError_t {
    need = TopkSmem<decltype(mma)>::bytes(k);
    return cudaSuccess;
  });
  return need <= static_cast<size_t>(optin);
}

size_t topk_workspace_bytes(DType dtype, int64_t N, int64_t M, int64_t k, int device) {
  using namespace detail;
  size_t bytes = 0;
  dispatch_mma(dtype, Fp32Mode::kTf32, [&](auto mma) -> cudaError_t {
    using Mma = decltype(mma);
    using Acc = typename Mma::Acc;
    const TopkPlan plan = topk_plan<Mma>(N, M, device);
    const size_t parts = static_cast<size_t>(N) * plan.splits * static_cast<size_t>(k);
    bytes = align256(N * sizeof(Acc)) + align256(M * sizeof(Acc)) + align256(parts * sizeof(Acc)) +
            align256(parts * sizeof(int32_t));
    return cudaSuccess;
  });
  return bytes;
}

cudaError_t topk_similarity(DType dtype, Fp32Mode fp32_mode, Metric metric, const void* queries, const void* bank,
                            int64_t N, int64_t M, int64_t D, int64_t k, void* values, int64_t* indices,
                            void* workspace, int device, cudaStream_t stream) {
  using namespace detail;
  if (N == 0) return cudaSuccess;
  if (k < 1 || k > M || M > 0x7fffffffLL || metric == Metric::kEuclidean) return cudaErrorInvalidValue;
  clear_stale_error();
  return dispatch_mma(dtype, fp32_mode, [&](auto mma) -> cudaError_t {
    using Mma = decltype(mma);
    using T = typename Mma::Elem;
    using Acc = typename Mma::Acc;
    using S = TopkSmem<Mma>;
    const bool cosine = metric == Metric::kCosine;
    const RowSrc<T> Q{static_cast<const T*>(queries), static_cast<const T*>(queries), N, N};
    const RowSrc<T> Bk{static_cast<const T*>(bank), static_cast<const T*>(bank), M, M};
    const TopkPlan plan = topk_plan<Mma>(N, M, device);
    const size_t parts = static_cast<size_t>(N) * plan.splits * static_cast<size_t>(k);
    unsigned char* base = static_cast<unsigned char*>(workspace);
    Acc* qv = reinterpret_cast<Acc*>(base);
    base += align256(N * sizeof(Acc));
    Acc* bv = reinterpret_cast<Acc*>(base);
    base += align256(M * sizeof(Acc));
    Acc* part_v = reinterpret_cast<Acc*>(base);
    base += align256(parts * sizeof(Acc));
    int32_t* part_i = reinterpret_cast<int32_t*>(base);

    SSL_CUDA_TRY(launch_row_norms(Q, D, cosine ? 1 : 0, qv, stream));
    SSL_CUDA_TRY(launch_row_norms(Bk, D, cosine ? 1 : 0, bv, stream));
    const size_t smem = S::bytes(k);
    auto kernel = topk_partial_kernel<Mma>;
    SSL_CUDA_TRY(allow_smem(kernel, smem));
    const int64_t blocks = plan.q_blocks * plan.splits;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
    const bool vec = rows_vectorizable(Q.p0, Q.p1, D) && rows_vectorizable(Bk.p0, Bk.p1, D);
    kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(Q, Bk, D, cosine, qv, bv, static_cast<int>(k),
                                                                      plan.q_blocks, plan.tiles_per_split,
                                                                      plan.splits, part_v, part_i, vec);
    SSL_CUDA_TRY(cudaGetLastError());
    const int64_t mblocks = (N + 127) / 128;
    topk_merge_kernel<T><<<static_cast<unsigned>(mblocks), 128, 0, stream>>>(
        part_v, part_i, N, plan.splits, static_cast<int>(k), cosine, static_cast<T*>(values), indices);
    return cudaGetLastError();
  });
}

}  // namespace sslsteal_cuda
