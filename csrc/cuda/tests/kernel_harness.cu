// Torch-free GPU self-test of the sslsteal_fast CUDA kernels against a float64 CPU reference.
// Not part of the extension (setup.py only globs csrc/cuda/*.cu). Built and run by
// scripts/gpu_check.sh; scripts/cuda_check.sh compiles and links it (no GPU needed for that).
//
//   nvcc -std=c++17 -O2 -arch=sm_80 -Icsrc csrc/cuda/tests/kernel_harness.cu csrc/cuda/*.cu -o harness
//   ./harness            # exit status 0 when every case passes
//
// Cases cover ragged sizes (n not a multiple of 128, D not a multiple of 16 bytes -> the scalar
// staging path), every dtype and both float32 modes, duplicate labels, rows without positives, and
// far-apart positives (SoftNN distances ~1e4 T).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cuda/kernels.h"

using namespace sslsteal_cuda;

#define CHECK(x)                                                                                  \
  do {                                                                                            \
    cudaError_t e__ = (x);                                                                        \
    if (e__ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e__)); \
      std::exit(2);                                                                               \
    }                                                                                             \
  } while (0)

template <typename T>
struct H;
template <>
struct H<float> {
  static constexpr DType dt = DType::kF32;
  static float to(double v) { return (float)v; }
  static double from(float v) { return v; }
  using Acc = float;
  static constexpr const char* name = "f32";
};
template <>
struct H<double> {
  static constexpr DType dt = DType::kF64;
  static double to(double v) { return v; }
  static double from(double v) { return v; }
  using Acc = double;
  static constexpr const char* name = "f64";
};
template <>
struct H<__nv_bfloat16> {
  static constexpr DType dt = DType::kBF16;
  static __nv_bfloat16 to(double v) { return __float2bfloat16((float)v); }
  static double from(__nv_bfloat16 v) { return __bfloat162float(v); }
  using Acc = float;
  static constexpr const char* name = "bf16";
};
template <>
struct H<__half> {
  static constexpr DType dt = DType::kF16;
  static __half to(double v) { return __float2half((float)v); }
  static double from(__half v) { return __half2float(v); }
  using Acc = float;
  static constexpr const char* name = "f16";
};

template <typename X>
struct Dev {
  X* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(X))); }
  Dev(const std::vector<X>& h) : Dev(h.size()) {
    CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(X), cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  std::vector<X> get() const {
    std::vector<X> h(n);
    CHECK(cudaMemcpy(h.data(), p, n * sizeof(X), cudaMemcpyDeviceToHost));
    return h;
  }
};

static int failures = 0;
static void report(const char* what, double err, double tol) {
  const bool ok = err <= tol && std::isfinite(err);
  if (!ok) ++failures;
  std::printf("  %-58s err %.3e  tol %.1e  %s\n", what, err, tol, ok ? "ok" : "FAIL");
}

static double lse(const std::vector<double>& v) {
  double m = -INFINITY;
  for (double x : v) m = std::max(m, x);
  if (m == -INFINITY) return -INFINITY;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

// float64 reference of the contrastive driver on the (already rounded) inputs.
struct RefOut {
  std::vector<double> loss, la, lp, grad;
};
static RefOut ref_contrastive(const std::vector<double>& x, int64_t n, int64_t D, bool soft,
                              const std::vector<int64_t>& lab, double T, const std::vector<double>& g) {
  const int64_t B = n / 2;
  std::vector<double> z = x, rn(n, 1.0), sq(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += x[i * D + d] * x[i * D + d];
    sq[i] = s;
    rn[i] = 1.0 / std::max(std::sqrt(s), 1e-12);
    if (!soft)
      for (int64_t d = 0; d < D; ++d) z[i * D + d] = x[i * D + d] * rn[i];
  }
  auto label = [&](int64_t i) { return soft ? lab[i] : (i % B); };
  std::vector<double> L(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += (soft ? x : z)[i * D + d] * (soft ? x : z)[k * D + d];
      L[i * n + k] = soft ? -std::max(0.0, sq[i] + sq[k] - 2 * s) / T : s / T;
    }
  RefOut r;
  r.loss.resize(n);
  r.la.resize(n);
  r.lp.resize(n);
  r.grad.assign(n * D, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> all, pos;
    for (int64_t k = 0; k < n; ++k) {
      if (k == i) continue;
      all.push_back(L[i * n + k]);
      if (label(k) == label(i)) pos.push_back(L[i * n + k]);
    }
    r.la[i] = lse(all);
    r.lp[i] = lse(pos);
    r.loss[i] = std::isfinite(r.lp[i]) ? r.la[i] - r.lp[i] : 0.0;
  }
  std::vector<double> A(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double gi = std::isfinite(r.lp[i]) ? g[i] : 0.0;
    for (int64_t k = 0; k < n; ++k) {
      if (k == i) continue;
      double v = std::exp(L[i * n + k] - r.la[i]);
      if (label(k) == label(i)) v -= std::exp(L[i * n + k] - r.lp[i]);
      A[i * n + k] = gi * v;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> dz(D, 0.0);
    double rs = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double w = A[i * n + k] + A[k * n + i];
      rs += w;
      for (int64_t d = 0; d < D; ++d) dz[d] += w * (soft ? x : z)[k * D + d];
    }
    if (soft) {
      for (int64_t d = 0; d < D; ++d) r.grad[i * D + d] = (-2.0 / T) * (rs * x[i * D + d] - dz[d]);
    } else {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) {
        dz[d] /= T;
        dot += z[i * D + d] * dz[d];
      }
      for (int64_t d = 0; d < D; ++d) r.grad[i * D + d] = (dz[d] - z[i * D + d] * dot) * rn[i];
    }
  }
  return r;
}

// g_mean: every grad_rows entry is 1/n, as reduction="mean" hands back (W ~ 1/n^2, below float16's
// subnormals at n = 2048 unless the kernel scales W). zero_row: row 3 is all zero (InfoNCE's 1/|x| = 1e12;
// its own gradient is huge, the others must stay finite and accurate, so it is left out of the error).
template <typename T>
static void run_contrastive(bool soft, int64_t n, int64_t D, double T_, double spread, Fp32Mode mode, double tol_loss,
                            double tol_grad, uint64_t seed, bool g_mean = false, bool zero_row = false) {
  using Acc = typename H<T>::Acc;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<T> xh(n * D);
  std::vector<double> x(n * D);
  for (int64_t i = 0; i < n * D; ++i) {
    xh[i] = H<T>::to(nd(rng) * spread);
    x[i] = H<T>::from(xh[i]);
  }
  const int64_t zr = zero_row ? 3 : -1;
  if (zero_row)
    for (int64_t d = 0; d < D; ++d) {
      xh[zr * D + d] = H<T>::to(0.0);
      x[zr * D + d] = 0.0;
    }
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i)
    lab[i] = (i % 7 == 3) ? 1000 + i : static_cast<int64_t>(rng() % 5);  // some rows unique
  std::vector<T> gh(n);
  std::vector<double> g(n);
  for (int64_t i = 0; i < n; ++i) {
    gh[i] = H<T>::to(g_mean ? 1.0 / static_cast<double>(n) : 1.0 + 0.5 * nd(rng));
    g[i] = H<T>::from(gh[i]);
  }
  const RefOut ref = ref_contrastive(x, n, D, soft, lab, T_, g);

  const int64_t B = n / 2;
  Dev<T> dx(xh), dg(gh);
  Dev<int64_t> dlab(lab);
  ContrastiveArgs args{};
  args.dtype = H<T>::dt;
  args.fp32_mode = mode;
  args.soft_nn = soft;
  args.rows0 = dx.p;
  args.rows1 = soft ? dx.p : dx.p + B * D;
  args.split = soft ? n : B;
  args.n = n;
  args.D = D;
  args.labels = soft ? dlab.p : nullptr;
  args.temperature = T_;
  Dev<T> loss(n);
  Dev<Acc> la(n), lp(n);
  Dev<T> grad(n * D);
  Dev<unsigned char> wsf(contrastive_fwd_workspace_bytes(args)), wsb(contrastive_bwd_workspace_bytes(args, 0));
  CHECK(contrastive_fwd(args, loss.p, la.p, lp.p, wsf.p, 0));
  CHECK(contrastive_bwd(args, dg.p, la.p, lp.p, grad.p, soft ? grad.p + n * D : grad.p + B * D, wsb.p, 0, 0));
  CHECK(cudaDeviceSynchronize());
  // run twice more: bitwise determinism
  Dev<T> grad2(n * D);
  Dev<T> loss2(n);
  CHECK(contrastive_fwd(args, loss2.p, la.p, lp.p, wsf.p, 0));
  CHECK(contrastive_bwd(args, dg.p, la.p, lp.p, grad2.p, soft ? grad2.p + n * D : grad2.p + B * D, wsb.p, 0, 0));
  CHECK(cudaDeviceSynchronize());

  const auto lh = loss.get(), lh2 = loss2.get();
  const auto gh1 = grad.get(), gh2 = grad2.get();
  const auto lah = la.get(), lph = lp.get();
  double e_loss = 0, e_la = 0, e_grad = 0, diff = 0;
  bool inf_ok = true;
  for (int64_t i = 0; i < n; ++i) {
    e_loss = std::max(e_loss, std::fabs(H<T>::from(lh[i]) - ref.loss[i]));
    if (std::isfinite(ref.lp[i])) e_la = std::max(e_la, std::fabs((double)lph[i] - ref.lp[i]));
    else inf_ok = inf_ok && std::isinf((double)lph[i]) && lph[i] < 0;
    e_la = std::max(e_la, std::fabs((double)lah[i] - ref.la[i]));
    diff = std::max(diff, std::fabs(H<T>::from(lh[i]) - H<T>::from(lh2[i])));
  }
  double gscale = 1e-30;
  for (int64_t i = 0; i < n * D; ++i) {
    if (i / D == zr) continue;
    const double e = std::fabs(H<T>::from(gh1[i]) - ref.grad[i]);
    e_grad = e != e ? e : std::max(e_grad, e);  // NaN sticks
    diff = std::max(diff, std::fabs(H<T>::from(gh1[i]) - H<T>::from(gh2[i])));
    gscale = std::max(gscale, std::fabs(ref.grad[i]));
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %s%s n=%lld D=%lld T=%g%s%s%s loss", soft ? "soft_nn " : "info_nce", H<T>::name,
                (std::is_same<T, float>::value ? (mode == Fp32Mode::kTf32 ? "/tf32" : "/3xtf32") : ""), (long long)n,
                (long long)D, T_, g_mean ? " g=1/n" : "", zero_row ? " zero-row" : "",
                std::getenv("SSLSTEAL_CUDA_SMALL_TILES") ? " small-tiles" : "");
  report(buf, e_loss, tol_loss);
  report("    lse_all / lse_pos (abs)", e_la, tol_loss);
  report("    lse_pos = -inf exactly where no positive", inf_ok ? 0.0 : 1.0, 0.0);
  report("    grad (max abs err / max |grad|)", e_grad / gscale, tol_grad);
  report("    run-to-run bitwise difference", diff, 0.0);
}

template <typename T>
static void run_pairwise(int64_t N, int64_t M, int64_t D, Fp32Mode mode, double tol, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<T> xh(N * D), yh(M * D);
  std::vector<double> x(N * D), y(M * D);
  for (int64_t i = 0; i < N * D; ++i) {
    xh[i] = H<T>::to(nd(rng));
    x[i] = H<T>::from(xh[i]);
  }
  for (int64_t i = 0; i < M * D; ++i) {
    yh[i] = H<T>::to(nd(rng));
    y[i] = H<T>::from(yh[i]);
  }
  // Row 0 of x is zero: its cosine distance is 1 to every row of y.
  for (int64_t d = 0; d < D; ++d) {
    xh[d] = H<T>::to(0.0);
    x[d] = 0.0;
  }
  Dev<T> dx(xh), dy(yh), out(N * M);
  Dev<unsigned char> ws(pairwise_distance_workspace_bytes(H<T>::dt, N, M));
  for (Metric m : {Metric::kSqEuclidean, Metric::kEuclidean, Metric::kCosine}) {
    CHECK(pairwise_distance(H<T>::dt, mode, m, dx.p, dy.p, N, M, D, out.p, ws.p, 0));
    CHECK(cudaDeviceSynchronize());
    const auto oh = out.get();
    double err = 0, scale = 1e-30;
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < M; ++j) {
        double s = 0, sx = 0, sy = 0;
        for (int64_t d = 0; d < D; ++d) {
          s += x[i * D + d] * y[j * D + d];
          sx += x[i * D + d] * x[i * D + d];
          sy += y[j * D + d] * y[j * D + d];
        }
        double r;
        if (m == Metric::kCosine) r = 1.0 - s / (std::max(std::sqrt(sx), 1e-12) * std::max(std::sqrt(sy), 1e-12));
        else {
          r = std::max(0.0, sx + sy - 2 * s);
          if (m == Metric::kEuclidean) r = std::sqrt(r);
        }
        err = std::max(err, std::fabs(H<T>::from(oh[i * M + j]) - r));
        scale = std::max(scale, std::fabs(r));
      }
    char buf[160];
    std::snprintf(buf, sizeof buf, "pairwise %s metric=%d N=%lld M=%lld D=%lld (rel to max)", H<T>::name, (int)m,
                  (long long)N, (long long)M, (long long)D);
    report(buf, err / scale, tol);
  }
}

template <typename T>
static void run_topk(int64_t N, int64_t M, int64_t D, int64_t k, Metric m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<T> qh(N * D), bh(M * D);
  std::vector<double> q(N * D), b(M * D);
  for (int64_t i = 0; i < N * D; ++i) {
    qh[i] = H<T>::to(nd(rng));
    q[i] = H<T>::from(qh[i]);
  }
  for (int64_t i = 0; i < M * D; ++i) {
    bh[i] = H<T>::to(nd(rng));
    b[i] = H<T>::from(bh[i]);
  }
  // exact duplicates of bank row 5 at rows 6 and M-1: ties must resolve to the smaller index
  for (int64_t d = 0; d < D; ++d) {
    bh[6 * D + d] = bh[5 * D + d];
    bh[(M - 1) * D + d] = bh[5 * D + d];
    b[6 * D + d] = b[(M - 1) * D + d] = b[5 * D + d];
  }
  Dev<T> dq(qh), db(bh), vals(N * k);
  Dev<int64_t> idx(N * k);
  if (!topk_supported(H<T>::dt, k, 0)) {
    std::printf("  topk k=%lld unsupported on this device (ATen fallback)\n", (long long)k);
    return;
  }
  Dev<unsigned char> ws(topk_workspace_bytes(H<T>::dt, N, M, k, 0));
  CHECK(topk_similarity(H<T>::dt, Fp32Mode::kTf32x3, m, dq.p, db.p, N, M, D, k, vals.p, idx.p, ws.p, 0, 0));
  CHECK(cudaDeviceSynchronize());
  const auto vh = vals.get();
  const auto ih = idx.get();
  double verr = 0;
  int64_t order_bad = 0, kth_bad = 0;
  const bool cos = m == Metric::kCosine;
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> sc(M);
    for (int64_t j = 0; j < M; ++j) {
      double s = 0, sq = 0, sb = 0;
      for (int64_t d = 0; d < D; ++d) {
        s += q[i * D + d] * b[j * D + d];
        sq += q[i * D + d] * q[i * D + d];
        sb += b[j * D + d] * b[j * D + d];
      }
      sc[j] =
          cos ? s / (std::max(std::sqrt(sq), 1e-12) * std::max(std::sqrt(sb), 1e-12)) : std::max(0.0, sq + sb - 2 * s);
    }
    std::vector<double> sorted = sc;
    if (cos) std::sort(sorted.begin(), sorted.end(), std::greater<double>());
    else std::sort(sorted.begin(), sorted.end());
    for (int64_t j = 0; j < k; ++j) {
      const int64_t id = ih[i * k + j];
      if (id < 0 || id >= M) {
        ++order_bad;
        continue;
      }
      verr = std::max(verr, std::fabs(H<T>::from(vh[i * k + j]) - sc[id]));          // value matches its index
      kth_bad += std::fabs(sc[id] - sorted[j]) > 1e-2 * (1 + std::fabs(sorted[j]));  // it is (near) the j-th best
      if (j > 0 && (cos ? H<T>::from(vh[i * k + j]) > H<T>::from(vh[i * k + j - 1])
                        : H<T>::from(vh[i * k + j]) < H<T>::from(vh[i * k + j - 1])))
        ++order_bad;
    }
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "topk %s %s N=%lld M=%lld D=%lld k=%lld value error", H<T>::name,
                cos ? "cosine" : "sqeucl", (long long)N, (long long)M, (long long)D, (long long)k);
  report(buf, verr / (cos ? 1.0 : 2.0 * D), sizeof(T) == 2 ? 1e-2 : 1e-5);
  report("    order / index validity violations", (double)order_bad, 0.0);
  report("    entries not (near) the j-th best", (double)kth_bad, 0.0);
}

// Non-finite rows and fewer finite candidates than k (the CPU kernel's contract): every one of the k
// results is a real bank row, distinct within a query (never the empty-slot index 2^31 - 1), NaN scores
// first by cosine and last by distance.
template <typename T>
static void run_topk_nonfinite(Metric m, uint64_t seed) {
  const int64_t N = 3, M = 300, D = 16, k = 300;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<T> qh(N * D), bh(M * D);
  for (auto& v : qh) v = H<T>::to(nd(rng));
  for (auto& v : bh) v = H<T>::to(nd(rng));
  for (int64_t d = 0; d < D; ++d) qh[1 * D + d] = H<T>::to(NAN);  // a NaN query: k NaN values
  std::vector<bool> bad(M, false);
  for (int64_t j : {0, 7, 150, 299}) {
    bad[j] = true;
    bh[j * D + (j % D)] = H<T>::to(j % 2 ? INFINITY : NAN);
  }
  if (!topk_supported(H<T>::dt, k, 0)) {
    std::printf("  topk non-finite k=%lld unsupported on this device (ATen fallback)\n", (long long)k);
    return;
  }
  Dev<T> dq(qh), db(bh), vals(N * k);
  Dev<int64_t> idx(N * k);
  Dev<unsigned char> ws(topk_workspace_bytes(H<T>::dt, N, M, k, 0));
  CHECK(topk_similarity(H<T>::dt, Fp32Mode::kTf32x3, m, dq.p, db.p, N, M, D, k, vals.p, idx.p, ws.p, 0, 0));
  CHECK(cudaDeviceSynchronize());
  const auto vh = vals.get();
  const auto ih = idx.get();
  const bool cos = m == Metric::kCosine;
  int64_t bad_index = 0, bad_nan = 0;
  for (int64_t i = 0; i < N; ++i) {
    std::vector<bool> seen(M, false);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t id = ih[i * k + j];
      if (id < 0 || id >= M || seen[id]) {
        ++bad_index;
        continue;
      }
      seen[id] = true;
      const bool is_nan = std::isnan(H<T>::from(vh[i * k + j]));
      const bool want_nan = i == 1 || bad[id];
      bad_nan += is_nan != want_nan;
      // NaN ranks first (cosine) / last (distance): 4 NaN entries at the head or the tail.
      if (i != 1) bad_nan += want_nan != (cos ? j < 4 : j >= k - 4);
      if (i == 1) bad_index += id != j;  // all NaN: index order
    }
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "topk %s %s non-finite rows, k = M: invalid/duplicate indices", H<T>::name,
                cos ? "cosine" : "sqeucl");
  report(buf, (double)bad_index, 0.0);
  report("    NaN values where (and in the order) torch.topk puts them", (double)bad_nan, 0.0);
}

__global__ void harness_noop() {}

// A launcher's status is its own: an error left behind by an earlier launch whose status nobody read
// (here an invalid launch configuration) is not blamed on the next op.
static void run_stale_error_attribution() {
  const int64_t N = 4, M = 5, D = 8;
  std::vector<float> xh(N * D, 1.0f), yh(M * D, 2.0f);
  Dev<float> dx(xh), dy(yh), out(N * M);
  Dev<unsigned char> ws(pairwise_distance_workspace_bytes(DType::kF32, N, M));
  harness_noop<<<1, 4096>>>();  // more threads than a block may have: cudaErrorInvalidConfiguration, unread
  const cudaError_t e =
      pairwise_distance(DType::kF32, Fp32Mode::kTf32x3, Metric::kSqEuclidean, dx.p, dy.p, N, M, D, out.p, ws.p, 0);
  CHECK(cudaDeviceSynchronize());
  report("launch status not blamed for an earlier, unrelated error", e == cudaSuccess ? 0.0 : 1.0, 0.0);
}

int main() {
  int dev_count = 0;
  if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
    std::printf("kernel_harness: no CUDA device; nothing to run\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("kernel_harness on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const Fp32Mode x3 = Fp32Mode::kTf32x3, x1 = Fp32Mode::kTf32;
  for (bool soft : {false, true}) {
    const double T = soft ? 1.0 : 0.1;
    run_contrastive<double>(soft, 300, 70, T, 1.0, x3, 1e-9, 1e-9, 1);
    run_contrastive<float>(soft, 300, 70, T, 1.0, x3, 1e-4, 1e-4, 2);
    run_contrastive<float>(soft, 258, 64, T, 1.0, x1, 2e-2, 2e-2, 3);
    run_contrastive<__nv_bfloat16>(soft, 300, 64, T, 1.0, x3, 5e-2, 5e-2, 4);
    run_contrastive<__half>(soft, 130, 72, T, 1.0, x3, 5e-2, 5e-2, 5);
  }
  run_contrastive<float>(false, 256, 128, 0.01, 1.0, x3, 5e-3, 5e-3, 6);  // InfoNCE at T = 0.01
  run_contrastive<double>(true, 200, 16, 1.0, 25.0, x3, 1e-7, 1e-7, 7);   // SoftNN, distances up to ~1e4 T
  run_contrastive<float>(true, 200, 16, 1.0, 25.0, x3, 5e-2, 5e-2, 8);
  run_pairwise<float>(150, 333, 70, x3, 1e-5, 9);
  run_pairwise<double>(150, 200, 33, x3, 1e-12, 10);
  run_pairwise<__nv_bfloat16>(140, 260, 64, x3, 2e-2, 11);
  run_topk<float>(70, 3000, 40, 5, Metric::kCosine, 12);
  run_topk<__nv_bfloat16>(130, 5000, 64, 10, Metric::kSqEuclidean, 13);
  run_topk<double>(20, 1000, 24, 3, Metric::kCosine, 14);
  for (Metric m : {Metric::kCosine, Metric::kSqEuclidean}) {
    run_topk_nonfinite<float>(m, 15);
    run_topk_nonfinite<__nv_bfloat16>(m, 16);
  }
  // float16 with reduction="mean" gradients (W below float16's subnormals unless scaled), and a zero row
  // (InfoNCE's 1/|x| = 1e12 must not turn W into inf and every other gradient into NaN).
  run_contrastive<__half>(false, 2048, 64, 0.1, 1.0, x3, 5e-2, 2e-2, 17, /*g_mean=*/true);
  run_contrastive<__half>(true, 2048, 64, 10.0, 1.0, x3, 5e-2, 2e-2, 18, /*g_mean=*/true);
  run_contrastive<__half>(false, 300, 64, 0.1, 1.0, x3, 5e-2, 5e-2, 19, false, /*zero_row=*/true);
  run_contrastive<__nv_bfloat16>(false, 300, 64, 0.1, 1.0, x3, 5e-2, 5e-2, 20, false, /*zero_row=*/true);
  run_contrastive<float>(false, 300, 64, 0.1, 1.0, x3, 1e-4, 1e-4, 21, false, /*zero_row=*/true);
  // The small shared-memory backward of sm_86 / sm_89 / sm_120, forced on this device.
  setenv("SSLSTEAL_CUDA_SMALL_TILES", "1", 1);
  for (bool soft : {false, true}) {
    const double T = soft ? 1.0 : 0.1;
    run_contrastive<double>(soft, 300, 70, T, 1.0, x3, 1e-9, 1e-9, 22);
    run_contrastive<float>(soft, 300, 70, T, 1.0, x3, 1e-4, 1e-4, 23);
    run_contrastive<float>(soft, 258, 64, T, 1.0, x1, 2e-2, 2e-2, 24);
    run_contrastive<__nv_bfloat16>(soft, 300, 64, T, 1.0, x3, 5e-2, 5e-2, 25);
    run_contrastive<__half>(soft, 130, 72, T, 1.0, x3, 5e-2, 5e-2, 26);
  }
  run_contrastive<__half>(false, 2048, 64, 0.1, 1.0, x3, 5e-2, 2e-2, 27, /*g_mean=*/true);
  unsetenv("SSLSTEAL_CUDA_SMALL_TILES");
  run_stale_error_attribution();
  std::printf("kernel_harness: %s (%d failing checks)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
