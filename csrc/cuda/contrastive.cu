// Fused InfoNCE / Soft-Nearest-Neighbour forward and backward, flash-attention style.
//
// Forward (one thread block per 128-row block I, looping over all 128-column blocks J):
//   S_IJ = Z_I Z_J^T on tensor cores (fp32 accumulation), turned into base-2 logits in registers,
//   folded into two independent streaming log-sum-exp states per row (all k != i, and positives),
//   each with its own running maximum. Only lse_all, lse_pos and the loss row are written: O(n)
//   output, O(n * D) reads per block row, no n x n buffer.
//
// Backward (persistent: each resident block takes row blocks I = blockIdx.x, + gridDim.x, ...):
//   dz_I = sum_J W_IJ Z_J with W = A + A^T,
//   A_ik = g_i (exp(L_ik - lse_all_i) - [y_k = y_i] exp(L_ik - lse_pos_i)).
//   Because L is symmetric, the block recomputes S_IJ once and forms W_IJ = A_IJ + (A_JI)^T from it
//   in registers using the column rows' saved statistics: one similarity GEMM and one W * Z GEMM per
//   tile, instead of the four a separate A z / A^T z pass would need. W_IJ is written to shared
//   memory in the MMA operand type and multiplied by Z_J in D-slices of 128 (64 for f64) whose
//   float32 accumulators live in this block's private workspace rows: no two blocks ever touch the
//   same output row, so the result is deterministic without atomics. To amortise that workspace
//   read-modify-write, W is gathered for kJS column blocks (256 columns for 16-bit types) first.
//
// Why not also halve the tiles using symmetry (process only J >= I)? The mirrored contribution of
// tile (I, J) lands on rows of J, owned by another block. Merging it deterministically needs either
// float atomics (order-dependent, and log-sum-exp states do not add) or per-(I, J) partial buffers,
// which are O(n^2 / 128) memory (64 MiB at n = 32768, 32 GiB at n = 2^20). The backward still
// uses the symmetry where it is free (one S tile yields both A_IJ and A_JI^T).
//
// Non-finite rows: their statistics make every logit they enter NaN (row_norms, logit2); exp2 of a NaN
// logit minus the (always finite) tile maximum makes the running sum NaN, and a NaN sum stays NaN
// through every rescale and merge, so every log-sum-exp over such a logit -- and the loss row -- is
// NaN, as in PyTorch. The backward keeps NaN statistics, so their gradients are NaN.
//
// Numerics: logits are carried in base 2 (L * log2 e) so exp is one ex2; every running maximum is
// kept separately for "all" and "positives", because a positive can sit 1e4 logits below the
// negatives (SoftNN with far positives) and exp(L_pos - m_all) would underflow to 0. The backward
// reads lse_all / lse_pos, so every exponent is <= ~0 and nothing overflows.
#include <type_traits>

#include "tile_gemm.cuh"

namespace sslsteal_cuda {
namespace detail {
namespace {

template <typename Acc>
struct RowParams {
  int64_t n;
  int64_t D;
  int64_t split;          // InfoNCE partner offset B (labels are r mod B); SoftNN: n
  const int64_t* labels;  // SoftNN labels; nullptr for InfoNCE
  bool soft;
  Acc coef;       // log2(e) / T
  const Acc* rv;  // per row: SoftNN |z|^2, InfoNCE 1 / max(|x|, eps)
};

template <typename Acc>
__device__ __forceinline__ int64_t row_label(const RowParams<Acc>& p, int64_t r) {
  return p.labels != nullptr ? p.labels[r] : (r >= p.split ? r - p.split : r);
}

// Base-2 logit of (i, k) from the raw dot product s = <row_i, row_k>.
template <typename Acc>
__device__ __forceinline__ Acc logit2(bool soft, Acc s, Acc rv_i, Acc rv_k, Acc coef) {
  if (soft) {
    // |z_i - z_k|^2, clamped at 0 against cancellation (keeping NaN); the glue shifts z (numerics.h).
    return -clamp0(rv_i + rv_k - Acc(2) * s) * coef;
  }
  return s * rv_i * rv_k * coef;  // cosine similarity / T, normalisation folded in
}

// ============================================================================================
// Forward
// ============================================================================================
template <class Mma>
struct FwdSmem {
  using C = Cfg<Mma>;
  using Acc = typename Mma::Acc;
  static constexpr size_t kStages = 2 * C::kStageElems * sizeof(typename Mma::Elem);
  static constexpr size_t kColRv = kStages;
  static constexpr size_t kColLab = kColRv + C::kBN * sizeof(Acc);
  static constexpr size_t kMerge = kColLab + C::kBN * sizeof(int64_t);  // 4 x kBM Acc (warp_n = 1 states)
  static constexpr size_t kBytes = kMerge + 4 * C::kBM * sizeof(Acc);
};

template <class Mma>
__global__ void __launch_bounds__(kThreads) contrastive_fwd_kernel(RowSrc<typename Mma::Elem> z,
                                                                   RowParams<typename Mma::Acc> p, void* loss_out,
                                                                   typename Mma::Acc* lse_all_out,
                                                                   typename Mma::Acc* lse_pos_out, bool vec) {
  using C = Cfg<Mma>;
  using T = typename Mma::Elem;
  using Acc = typename Mma::Acc;
  using L = FwdSmem<Mma>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* stages = reinterpret_cast<T*>(smem);
  Acc* col_rv = reinterpret_cast<Acc*>(smem + L::kColRv);
  int64_t* col_lab = reinterpret_cast<int64_t*>(smem + L::kColLab);
  Acc* merge = reinterpret_cast<Acc*>(smem + L::kMerge);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane >> 2, t = lane & 3;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * C::kBM;
  const Acc ninf = neg_inf<Acc>();

  // This lane's 4 rows: (mt, h) -> local row warp_m * 32 + mt * 16 + g + 8h.
  int64_t ri[C::kMT][2];
  Acc rrv[C::kMT][2];
  int64_t rlab[C::kMT][2];
  Acc m_all[C::kMT][2], s_all[C::kMT][2], m_pos[C::kMT][2], s_pos[C::kMT][2];
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t i = row0 + warp_m * 32 + mt * 16 + g + 8 * h;
      ri[mt][h] = i;
      rrv[mt][h] = i < p.n ? p.rv[i] : Acc(0);
      rlab[mt][h] = i < p.n ? row_label(p, i) : -1;
      m_all[mt][h] = m_pos[mt][h] = ninf;
      s_all[mt][h] = s_pos[mt][h] = Acc(0);
    }

  Acc acc[C::kMT][C::kNT][4];
  for (int64_t col0 = 0; col0 < p.n; col0 += C::kBN) {
    __syncthreads();  // the previous tile's epilogue is done with col_rv / col_lab
    for (int c = threadIdx.x; c < C::kBN; c += kThreads) {
      const int64_t k = col0 + c;
      col_rv[c] = k < p.n ? p.rv[k] : Acc(0);
      col_lab[c] = k < p.n ? row_label(p, k) : -2;
    }
    gemm_nt<Mma>(acc, z, row0, z, col0, p.D, vec, stages);  // its barriers publish col_rv / col_lab

#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t i = ri[mt][h];
        // Pass 1: logits in place, the tile maxima, and a bit mask of this lane's positives. The maxima
        // start at -max_finite, not -inf, so that a NaN logit (which the compares skip) still meets a
        // finite maximum in pass 2 and turns the running sum NaN; masked (-inf) entries add exp2(-inf) = 0.
        Acc tmax = -max_finite<Acc>(), pmax = -max_finite<Acc>();
        uint32_t pos_mask = 0;
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int lc = warp_n * C::kNT * 8 + nt * 8 + 2 * t + e;
            const int64_t k = col0 + lc;
            Acc l = ninf;
            if (i < p.n && k < p.n && k != i) {
              l = logit2(p.soft, acc[mt][nt][2 * h + e], rrv[mt][h], col_rv[lc], p.coef);
              if (col_lab[lc] == rlab[mt][h]) {
                pos_mask |= 1u << (nt * 2 + e);
                pmax = l > pmax ? l : pmax;
              }
            }
            acc[mt][nt][2 * h + e] = l;
            tmax = l > tmax ? l : tmax;
          }
        // Pass 2: rescale the running sums once per tile, then add this tile's terms.
        {
          const Acc mn = m_all[mt][h] > tmax ? m_all[mt][h] : tmax;
          Acc s = s_all[mt][h] * fast_exp2(m_all[mt][h] - mn);
#pragma unroll
          for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) s += fast_exp2(acc[mt][nt][2 * h + e] - mn);
          s_all[mt][h] = s;
          m_all[mt][h] = mn;
        }
        if (pos_mask != 0) {  // positives are rare: a separate, usually skipped pass with its own max
          const Acc mn = m_pos[mt][h] > pmax ? m_pos[mt][h] : pmax;
          Acc s = s_pos[mt][h] * fast_exp2(m_pos[mt][h] - mn);
#pragma unroll
          for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              if (pos_mask & (1u << (nt * 2 + e))) s += fast_exp2(acc[mt][nt][2 * h + e] - mn);
          s_pos[mt][h] = s;
          m_pos[mt][h] = mn;
        }
      }
  }

  // Merge the per-lane states: the 4 lanes of a row (butterfly over t), then the two column warps
  // (warp_n = 1 parks its states in shared memory). Fixed order, hence run-to-run deterministic.
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        lse_merge(m_all[mt][h], s_all[mt][h], __shfl_xor_sync(0xffffffffu, m_all[mt][h], o),
                  __shfl_xor_sync(0xffffffffu, s_all[mt][h], o));
        lse_merge(m_pos[mt][h], s_pos[mt][h], __shfl_xor_sync(0xffffffffu, m_pos[mt][h], o),
                  __shfl_xor_sync(0xffffffffu, s_pos[mt][h], o));
      }
  __syncthreads();
  if (warp_n == 1 && t == 0) {
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int lr = warp_m * 32 + mt * 16 + g + 8 * h;
        merge[lr] = m_all[mt][h];
        merge[C::kBM + lr] = s_all[mt][h];
        merge[2 * C::kBM + lr] = m_pos[mt][h];
        merge[3 * C::kBM + lr] = s_pos[mt][h];
      }
  }
  __syncthreads();
  if (warp_n == 0 && t == 0) {
    const Acc ln2 = Acc(kLn2);
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int lr = warp_m * 32 + mt * 16 + g + 8 * h;
        const int64_t i = ri[mt][h];
        if (i >= p.n) continue;
        lse_merge(m_all[mt][h], s_all[mt][h], merge[lr], merge[C::kBM + lr]);
        lse_merge(m_pos[mt][h], s_pos[mt][h], merge[2 * C::kBM + lr], merge[3 * C::kBM + lr]);
        // (-inf, 0) -> -inf + log2(0) = -inf: an empty set gives lse = -inf, never NaN.
        const Acc la = (m_all[mt][h] + fast_log2(s_all[mt][h])) * ln2;
        const Acc lp = (m_pos[mt][h] + fast_log2(s_pos[mt][h])) * ln2;
        lse_all_out[i] = la;
        lse_pos_out[i] = lp;
        reinterpret_cast<T*>(loss_out)[i] = Num<T>::from_acc(lp != ninf ? la - lp : Acc(0));
      }
  }
}

// ============================================================================================
// Backward
// ============================================================================================
// Two shared-memory layouts of the backward, picked per device (bwd_small_tiles):
//   large (kSmall = false): 112 KiB (16-bit), 142 KiB (f32), 124 KiB (f64), for sm_80 / sm_90;
//   small (kSmall = true):  ~46 KiB (16-bit), ~87 KiB (f32 and f64), under the 99 KiB of sm_86 / sm_89 /
//     sm_120. W is gathered for one column block (kJS = 1), so it may alias the similarity GEMM's stages
//     (W is written after that GEMM's last barrier and read before the next GEMM starts), and the
//     W * Z stages are 16 rows deep. Same arithmetic in the same order per output element.
constexpr size_t kSmemSmall = 101376;  // sm_86 / sm_89 opt-in limit: the small layout must fit it

template <class Mma, bool kSmall>
struct BwdCfg {
  using C = Cfg<Mma>;
  using T = typename Mma::Elem;
  using Acc = typename Mma::Acc;
  static constexpr int kJS = (!kSmall && sizeof(T) == 2) ? 2 : 1;  // column blocks gathered per W * Z pass
  static constexpr int kWCols = kJS * C::kBN;                       // 256 (16-bit), 128 (f32), 64 (f64)
  static constexpr int kLdW = kWCols + 16 / sizeof(T);  // odd 16-byte units (16-bit), 4 mod 32 words (f32)
  static constexpr int kDC = C::kBN;                    // D-slice of the W * Z product
  static constexpr int kKZ = kSmall ? 16 : 32;          // Z rows per pipeline stage of W * Z
  static constexpr int kLdZ = kDC + (sizeof(T) == 8 ? 2 : 8);  // f32: 8 mod 32 words for [k][n] reads
  static_assert(kKZ % Mma::kStep == 0 && C::kBN % kKZ == 0, "W * Z stage shape");
  static constexpr bool kAliasW = kSmall;  // W over the GEMM stages: only with one column block per pass
  static_assert(!kAliasW || kJS == 1, "W may alias the GEMM stages only when kJS == 1");
  static constexpr size_t kZStages = 2 * kKZ * kLdZ * sizeof(T);
  static constexpr size_t kGemmStages = 2 * C::kStageElems * sizeof(T);
  static constexpr size_t kUnion = kGemmStages > kZStages ? kGemmStages : kZStages;
  static constexpr size_t kWBytes = ((C::kBM * kLdW * sizeof(T) + 15) / 16) * 16;
  static constexpr size_t kW = kAliasW ? ((kZStages + 15) / 16) * 16 : kUnion;  // after the Z stages
  static constexpr size_t kWEnd = kW + kWBytes;
  static constexpr size_t kCol = kAliasW && kGemmStages > kWEnd ? kGemmStages : kWEnd;  // 4 Acc arrays + labels
  static constexpr size_t kColLab = kCol + 4 * C::kBN * sizeof(Acc);
  static constexpr size_t kRowSum = kColLab + C::kBN * sizeof(int64_t);
  static constexpr size_t kBytes = kRowSum + C::kBM * sizeof(Acc);
  static_assert(!kSmall || kBytes <= kSmemSmall, "the small backward layout must fit 99 KiB devices");
};

template <typename Acc>
struct BwdVectors {
  const Acc* a2;        // lse_all * log2 e
  const Acc* p2;        // lse_pos * log2 e
  const Acc* gg;        // grad_rows, 0 where the row has no positive
  unsigned int* gmax;   // float16 only: bits of max |gg| over the finite entries (W's scale); else nullptr
};

// float16's W: |W_ik| <= |g_i| + |g_k| <= 2 max|g| (A's rows are g times a difference of two
// probabilities), but with reduction="mean" (g = 1/n) W is ~1e-8..1e-11, below float16's smallest
// subnormal, so stored as is most of it would flush to 0. W is stored times 2^s with 2^s * 2 max|g|
// < 2^14 (no overflow, and the typical entry lands in float16's normal range), and the float32
// workspace rows are multiplied by 2^-s in the finalize: powers of two, so nothing else is rounded.
// Returns 2^s, or 1 when max|g| is 0.
__device__ __forceinline__ float half_w_scale(const unsigned int* gmax) {
  const float G = __uint_as_float(*gmax);
  if (!(G > 0.f) || !isfinite(G)) return 1.f;
  int e = 0;
  frexpf(G, &e);  // G < 2^e
  int s = 13 - e;
  s = s < -100 ? -100 : (s > 100 ? 100 : s);
  return ldexpf(1.f, s);
}

template <class Mma, bool kSmall>
__global__ void __launch_bounds__(kThreads) contrastive_bwd_kernel(RowSrc<typename Mma::Elem> z,
                                                                   RowParams<typename Mma::Acc> p,
                                                                   BwdVectors<typename Mma::Acc> bv,
                                                                   typename Mma::Acc* ws, void* grad0, void* grad1,
                                                                   typename Mma::Acc inv_t, bool vec) {
  using C = Cfg<Mma>;
  using B = BwdCfg<Mma, kSmall>;
  using T = typename Mma::Elem;
  using Acc = typename Mma::Acc;
  // float16: W is scaled (half_w_scale) and InfoNCE's 1/|x_k| is applied to the staged Z rows instead of
  // being folded into W: W_ik / |x_k| overflows float16 for a short row (an all-zero row has
  // 1/|x| = 1e12: inf, and inf * 0 = NaN in every other row's gradient). The other types keep the fold
  // (bfloat16, float32 and float64 have float's exponent range or more).
  constexpr bool kHalfW = std::is_same<T, __half>::value;
  extern __shared__ __align__(16) unsigned char smem[];
  T* stages = reinterpret_cast<T*>(smem);  // similarity GEMM stages, later reused for Z slices
  T* zst = reinterpret_cast<T*>(smem);
  T* Ws = reinterpret_cast<T*>(smem + B::kW);
  Acc* col_rv = reinterpret_cast<Acc*>(smem + B::kCol);
  Acc* col_a2 = col_rv + C::kBN;
  Acc* col_p2 = col_a2 + C::kBN;
  Acc* col_gg = col_p2 + C::kBN;
  int64_t* col_lab = reinterpret_cast<int64_t*>(smem + B::kColLab);
  Acc* rowsum_s = reinterpret_cast<Acc*>(smem + B::kRowSum);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane >> 2, t = lane & 3;
  const int64_t n = p.n, D = p.D;
  const int64_t n_blocks = (n + C::kBM - 1) / C::kBM;
  Acc* wsb = ws + static_cast<int64_t>(blockIdx.x) * C::kBM * D;  // this block's private D-wide rows
  Acc wscale = Acc(1), wunscale = Acc(1);
  if constexpr (kHalfW) {
    wscale = half_w_scale(bv.gmax);
    wunscale = Acc(1) / wscale;  // exact: a power of two
  }

  for (int64_t rb = blockIdx.x; rb < n_blocks; rb += gridDim.x) {
    const int64_t row0 = rb * C::kBM;
    int64_t ri[C::kMT][2], rlab[C::kMT][2];
    Acc rrv[C::kMT][2], ra2[C::kMT][2], rp2[C::kMT][2], rgg[C::kMT][2], rsum[C::kMT][2];
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t i = row0 + warp_m * 32 + mt * 16 + g + 8 * h;
        const bool in = i < n;
        ri[mt][h] = i;
        rlab[mt][h] = in ? row_label(p, i) : -1;
        rrv[mt][h] = in ? p.rv[i] : Acc(0);
        ra2[mt][h] = in ? bv.a2[i] : Acc(0);
        rp2[mt][h] = in ? bv.p2[i] : Acc(0);
        rgg[mt][h] = in ? bv.gg[i] : Acc(0);
        rsum[mt][h] = Acc(0);
      }

    bool first = true;
    for (int64_t sb0 = 0; sb0 < n; sb0 += B::kWCols) {
      // ---- W for up to kJS column blocks -> shared memory --------------------------------------
      for (int j = 0; j < B::kJS; ++j) {
        const int64_t col0 = sb0 + static_cast<int64_t>(j) * C::kBN;
        if (col0 >= n) break;
        __syncthreads();  // previous readers of col_* (and of Ws / Z slices) are done
        for (int c = threadIdx.x; c < C::kBN; c += kThreads) {
          const int64_t k = col0 + c;
          const bool in = k < n;
          col_rv[c] = in ? p.rv[k] : Acc(0);
          col_a2[c] = in ? bv.a2[k] : Acc(0);
          col_p2[c] = in ? bv.p2[k] : Acc(0);
          col_gg[c] = in ? bv.gg[k] : Acc(0);
          col_lab[c] = in ? row_label(p, k) : -2;
        }
        Acc acc[C::kMT][C::kNT][4];
        gemm_nt<Mma>(acc, z, row0, z, col0, D, vec, stages);
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int64_t i = ri[mt][h];
            const int lr = warp_m * 32 + mt * 16 + g + 8 * h;
#pragma unroll
            for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int lc = warp_n * C::kNT * 8 + nt * 8 + 2 * t + e;
                const int64_t k = col0 + lc;
                Acc w = 0;
                if (i < n && k < n && k != i) {
                  const Acc l = logit2(p.soft, acc[mt][nt][2 * h + e], rrv[mt][h], col_rv[lc], p.coef);
                  const bool same = col_lab[lc] == rlab[mt][h];
                  // A_ik: row i's softmax minus its positive-softmax, both exponents <= ~0.
                  if (rgg[mt][h] != Acc(0))
                    w += rgg[mt][h] * (fast_exp2(l - ra2[mt][h]) - (same ? fast_exp2(l - rp2[mt][h]) : Acc(0)));
                  // A_ki from the same logit (L is symmetric), with column k's statistics.
                  const Acc gk = col_gg[lc];
                  if (gk != Acc(0))
                    w += gk * (fast_exp2(l - col_a2[lc]) - (same ? fast_exp2(l - col_p2[lc]) : Acc(0)));
                  if constexpr (kHalfW) {
                    w *= wscale;  // InfoNCE's r_k goes onto the staged Z rows below
                  } else {
                    if (!p.soft) w *= col_rv[lc];  // InfoNCE: W z_hat = (W diag(r)) x
                  }
                }
                const T wq = Num<T>::from_acc(w);
                Ws[lr * B::kLdW + j * C::kBN + lc] = wq;
                // SoftNN needs rowsum(W); summing the *stored* (rounded) values keeps
                // rowsum * z_i - W z an exact difference of the same weights.
                rsum[mt][h] += Num<T>::to_acc(wq);
              }
          }
      }
      __syncthreads();  // Ws complete; similarity stages free for Z slices

      // ---- workspace rows += W (kBM x kc) * Z[sb0 : sb0 + kc] -------------------------------------
      const int64_t kc = (n - sb0) < B::kWCols ? (n - sb0) : B::kWCols;
      const int kz_tiles = static_cast<int>((kc + B::kKZ - 1) / B::kKZ);
      for (int64_t dc0 = 0; dc0 < D; dc0 += B::kDC) {
        Acc o[C::kMT][C::kNT][4];
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const int lr = warp_m * 32 + mt * 16 + g + 8 * (c >> 1);
              const int64_t d = dc0 + warp_n * C::kNT * 8 + nt * 8 + 2 * t + (c & 1);
              o[mt][nt][c] = (!first && d < D) ? wsb[lr * D + d] : Acc(0);
            }
        auto load_z = [&](int buf, int kz) {
          stage_rows<T, B::kDC>(zst + buf * B::kKZ * B::kLdZ, B::kLdZ, B::kKZ, z, sb0 + kz * B::kKZ, dc0, D, vec);
          cp_async_commit();
        };
        load_z(0, 0);
        for (int kz = 0; kz < kz_tiles; ++kz) {
          if (kz + 1 < kz_tiles) {
            load_z((kz + 1) & 1, kz + 1);
            cp_async_wait<1>();
          } else {
            cp_async_wait<0>();
          }
          __syncthreads();
          if constexpr (kHalfW) {
            if (!p.soft) {  // InfoNCE, float16: the staged rows x_k become z_hat_k = x_k r_k (|entries| <= 1)
              T* zs = zst + (kz & 1) * B::kKZ * B::kLdZ;
              for (int c = threadIdx.x; c < B::kKZ * B::kDC; c += kThreads) {
                const int i = c / B::kDC, j = c % B::kDC;
                const int64_t k = sb0 + static_cast<int64_t>(kz) * B::kKZ + i;
                const Acc r = k < n ? p.rv[k] : Acc(0);
                zs[i * B::kLdZ + j] = Num<T>::from_acc(Num<T>::to_acc(zs[i * B::kLdZ + j]) * r);
              }
              __syncthreads();
            }
          }
          const T* zb = zst + (kz & 1) * B::kKZ * B::kLdZ + warp_n * C::kNT * 8;
          const T* wa = Ws + (warp_m * 32) * B::kLdW + kz * B::kKZ;
#pragma unroll
          for (int kk = 0; kk < B::kKZ; kk += Mma::kStep) {
            typename Mma::A a[C::kMT];
#pragma unroll
            for (int mt = 0; mt < C::kMT; ++mt) Mma::load_a(a[mt], wa + mt * 16 * B::kLdW + kk, B::kLdW, lane);
#pragma unroll
            for (int nt = 0; nt < C::kNT; ++nt) {
              typename Mma::B b;
              Mma::load_bt(b, zb + kk * B::kLdZ + nt * 8, B::kLdZ, lane);
#pragma unroll
              for (int mt = 0; mt < C::kMT; ++mt) Mma::mma(o[mt][nt], a[mt], b);
            }
          }
          __syncthreads();
        }
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const int lr = warp_m * 32 + mt * 16 + g + 8 * (c >> 1);
              const int64_t d = dc0 + warp_n * C::kNT * 8 + nt * 8 + 2 * t + (c & 1);
              if (d < D) wsb[lr * D + d] = o[mt][nt][c];
            }
      }
      first = false;
    }

    // ---- rowsum(W): 4 lanes, then the 2 column warps, in a fixed order ---------------------------
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        rsum[mt][h] += __shfl_xor_sync(0xffffffffu, rsum[mt][h], 1);
        rsum[mt][h] += __shfl_xor_sync(0xffffffffu, rsum[mt][h], 2);
      }
    if (warp_n == 1 && t == 0) {
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) rowsum_s[warp_m * 32 + mt * 16 + g + 8 * h] = rsum[mt][h];
    }
    __syncthreads();
    if (warp_n == 0 && t == 0) {
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int lr = warp_m * 32 + mt * 16 + g + 8 * h;
          rowsum_s[lr] = rsum[mt][h] + rowsum_s[lr];
        }
    }
    __syncthreads();  // also orders every workspace write above before the reads below

    // ---- finalize: chain rule, one warp per row --------------------------------------------------
    for (int lr = warp; lr < C::kBM; lr += kThreads / 32) {
      const int64_t i = row0 + lr;
      if (i >= n) break;
      const Acc* w = wsb + lr * D;
      const T* x = z.row(i, D);
      T* out = i < z.split ? reinterpret_cast<T*>(grad0) + i * D
                           : reinterpret_cast<T*>(grad1) + (i - z.split) * D;
      if (p.soft) {
        // dz_i = (-2/T) (rowsum_i z_i - (W z)_i)
        const Acc rs = rowsum_s[lr];
        const Acc two_t = Acc(2) * inv_t * wunscale;  // rowsum and W z carry the same scale
        for (int64_t d = lane; d < D; d += 32) out[d] = Num<T>::from_acc(two_t * (w[d] - rs * Num<T>::to_acc(x[d])));
      } else {
        // dz = W z_hat / T; x -> x / max(|x|, eps) has Jacobian (I - z_hat z_hat^T) / |x| when
        // |x| > eps and I / eps otherwise.
        const Acc r = p.rv[i];
        Acc dot = 0;
        for (int64_t d = lane; d < D; d += 32) dot += Num<T>::to_acc(x[d]) * (w[d] * wunscale);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const Acc zd = r * inv_t * dot;                  // <z_hat_i, dz_i>
        const bool project = r < Acc(1.0 / kNormEps);    // |x_i| > eps
        for (int64_t d = lane; d < D; d += 32) {
          const Acc dz = (w[d] * wunscale) * inv_t;
          const Acc v = project ? dz - Num<T>::to_acc(x[d]) * r * zd : dz;
          out[d] = Num<T>::from_acc(r * v);
        }
      }
    }
    __syncthreads();  // Ws, col_*, rowsum_s and the workspace rows are reused by the next row block
  }
}

// a2 = lse_all * log2 e, p2 = lse_pos * log2 e, gg = grad (0 where the row has no positive, unless its
// lse_all is NaN: then NaN, so that NaN statistics give NaN gradients on every row, as on the CPU).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_vectors_kernel(int64_t n, const T* grad_rows, const typename Num<T>::Acc* lse_all,
                       const typename Num<T>::Acc* lse_pos, BwdVectors<typename Num<T>::Acc> out) {
  using Acc = typename Num<T>::Acc;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  const Acc lp = lse_pos[i];
  const_cast<Acc*>(out.a2)[i] = lse_all[i] * Acc(kLog2e);
  const_cast<Acc*>(out.p2)[i] = lp * Acc(kLog2e);
  const Acc la = lse_all[i];
  const Acc gg = lp != neg_inf<Acc>() ? Num<T>::to_acc(grad_rows[i]) : (la != la ? la : Acc(0));
  const_cast<Acc*>(out.gg)[i] = gg;
  // max is order-independent, so the atomic keeps the result deterministic; the bits of a non-negative
  // float order like the float. Non-finite entries are left out (they make the gradients NaN anyway).
  if (out.gmax != nullptr && isfinite(gg) && gg != Acc(0)) atomicMax(out.gmax, __float_as_uint(fabsf(float(gg))));
}

template <class Mma>
RowSrc<typename Mma::Elem> contrastive_rows(const ContrastiveArgs& a) {
  using T = typename Mma::Elem;
  return RowSrc<T>{static_cast<const T*>(a.rows0), static_cast<const T*>(a.rows1), a.split, a.n};
}

template <class Mma>
RowParams<typename Mma::Acc> contrastive_params(const ContrastiveArgs& a, const typename Mma::Acc* rv) {
  using Acc = typename Mma::Acc;
  return RowParams<Acc>{a.n, a.D, a.split, a.soft_nn ? a.labels : nullptr, a.soft_nn,
                        static_cast<Acc>(kLog2e / a.temperature), rv};
}

// Whether the backward takes its small shared-memory layout on this device: when the large one does
// not fit the device's opt-in limit (sm_86 / sm_89 / sm_120), or when SSLSTEAL_CUDA_SMALL_TILES=1.
template <class Mma>
cudaError_t bwd_small_tiles(int device, bool* small) {
  int optin = 0;
  SSL_CUDA_TRY(smem_optin(device, &optin));
  *small = force_small_tiles() || BwdCfg<Mma, false>::kBytes > static_cast<size_t>(optin);
  return cudaSuccess;
}

// f(std::integral_constant<bool, kSmall>{}) with this device's backward layout.
template <class Mma, typename F>
cudaError_t with_bwd_layout(int device, F&& f) {
  bool small = false;
  SSL_CUDA_TRY(bwd_small_tiles<Mma>(device, &small));
  return small ? f(std::true_type{}) : f(std::false_type{});
}

// Blocks of the persistent backward that fit on the device at once (= workspace row-block slots).
template <class Mma, bool kSmall>
cudaError_t bwd_slots(int64_t n, int device, int64_t* slots) {
  constexpr size_t smem = BwdCfg<Mma, kSmall>::kBytes;
  auto kernel = contrastive_bwd_kernel<Mma, kSmall>;
  SSL_CUDA_TRY(allow_smem(kernel, smem));
  int sms = 0, per_sm = 0;
  SSL_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  SSL_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  const int64_t n_blocks = (n + Cfg<Mma>::kBM - 1) / Cfg<Mma>::kBM;
  const int64_t resident = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
  *slots = n_blocks < resident ? n_blocks : resident;
  return cudaSuccess;
}

}  // namespace
}  // namespace detail

size_t contrastive_fwd_workspace_bytes(const ContrastiveArgs& args) {
  return detail::align256(static_cast<size_t>(args.n) * detail::acc_size(args.dtype));
}

cudaError_t contrastive_fwd(const ContrastiveArgs& args, void* loss_rows, void* lse_all, void* lse_pos,
                            void* workspace, cudaStream_t stream) {
  using namespace detail;
  if (args.n == 0) return cudaSuccess;
  clear_stale_error();
  return dispatch_mma(args.dtype, args.fp32_mode, [&](auto mma) -> cudaError_t {
    using Mma = decltype(mma);
    using Acc = typename Mma::Acc;
    const auto z = contrastive_rows<Mma>(args);
    Acc* rv = static_cast<Acc*>(workspace);
    SSL_CUDA_TRY(launch_row_norms(z, args.D, args.soft_nn ? 0 : 1, rv, stream));
    const auto p = contrastive_params<Mma>(args, rv);
    constexpr size_t smem = FwdSmem<Mma>::kBytes;
    auto kernel = contrastive_fwd_kernel<Mma>;
    SSL_CUDA_TRY(allow_smem(kernel, smem));
    const int64_t blocks = (args.n + Cfg<Mma>::kBM - 1) / Cfg<Mma>::kBM;
    kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
        z, p, loss_rows, static_cast<Acc*>(lse_all), static_cast<Acc*>(lse_pos),
        rows_vectorizable(z.p0, z.p1, args.D));
    return cudaGetLastError();
  });
}

size_t contrastive_bwd_workspace_bytes(const ContrastiveArgs& args, int device) {
  using namespace detail;
  // rv, a2, p2, gg (n each), then the float16 W scale's max|g| (one word, 256 bytes).
  const size_t vec_bytes = 4 * align256(static_cast<size_t>(args.n) * acc_size(args.dtype)) + 256;
  const int64_t n_blocks = (args.n + 127) / 128;
  int64_t slots = n_blocks;  // fallback if the occupancy query fails: never too small
  dispatch_mma(args.dtype, args.fp32_mode, [&](auto mma) -> cudaError_t {
    using Mma = decltype(mma);
    return with_bwd_layout<Mma>(device, [&](auto small) -> cudaError_t {
      int64_t s = 0;
      if (bwd_slots<Mma, decltype(small)::value>(args.n, device, &s) == cudaSuccess) slots = s;
      return cudaSuccess;
    });
  });
  return vec_bytes + static_cast<size_t>(slots) * 128 * static_cast<size_t>(args.D) * acc_size(args.dtype);
}

cudaError_t contrastive_bwd(const ContrastiveArgs& args, const void* grad_rows, const void* lse_all,
                            const void* lse_pos, void* grad0, void* grad1, void* workspace, int device,
                            cudaStream_t stream) {
  using namespace detail;
  if (args.n == 0) return cudaSuccess;
  clear_stale_error();
  return dispatch_mma(args.dtype, args.fp32_mode, [&](auto mma) -> cudaError_t {
    using Mma = decltype(mma);
    using T = typename Mma::Elem;
    using Acc = typename Mma::Acc;
    static_assert(Cfg<Mma>::kBM == 128, "workspace sizing assumes 128-row blocks");
    const auto z = contrastive_rows<Mma>(args);
    const size_t vec_bytes = align256(static_cast<size_t>(args.n) * sizeof(Acc));
    unsigned char* base = static_cast<unsigned char*>(workspace);
    Acc* rv = reinterpret_cast<Acc*>(base);
    constexpr bool kHalfW = std::is_same<T, __half>::value;
    unsigned int* gmax = reinterpret_cast<unsigned int*>(base + 4 * vec_bytes);
    BwdVectors<Acc> bv{reinterpret_cast<Acc*>(base + vec_bytes), reinterpret_cast<Acc*>(base + 2 * vec_bytes),
                       reinterpret_cast<Acc*>(base + 3 * vec_bytes), kHalfW ? gmax : nullptr};
    Acc* ws = reinterpret_cast<Acc*>(base + 4 * vec_bytes + 256);

    if constexpr (kHalfW) SSL_CUDA_TRY(cudaMemsetAsync(gmax, 0, sizeof(unsigned int), stream));
    SSL_CUDA_TRY(launch_row_norms(z, args.D, args.soft_nn ? 0 : 1, rv, stream));
    const int64_t vblocks = (args.n + kThreads - 1) / kThreads;
    bwd_vectors_kernel<T><<<static_cast<unsigned>(vblocks), kThreads, 0, stream>>>(
        args.n, static_cast<const T*>(grad_rows), static_cast<const Acc*>(lse_all),
        static_cast<const Acc*>(lse_pos), bv);
    SSL_CUDA_TRY(cudaGetLastError());

    static_assert(BwdCfg<Mma, true>::kBytes <= kSmemSmall, "small backward layout over 99 KiB");
    const auto p = contrastive_params<Mma>(args, rv);
    return with_bwd_layout<Mma>(device, [&](auto small) -> cudaError_t {
      constexpr bool kSmall = decltype(small)::value;
      int64_t slots = 0;
      SSL_CUDA_TRY((bwd_slots<Mma, kSmall>(args.n, device, &slots)));  // also sets the smem limit
      constexpr size_t smem = BwdCfg<Mma, kSmall>::kBytes;
      contrastive_bwd_kernel<Mma, kSmall><<<static_cast<unsigned>(slots), kThreads, smem, stream>>>(
          z, p, bv, ws, grad0, grad1, static_cast<Acc>(1.0 / args.temperature),
          rows_vectorizable(z.p0, z.p1, args.D));
      return cudaGetLastError();
    });
  });
}

}  // namespace sslsteal_cuda
