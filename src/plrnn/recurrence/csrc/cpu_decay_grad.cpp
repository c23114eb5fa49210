// dL/da for decays shared by several channels or steps, as one pass over h and dL/dx
// (cpu_kernels.h).
//
// Time-invariant decays (S4D- and LRU-style: one row of P, shared by every step and by the C / P
// channel groups) get a gradient of P values, the sum over steps and groups of h_prev * dL/dx;
// decays shared over a batch ((T, 1, P) for (T, B, P) impulses) one row of P per step, the sum
// over its groups. Written as (T, C) terms and then summed, it cost a 4-byte store and a 4-byte
// load per element, and a fresh (T, C) buffer per call, whose page faults, with the default
// allocator, took longer than the whole backward (docs/op.md, "Large tensors on CPU"). This pass
// reads the h and dL/dx rows instead and allocates a few rows.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"

namespace plrnn {
namespace {

// Accumulates in double (or complex<double>) whatever the storage type: a running float32 sum
// over 10^5 steps can be off by up to about 10^5 ulps of its terms' magnitude.
template <typename scalar_t> struct Wide {
  using type = double;
  static double of(scalar_t v) { return static_cast<double>(v); }
  static double conj_of(scalar_t v) { return static_cast<double>(v); }
  static scalar_t back(double v) { return static_cast<scalar_t>(v); }
};
template <typename R> struct Wide<c10::complex<R>> {
  using type = c10::complex<double>;
  static type of(c10::complex<R> v) { return {double(v.real()), double(v.imag())}; }
  // torch's convention for complex autograd: dL/da = conj(h_prev) * dL/dy.
  static type conj_of(c10::complex<R> v) { return {double(v.real()), -double(v.imag())}; }
  static c10::complex<R> back(type v) { return {R(v.real()), R(v.imag())}; }
};

// The state row t follows: h0's row n for the first step (in scan order) of sequence n, null
// for zeros, otherwise the row of h before it in scan order.
template <typename scalar_t> struct PrevRows {
  const scalar_t *h, *h0;
  const int64_t* cu;
  int64_t C;
  bool reverse;
  // The first step of sequence n in scan order.
  int64_t first(int64_t n) const { return reverse ? cu[n + 1] - 1 : cu[n]; }
  const scalar_t* at(int64_t t, int64_t n) const {
    if (t != first(n)) return h + (t + (reverse ? 1 : -1)) * C;
    return h0 ? h0 + n * C : nullptr;
  }
};

// One row of P sums per step (decays shared over a batch): each row alone, no sum over time.
template <typename scalar_t>
void per_step_sums(const PrevRows<scalar_t>& prev, const scalar_t* dx, int64_t N, int64_t C,
                   int64_t P, scalar_t* da) {
  using W = Wide<scalar_t>;
  const int64_t T = prev.cu[N];
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(C, 1));
  at::parallel_for(0, T, grain, [&](int64_t begin, int64_t end) {
    const FlushDenormals worker_flush;  // float64 products can fall below 2.2e-308
    std::vector<typename W::type> row(P);
    int64_t n = int64_t(std::upper_bound(prev.cu, prev.cu + N + 1, begin) - prev.cu) - 1;
    for (int64_t t = begin; t < end; ++t) {
      while (prev.cu[n + 1] <= t) ++n;
      std::fill(row.begin(), row.end(), typename W::type(0));
      if (const scalar_t* p = prev.at(t, n))
        for (int64_t c0 = 0; c0 < C; c0 += P)
          for (int64_t j = 0; j < P; ++j)
            row[j] += W::conj_of(p[c0 + j]) * W::of(dx[t * C + c0 + j]);
      for (int64_t j = 0; j < P; ++j) da[t * P + j] = W::back(row[j]);
    }
  });
}

// P sums over every step and channel group (time-invariant decays).
template <typename scalar_t>
void time_invariant_sums(const PrevRows<scalar_t>& prev, const scalar_t* dx, int64_t N,
                         int64_t C, int64_t P, scalar_t* da) {
  using W = Wide<scalar_t>;
  using acc_t = typename W::type;
  const int64_t* cu = prev.cu;
  const int64_t T = cu[N];
  // Blocks of rows fixed by the shape alone, each summed on its own and then in order, so the
  // result does not depend on the thread count; tiles of channels keep one block's sums within
  // a core's L2 for wide rows.
  const int64_t blocks = std::clamp<int64_t>(T * C / (int64_t(1) << 15), 1, 32);
  const int64_t rows = (T + blocks - 1) / blocks;
  const int64_t tile = std::min<int64_t>(C, 4096), tiles = (C + tile - 1) / tile;
  std::vector<acc_t> partial(blocks * C, acc_t(0));
  at::parallel_for(0, blocks * tiles, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals worker_flush;  // float64 products can fall below 2.2e-308
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / tiles, c0 = (task % tiles) * tile;
      const int64_t width = std::min(C, c0 + tile) - c0;
      const int64_t r0 = std::min(T, b * rows), r1 = std::min(T, r0 + rows);
      // Sums in `lanes`, lane j for channel c0 + j % width: at least 32 of them, so that the
      // additions into one lane are far apart even with a few channels (one sum per channel
      // was a chain of dependent additions, a row at a time: 0.17 ms at (65536, 1)).
      const int64_t K = width >= 32 ? width : width * ((32 + width - 1) / width);
      std::vector<acc_t> lanes(K, acc_t(0));
      auto add = [&](const scalar_t* prev, const scalar_t* g, int64_t count) {
        if (width == C) {  // whole rows: the run is one stretch of memory
          const int64_t len = count * C;
          int64_t k = 0;
          for (; k + K <= len; k += K)
            for (int64_t j = 0; j < K; ++j) lanes[j] += W::conj_of(prev[k + j]) * W::of(g[k + j]);
          for (int64_t j = 0; k + j < len; ++j)
            lanes[j] += W::conj_of(prev[k + j]) * W::of(g[k + j]);
          return;
        }
        for (int64_t r = 0; r < count; ++r)
          for (int64_t j = 0; j < width; ++j)
            lanes[j] += W::conj_of(prev[r * C + c0 + j]) * W::of(g[r * C + c0 + j]);
      };
      int64_t n = int64_t(std::upper_bound(cu, cu + N + 1, r0) - cu) - 1;  // holds row r0
      for (int64_t t = r0; t < r1;) {
        while (cu[n + 1] <= t) ++n;
        if (t == prev.first(n)) {
          if (const scalar_t* p = prev.at(t, n)) add(p, dx + t * C, 1);
          ++t;
          continue;
        }
        // Rows t .. stop - 1 follow rows of h: the whole run at once, h shifted by one row.
        const int64_t stop = std::min(r1, prev.reverse ? prev.first(n) : cu[n + 1]);
        add(prev.at(t, n), dx + t * C, stop - t);
        t = stop;
      }
      acc_t* sum = partial.data() + b * C + c0;
      for (int64_t j = 0; j < K; ++j) sum[j % width] += lanes[j];
    }
  });
  std::vector<acc_t> total(P, acc_t(0));
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = 0; c < C; ++c) total[c % P] += partial[b * C + c];
  for (int64_t p = 0; p < P; ++p) da[p] = W::back(total[p]);
}

}  // namespace

template <typename scalar_t>
void shared_decay_grad(const scalar_t* h, const scalar_t* dx, const scalar_t* h0,
                       const int64_t* cu, int64_t N, int64_t C, int64_t P, bool per_step,
                       bool reverse, scalar_t* da) {
  const int64_t T = cu[N];
  if (T == 0 || C == 0 || P == 0) {
    std::fill(da, da + (per_step ? T : 1) * P, scalar_t(0));
    return;
  }
  const PrevRows<scalar_t> prev{h, h0, cu, C, reverse};
  if (per_step) {
    per_step_sums(prev, dx, N, C, P, da);
  } else {
    time_invariant_sums(prev, dx, N, C, P, da);
  }
}

#define PLRNN_INSTANTIATE_DECAY_GRAD(scalar_t)                                                     \
  template void shared_decay_grad<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*,   \
                                            const int64_t*, int64_t, int64_t, int64_t, bool, bool, \
                                            scalar_t*);
PLRNN_INSTANTIATE_DECAY_GRAD(float)
PLRNN_INSTANTIATE_DECAY_GRAD(double)
PLRNN_INSTANTIATE_DECAY_GRAD(c10::Half)
PLRNN_INSTANTIATE_DECAY_GRAD(c10::BFloat16)
PLRNN_INSTANTIATE_DECAY_GRAD(c10::complex<float>)
PLRNN_INSTANTIATE_DECAY_GRAD(c10::complex<double>)
#undef PLRNN_INSTANTIATE_DECAY_GRAD

}  // namespace plrnn
