// complex64 / complex128 CPU kernels: the same two schedules as the real ones (cpu_kernels_impl.h)
// in plain loops over c10::complex. A complex product mixes the real and imaginary parts, so the
// real kernels' vector tiles do not carry over; the compiler vectorizes these loops over channels.
//
// Gradients follow torch's convention for complex autograd (the conjugate Wirtinger derivative):
// for y = a * h + x, dL/da = conj(h) * dL/dy and dL/dh = conj(a) * dL/dy.
#include <c10/util/complex.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_kernels_impl.h"  // FlushDenormals, and the declarations (cpu_kernels.h)

namespace plrnn {
namespace {

// Steps [0, n) of a scan in its own order: state(r) = decay(r, c) * state(r - 1) + input(r, c),
// from init (C values, or zeros), each state handed to emit(r, c, v). decay / input / emit know
// where row r lives (forward, reverse, backward order). The final state goes to `last` (C values).
//   serial:   threads split the channels, each walks all of time.
//   parallel: Algorithm 1 over time: threads reduce chunks to (product of decays, state from
//             zero), a serial scan over chunks gives each its carry-in, threads re-scan.
template <typename acc_t, typename Decay, typename Input, typename Emit>
void scan_steps(int64_t n, int64_t C, const acc_t* init, bool parallel, const Decay& decay,
                const Input& input, const Emit& emit, acc_t* last) {
  // Every parallel region sets it on its workers, the calling thread only around its own loop
  // (FlushDenormals: a worker started inside a region copies the starting thread's state).
  std::vector<acc_t> state(C, acc_t(0));
  if (init) std::copy(init, init + C, state.begin());
  auto run = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, acc_t* st) {
    const FlushDenormals worker_flush;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        st[c] = decay(r, c) * st[c] + input(r, c);
        emit(r, c, st[c]);
      }
  };
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t K = parallel ? std::min<int64_t>(threads, n / 64) : 1;
  if (K <= 1) {
    // Blocks of 16 channels (a cache line of complex64 and then some), at least ~32k steps of
    // work per task.
    const int64_t blocks = (C + 15) / 16;
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, n * 16));
    at::parallel_for(0, blocks, grain, [&](int64_t b, int64_t e) {
      run(0, n, b * 16, std::min(C, e * 16), state.data());
    });
  } else {
    std::vector<int64_t> start(K + 1);
    for (int64_t k = 0; k <= K; ++k) start[k] = n * k / K;
    std::vector<acc_t> reached(K * C, acc_t(0)), product(K * C, acc_t(1));
    at::parallel_for(0, K - 1, 1, [&](int64_t b, int64_t e) {
      const FlushDenormals worker_flush;
      for (int64_t k = b; k < e; ++k)
        for (int64_t r = start[k]; r < start[k + 1]; ++r)
          for (int64_t c = 0; c < C; ++c) {
            const acc_t d = decay(r, c);
            reached[k * C + c] = d * reached[k * C + c] + input(r, c);
            product[k * C + c] *= d;
          }
    });
    std::vector<acc_t> carry(K * C);
    std::copy(state.begin(), state.end(), carry.begin());
    {
      const FlushDenormals flush;
      for (int64_t k = 1; k < K; ++k)
        for (int64_t c = 0; c < C; ++c)
          carry[k * C + c] = product[(k - 1) * C + c] * carry[(k - 1) * C + c] + reached[(k - 1) * C + c];
    }
    at::parallel_for(0, K, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) run(start[k], start[k + 1], 0, C, carry.data() + k * C);
    });
    std::copy(carry.begin() + (K - 1) * C, carry.begin() + K * C, state.begin());
  }
  if (last) std::copy(state.begin(), state.end(), last);
}

// Index of the decay of data row t, channel c (cpu_kernels.h); no division unless the decays
// repeat across the channels.
struct DecayAt {
  DecayLayout layout;
  int64_t C;
  int64_t operator()(int64_t t, int64_t c) const {
    const int64_t P = layout.period;
    return (layout.per_step ? t * P : 0) + (P == C ? c : c % P);
  }
};

template <typename scalar_t>
void forward(const scalar_t* a, const scalar_t* x, const scalar_t* h0, scalar_t* out, int64_t T,
             int64_t C, bool reverse, bool parallel, DecayLayout layout) {
  if (T == 0 || C == 0) return;
  const int64_t first = reverse ? T - 1 : 0, dir = reverse ? -1 : 1;
  auto row = [=](int64_t r) { return first + r * dir; };
  const DecayAt at{layout, C};
  scan_steps<scalar_t>(
      T, C, h0, parallel, [=](int64_t r, int64_t c) { return a[at(row(r), c)]; },
      [=](int64_t r, int64_t c) { return x[row(r) * C + c]; },
      [=](int64_t r, int64_t c, scalar_t v) { out[row(r) * C + c] = v; },
      static_cast<scalar_t*>(nullptr));
}

// Backward order runs against the forward one: step r is data row d(r) = d0 + r * dir, and
//   g(r) = conj(a[d(r) - dir]) * g(r-1) + dL/dh[d(r)]
//   dL/dx[d] = g, dL/da[d] = conj(h[d + dir]) * g (h0 past the last step), dL/dh0 = conj(a[d(T-1)]) g(T-1)
template <typename scalar_t>
void backward(const scalar_t* a, const scalar_t* hs, const scalar_t* dh, const scalar_t* h0,
              scalar_t* dx, scalar_t* da, scalar_t* dh0, int64_t T, int64_t C, bool reverse,
              bool parallel, DecayLayout layout) {
  if (T == 0 || C == 0) return;
  const int64_t dir = reverse ? 1 : -1, d0 = reverse ? 0 : T - 1;
  const DecayAt at{layout, C};
  auto row = [=](int64_t r) { return d0 + r * dir; };
  std::vector<scalar_t> g_last(C);
  scan_steps<scalar_t>(
      T, C, nullptr, parallel,
      [=](int64_t r, int64_t c) {
        return r == 0 ? scalar_t(0) : std::conj(a[at(row(r) - dir, c)]);
      },
      [=](int64_t r, int64_t c) { return dh[row(r) * C + c]; },
      [=](int64_t r, int64_t c, scalar_t g) {
        const int64_t d = row(r);
        const scalar_t prev = r == T - 1 ? (h0 ? h0[c] : scalar_t(0)) : hs[(d + dir) * C + c];
        dx[d * C + c] = g;
        da[d * C + c] = std::conj(prev) * g;
      },
      g_last.data());
  const int64_t d_last = row(T - 1);
  for (int64_t c = 0; c < C; ++c) dh0[c] = std::conj(a[at(d_last, c)]) * g_last[c];
}

}  // namespace

#define PLRNN_COMPLEX_KERNELS(scalar_t)                                                          \
  template <>                                                                                    \
  void scan_forward_kernel<scalar_t>(const scalar_t* a, const scalar_t* x, const scalar_t* h0,   \
                                     scalar_t* out, int64_t T, int64_t C, bool reverse,          \
                                     bool parallel, DecayLayout decays) {                        \
    forward(a, x, h0, out, T, C, reverse, parallel, decays);                                     \
  }                                                                                              \
  template <>                                                                                    \
  void scan_backward_kernel<scalar_t>(const scalar_t* a, const scalar_t* h,                      \
                                      const scalar_t* grad_h, const scalar_t* h0,                \
                                      scalar_t* grad_x, scalar_t* grad_a, scalar_t* grad_h0,     \
                                      int64_t T, int64_t C, bool reverse, bool parallel,         \
                                      DecayLayout decays) {                                      \
    backward(a, h, grad_h, h0, grad_x, grad_a, grad_h0, T, C, reverse, parallel, decays);        \
  }

PLRNN_COMPLEX_KERNELS(c10::complex<float>)
PLRNN_COMPLEX_KERNELS(c10::complex<double>)

}  // namespace plrnn
