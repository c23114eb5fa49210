// CPU kernels for h[t] = a[t] * h[t-1] + x[t] over a time-major (T, C) buffer.
//
// Two schedules share one set of inner loops:
//   serial   threads split the channels; each walks all of time (2nT flops, inputs read once).
//   parallel Algorithm 1 of Martin & Cundy (2018): time is cut into K chunks; (1) every chunk is
//            reduced to (product of decays, state reached from 0), (2) a serial scan over the K
//            chunk totals gives each chunk its carry-in, (3) every chunk is re-scanned from its
//            carry-in and written. Inputs are read twice, so it only pays where the serial loop is
//            bound by the latency of its dependency chain (few channels), not by memory.
//
// Everything is expressed in "scan order": step r touches row base + r * stride, so the reverse
// recurrence and the backward pass (a reverse-time recurrence, paper section 3.3) are the same
// loops with a negative stride. State is carried in float (double for double inputs) whatever
// the storage type, and rounded only when stored.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace plrnn {
namespace {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

// Row r (in scan order) of a (T, C) buffer.
template <typename T> struct Rows {
  T* base;
  int64_t stride;
  inline T* operator()(int64_t r) const { return base + r * stride; }
  Rows shifted(int64_t k) const { return {base + k * stride, stride}; }
};

// What a SCAN pass does with the state after each step.
template <typename out_t, typename acc_t> struct StoreState {
  Rows<out_t> out;
  inline void operator()(int64_t r, int64_t c, const acc_t* __restrict__ v, int64_t n) const {
    out_t* __restrict__ o = out(r) + c;
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<out_t>(v[i]);
  }
};

// Backward pass: the state is g = dL/dh accumulated through time; dL/dx = g, dL/da = h_prev * g,
// written in the same pass so the gradient costs one read of (a, dL/dh, h) and one write of each.
template <typename out_t, typename acc_t> struct StoreGrads {
  Rows<out_t> gx, ga;
  Rows<const out_t> hprev;
  inline void operator()(int64_t r, int64_t c, const acc_t* __restrict__ v, int64_t n) const {
    out_t* __restrict__ dx = gx(r) + c;
    out_t* __restrict__ da = ga(r) + c;
    const out_t* __restrict__ hp = hprev(r) + c;
    for (int64_t i = 0; i < n; ++i) {
      dx[i] = static_cast<out_t>(v[i]);
      da[i] = static_cast<out_t>(static_cast<acc_t>(hp[i]) * v[i]);
    }
  }
};

// Registers hold KI chunks x W channels of state; KI independent dependency chains per channel
// keep the FMA pipes busy when there are too few channels to do so (the latency-bound regime).
template <int W> constexpr int chunks_in_flight() { return W >= 32 ? 1 : (32 / W > 8 ? 8 : 32 / W); }

// Steps rows [s0, s1) of chunks start[0..KI) over channels [c, c + W).
// st/prod: state and running product of decays of chunk k at st[k * ld].
template <int W, int KI, bool REDUCE, typename in_t, typename acc_t, typename Emit>
void tile_steps(Rows<const in_t> A, Rows<const in_t> X, const int64_t* start, int64_t s0,
                int64_t s1, int64_t c, acc_t* st, acc_t* prod, int64_t ld, const Emit& emit) {
  acc_t h[KI][W];
  acc_t p[KI][W];
  for (int k = 0; k < KI; ++k)
    for (int w = 0; w < W; ++w) {
      h[k][w] = st[k * ld + w];
      if constexpr (REDUCE) p[k][w] = prod[k * ld + w];
    }
  for (int64_t s = s0; s < s1; ++s) {
#pragma GCC unroll 8
    for (int k = 0; k < KI; ++k) {
      const int64_t r = start[k] + s;
      const in_t* __restrict__ a = A(r) + c;
      const in_t* __restrict__ x = X(r) + c;
#pragma GCC unroll 32
      for (int w = 0; w < W; ++w) {
        const acc_t av = static_cast<acc_t>(a[w]);
        h[k][w] = av * h[k][w] + static_cast<acc_t>(x[w]);
        if constexpr (REDUCE) p[k][w] *= av;
      }
      if constexpr (!REDUCE) emit(r, c, h[k], W);
    }
  }
  for (int k = 0; k < KI; ++k)
    for (int w = 0; w < W; ++w) {
      st[k * ld + w] = h[k][w];
      if constexpr (REDUCE) prod[k * ld + w] = p[k][w];
    }
}

// Wide rows: state for a block of channels lives in an L1-sized buffer and every step streams
// one contiguous run of each row; the many independent channels give the ILP.
template <bool REDUCE, typename in_t, typename acc_t, typename Emit>
void wide_steps(Rows<const in_t> A, Rows<const in_t> X, int64_t start, int64_t len, int64_t c,
                int64_t n, acc_t* __restrict__ st, acc_t* __restrict__ prod, const Emit& emit) {
  for (int64_t s = 0; s < len; ++s) {
    const int64_t r = start + s;
    const in_t* __restrict__ a = A(r) + c;
    const in_t* __restrict__ x = X(r) + c;
    if constexpr (REDUCE) {
      for (int64_t i = 0; i < n; ++i) {
        const acc_t av = static_cast<acc_t>(a[i]);
        st[i] = av * st[i] + static_cast<acc_t>(x[i]);
        prod[i] *= av;
      }
    } else {
      for (int64_t i = 0; i < n; ++i)
        st[i] = static_cast<acc_t>(a[i]) * st[i] + static_cast<acc_t>(x[i]);
      emit(r, c, st, n);
    }
  }
}

constexpr int64_t kWideBlock = 2048;  // channels per wide block: 8 KiB of float state
constexpr int64_t kNarrowMax = 64;    // up to this many channels a group keeps its state in registers
constexpr int64_t kMinChunk = 16;     // shortest time chunk worth a chunk of its own

struct Chunks {
  std::vector<int64_t> start, len;
  int64_t count() const { return static_cast<int64_t>(start.size()); }
};

template <typename in_t, typename acc_t, typename Emit> struct Pass {
  Rows<const in_t> A, X;
  const Chunks& chunks;
  int64_t C;
  acc_t* st;    // K x C
  acc_t* prod;  // K x C (REDUCE only)
  const Emit& emit;

  template <int W, bool REDUCE> void tiles(int64_t k0, int64_t k1, int64_t c) const {
    constexpr int KI = chunks_in_flight<W>();
    int64_t k = k0;
    for (; KI > 1 && k + KI <= k1; k += KI) {
      const int64_t* start = &chunks.start[k];
      int64_t common = chunks.len[k];
      for (int j = 1; j < KI; ++j) common = std::min(common, chunks.len[k + j]);
      tile_steps<W, KI, REDUCE>(A, X, start, 0, common, c, st + k * C + c,
                                REDUCE ? prod + k * C + c : nullptr, C, emit);
      for (int j = 0; j < KI; ++j)  // only the final chunk can be shorter: finish the others
        if (chunks.len[k + j] > common)
          tile_steps<W, 1, REDUCE>(A, X, start + j, common, chunks.len[k + j], c,
                                   st + (k + j) * C + c,
                                   REDUCE ? prod + (k + j) * C + c : nullptr, C, emit);
    }
    for (; k < k1; ++k)
      tile_steps<W, 1, REDUCE>(A, X, &chunks.start[k], 0, chunks.len[k], c, st + k * C + c,
                               REDUCE ? prod + k * C + c : nullptr, C, emit);
  }

  // Chunks [k0, k1) x channels [c0, c1), all on the calling thread.
  template <bool REDUCE> void group(int64_t k0, int64_t k1, int64_t c0, int64_t c1) const {
    if (c1 - c0 > kNarrowMax) {
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t c = c0; c < c1; c += kWideBlock)
          wide_steps<REDUCE>(A, X, chunks.start[k], chunks.len[k], c,
                             std::min(kWideBlock, c1 - c), st + k * C + c,
                             REDUCE ? prod + k * C + c : nullptr, emit);
      return;
    }
    int64_t c = c0;
    for (; c + 32 <= c1; c += 32) tiles<32, REDUCE>(k0, k1, c);
    if (c + 16 <= c1) { tiles<16, REDUCE>(k0, k1, c); c += 16; }
    if (c + 8 <= c1) { tiles<8, REDUCE>(k0, k1, c); c += 8; }
    if (c + 4 <= c1) { tiles<4, REDUCE>(k0, k1, c); c += 4; }
    if (c + 2 <= c1) { tiles<2, REDUCE>(k0, k1, c); c += 2; }
    if (c + 1 <= c1) { tiles<1, REDUCE>(k0, k1, c); c += 1; }
  }
};

// Chunks of time for the parallel schedule: enough to give every thread KI chains when the
// channels are few, one per thread otherwise; never shorter than kMinChunk steps.
Chunks plan_chunks(int64_t n, int64_t C, bool parallel) {
  int64_t want = 1;
  if (parallel) {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    // Matches chunks_in_flight<W>() for the widest register tile of C channels.
    const int64_t per_thread = C < 8 ? 8 : C < 16 ? 4 : C < 32 ? 2 : 1;
    want = std::min(threads * per_thread, std::max<int64_t>(1, n / kMinChunk));
  }
  const int64_t L = (n + want - 1) / want;
  Chunks ch;
  for (int64_t s = 0; s < n; s += L) {
    ch.start.push_back(s);
    ch.len.push_back(std::min(L, n - s));
  }
  return ch;
}

// Runs steps [0, n) in scan order from `init` (C values, or null for zeros), emitting every
// state, and leaves the final state in `final_state` (C values) if it is not null.
template <typename in_t, typename acc_t, typename Emit>
void scan(Rows<const in_t> A, Rows<const in_t> X, int64_t n, int64_t C, const acc_t* init,
          bool parallel, const Emit& emit, acc_t* final_state) {
  if (n <= 0) return;
  const Chunks chunks = plan_chunks(n, C, parallel);
  const int64_t K = chunks.count();
  std::vector<acc_t> st(K * C, acc_t(0));
  if (K == 1) {
    if (init) std::copy(init, init + C, st.begin());
    Pass<in_t, acc_t, Emit> pass{A, X, chunks, C, st.data(), nullptr, emit};
    // Split channels across threads in whole cache lines; skip threads for tiny problems.
    const int64_t tiles = (C + 15) / 16;
    const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, n * 16));
    at::parallel_for(0, tiles, grain, [&](int64_t b, int64_t e) {
      pass.template group<false>(0, 1, b * 16, std::min(e * 16, C));
    });
  } else {
    std::vector<acc_t> prod(K * C, acc_t(1));
    Pass<in_t, acc_t, Emit> pass{A, X, chunks, C, st.data(), prod.data(), emit};
    at::parallel_for(0, K, 1, [&](int64_t b, int64_t e) { pass.template group<true>(b, e, 0, C); });
    // Carry scan over chunk totals; st[k] becomes the carry into chunk k.
    std::vector<acc_t> carry(C, acc_t(0));
    if (init) std::copy(init, init + C, carry.begin());
    for (int64_t k = 0; k < K; ++k) {
      acc_t* s = st.data() + k * C;
      const acc_t* p = prod.data() + k * C;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t reached = s[c];
        s[c] = carry[c];
        carry[c] = p[c] * carry[c] + reached;
      }
    }
    at::parallel_for(0, K, 1, [&](int64_t b, int64_t e) { pass.template group<false>(b, e, 0, C); });
  }
  if (final_state) {
    const int64_t last = (K - 1) * C;
    std::copy(st.begin() + last, st.begin() + last + C, final_state);
  }
}

void check_inputs(const at::Tensor& a, const at::Tensor& x, const c10::optional<at::Tensor>& h0) {
  TORCH_CHECK(a.device().is_cpu() && x.device().is_cpu(), "plrnn cpu kernels need CPU tensors");
  TORCH_CHECK(a.sizes() == x.sizes() && a.dim() >= 1, "decays and impulses must share a (T, *) shape");
  TORCH_CHECK(a.scalar_type() == x.scalar_type(), "decays and impulses must share a dtype");
  TORCH_CHECK(a.is_contiguous() && x.is_contiguous(), "plrnn cpu kernels need contiguous inputs");
  if (h0) {
    TORCH_CHECK(h0->is_contiguous() && h0->scalar_type() == x.scalar_type(),
                "initial_state must be contiguous with the impulses' dtype");
    TORCH_CHECK(h0->numel() * std::max<int64_t>(1, x.size(0)) == x.numel() || x.size(0) == 0,
                "initial_state must have one value per channel");
  }
}

template <typename acc_t, typename in_t>
std::vector<acc_t> to_acc(const in_t* p, int64_t n) {
  std::vector<acc_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<acc_t>(p[i]);
  return v;
}

at::Tensor scan_forward(const at::Tensor& decays, const at::Tensor& impulses,
                        const c10::optional<at::Tensor>& initial_state, bool reverse,
                        bool parallel) {
  check_inputs(decays, impulses, initial_state);
  at::Tensor out = at::empty_like(impulses);
  const int64_t T = impulses.size(0);
  if (T == 0 || impulses.numel() == 0) return out;
  const int64_t C = impulses.numel() / T;
  const int64_t first = reverse ? T - 1 : 0, step = reverse ? -C : C;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, impulses.scalar_type(), "plrnn_cpu_scan", [&] {
    using acc_t = typename AccOf<scalar_t>::type;
    Rows<const scalar_t> A{decays.const_data_ptr<scalar_t>() + first * C, step};
    Rows<const scalar_t> X{impulses.const_data_ptr<scalar_t>() + first * C, step};
    StoreState<scalar_t, acc_t> emit{{out.mutable_data_ptr<scalar_t>() + first * C, step}};
    std::vector<acc_t> init;
    if (initial_state) init = to_acc<acc_t>(initial_state->const_data_ptr<scalar_t>(), C);
    scan(A, X, T, C, initial_state ? init.data() : nullptr, parallel, emit, (acc_t*)nullptr);
  });
  return out;
}

// Gradients of h = scan(a, x, h0) given dL/dh, from the saved h (no recompute).
// Scan order runs against the forward direction: step r is data row d(r) = d0 + r * dir, and
//   g(r) = a[d(r) - dir] * g(r-1) + dL/dh[d(r)],  g(0) = dL/dh[d(0)]
//   dL/dx[d] = g,  dL/da[d] = h[d + dir] * g  (h0 past the last step),  dL/dh0 = a[d(T-1)] * g(T-1)
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward(
    const at::Tensor& decays, const at::Tensor& h, const at::Tensor& grad_h,
    const c10::optional<at::Tensor>& initial_state, bool reverse, bool parallel) {
  check_inputs(decays, grad_h, initial_state);
  TORCH_CHECK(h.sizes() == grad_h.sizes() && h.is_contiguous() && h.scalar_type() == grad_h.scalar_type(),
              "saved h must match grad_h");
  at::Tensor gx = at::empty_like(grad_h), ga = at::empty_like(grad_h);
  const int64_t T = grad_h.size(0);
  const int64_t C = T == 0 ? 0 : grad_h.numel() / T;
  at::Tensor gh0 = at::zeros({C}, grad_h.options());
  if (T == 0 || C == 0) return {gx, ga, gh0};
  const int64_t dir = reverse ? 1 : -1, d0 = reverse ? 0 : T - 1, step = dir * C;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_h.scalar_type(), "plrnn_cpu_scan_backward", [&] {
    using acc_t = typename AccOf<scalar_t>::type;
    const scalar_t* a = decays.const_data_ptr<scalar_t>();
    const scalar_t* dh = grad_h.const_data_ptr<scalar_t>();
    const scalar_t* hs = h.const_data_ptr<scalar_t>();
    scalar_t* dx = gx.mutable_data_ptr<scalar_t>();
    scalar_t* da = ga.mutable_data_ptr<scalar_t>();
    std::vector<acc_t> h0(C, acc_t(0));
    if (initial_state) h0 = to_acc<acc_t>(initial_state->const_data_ptr<scalar_t>(), C);

    Rows<const scalar_t> A{a + (d0 - dir) * C, step};  // row 0 never read
    Rows<const scalar_t> X{dh + d0 * C, step};
    Rows<const scalar_t> Hp{hs + (d0 + dir) * C, step};  // row T-1 never read (h0 instead)
    Rows<scalar_t> DX{dx + d0 * C, step}, DA{da + d0 * C, step};

    // Edge rows by hand: the first has no decay to apply, the last multiplies h0.
    auto edge_row = [&](int64_t r, const acc_t* prev, const acc_t* hprev, std::vector<acc_t>& g) {
      const scalar_t* xr = X(r);
      const scalar_t* ar = r > 0 ? A(r) : nullptr;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = (ar ? static_cast<acc_t>(ar[c]) * prev[c] : acc_t(0)) + static_cast<acc_t>(xr[c]);
        g[c] = v;
        DX(r)[c] = static_cast<scalar_t>(v);
        DA(r)[c] = static_cast<scalar_t>(hprev[c] * v);
      }
    };
    std::vector<acc_t> g(C), hp_row(C);
    for (int64_t c = 0; c < C; ++c) hp_row[c] = T > 1 ? static_cast<acc_t>(Hp(0)[c]) : h0[c];
    edge_row(0, nullptr, hp_row.data(), g);
    if (T > 1) {
      std::vector<acc_t> mid = g;
      if (T > 2) {
        StoreGrads<scalar_t, acc_t> emit{DX.shifted(1), DA.shifted(1), Hp.shifted(1)};
        scan(A.shifted(1), X.shifted(1), T - 2, C, g.data(), parallel, emit, mid.data());
      }
      edge_row(T - 1, mid.data(), h0.data(), g);
    }
    const scalar_t* a_last = a + (d0 + (T - 1) * dir) * C;
    scalar_t* out = gh0.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) out[c] = static_cast<scalar_t>(static_cast<acc_t>(a_last[c]) * g[c]);
  });
  return {gx, ga, gh0};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(plrnn, m) {
  m.def("cpu_scan(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, bool parallel) -> Tensor");
  m.def("cpu_scan_backward(Tensor decays, Tensor h, Tensor grad_h, Tensor? initial_state, bool reverse, bool parallel) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(plrnn, CPU, m) {
  m.impl("cpu_scan", &scan_forward);
  m.impl("cpu_scan_backward", &scan_backward);
}

}  // namespace plrnn
