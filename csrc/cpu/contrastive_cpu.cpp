// Fused, tiled InfoNCE and Soft Nearest Neighbor losses on the CPU.
//
// Both losses are "contrastive log-ratios" over the rows z_0..z_{n-1} of one matrix:
//   lse_all_i = LSE_{k != i} L_ik,   lse_pos_i = LSE_{k != i, y_k = y_i} L_ik,   loss_i = lse_all_i - lse_pos_i
// with logits L_ik = <z_i, z_k> / T on L2-normalised rows (InfoNCE, y = i mod B) or
// L_ik = -max(0, |z_i|^2 + |z_k|^2 - 2 <z_i, z_k>) / T on raw rows (SoftNN, y given), taken about a
// common shift of the rows (numerics.h) so that they keep their precision far from the origin.
//
// NaN propagates as in PyTorch: a non-finite row has NaN logits (numerics.h), the streaming
// log-sum-exps and vexp keep NaN, so every loss row whose sums include one is NaN, and the backward
// turns NaN statistics into NaN gradients. Rows without a positive stay 0 and contribute nothing.
//
// L is symmetric, so only tiles (I, J) with J >= I are computed: each tile's product comes from
// ATen's BLAS-backed mm, and a fused epilogue turns it into logits and folds it into the running
// statistics of its rows (row pass) and, for off-diagonal tiles, of its columns (column pass).
// Statistics are streaming log-sum-exps (running max m, sum s of exp(L - m), in double), so no
// n x n buffer exists: memory is O(n * D + kTile^2). The all-row and positive-row statistics keep
// separate maxima, which keeps the loss finite when positives are far beyond the negatives.
//
// The backward recomputes each tile and forms W = A + A^T, where
//   A_ik = g_i (exp(L_ik - lse_all_i) - [y_k = y_i] exp(L_ik - lse_pos_i)),
// then accumulates W Z (and W's row sums for SoftNN) with two mm's per tile. Tiles are visited in a
// fixed order and every parallel loop owns disjoint outputs, so results are identical run to run.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "../checks.h"
#include "../numerics.h"
#include "vexp.h"

namespace sslsteal {
namespace {

constexpr int64_t kTile = 512;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kPosInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Streaming log-sum-exp: the value is m + log(s). A NaN term makes s (and so the value) NaN for good:
// every update multiplies or adds s, and value() reports it.
struct Lse {
  double m = kNegInf;
  double s = 0.0;
  // Merge a partial (max mt, sum st of exp(x - mt)).
  void merge(double mt, double st) {
    if (st == 0.0) return;
    if (mt > m) {
      s = s * std::exp(m - mt) + st;
      m = mt;
    } else {
      s += st * std::exp(mt - m);
    }
  }
  // Push one value (used for the sparse positive entries).
  void push(double v) {
    if (v > m) {
      s = s * std::exp(m - v) + 1.0;
      m = v;
    } else {
      s += std::exp(v - m);
    }
  }
  double value() const { return s > 0.0 ? m + std::log(s) : (s == 0.0 ? kNegInf : kNaN); }
};

template <typename T>
struct Problem {
  at::Tensor z;       // (n, D) contiguous, compute dtype T; L2-normalised when cosine
  at::Tensor sq;      // (n,) squared row norms (SoftNN only)
  at::Tensor labels;  // (n,) int64 contiguous
  int64_t n = 0;
  bool cosine = false;
  T inv_t = 1;
};

// Rows grouped by label (CSR): members[begin[i] .. end[i]) are the rows sharing row i's label, in
// increasing index order (row i included). Positives are visited through these lists, so a tile
// pass costs O(tile + positives in the tile) instead of a label comparison per entry.
struct Groups {
  std::vector<int64_t> members, begin, end;

  explicit Groups(const at::Tensor& labels) {
    const int64_t n = labels.size(0);
    // A stable sort keeps equal labels in index order.
    at::Tensor order = std::get<1>(labels.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false)).contiguous();
    const int64_t* o = order.data_ptr<int64_t>();
    const int64_t* y = labels.data_ptr<int64_t>();
    members.assign(o, o + n);
    begin.resize(n);
    end.resize(n);
    for (int64_t a = 0; a < n;) {
      int64_t b = a + 1;
      while (b < n && y[o[b]] == y[o[a]]) ++b;
      for (int64_t t = a; t < b; ++t) {
        begin[o[t]] = a;
        end[o[t]] = b;
      }
      a = b;
    }
  }

  // Calls f(k) for every k != i with i's label and lo <= k < hi.
  template <typename F>
  void for_each(int64_t i, int64_t lo, int64_t hi, F&& f) const {
    const int64_t* first = members.data() + begin[i];
    const int64_t* last = members.data() + end[i];
    for (const int64_t* it = std::lower_bound(first, last, lo); it != last && *it < hi; ++it) {
      if (*it != i) f(*it);
    }
  }
};

// Computes the logits of tile (i0.., j0..) into buf (ti x tj, row-major). Diagonal entries of a
// diagonal tile are set to -inf so every later pass excludes k == i without a branch.
template <typename T>
at::Tensor logits_tile(const Problem<T>& p, at::Tensor& buf, int64_t i0, int64_t ti, int64_t j0, int64_t tj) {
  at::Tensor S = buf.narrow(0, 0, ti * tj).view({ti, tj});
  at::mm_out(S, p.z.narrow(0, i0, ti), p.z.narrow(0, j0, tj).t());
  T* s = S.data_ptr<T>();
  const T* sq = p.cosine ? nullptr : p.sq.template data_ptr<T>();
  const T inv_t = p.inv_t;
  const bool diag = (i0 == j0);
  at::parallel_for(0, ti, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* row = s + r * tj;
      if (p.cosine) {
#pragma omp simd
        for (int64_t c = 0; c < tj; ++c) row[c] *= inv_t;
      } else {
        const T si = sq[i0 + r];
        const T* sj = sq + j0;
#pragma omp simd
        for (int64_t c = 0; c < tj; ++c) {
          // Squared distance by the norm expansion; clamped because rounding can make it < 0.
          const T d = clamp0(si + sj[c] - T(2) * row[c]);
          row[c] = -d * inv_t;
        }
      }
      if (diag) row[r] = -std::numeric_limits<T>::infinity();
    }
  });
  return S;
}

// A shift for exp() that is valid for the whole tile, when the tile's logits provably span less
// than kSpan: then exp(L - shift) neither overflows nor underflows for any entry, the per-row max
// passes can be skipped (forward), and exp(L - lse_i) = exp(L - shift) * exp(shift - lse_i) needs
// one exp per entry instead of one per side (backward). Bounds: cosine logits lie in [-1/T, 1/T];
// SoftNN logits in [-(|z|max_I + |z|max_J)^2 / T, 0].
constexpr double kSpan = 80.0;

template <typename T>
struct TileShift {
  bool fixed = false;
  T value = 0;
};

template <typename T>
TileShift<T> tile_shift(const Problem<T>& p, const std::vector<double>& block_norm, int64_t i0, int64_t j0) {
  double lo = 0, hi = 0;
  if (p.cosine) {
    hi = double(p.inv_t);
    lo = -hi;
  } else {
    const double reach = block_norm[i0 / kTile] + block_norm[j0 / kTile];
    lo = -reach * reach * double(p.inv_t);
  }
  return {hi - lo < kSpan, T(hi)};
}

// Largest row norm of each kTile block of rows (SoftNN only).
template <typename T>
std::vector<double> block_norms(const Problem<T>& p) {
  std::vector<double> out((p.n + kTile - 1) / kTile, 0.0);
  if (p.cosine) return out;
  const T* sq = p.sq.template data_ptr<T>();
  for (int64_t i = 0; i < p.n; ++i) out[i / kTile] = std::max(out[i / kTile], std::sqrt(double(sq[i])));
  return out;
}

// Whether any of n values (stride apart) is NaN. Only asked when a row or column of a tile has no
// finite logit, where the max pass cannot tell NaN from -inf.
template <typename T>
bool column_has_nan(const T* p, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i)
    if (p[i * stride] != p[i * stride]) return true;
  return false;
}

template <typename T>
bool has_nan(const T* p, int64_t n) {
  return column_has_nan(p, n, 1);
}

// Folds tile logits into the statistics of its rows (and columns when the tile is off-diagonal).
template <typename T>
void fold_tile(const T* L, int64_t i0, int64_t ti, int64_t j0, int64_t tj, const Groups& groups, TileShift<T> shift,
               Lse* all, Lse* pos) {
  at::parallel_for(0, ti, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = L + r * tj;
      T mx = shift.value;
      if (!shift.fixed) {
        mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
        for (int64_t c = 0; c < tj; ++c) mx = std::max(mx, row[c]);
      }
      if (mx != -std::numeric_limits<T>::infinity()) {
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < tj; ++c) sum += vexp(row[c] - mx);  // NaN stays NaN (vexp keeps it)
        all[i0 + r].merge(double(mx), double(sum));
      } else if (has_nan(row, tj)) {  // every entry is -inf or NaN: the max skipped the NaN
        all[i0 + r].merge(kNaN, kNaN);
      }
      groups.for_each(i0 + r, j0, j0 + tj, [&](int64_t k) { pos[i0 + r].push(double(row[k - j0])); });
    }
  });
  if (i0 == j0) return;
  // Column pass: each task owns a contiguous run of columns and sweeps the rows in order.
  constexpr int64_t kCols = 64;
  at::parallel_for(0, (tj + kCols - 1) / kCols, 1, [&](int64_t b0, int64_t b1) {
    T mx[kCols];
    T sum[kCols];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * kCols;
      const int64_t nc = std::min(kCols, tj - c0);
      for (int64_t c = 0; c < nc; ++c) {
        mx[c] = shift.fixed ? shift.value : -std::numeric_limits<T>::infinity();
        sum[c] = 0;
      }
      for (int64_t r = 0; r < ti && !shift.fixed; ++r) {
        const T* row = L + r * tj + c0;
#pragma omp simd
        for (int64_t c = 0; c < nc; ++c) mx[c] = std::max(mx[c], row[c]);
      }
      for (int64_t r = 0; r < ti; ++r) {
        const T* row = L + r * tj + c0;
#pragma omp simd
        for (int64_t c = 0; c < nc; ++c) sum[c] += vexp(row[c] - mx[c]);
      }
      for (int64_t c = 0; c < nc; ++c) {
        if (mx[c] != -std::numeric_limits<T>::infinity()) {
          all[j0 + c0 + c].merge(double(mx[c]), double(sum[c]));
        } else if (column_has_nan(L + c0 + c, ti, tj)) {
          all[j0 + c0 + c].merge(kNaN, kNaN);
        }
      }
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t k = j0 + c0 + c;
        groups.for_each(k, i0, i0 + ti, [&](int64_t i) { pos[k].push(double(L[(i - i0) * tj + c0 + c])); });
      }
    }
  });
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const Problem<T>& p, at::ScalarType out_dtype) {
  const int64_t n = p.n;
  std::vector<Lse> all(n), pos(n);
  const Groups groups(p.labels);
  const std::vector<double> bnorm = block_norms(p);
  at::Tensor buf = at::empty({std::min(n, kTile) * std::min(n, kTile)}, p.z.options());
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t ti = std::min(kTile, n - i0);
    for (int64_t j0 = i0; j0 < n; j0 += kTile) {
      const int64_t tj = std::min(kTile, n - j0);
      at::Tensor L = logits_tile(p, buf, i0, ti, j0, tj);
      fold_tile<T>(L.data_ptr<T>(), i0, ti, j0, tj, groups, tile_shift(p, bnorm, i0, j0), all.data(), pos.data());
    }
  }
  const at::ScalarType sd = stat_dtype(out_dtype);
  at::Tensor lse_all = at::empty({n}, p.z.options().dtype(at::kDouble));
  at::Tensor lse_pos = at::empty({n}, p.z.options().dtype(at::kDouble));
  at::Tensor rows = at::empty({n}, p.z.options().dtype(at::kDouble));
  double* la = lse_all.data_ptr<double>();
  double* lp = lse_pos.data_ptr<double>();
  double* lr = rows.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    la[i] = all[i].value();
    lp[i] = pos[i].value();
    lr[i] = (lp[i] == kNegInf) ? 0.0 : la[i] - lp[i];
  }
  return {rows.to(out_dtype), lse_all.to(sd), lse_pos.to(sd)};
}

// Returns dL/dz for the (possibly normalised) rows z, given the loss-row gradients g.
template <typename T>
at::Tensor backward_impl(const Problem<T>& p, const at::Tensor& grad_rows, const at::Tensor& lse_all,
                         const at::Tensor& lse_pos) {
  const int64_t n = p.n;
  // Per-row coefficients. A row without positives contributes nothing: g = 0 and +inf statistics make
  // every exp() it appears in exactly 0 (never 0 * inf = nan). NaN statistics (a non-finite row in
  // the sums) are kept, so the exp()s they enter, and with them the gradients, are NaN; a row without
  // positives but with a NaN lse_all gets g = NaN, as autograd's 0 * NaN does (the CUDA rule too).
  at::Tensor g = grad_rows.to(p.z.scalar_type()).contiguous();
  at::Tensor la = lse_all.to(p.z.scalar_type()).contiguous().clone();
  at::Tensor lp = lse_pos.to(p.z.scalar_type()).contiguous().clone();
  T* gp = g.data_ptr<T>();
  T* lap = la.data_ptr<T>();
  T* lpp = lp.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) {
    if (lpp[i] == -std::numeric_limits<T>::infinity()) {
      const bool nan_stats = lap[i] != lap[i];
      gp[i] = nan_stats ? lap[i] : T(0);
      if (!nan_stats) lap[i] = std::numeric_limits<T>::infinity();
      lpp[i] = std::numeric_limits<T>::infinity();
    }
  }
  const Groups groups(p.labels);
  const std::vector<double> bnorm = block_norms(p);
  std::vector<T> coef(n);  // g_i exp(shift - lse_all_i), per tile
  at::Tensor dz = at::zeros_like(p.z);
  at::Tensor wsum = p.cosine ? at::Tensor() : at::zeros({n}, p.z.options());
  at::Tensor buf = at::empty({std::min(n, kTile) * std::min(n, kTile)}, p.z.options());
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t ti = std::min(kTile, n - i0);
    for (int64_t j0 = i0; j0 < n; j0 += kTile) {
      const int64_t tj = std::min(kTile, n - j0);
      at::Tensor W = logits_tile(p, buf, i0, ti, j0, tj);
      T* w = W.data_ptr<T>();
      const TileShift<T> shift = tile_shift(p, bnorm, i0, j0);
      if (shift.fixed) {
        for (int64_t i = i0; i < i0 + ti; ++i) coef[i] = gp[i] * T(std::exp(double(shift.value) - double(lap[i])));
        for (int64_t j = j0; j < j0 + tj; ++j) coef[j] = gp[j] * T(std::exp(double(shift.value) - double(lap[j])));
      }
      at::parallel_for(0, ti, 8, [&](int64_t r0, int64_t r1) {
        std::vector<std::pair<int64_t, T>> pos_buf;
        for (int64_t r = r0; r < r1; ++r) {
          T* row = w + r * tj;
          const int64_t i = i0 + r;
          const T gi = gp[i], lai = lap[i], lpi = lpp[i];
          const T* gj = gp + j0;
          const T* laj = lap + j0;
          const T* lpj = lpp + j0;
          // Remember the positive logits before the dense pass overwrites them.
          pos_buf.clear();
          groups.for_each(i, j0, j0 + tj, [&](int64_t k) { pos_buf.emplace_back(k - j0, row[k - j0]); });
          if (shift.fixed) {
            // exp(l - lse_i) = exp(l - shift) * exp(shift - lse_i): one exp per entry.
            const T ci = coef[i];
            const T* cj = coef.data() + j0;
            const T sv = shift.value;
#pragma omp simd
            for (int64_t c = 0; c < tj; ++c) row[c] = vexp(row[c] - sv) * (ci + cj[c]);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < tj; ++c) {
              const T l = row[c];
              row[c] = gi * vexp(l - lai) + gj[c] * vexp(l - laj[c]);
            }
          }
          for (const auto& [c, l] : pos_buf) row[c] -= gi * std::exp(l - lpi) + gj[c] * std::exp(l - lpj[c]);
        }
      });
      at::Tensor zi = p.z.narrow(0, i0, ti);
      at::Tensor zj = p.z.narrow(0, j0, tj);
      dz.narrow(0, i0, ti).addmm_(W, zj);
      if (j0 != i0) dz.narrow(0, j0, tj).addmm_(W.t(), zi);
      if (!p.cosine) {
        wsum.narrow(0, i0, ti).add_(W.sum(1));
        if (j0 != i0) wsum.narrow(0, j0, tj).add_(W.sum(0));
      }
    }
  }
  if (p.cosine) return dz.mul_(p.inv_t);
  // dz_i = (-2 / T) (rowsum(W)_i z_i - (W z)_i)
  return dz.sub_(p.z * wsum.unsqueeze(1)).mul_(T(2) * p.inv_t);
}

// ---- InfoNCE ----------------------------------------------------------------------------------

struct Normalised {
  at::Tensor z;      // (n, D) normalised rows, compute dtype
  at::Tensor norms;  // (n,) row norms before clamping
};

Normalised normalise_rows(const at::Tensor& a, const at::Tensor& b, at::ScalarType compute) {
  at::Tensor x = at::cat({a, b}, 0).to(compute).contiguous();
  at::Tensor norms = x.norm(2, {1});
  // Same convention as F.normalize(eps=1e-12).
  return {x / norms.clamp_min(1e-12).unsqueeze(1), norms};
}

at::Tensor pair_labels(int64_t bsz, const at::Tensor& like) {
  return at::arange(bsz, like.options().dtype(at::kLong)).repeat({2});
}

at::ScalarType compute_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_fwd_cpu(const at::Tensor& a, const at::Tensor& b,
                                                                double temperature) {
  check_info_nce_inputs("info_nce_fwd", a, b, temperature);
  const at::ScalarType ct = compute_dtype(a.scalar_type());
  Normalised nz = normalise_rows(a, b, ct);
  return AT_DISPATCH_FLOATING_TYPES(ct, "info_nce_fwd_cpu", [&] {
    Problem<scalar_t> p{nz.z, at::Tensor(), pair_labels(a.size(0), a), nz.z.size(0), true, scalar_t(1.0 / temperature)};
    return forward_impl<scalar_t>(p, a.scalar_type());
  });
}

std::tuple<at::Tensor, at::Tensor> info_nce_bwd_cpu(const at::Tensor& grad_rows, const at::Tensor& a,
                                                    const at::Tensor& b, const at::Tensor& lse_all,
                                                    const at::Tensor& lse_pos, double temperature) {
  const char* op = "info_nce_bwd";
  check_info_nce_inputs(op, a, b, temperature);
  const int64_t n = 2 * a.size(0);
  check_loss_bwd_vectors(op, grad_rows, lse_all, lse_pos, n, a, "a");
  const at::ScalarType ct = compute_dtype(a.scalar_type());
  Normalised nz = normalise_rows(a, b, ct);
  at::Tensor dx = AT_DISPATCH_FLOATING_TYPES(ct, "info_nce_bwd_cpu", [&] {
    Problem<scalar_t> p{nz.z, at::Tensor(), pair_labels(a.size(0), a), n, true, scalar_t(1.0 / temperature)};
    at::Tensor dz = backward_impl<scalar_t>(p, grad_rows, lse_all, lse_pos);
    // Through z = x / max(|x|, eps): dx = (dz - z <z, dz>) / |x| (F.normalize's gradient; below eps
    // the clamp is active and the map is linear, dx = dz / eps).
    at::Tensor active = nz.norms > 1e-12;
    at::Tensor proj = dz - nz.z * (nz.z * dz).sum(1, true);
    return at::where(active.unsqueeze(1), proj / nz.norms.clamp_min(1e-12).unsqueeze(1), dz / 1e-12);
  });
  dx = dx.to(a.scalar_type());
  // Separate storage for the two gradients (outputs of an op must not alias each other).
  return {dx.narrow(0, 0, a.size(0)).clone(), dx.narrow(0, a.size(0), a.size(0)).clone()};
}

// ---- Soft Nearest Neighbor --------------------------------------------------------------------

// {z in the compute dtype minus its distance_shift, the squared norms of those rows}: the logits and
// the gradient (-2 / T) (rowsum(W)_i z_i - (W z)_i) only see differences of rows, so both keep their
// precision far from the origin.
std::pair<at::Tensor, at::Tensor> shifted_rows(const at::Tensor& z, at::ScalarType compute) {
  const at::Tensor zc = z.to(compute);
  at::Tensor shifted = (zc - distance_shift(zc)).contiguous();
  return {shifted, sq_norms(shifted)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nn_fwd_cpu(const at::Tensor& z, const at::Tensor& labels,
                                                               double temperature) {
  check_soft_nn_inputs("soft_nn_fwd", z, labels, temperature);
  const at::ScalarType ct = compute_dtype(z.scalar_type());
  at::Tensor zc, sq;
  std::tie(zc, sq) = shifted_rows(z, ct);
  return AT_DISPATCH_FLOATING_TYPES(ct, "soft_nn_fwd_cpu", [&] {
    Problem<scalar_t> p{zc, sq, labels.to(at::kLong).contiguous(), zc.size(0), false, scalar_t(1.0 / temperature)};
    return forward_impl<scalar_t>(p, z.scalar_type());
  });
}

at::Tensor soft_nn_bwd_cpu(const at::Tensor& grad_rows, const at::Tensor& z, const at::Tensor& labels,
                           const at::Tensor& lse_all, const at::Tensor& lse_pos, double temperature) {
  const char* op = "soft_nn_bwd";
  check_soft_nn_inputs(op, z, labels, temperature);
  const int64_t n = z.size(0);
  check_loss_bwd_vectors(op, grad_rows, lse_all, lse_pos, n, z, "z");
  const at::ScalarType ct = compute_dtype(z.scalar_type());
  at::Tensor zc, sq;
  std::tie(zc, sq) = shifted_rows(z, ct);
  at::Tensor dz = AT_DISPATCH_FLOATING_TYPES(ct, "soft_nn_bwd_cpu", [&] {
    Problem<scalar_t> p{zc, sq, labels.to(at::kLong).contiguous(), n, false, scalar_t(1.0 / temperature)};
    return backward_impl<scalar_t>(p, grad_rows, lse_all, lse_pos);
  });
  return dz.to(z.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(sslsteal_fast, CPU, m) {
  m.impl("info_nce_fwd", &info_nce_fwd_cpu);
  m.impl("info_nce_bwd", &info_nce_bwd_cpu);
  m.impl("soft_nn_fwd", &soft_nn_fwd_cpu);
  m.impl("soft_nn_bwd", &soft_nn_bwd_cpu);
}

}  // namespace sslsteal
