// Shared device building blocks of the sslsteal_fast CUDA kernels (CUDA toolkit headers only):
// number traits, warp-level tensor-core MMA policies, cp.async staging, and the block-level
// "NT" tile GEMM S = X_I * Y_J^T that every kernel (losses, pairwise distance, top-k) starts from.
//
// Tile geometry (all kernels): 256 threads = 8 warps arranged 4 (rows) x 2 (columns). A warp owns a
// 32 x (8 * kNT) slab of the output as kMT = 2 m16 tiles by kNT n8 tiles, so a block tile is
// kBM = 128 rows by kBN = 16 * kNT columns (128, or 64 for float64). Accumulator element
// acc[mt][nt][c] of lane `lane` sits at (the PTX m16n8 "C" layout, shared by every MMA policy):
//     row = warp_m * 32 + mt * 16 + (lane / 4) + 8 * (c / 2)
//     col = warp_n * 8 * kNT + nt * 8 + 2 * (lane % 4) + (c % 2)
// so each lane holds 4 rows (mt, c/2) and 2 * kNT columns of the tile, and the 4 lanes with the same
// lane / 4 hold the same rows. Epilogues use exactly these formulas.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdlib>

#include "kernels.h"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ < 800)
#error "sslsteal_fast CUDA kernels need sm_80 or newer (bf16/tf32/f64 mma.sync); fix TORCH_CUDA_ARCH_LIST"
#endif

namespace sslsteal_cuda {
namespace detail {

constexpr int kThreads = 256;
constexpr int kWarpsM = 4;
constexpr int kWarpsN = 2;
constexpr double kLog2e = 1.4426950408889634074;
constexpr double kLn2 = 0.69314718055994530942;
constexpr double kNormEps = 1e-12;  // F.normalize's eps: r = 1 / max(|x|, eps)

#define SSL_CUDA_TRY(expr)      \
  do {                          \
    cudaError_t err__ = (expr); \
    if (err__ != cudaSuccess) { \
      return err__;             \
    }                           \
  } while (0)

// ---- number traits ---------------------------------------------------------------------------
template <typename T>
struct Num;
template <>
struct Num<float> {
  using Acc = float;
  __device__ __forceinline__ static float to_acc(float v) { return v; }
  __device__ __forceinline__ static float from_acc(float v) { return v; }
};
template <>
struct Num<double> {
  using Acc = double;
  __device__ __forceinline__ static double to_acc(double v) { return v; }
  __device__ __forceinline__ static double from_acc(double v) { return v; }
};
template <>
struct Num<__nv_bfloat16> {
  using Acc = float;
  __device__ __forceinline__ static float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ __forceinline__ static __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Num<__half> {
  using Acc = float;
  __device__ __forceinline__ static float to_acc(__half v) { return __half2float(v); }
  __device__ __forceinline__ static __half from_acc(float v) { return __float2half_rn(v); }
};

template <typename Acc>
__device__ __forceinline__ Acc neg_inf() {
  return -static_cast<Acc>(INFINITY);
}
template <typename Acc>
__device__ __forceinline__ Acc quiet_nan() {
  return static_cast<Acc>(NAN);
}
template <typename Acc>
__device__ __forceinline__ Acc max_finite();
template <>
__device__ __forceinline__ float max_finite<float>() {
  return FLT_MAX;
}
template <>
__device__ __forceinline__ double max_finite<double>() {
  return DBL_MAX;
}
// max(0, d) that keeps NaN, for squared distances out of the norm expansion (csrc/numerics.h). fmaxf
// drops NaN; PTX max.NaN (sm_80+) keeps it in the one instruction fmaxf compiles to, so the epilogues
// cost no extra register (a compare-and-select made the 16-bit loss kernels spill).
__device__ __forceinline__ float clamp0(float d) {
  float r;
  asm("max.NaN.f32 %0, %1, 0f00000000;" : "=f"(r) : "f"(d));
  return r;
}
__device__ __forceinline__ double clamp0(double d) { return d < 0.0 ? 0.0 : d; }
__device__ __forceinline__ float fast_exp2(float x) { return exp2f(x); }
__device__ __forceinline__ double fast_exp2(double x) { return exp2(x); }
__device__ __forceinline__ float fast_log2(float x) { return log2f(x); }
__device__ __forceinline__ double fast_log2(double x) { return log2(x); }

// Merge two streaming log-sum-exp states (base 2): (m, s) represents m + log2(s). The empty state is
// (-inf, 0). exp2(-inf - finite) = 0, and the both-empty case returns early, so no NaN is formed.
template <typename Acc>
__device__ __forceinline__ void lse_merge(Acc& m, Acc& s, Acc m2, Acc s2) {
  const Acc mn = m > m2 ? m : m2;
  if (mn == neg_inf<Acc>()) return;
  s = s * fast_exp2(m - mn) + s2 * fast_exp2(m2 - mn);
  m = mn;
}

// ---- PTX helpers -----------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte global -> shared copy that bypasses L1; src_bytes = 0 zero-fills the destination.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// ---- MMA policies ----------------------------------------------------------------------------
// Each policy computes one m16n8 tile product c += A(16 x kStep) * B(kStep x 8) for a warp, with
// fragments read from shared memory:
//   load_a (A, s, ld):  s[row * ld + k], the 16 x kStep block at s.
//   load_b (B, s, ld):  "NT" operand, s[n * ld + k] (Y rows, features contiguous).
//   load_bt(B, s, ld):  "NN" operand, s[k * ld + n] (rows of z indexed by k, features by n).
// Shared-memory strides are padded so every fragment load is bank-conflict free (see each policy).

// bf16 / fp16: mma.m16n8k16, fragments through ldmatrix. Row strides are an odd number of 16-byte
// units, so the 8 row addresses of each 8x8 matrix hit 8 different bank quads.
template <typename T>
struct MmaHalf {
  using Elem = T;
  using Acc = float;
  static constexpr int kStep = 16;
  struct A {
    uint32_t r[4];
  };
  struct B {
    uint32_t r[2];
  };
  // lanes 0-15 address rows 0-15 at k 0, lanes 16-31 rows 0-15 at k 8 -> a0..a3 in PTX order.
  __device__ __forceinline__ static void load_a(A& a, const T* s, int ld, int lane) {
    ldmatrix_x4(a.r, s + (lane & 15) * ld + (lane >> 4) * 8);
  }
  // lanes 0-7 address n rows 0-7 at k 0 (b0), lanes 8-15 the same rows at k 8 (b1).
  __device__ __forceinline__ static void load_b(B& b, const T* s, int ld, int lane) {
    ldmatrix_x2(b.r, s + (lane & 7) * ld + ((lane >> 3) & 1) * 8);
  }
  // lanes 0-15 address k rows 0-15; .trans hands lane (g, t) the pair (k = 2t, 2t+1; n = g).
  __device__ __forceinline__ static void load_bt(B& b, const T* s, int ld, int lane) {
    ldmatrix_x2_trans(b.r, s + (lane & 15) * ld);
  }
  __device__ __forceinline__ static void mma(float (&c)[4], const A& a, const B& b);
};
template <>
__device__ __forceinline__ void MmaHalf<__nv_bfloat16>::mma(float (&c)[4], const A& a, const B& b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
template <>
__device__ __forceinline__ void MmaHalf<__half>::mma(float (&c)[4], const A& a, const B& b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}

// float32 on TF32 tensor cores, mma.m16n8k8. Operands stay float32 in shared memory and are
// rounded (cvt.rna) at fragment load. kSplit (3xTF32): x = hi + lo with hi = tf32(x),
// lo = tf32(x - hi); a*b ~ hi_a*hi_b + hi_a*lo_b + lo_a*hi_b (lo*lo dropped, ~2^-22 relative), the
// small products first so they are not swamped in the accumulator.
// Fragment maps (g = lane / 4, t = lane % 4): a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
// b0 (k t, n g), b1 (k t+4, n g). With ld = 4 (mod 32) words the [row][k] reads g*ld + t cover all 32
// banks; with ld = 8 (mod 32) the [k][n] reads t*ld + g do.
template <bool kSplit>
struct MmaTf32 {
  using Elem = float;
  using Acc = float;
  static constexpr int kStep = 8;
  struct A {
    uint32_t hi[4];
    uint32_t lo[kSplit ? 4 : 1];
  };
  struct B {
    uint32_t hi[2];
    uint32_t lo[kSplit ? 2 : 1];
  };
  template <int N, typename F>
  __device__ __forceinline__ static void split(const float (&x)[N], F& f) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      f.hi[i] = to_tf32(x[i]);
      if constexpr (kSplit) f.lo[i] = to_tf32(x[i] - __uint_as_float(f.hi[i]));
    }
  }
  __device__ __forceinline__ static void load_a(A& a, const float* s, int ld, int lane) {
    const int g = lane >> 2, t = lane & 3;
    const float x[4] = {s[g * ld + t], s[(g + 8) * ld + t], s[g * ld + t + 4], s[(g + 8) * ld + t + 4]};
    split(x, a);
  }
  __device__ __forceinline__ static void load_b(B& b, const float* s, int ld, int lane) {
    const int g = lane >> 2, t = lane & 3;
    const float x[2] = {s[g * ld + t], s[g * ld + t + 4]};
    split(x, b);
  }
  __device__ __forceinline__ static void load_bt(B& b, const float* s, int ld, int lane) {
    const int g = lane >> 2, t = lane & 3;
    const float x[2] = {s[t * ld + g], s[(t + 4) * ld + g]};
    split(x, b);
  }
  __device__ __forceinline__ static void mma1(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  __device__ __forceinline__ static void mma(float (&c)[4], const A& a, const B& b) {
    if constexpr (kSplit) {
      mma1(c, a.lo, b.hi);
      mma1(c, a.hi, b.lo);
    }
    mma1(c, a.hi, b.hi);
  }
};

// float64 on DMMA, mma.m8n8k4 (sm_80+): two m8 products emulate the m16n8 layout (top rows g give
// c0, c1; bottom rows g + 8 give c2, c3). a (g, t); b (k t, n g).
struct MmaF64 {
  using Elem = double;
  using Acc = double;
  static constexpr int kStep = 4;
  struct A {
    double top, bot;
  };
  struct B {
    double b;
  };
  __device__ __forceinline__ static void load_a(A& a, const double* s, int ld, int lane) {
    const int g = lane >> 2, t = lane & 3;
    a.top = s[g * ld + t];
    a.bot = s[(g + 8) * ld + t];
  }
  __device__ __forceinline__ static void load_b(B& b, const double* s, int ld, int lane) {
    b.b = s[(lane >> 2) * ld + (lane & 3)];
  }
  __device__ __forceinline__ static void load_bt(B& b, const double* s, int ld, int lane) {
    b.b = s[(lane & 3) * ld + (lane >> 2)];
  }
  __device__ __forceinline__ static void mma(double (&c)[4], const A& a, const B& b) {
    asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};\n"
                 : "+d"(c[0]), "+d"(c[1])
                 : "d"(a.top), "d"(b.b));
    asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};\n"
                 : "+d"(c[2]), "+d"(c[3])
                 : "d"(a.bot), "d"(b.b));
  }
};

// ---- tile configuration ----------------------------------------------------------------------
template <class Mma>
struct Cfg {
  using Elem = typename Mma::Elem;
  using Acc = typename Mma::Acc;
  static constexpr bool kF64 = sizeof(Elem) == 8;
  static constexpr int kMT = 2;                   // m16 tiles per warp
  static constexpr int kNT = kF64 ? 4 : 8;        // n8 tiles per warp (f64: keep 32 double accumulators)
  static constexpr int kBM = kWarpsM * kMT * 16;  // 128 block rows
  static constexpr int kBN = kWarpsN * kNT * 8;   // 128 block columns (64 for f64)
  static constexpr int kBK = kF64 ? 16 : 32;      // features per pipeline stage
  static constexpr int kPad = 16 / sizeof(Elem);  // one 16-byte unit of row padding
  static constexpr int kLdK = kBK + kPad;         // stage row stride ([row][k] layout)
  static constexpr int kStageElems = (kBM + kBN) * kLdK;
  static constexpr int kVec = 16 / sizeof(Elem);  // elements per cp.async
  static_assert(kBK % Mma::kStep == 0, "stage depth must be a multiple of the MMA k");
  static_assert((kLdK * sizeof(Elem)) % 16 == 0, "cp.async needs 16-byte aligned smem rows");
};

// Rows [0, split) come from p0, rows [split, rows) from p1; each row has D contiguous elements.
// `vec`: every row start is 16-byte aligned and D * sizeof(T) % 16 == 0, so whole 16-byte chunks
// are either fully inside a row or fully past its end (the cp.async path); otherwise loads are
// element-wise and synchronous.
template <typename T>
struct RowSrc {
  const T* p0;
  const T* p1;
  int64_t split;
  int64_t rows;
  __device__ __forceinline__ const T* row(int64_t r, int64_t D) const {
    return r < split ? p0 + r * D : p1 + (r - split) * D;
  }
};

template <typename T>
inline bool rows_vectorizable(const T* p0, const T* p1, int64_t D) {
  return (D * static_cast<int64_t>(sizeof(T))) % 16 == 0 && reinterpret_cast<uintptr_t>(p0) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p1) % 16 == 0;
}

template <typename T>
__device__ __forceinline__ T zero_elem() {
  return Num<T>::from_acc(typename Num<T>::Acc(0));
}

// Stage `nrows` rows (src rows r0 + i) x `width` features starting at d0 into s[i * ld + j],
// zero-filling rows >= src.rows and features >= D. All threads of the block take part.
template <typename T, int kWidth>
__device__ __forceinline__ void stage_rows(T* s, int ld, int nrows, const RowSrc<T>& src, int64_t r0, int64_t d0,
                                           int64_t D, bool vec) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kChunks = kWidth / kVec;
  static_assert(kWidth % kVec == 0, "stage width must be whole 16-byte chunks");
  for (int c = threadIdx.x; c < nrows * kChunks; c += kThreads) {
    const int i = c / kChunks;
    const int j = (c % kChunks) * kVec;
    const int64_t r = r0 + i;
    const int64_t d = d0 + j;
    T* dst = s + i * ld + j;
    if (vec) {
      const bool ok = r < src.rows && d < D;
      cp_async16(dst, ok ? src.row(r, D) + d : src.p0, ok);
    } else {
      const T* rp = r < src.rows ? src.row(r, D) : nullptr;
#pragma unroll
      for (int e = 0; e < kVec; ++e) dst[e] = (rp != nullptr && d + e < D) ? rp[d + e] : zero_elem<T>();
    }
  }
}

// acc = X[row0 : row0 + kBM] * Y[col0 : col0 + kBN]^T over all D features, for this warp's slab.
// Two-stage cp.async pipeline over kBK-feature slices: slice k + 1 is in flight while slice k is
// multiplied. `stages` holds 2 * kStageElems elements; X rows occupy stage rows [0, kBM), Y rows
// [kBM, kBM + kBN). Returns after a __syncthreads, so the caller may reuse `stages` immediately.
template <class Mma>
__device__ __forceinline__ void gemm_nt(typename Mma::Acc (&acc)[Cfg<Mma>::kMT][Cfg<Mma>::kNT][4],
                                        const RowSrc<typename Mma::Elem>& X, int64_t row0,
                                        const RowSrc<typename Mma::Elem>& Y, int64_t col0, int64_t D, bool vec,
                                        typename Mma::Elem* stages) {
  using C = Cfg<Mma>;
  using T = typename Mma::Elem;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warp_m = warp / kWarpsN;
  const int warp_n = warp % kWarpsN;
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mt][nt][c] = 0;

  const int64_t kTiles = (D + C::kBK - 1) / C::kBK;
  auto load = [&](int buf, int64_t kt) {
    T* s = stages + buf * C::kStageElems;
    stage_rows<T, C::kBK>(s, C::kLdK, C::kBM, X, row0, kt * C::kBK, D, vec);
    stage_rows<T, C::kBK>(s + C::kBM * C::kLdK, C::kLdK, C::kBN, Y, col0, kt * C::kBK, D, vec);
    cp_async_commit();
  };
  load(0, 0);
  for (int64_t kt = 0; kt < kTiles; ++kt) {
    if (kt + 1 < kTiles) {
      load(static_cast<int>((kt + 1) & 1), kt + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* s = stages + (kt & 1) * C::kStageElems;
    const T* sa = s + (warp_m * C::kMT * 16) * C::kLdK;
    const T* sb = s + (C::kBM + warp_n * C::kNT * 8) * C::kLdK;
#pragma unroll
    for (int kk = 0; kk < C::kBK; kk += Mma::kStep) {
      typename Mma::A a[C::kMT];
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt) Mma::load_a(a[mt], sa + mt * 16 * C::kLdK + kk, C::kLdK, lane);
#pragma unroll
      for (int nt = 0; nt < C::kNT; ++nt) {
        typename Mma::B b;
        Mma::load_b(b, sb + nt * 8 * C::kLdK + kk, C::kLdK, lane);
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt) Mma::mma(acc[mt][nt], a[mt], b);
      }
    }
    __syncthreads();
  }
}

// Per-row norms, one warp per row with a fixed lane-stride + butterfly reduction (deterministic).
//   mode 0: out[r] = |x_r|^2, NaN when that is not finite (a NaN or +-inf entry, or an overflow), so
//           every squared distance of a non-finite row is NaN (csrc/numerics.h);
//   mode 1: out[r] = 1 / max(|x_r|, 1e-12) (a NaN row gives 1e12 and an inf row 0; their dot
//           products are NaN or +-inf, so their cosines are NaN either way).
template <typename T>
__global__ void __launch_bounds__(kThreads) row_norms_kernel(RowSrc<T> src, int64_t D, int mode,
                                                             typename Num<T>::Acc* out) {
  using Acc = typename Num<T>::Acc;
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  if (r >= src.rows) return;
  const T* p = src.row(r, D);
  Acc s = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const Acc v = Num<T>::to_acc(p[d]);
    s += v * v;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) {
    if (mode == 0) {
      out[r] = isfinite(s) ? s : quiet_nan<Acc>();
    } else {
      const Acc nrm = sqrt(s);
      out[r] = Acc(1) / (nrm > Acc(kNormEps) ? nrm : Acc(kNormEps));
    }
  }
}

template <typename T>
inline cudaError_t launch_row_norms(const RowSrc<T>& src, int64_t D, int mode, typename Num<T>::Acc* out,
                                    cudaStream_t stream) {
  if (src.rows == 0) return cudaSuccess;
  const int64_t rows_per_block = kThreads / 32;
  const int64_t blocks = (src.rows + rows_per_block - 1) / rows_per_block;
  row_norms_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(src, D, mode, out);
  return cudaGetLastError();
}

// Opt a kernel into more than 48 KiB of dynamic shared memory (needed once per kernel/device; cheap).
template <typename K>
inline cudaError_t allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// Reads (and so clears) the calling thread's last CUDA error before a launcher enqueues anything:
// each launcher reports cudaGetLastError() after its launches, and without this an error left behind
// by earlier, unrelated work (a failed launch whose status nobody read) would be blamed on it. A
// sticky error (a device fault, which poisons the context) is not cleared and every later call fails
// with it, as it should.
inline void clear_stale_error() { (void)cudaGetLastError(); }

// The device's opt-in shared-memory limit per block (cudaDevAttrMaxSharedMemoryPerBlockOptin): 227 KiB
// on sm_90, 163 KiB on sm_80, 99 KiB (101,376 B) on sm_86 / sm_89 / sm_120. Cached per device (the
// attribute query is cheap but the backward asks for it twice per call).
inline cudaError_t smem_optin(int device, int* bytes) {
  constexpr int kCached = 64;
  static std::atomic<int> cache[kCached];
  if (device >= 0 && device < kCached) {
    const int v = cache[device].load(std::memory_order_relaxed);
    if (v > 0) {
      *bytes = v;
      return cudaSuccess;
    }
  }
  int v = 0;
  SSL_CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (device >= 0 && device < kCached) cache[device].store(v, std::memory_order_relaxed);
  *bytes = v;
  return cudaSuccess;
}

// SSLSTEAL_CUDA_SMALL_TILES=1 makes the kernels with a per-device tile choice take their small-memory
// variant on every device, so that a GPU with plenty of shared memory (the test machines) runs and
// checks the code path of the 99 KiB devices too. Read on every call (a getenv is cheap next to a launch).
inline bool force_small_tiles() {
  const char* v = std::getenv("SSLSTEAL_CUDA_SMALL_TILES");
  return v != nullptr && v[0] == '1' && v[1] == '\0';
}

inline size_t align256(size_t b) { return (b + 255) & ~static_cast<size_t>(255); }

// Dispatch a DType (+ Fp32Mode) to an MMA policy: f(MmaPolicy{}) with the matching element type.
template <typename F>
inline cudaError_t dispatch_mma(DType dtype, Fp32Mode mode, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return mode == Fp32Mode::kTf32 ? f(MmaTf32<false>{}) : f(MmaTf32<true>{});
    case DType::kF64:
      return f(MmaF64{});
    case DType::kBF16:
      return f(MmaHalf<__nv_bfloat16>{});
    case DType::kF16:
      return f(MmaHalf<__half>{});
  }
  return cudaErrorInvalidValue;
}

inline size_t acc_size(DType dtype) { return dtype == DType::kF64 ? sizeof(double) : sizeof(float); }

}  // namespace detail
}  // namespace sslsteal_cuda
