// Streaming top-k similarity search on the CPU.
//
// The bank is visited in blocks of kBlock rows: one mm gives the (N, kBlock) scores of the block,
// and a fused selection pass folds them into each query's running top-k list. The list is kept
// sorted best-first, so a score is compared once against the current k-th best and almost every
// candidate is rejected by that single compare once the list has warmed up; accepted candidates are
// placed by binary search. Memory: the (N, kBlock) score block, one converted bank block and the
// (N, k) lists -- never an (N, M) matrix. Bank blocks are visited in index order and a candidate must
// be strictly better to enter, so ties go to the smaller bank index, deterministically.
//
// Order is torch.topk's: NaN (a non-finite query or bank row, numerics.h) counts as larger than every
// number, so it ranks first by cosine and last by distance, and every bank row is a candidate: the
// lists always fill (k <= M). "sqeuclidean" ranks on rows shifted by the queries' distance_shift (one
// shifted copy of each bank block) and then recomputes the k winners' values directly
// (exact_sqeuclidean_topk).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "../numerics.h"

namespace sslsteal {
namespace {

// Rows of the bank per block; the score block holds N * kBlock values. Chosen so that blocks stay
// in the last-level cache for the typical few-hundred-query case while keeping the mm efficient.
int64_t block_rows(int64_t n_queries) {
  const int64_t budget = int64_t(4) << 20;  // ~4M scores (16 MB float32)
  return std::max<int64_t>(256, std::min<int64_t>(16384, budget / std::max<int64_t>(1, n_queries)));
}

// a ranks before b: torch.topk's order, where NaN is larger than every number. Equal keys (NaN and NaN
// too) are not "better", so the entry already in the list -- the smaller index -- keeps its place.
template <typename T, bool Largest>
struct Better {
  // The rare NaN tests come second and start with the one that is almost always false.
  static bool of(T a, T b) { return Largest ? (a > b || (a != a && b == b)) : (a < b || (b != b && a == a)); }
};

// Folds one block of raw dot products into the running lists. The score is formed on the fly:
// cosine (Largest): dot * bstat[j] with bstat = 1 / max(|b_j|, eps) and q pre-normalised;
// sqeuclidean: clamp0(qstat[q] + bstat[j] - 2 dot) with squared norms of the shifted rows.
template <typename T, bool Largest>
void select_block(const T* dots, const T* qstat, const T* bstat, int64_t n, int64_t bs, int64_t base, int64_t k,
                  T* vals, int64_t* idx, int64_t* filled) {
  at::parallel_for(0, n, 4, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const T* s = dots + q * bs;
      const T qs = Largest ? T(0) : qstat[q];
      T* v = vals + q * k;
      int64_t* ix = idx + q * k;
      int64_t f = filled[q];
      for (int64_t j = 0; j < bs; ++j) {
        const T x = Largest ? s[j] * bstat[j] : clamp0(qs + bstat[j] - T(2) * s[j]);
        if (f == k && !Better<T, Largest>::of(x, v[k - 1])) continue;  // the common, cheap case
        // Insertion point: after every entry that is at least as good (ties keep the older index).
        int64_t lo = 0, hi = f;
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (Better<T, Largest>::of(x, v[mid])) hi = mid;
          else lo = mid + 1;
        }
        const int64_t last = std::min(f, k - 1);
        std::memmove(v + lo + 1, v + lo, sizeof(T) * (last - lo));
        std::memmove(ix + lo + 1, ix + lo, sizeof(int64_t) * (last - lo));
        v[lo] = x;
        ix[lo] = base + j;
        if (f < k) ++f;
      }
      filled[q] = f;
    }
  });
}

// sqeuclidean, one pass over a bank block: out = blk - shift and norms = |out_r|^2, NaN when not
// finite (numerics.h: sq_norms), into buffers reused across blocks (no fresh pages per block). It
// replaces the (blk * blk).sum(1) pass, so the shift costs the block's copy and nothing else.
template <typename T>
void shift_block(const at::Tensor& blk, const T* shift, T* out, T* norms) {
  const int64_t rows = blk.size(0), d = blk.size(1);
  const T* src = blk.data_ptr<T>();
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* b = src + r * d;
      T* o = out + r * d;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < d; ++c) {
        const T v = b[c] - shift[c];
        o[c] = v;
        acc += v * v;
      }
      norms[r] = std::isfinite(acc) ? acc : std::numeric_limits<T>::quiet_NaN();
    }
  });
}

std::tuple<at::Tensor, at::Tensor> topk_similarity_cpu(const at::Tensor& queries, const at::Tensor& bank, int64_t k,
                                                       c10::string_view metric_name) {
  const Metric metric = check_topk_inputs("topk_similarity", queries, bank, k, metric_name);
  const int64_t n = queries.size(0), m = bank.size(0);
  const at::ScalarType ct = queries.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool cosine = metric == Metric::kCosine;
  at::Tensor q = queries.to(ct).contiguous();
  at::Tensor qstat;  // cosine: nothing (q is normalised); sqeuclidean: |q - shift|^2
  at::Tensor shift;  // sqeuclidean: subtracted from the queries and from every bank block
  if (cosine) {
    q = q / q.norm(2, {1}, true).clamp_min(1e-12);
  } else {
    shift = distance_shift(q);
    q = (q - shift).contiguous();
    qstat = sq_norms(q);
  }
  at::Tensor vals = at::empty({n, k}, q.options());
  at::Tensor idx = at::full({n, k}, -1, q.options().dtype(at::kLong));
  std::vector<int64_t> filled(n, 0);
  const int64_t bs_max = block_rows(n);
  at::Tensor scores_buf = at::empty({n * std::min(bs_max, m)}, q.options());
  at::Tensor shifted_buf = cosine ? at::Tensor() : at::empty({std::min(bs_max, m), bank.size(1)}, q.options());
  at::Tensor bstat_buf = cosine ? at::Tensor() : at::empty({std::min(bs_max, m)}, q.options());
  for (int64_t base = 0; base < m; base += bs_max) {
    const int64_t bs = std::min(bs_max, m - base);
    at::Tensor blk = bank.narrow(0, base, bs).to(ct).contiguous();  // no copy for contiguous float banks
    at::Tensor bstat;
    if (cosine) {
      bstat = blk.norm(2, {1}).clamp_min(1e-12).reciprocal().contiguous();
    } else {
      AT_DISPATCH_FLOATING_TYPES(ct, "topk_shift_block", [&] {
        shift_block<scalar_t>(blk, shift.data_ptr<scalar_t>(), shifted_buf.data_ptr<scalar_t>(),
                              bstat_buf.data_ptr<scalar_t>());
      });
      blk = shifted_buf.narrow(0, 0, bs);
      bstat = bstat_buf.narrow(0, 0, bs);
    }
    at::Tensor S = scores_buf.narrow(0, 0, n * bs).view({n, bs});
    at::mm_out(S, q, blk.t());
    AT_DISPATCH_FLOATING_TYPES(ct, "topk_similarity_cpu", [&] {
      const scalar_t* qs = cosine ? nullptr : qstat.data_ptr<scalar_t>();
      auto run = [&](auto largest) {
        select_block<scalar_t, decltype(largest)::value>(S.data_ptr<scalar_t>(), qs, bstat.data_ptr<scalar_t>(), n, bs,
                                                         base, k, vals.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                                                         filled.data());
      };
      if (cosine) run(std::true_type{});
      else run(std::false_type{});
    });
  }
  // Every score is a candidate (NaN too) and k <= M, so every list is full.
  if (!cosine) return exact_sqeuclidean_topk(queries, bank, vals, idx);
  return {vals.to(queries.scalar_type()), idx};
}

}  // namespace

TORCH_LIBRARY_IMPL(sslsteal_fast, CPU, m) { m.impl("topk_similarity", &topk_similarity_cpu); }

}  // namespace sslsteal
