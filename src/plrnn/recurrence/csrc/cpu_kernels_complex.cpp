// complex64 / complex128 CPU kernels: the same two schedules as the real ones (cpu_kernels_impl.h)
// in plain loops over c10::complex. A complex product mixes the real and imaginary parts, so the
// real kernels' vector tiles do not carry over; rows of a few channels keep their states in
// vector registers as they lie in memory (real, imaginary, real, ...), wider rows leave the
// channel loop to the compiler.
//
// Gradients follow torch's convention for complex autograd (the conjugate Wirtinger derivative):
// for y = a * h + x, dL/da = conj(h) * dL/dy and dL/dh = conj(a) * dL/dy.
#include <c10/util/complex.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_kernels_impl.h"  // apply_map, and the declarations (cpu_kernels.h)

namespace plrnn {
namespace {

// Rows of at most this many channels keep their states in registers (Steps::narrow). In the
// plain loop every state went through memory, and its store and reload joined the two dependent
// FMAs of a complex multiply-add on the chain of every step. Measured (Zen 4 VM, one thread,
// complex64, T = 65536): one channel 391-412 -> 204-215 us, four 489-637 -> 267-455 us, eight
// 748 -> 509 us (torch.mul: 20, 90-110, 180 us) with the states in scalar registers, then
// 142-185 us at every width from one to eight in vector registers (CxLanes), where two dependent
// FMAs per step (8 cycles) are the bound, and 80-105 us at one to four with two steps folded
// into each link of that chain (narrow()). Up to 16 channels since: rows of 9 to 16 had gone
// through the scalar loop for wide rows; in vector registers (C++ callers of both builds in
// turn, one thread, complex64, us) (65536, 9) forward 517-709 -> 235-298, backward 1834-2887 ->
// 500-866; (16384, 16) forward 147-198 -> 74-86 (torch.mul 63-87), backward 1143-1356 -> 114-160.
constexpr int kNarrowComplex = 16;

// Complex numbers per vector: at most 32 bytes, as the real kernels' tiles (VecOf), 16 without
// AVX.
template <typename R> constexpr int kCxPerVector =
#if defined(__AVX__)
    32 / int(2 * sizeof(R));
#else
    16 / int(2 * sizeof(R));
#endif

// G complex numbers (G a power of two) in one GCC vector, interleaved as in memory: real parts
// in the even lanes, imaginary parts in the odd ones. a * h + x is then a product of h by a's
// real parts duplicated, plus a product of h with its parts swapped by a's imaginary parts
// signed (-, +), plus x: two FMAs and one in-register shuffle on the chain of each step. Every
// helper is always inlined: a call to split() left in the backward's loop at two channels kept
// its states on the stack (595-700 against 135 us).
template <typename R, int G> struct CxLanes {
  typedef R V __attribute__((vector_size(2 * G * sizeof(R))));
  using I = std::conditional_t<sizeof(R) == 4, int32_t, int64_t>;
  typedef I Mask __attribute__((vector_size(2 * G * sizeof(R))));

  [[gnu::always_inline]] static V load(const c10::complex<R>* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  [[gnu::always_inline]] static void store(c10::complex<R>* p, const V& v) {
    std::memcpy(static_cast<void*>(p), &v, sizeof(v));
  }
  // lane i takes lane (i & ~1) + even or + odd
  [[gnu::always_inline]] static Mask lanes(int even, int odd) {
    Mask m;
    for (int i = 0; i < 2 * G; ++i) m[i] = (i & ~1) + ((i & 1) ? odd : even);
    return m;
  }
  [[gnu::always_inline]] static V alternating(R even, R odd) {
    V v;
    for (int i = 0; i < 2 * G; ++i) v[i] = (i & 1) ? odd : even;
    return v;
  }
  [[gnu::always_inline]] static V swapped(const V& z) {
    return __builtin_shuffle(z, lanes(1, 0));
  }
  [[gnu::always_inline]] static V reals(const V& z) { return __builtin_shuffle(z, lanes(0, 0)); }
  [[gnu::always_inline]] static V imags(const V& z) { return __builtin_shuffle(z, lanes(1, 1)); }
  [[gnu::always_inline]] static V conj(const V& z) { return z * alternating(R(1), R(-1)); }
  // a's parts as times_plus takes them: (re, re, ...) and (-im, im, ...)
  [[gnu::always_inline]] static void split(const V& a, V& re, V& im) {
    re = reals(a);
    im = imags(a) * alternating(R(-1), R(1));
  }
  // a * h + x from a's split parts
  [[gnu::always_inline]] static V times_plus(const V& re, const V& im, const V& h, const V& x) {
    const V u = re * h + x;  // off the swap's path: the two FMAs overlap by a shuffle
    return im * swapped(h) + u;
  }
  [[gnu::always_inline]] static V times(const V& a, const V& b) {
    V re, im;
    split(a, re, im);
    return re * b + im * swapped(b);
  }
};

// The CxLanes of a GCC vector type.
template <typename V> using CxLanesOf =
    CxLanes<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>,
            int(sizeof(V) / (2 * sizeof(std::declval<V>()[0])))>;

// Steps of one scan in its own order: state(r) = decay(r, c) * state(r - 1) + input(r, c), each
// state handed to emit(r, c, v). decay / input / emit know where row r lives (forward, reverse,
// backward order). Rows of a few channels go through their row forms, a vector at a time:
//   rows.decays(r, c0, n, scratch): the decays of channels [c0, c0 + n) of step r, contiguous
//     (in `scratch`, n values, where the decays' period wraps inside them), or null for zeros;
//     conjugated where rows.kConj;
//   rows.inputs(r): channel 0 of step r's inputs;
//   rows.emit(r, c, h): a vector h of the states of channels c, c + 1, ... (CxLanesOf);
//   rows.descending: whether step r + 1 lies below step r in memory (reverse scans, the
//     backward), so that wider rows are walked from their end.
template <typename acc_t, typename Decay, typename Input, typename Emit, typename Rows>
struct Steps {
  const Decay& decay;
  const Input& input;
  const Emit& emit;
  const Rows& rows;

  // Rows [r0, r1), channels [c0, c1), from st (updated in place).
  void scan(int64_t r0, int64_t r1, int64_t c0, int64_t c1, acc_t* st) const {
    if (c1 - c0 <= kNarrowComplex) {
      by_width(c1 - c0, [&](auto w) { narrow<decltype(w)::value, false>(r0, r1, c0, st, nullptr); });
      return;
    }
    // The states in this thread's own buffer: st is shared with the threads scanning the
    // neighbouring channels (or chunks), and a cache line holding states of both was written at
    // every step (two threads at (16384, 64), complex64: 2588 -> 1824 us; one thread takes
    // 766-1018 us there, so the channel split still loses, see registry.resolve).
    std::vector<acc_t> local(st + c0, st + c1);
    for (int64_t r = r0; r < r1; ++r)
      each_channel(c0, c1, [&](int64_t c) {
        acc_t& h = local[c - c0];
        h = decay(r, c) * h + input(r, c);
        emit(r, c, h);
      });
    std::copy(local.begin(), local.end(), st + c0);
  }

  // f(c) for c in [c0, c1), in the direction the rows are visited, so that every stream the
  // rows are read from and written to runs one way through memory. Rows descending with their
  // channels ascending left the prefetchers behind: the backward at (16384, 64) took 11.7-14.1 ms
  // where the forward took 0.93 ms (complex64, one thread, Zen 4 VM).
  template <typename F> void each_channel(int64_t c0, int64_t c1, const F& f) const {
    if (rows.descending) {
      for (int64_t c = c1 - 1; c >= c0; --c) f(c);
    } else {
      for (int64_t c = c0; c < c1; ++c) f(c);
    }
  }

  // Rows [r0, r1), all C channels, to the state R they reach from zero and the product P of
  // their decays (both C values, overwritten).
  void reduce(int64_t r0, int64_t r1, int64_t C, acc_t* R, acc_t* P) const {
    if (C <= kNarrowComplex) {
      std::fill(R, R + C, acc_t(0));
      std::fill(P, P + C, acc_t(1));
      by_width(C, [&](auto w) { narrow<decltype(w)::value, true>(r0, r1, 0, R, P); });
      return;
    }
    std::vector<acc_t> reached(C, acc_t(0)), product(C, acc_t(1));  // as in scan()
    for (int64_t r = r0; r < r1; ++r)
      each_channel(0, C, [&](int64_t c) {
        const acc_t d = decay(r, c);
        reached[c] = d * reached[c] + input(r, c);
        product[c] *= d;
      });
    std::copy(reached.begin(), reached.end(), R);
    std::copy(product.begin(), product.end(), P);
  }

  template <typename F> static void by_width(int64_t w, const F& f) {
    by_width_from<1>(w, f);
  }
  template <int W, typename F> static void by_width_from(int64_t w, const F& f) {
    if constexpr (W < kNarrowComplex) {
      if (w > W) return by_width_from<W + 1>(w, f);
    }
    f(std::integral_constant<int, W>{});
  }

  // Not inlined: inlined into scan() beside the other widths, the loop at eight channels lost
  // its registers to the stack (one thread, complex64, T = 65536: 560 against 176-253 us).
  template <int W, bool REDUCE>
  __attribute__((noinline)) void narrow(int64_t r0, int64_t r1, int64_t c0, acc_t* st,
                                        acc_t* P) const {
    using R = typename acc_t::value_type;
    constexpr int widest = kCxPerVector<R>, G = W >= widest ? widest : W >= 4 ? 4 : W >= 2 ? 2 : 1;
    constexpr int K = (W + G - 1) / G;
    using L = CxLanes<R, G>;
    using V = typename L::V;
    int64_t at[K];
    V h[K], p[K];
    for (int k = 0; k < K; ++k) {
      at[k] = k < K - 1 ? k * G : W - G;
      h[k] = L::load(st + c0 + at[k]);
      if (REDUCE) p[k] = L::load(P + c0 + at[k]);
    }
    acc_t scratch[W], scratch2[W];
    // A copy of the row forms whose address never escapes: through the reference, every
    // store of a state (a memcpy, which may alias anything) made the compiler reload the
    // forms' captured pointers and sizes, and those loads joined the chain of each step (one
    // thread, complex64, T = 65536, 4 channels: 195-205 against 142 us).
    const Rows local = rows;
    auto decay_of = [&](const acc_t* d, int k) {  // d: a row of decays, or null for zeros
      const V a = d ? L::load(d + at[k]) : V{};
      return Rows::kConj ? L::conj(a) : a;
    };
    int64_t r = r0;
    // Where all the channels fit in one vector, the chain of two dependent FMAs per step bounds
    // the loop, and two steps are folded into one link first, off the chain: h(r + 1) =
    // (a(r + 1) a(r)) h(r - 1) + (a(r + 1) x(r) + x(r + 1)), with h(r) computed from h(r - 1)
    // beside it (a reduction keeps the product of the decays, a(r + 1) a(r) times the product
    // so far, instead). One thread, complex64, T = 65536, forward: one and two channels 142 ->
    // 76-80 us, four 143 -> 105 us. Rounding differs from the plain loop's as any regrouping
    // does.
    if constexpr (K * G <= widest) {
      for (; r + 1 < r1; r += 2) {
        const acc_t* d1 = local.decays(r, c0, W, scratch);
        const acc_t* d2 = local.decays(r + 1, c0, W, scratch2);
        const acc_t *x1 = local.inputs(r) + c0, *x2 = local.inputs(r + 1) + c0;
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          const V a1 = decay_of(d1, k), a2 = decay_of(d2, k), u1 = L::load(x1 + at[k]);
          V re1, im1, re2, im2, re, im;
          L::split(a1, re1, im1);
          L::split(a2, re2, im2);
          L::split(L::times(a2, a1), re, im);
          const V h1 = L::times_plus(re1, im1, h[k], u1);
          h[k] = L::times_plus(re, im, h[k], L::times_plus(re2, im2, u1, L::load(x2 + at[k])));
          if (REDUCE) {
            p[k] = re * p[k] + im * L::swapped(p[k]);
          } else {
            local.emit(r, c0 + at[k], h1);
            local.emit(r + 1, c0 + at[k], h[k]);
          }
        }
      }
    }
    for (; r < r1; ++r) {
      const acc_t* d = local.decays(r, c0, W, scratch);
      const acc_t* x = local.inputs(r) + c0;
      // Unrolled, so that h and p stay in registers (a loop over k kept them in memory).
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        V re, im;
        L::split(decay_of(d, k), re, im);
        h[k] = L::times_plus(re, im, h[k], L::load(x + at[k]));
        if (REDUCE) {
          p[k] = re * p[k] + im * L::swapped(p[k]);
        } else {
          local.emit(r, c0 + at[k], h[k]);
        }
      }
    }
    for (int k = 0; k < K; ++k) {
      L::store(st + c0 + at[k], h[k]);
      if (REDUCE) L::store(P + c0 + at[k], p[k]);
    }
  }
};

// Steps [0, n) of a scan from init (C values, or zeros); the final state goes to `last` (C
// values).
//   serial:   threads split the channels, each walks all of time.
//   parallel: Algorithm 1 over time, in the real kernels' schedule (cpu_kernels_impl.h, scan):
//             one chunk more than threads; the first, whose carry-in is known, is scanned while
//             the threads reduce the others but the last to (product of decays, state from
//             zero), a serial scan over chunks gives each its carry-in, and every thread then
//             scans one of the rest. (Reducing all but the last chunk first left one of two
//             threads idle: 0.5x the serial loop at one channel.)
template <typename acc_t, typename Decay, typename Input, typename Emit, typename Rows>
void scan_steps(int64_t n, int64_t C, const acc_t* init, bool parallel, const Decay& decay,
                const Input& input, const Emit& emit, const Rows& rows, acc_t* last) {
  // Every parallel region sets it on its workers, the calling thread only around its own loop
  // (FlushDenormals: a worker started inside a region copies the starting thread's state).
  const Steps<acc_t, Decay, Input, Emit, Rows> steps{decay, input, emit, rows};
  std::vector<acc_t> state(C, acc_t(0));
  if (init) std::copy(init, init + C, state.begin());
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  // As in the real kernels: rows streamed from memory whose per-thread shares would be under a
  // page take the time split, not the channel split (Zen 4 VM, complex64, 2 threads, (65536,
  // 256): the channel split ran at 0.26-0.52 of torch.mul, the time split at 0.55-0.87).
  if (!parallel && threads > 1 && time_split_pays(n, C * int64_t(sizeof(acc_t)), threads))
    parallel = true;
  // Two parallel regions cost a few microseconds: below about 2^14 steps times channels (tens of
  // microseconds of this scalar arithmetic) one thread runs the whole scan.
  const bool split = parallel && threads > 1 && n * C >= (int64_t(1) << 14);
  const int64_t M = split ? std::min<int64_t>(threads + 1, n / 64) : 1;
  if (M <= 1) {
    // Blocks of 16 channels (a cache line of complex64 and then some), at least ~32k steps of
    // work per task.
    const int64_t blocks = (C + 15) / 16;
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, n * 16));
    at::parallel_for(0, blocks, grain, [&](int64_t b, int64_t e) {
      const FlushDenormals worker_flush;
      steps.scan(0, n, b * 16, std::min(C, e * 16), state.data());
    });
  } else {
    std::vector<int64_t> start(M + 1);
    for (int64_t k = 0; k <= M; ++k) start[k] = n * k / M;
    // carry[k]: the state into chunk k once known; reached/product: chunk k's map (k >= 1).
    std::vector<acc_t> carry(M * C), reached(M * C), product(M * C);
    std::copy(state.begin(), state.end(), carry.begin());
    at::parallel_for(0, M - 1, 1, [&](int64_t b, int64_t e) {
      const FlushDenormals worker_flush;
      for (int64_t k = b; k < e; ++k) {
        if (k == 0) {
          steps.scan(start[0], start[1], 0, C, carry.data());  // now the state after chunk 0
        } else {
          steps.reduce(start[k], start[k + 1], C, reached.data() + k * C,
                       product.data() + k * C);
        }
      }
    });
    {
      const FlushDenormals flush;
      std::copy(carry.begin(), carry.begin() + C, carry.begin() + C);
      for (int64_t k = 2; k < M; ++k)
        for (int64_t c = 0; c < C; ++c)
          carry[k * C + c] = apply_map(product[(k - 1) * C + c], carry[(k - 1) * C + c],
                                       reached[(k - 1) * C + c]);
    }
    at::parallel_for(1, M, 1, [&](int64_t b, int64_t e) {
      const FlushDenormals worker_flush;
      for (int64_t k = b; k < e; ++k)
        steps.scan(start[k], start[k + 1], 0, C, carry.data() + k * C);
    });
    std::copy(carry.begin() + (M - 1) * C, carry.begin() + M * C, state.begin());
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
  // The decays of channels [c0, c0 + n) of data row t in `a`, contiguous: in place, or copied
  // into `scratch` where the period wraps inside them.
  template <typename T>
  const T* row(const T* a, int64_t t, int64_t c0, int64_t n, T* scratch) const {
    const int64_t P = layout.period;
    if (P == C || c0 % P + n <= P) return a + (*this)(t, c0);  // P == C: no division
    for (int64_t i = 0; i < n; ++i) scratch[i] = a[(*this)(t, c0 + i)];
    return scratch;
  }
};

// Rows::kConj of Steps' row forms.
template <bool Conj, typename Decays, typename Inputs, typename Emit> struct RowForms {
  static constexpr bool kConj = Conj;
  Decays decays;
  Inputs inputs;
  Emit emit;
  bool descending;
};
template <bool Conj, typename Decays, typename Inputs, typename Emit>
RowForms<Conj, Decays, Inputs, Emit> row_forms(bool descending, Decays d, Inputs i, Emit e) {
  return {d, i, e, descending};
}

template <typename scalar_t>
void forward(const scalar_t* a, const scalar_t* x, const scalar_t* h0, scalar_t* out, int64_t T,
             int64_t C, bool reverse, bool parallel, DecayLayout layout) {
  if (T == 0 || C == 0) return;
  const int64_t first = reverse ? T - 1 : 0, dir = reverse ? -1 : 1;
  auto row = [=](int64_t r) { return first + r * dir; };
  const DecayAt at{layout, C};
  const auto rows = row_forms<false>(
      reverse, [=](int64_t r, int64_t c0, int64_t n, scalar_t* scratch) {
        return at.row(a, row(r), c0, n, scratch);
      },
      [=](int64_t r) { return x + row(r) * C; },
      [=](int64_t r, int64_t c, const auto& h) {
        CxLanesOf<std::decay_t<decltype(h)>>::store(out + row(r) * C + c, h);
      });
  scan_steps<scalar_t>(
      T, C, h0, parallel, [=](int64_t r, int64_t c) { return a[at(row(r), c)]; },
      [=](int64_t r, int64_t c) { return x[row(r) * C + c]; },
      [=](int64_t r, int64_t c, scalar_t v) { out[row(r) * C + c] = v; }, rows,
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
  std::vector<scalar_t> g_last(C), zeros(h0 ? 0 : C);
  const auto rows = row_forms<true>(
      dir < 0, [=](int64_t r, int64_t c0, int64_t n, scalar_t* scratch) {
        return r == 0 ? nullptr : at.row(a, row(r) - dir, c0, n, scratch);
      },
      [=](int64_t r) { return dh + row(r) * C; },
      [=, last = h0 ? h0 : zeros.data()](int64_t r, int64_t c, const auto& g) {
        using L = CxLanesOf<std::decay_t<decltype(g)>>;
        const int64_t d = row(r);
        const scalar_t* prev = r == T - 1 ? last : hs + (d + dir) * C;
        L::store(dx + d * C + c, g);
        if (da) L::store(da + d * C + c, L::times(L::conj(L::load(prev + c)), g));
      });
  scan_steps<scalar_t>(
      T, C, nullptr, parallel,
      [=](int64_t r, int64_t c) {
        return r == 0 ? scalar_t(0) : std::conj(a[at(row(r) - dir, c)]);
      },
      [=](int64_t r, int64_t c) { return dh[row(r) * C + c]; },
      [=](int64_t r, int64_t c, scalar_t g) {
        const int64_t d = row(r);
        dx[d * C + c] = g;
        if (!da) return;
        const scalar_t prev = r == T - 1 ? (h0 ? h0[c] : scalar_t(0)) : hs[(d + dir) * C + c];
        da[d * C + c] = std::conj(prev) * g;
      },
      rows, g_last.data());
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
