// The CPU kernels for h[t] = a[t] * h[t-1] + x[t] over a time-major (T, C) buffer, as templates.
//
// Included only by the per-dtype translation units (cpu_kernels_*.cpp), which instantiate the
// entry points declared in cpu_kernels.h; the torch binding (cpu_scan.cpp) sees the declarations
// only. Keeping torch's heavy headers out of here lets the kernels compile in parallel, once per
// ISA variant (setup.py), and the binding's autograd code once per variant too.
//
// Two schedules share one set of inner loops:
//   serial   threads split the channels; each walks all of time (2nT flops, inputs read once).
//   parallel Algorithm 1 of Martin & Cundy (2018): time is cut into K chunks; (1) every chunk is
//            reduced to (product of decays, state reached from 0), (2) a serial scan over the K
//            chunk totals gives each chunk its carry-in, (3) every chunk is re-scanned from its
//            carry-in and written. Across threads the first chunk is scanned in step (1).
//            Inputs are read twice, so it only pays where the serial loop is bound by the
//            latency of its dependency chain (few channels), not by memory.
//
// Everything is expressed in "scan order": step r, channel c is element r * stride + c of every
// buffer involved (their bases differ, their strides do not), so the reverse recurrence and the
// backward pass (a reverse-time recurrence, paper section 3.3) are the same loops with a negative
// stride. State is carried in float (double for double inputs) whatever the storage type, and
// rounded only when stored.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <unistd.h>
#endif

#include "cpu_kernels.h"

namespace plrnn {
namespace {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

// Storage aligned to a cache line, for the states and running products that the loops read and
// write as 32-byte vectors at every row. malloc aligns to 16 bytes, so one of those vectors can
// straddle two pages at every row: with a 512-byte state at page offset 3952, one thread's share
// of a time-split backward took 5 ms where the other's took 1-2 ms ((65536, 128) fp32, Zen 4
// VM), and a process repeats its heap layout call after call, so it stays that slow.
template <typename T> struct LineAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  LineAligned() = default;
  template <typename U> LineAligned(const LineAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U> bool operator==(const LineAligned<U>&) const { return true; }
  template <typename U> bool operator!=(const LineAligned<U>&) const { return false; }
};
template <typename T> using Buffer = std::vector<T, LineAligned<T>>;

// W contiguous channels as one GCC vector (W a power of two, at most 32 bytes: wider generic
// vectors spill to the stack) so the register tiles below compile to packed loads and FMAs for
// every width and storage type.
template <int W, typename acc_t> struct VecOf {
  typedef acc_t type __attribute__((vector_size(W * sizeof(acc_t))));
};
template <typename acc_t> struct VecOf<1, acc_t> {  // one-lane GCC vectors go through memory
  using type = acc_t;
};

// 16-bit storage converted W lanes at a time in vector registers. Lane by lane, as c10's
// scalar conversions are written, the compiler left them scalar, and they bounded the kernels:
// bfloat16 and float16 ran at 0.06-0.28 of torch.mul's speed where float ran at 0.64-0.93
// (Zen 4 VM, (65536, 4), (65536, 128) and (4096, 2048), 1 and 2 threads).
template <int W> struct Lanes16 {
  typedef uint16_t u16 __attribute__((vector_size(W * 2)));
  typedef uint32_t u32 __attribute__((vector_size(W * 4)));
};

// The bits of `from` as a To of the same size (std::bit_cast, which C++17 lacks): GCC vectors,
// intrinsic registers and lane masks are distinct types over the same bits.
template <typename To, typename From> inline To bits_as(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bits_as keeps the size");
  To to;
  std::memcpy(&to, &from, sizeof(to));
  return to;
}

template <int W>
inline typename VecOf<W, float>::type widen(const c10::BFloat16* __restrict__ p) {
  using vec = typename VecOf<W, float>::type;
#if defined(__AVX2__)
  // Explicit AVX2 where it applies: GCC built the generic form below for 4 lanes from 64-bit
  // pieces (Zen 4 VM, one thread, (65536, 4): 240 us, 165 us with these, 104 us for float16
  // through F16C).
  if constexpr (W == 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return bits_as<vec>(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  } else if constexpr (W == 4) {
    const __m128i w = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return bits_as<vec>(_mm_castsi128_ps(_mm_slli_epi32(w, 16)));
  }
#endif
  using L = Lanes16<W>;
  typename L::u16 b;
  std::memcpy(&b, p, sizeof(b));
  return bits_as<vec>(__builtin_convertvector(b, typename L::u32) << 16);
}

// c10::BFloat16(float) in every lane: round to nearest even, any NaN to 0x7FC0.
template <int W>
inline void narrow_to(c10::BFloat16* __restrict__ p, const typename VecOf<W, float>::type& v) {
#if (defined(__AVX512BF16__) && defined(__AVX512VL__)) || defined(PLRNN_BF16_INSTRUCTIONS)
  // One instruction where the build has AVX-512 BF16 (the avx512_bf16 level, -march=native on
  // such a CPU). The AVX2 rounding below is seven vector operations a store, and on narrow rows
  // the instructions, not the dependency chain, bound the loop: bfloat16 at (65536, 4) took
  // twice float16's time (Zen 4 VM, one thread). The same rounding, with two differences that
  // the kernels never show: a NaN keeps its sign and high payload bits (c10 writes 0x7FC0; both
  // are NaN), and a subnormal input counts as zero (the kernels' states are already flushed,
  // FlushDenormals).
  if constexpr (W == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     bits_as<__m128i>(_mm256_cvtneps_pbh(bits_as<__m256>(v))));
    return;
  } else if constexpr (W == 4) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                     bits_as<__m128i>(_mm_cvtneps_pbh(bits_as<__m128>(v))));
    return;
  }
#elif defined(__AVX2__)
  if constexpr (W == 8) {
    const __m256 f = bits_as<__m256>(v);
    const __m256i u = _mm256_castps_si256(f);
    const __m256i bias = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16),
                                                           _mm256_set1_epi32(1)),
                                          _mm256_set1_epi32(0x7FFF));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0),
                           _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
    return;
  } else if constexpr (W == 4) {
    const __m128 f = bits_as<__m128>(v);
    const __m128i u = _mm_castps_si128(f);
    const __m128i bias = _mm_add_epi32(_mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1)),
                                       _mm_set1_epi32(0x7FFF));
    __m128i r = _mm_srli_epi32(_mm_add_epi32(u, bias), 16);
    r = _mm_blendv_epi8(r, _mm_set1_epi32(0x7FC0), _mm_castps_si128(_mm_cmpunord_ps(f, f)));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(r, r));
    return;
  }
#endif
  using L = Lanes16<W>;
  const auto u = bits_as<typename L::u32>(v);
  const auto nan = bits_as<typename L::u32>(v != v);  // all ones in NaN lanes
  const typename L::u32 rounded = (u + (((u >> 16) & 1) + 0x7FFF)) >> 16;
  const typename L::u16 b =
      __builtin_convertvector((rounded & ~nan) | (nan & 0x7FC0), typename L::u16);
  std::memcpy(p, &b, sizeof(b));
}

// float16 through the F16C instructions (round to nearest even, as c10::Half(float)), in the
// builds that have them (avx2, avx512, native); the baseline build keeps c10's conversions.
template <int W> constexpr bool kF16C =
#if defined(__F16C__)
    W == 4 || W == 8;
#else
    false;
#endif

template <int W>
inline typename VecOf<W, float>::type widen(const c10::Half* __restrict__ p) {
  typename VecOf<W, float>::type v;
#if defined(__F16C__)
  if constexpr (W == 8) {
    v = bits_as<decltype(v)>(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else {
    v = bits_as<decltype(v)>(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
#endif
  return v;
}

template <int W>
inline void narrow_to(c10::Half* __restrict__ p, const typename VecOf<W, float>::type& v) {
#if defined(__F16C__)
  if constexpr (W == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(bits_as<__m256>(v), _MM_FROUND_TO_NEAREST_INT));
  } else {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                     _mm_cvtps_ph(bits_as<__m128>(v), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
}

template <int W, typename T> constexpr bool kVectorConvert =
    (std::is_same_v<T, c10::BFloat16> && W > 1) || (std::is_same_v<T, c10::Half> && kF16C<W>);

template <int W, typename acc_t, typename in_t>
inline typename VecOf<W, acc_t>::type load(const in_t* __restrict__ p) {
  typename VecOf<W, acc_t>::type v;
  if constexpr (std::is_same_v<in_t, acc_t>) {
    std::memcpy(&v, p, sizeof(v));
  } else if constexpr (kVectorConvert<W, in_t>) {
    v = widen<W>(p);
  } else {
    if constexpr (W == 1) {
      v = static_cast<acc_t>(p[0]);
    } else {
      for (int w = 0; w < W; ++w) v[w] = static_cast<acc_t>(p[w]);
    }
  }
  return v;
}

template <int W, typename out_t, typename acc_t>
inline void store(out_t* __restrict__ p, const typename VecOf<W, acc_t>::type& v) {
  if constexpr (std::is_same_v<out_t, acc_t>) {
    std::memcpy(p, &v, sizeof(v));
  } else if constexpr (kVectorConvert<W, out_t>) {
    narrow_to<W>(p, v);
  } else {
    if constexpr (W == 1) {
      p[0] = static_cast<out_t>(v);
    } else {
      for (int w = 0; w < W; ++w) p[w] = static_cast<out_t>(v[w]);
    }
  }
}

// A non-temporal store of one 32-byte vector of floats or doubles to p (32-byte aligned),
// straight to memory: no read of the line into cache first (a write-allocate read, a third more
// traffic on a forward pass) and no eviction of the inputs still to be read. Two 16-byte stores
// where the build lacks AVX (SSE2 is every x86-64); a plain store on other CPUs.
template <typename acc_t, typename V>
inline void store_nt(acc_t* __restrict__ p, const V& v) {
  static_assert(sizeof(V) == 32 && sizeof(V) % sizeof(acc_t) == 0,
                "store_nt takes one 32-byte vector of its element type");
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__AVX__)
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bits_as<__m256i>(v));
#else
  struct Halves { __m128i lo, hi; };
  const Halves h = bits_as<Halves>(v);
  _mm_stream_si128(reinterpret_cast<__m128i*>(p), h.lo);
  _mm_stream_si128(reinterpret_cast<__m128i*>(p) + 1, h.hi);
#endif
#else
  std::memcpy(p, &v, sizeof(v));
#endif
}

// Whether scan rows written through step_and_stream bypass the cache.
template <typename out_t, typename acc_t> constexpr bool kStreamsRows =
#if defined(__x86_64__) || defined(_M_X64)
    std::is_same_v<out_t, acc_t> && (std::is_same_v<acc_t, float> || std::is_same_v<acc_t, double>);
#else
    false;
#endif

// Whether an output of whole rows of row_bytes from o can be written with non-temporal stores:
// float or double, every row starting on a cache line. A line that plain stores write in part
// (the unaligned ends of rows) and streaming stores in part costs far more than either: rows of
// 67 floats streamed their middles and stored their ends at 0.15 of torch.mul (Zen 4 VM, 2
// threads).
template <typename out_t, typename acc_t>
inline bool streams_lines(const out_t* o, int64_t row_bytes) {
  return kStreamsRows<out_t, acc_t> && row_bytes % 64 == 0 &&
         reinterpret_cast<uintptr_t>(o) % 64 == 0;
}

// One step of n channels of a row, the state in a float (double) buffer: st[i] = a[i] * st[i] +
// x[i], written to o[i] and, with o2, mul[i] * st[i] to o2[i], in one loop; with `nt`, through
// non-temporal stores (store_nt), plain ones at any unaligned end (and for an o2 aligned unlike
// o). `down` walks the row from its end, for rows visited in descending address order, so that
// every stream descends. The caller fences (stream_fence) before anyone else reads the outputs.
template <typename in_t, typename acc_t, typename out_t>
inline void step_and_stream(const in_t* __restrict__ a, const in_t* __restrict__ x,
                            acc_t* __restrict__ st, int64_t n, out_t* __restrict__ o,
                            out_t* __restrict__ o2, const out_t* __restrict__ mul, bool down,
                            bool nt) {
  constexpr int L = 32 / sizeof(acc_t);
  nt = nt && kStreamsRows<out_t, acc_t>;
  auto one = [&](int64_t j) {
    const acc_t v = static_cast<acc_t>(a[j]) * st[j] + static_cast<acc_t>(x[j]);
    st[j] = v;
    o[j] = static_cast<out_t>(v);
    if (o2) o2[j] = static_cast<out_t>(static_cast<acc_t>(mul[j]) * v);
  };
  const uintptr_t at = reinterpret_cast<uintptr_t>(o);
  const bool nt2 = nt && o2 && (reinterpret_cast<uintptr_t>(o2) - at) % 32 == 0;
  auto put = [](out_t* p, const auto& v, bool stream) {
    if constexpr (kStreamsRows<out_t, acc_t>) {
      if (stream) return store_nt(p, v);
    }
    store<L, out_t, acc_t>(p, v);
  };
  auto vec = [&](int64_t j) {
    const auto v = load<L, acc_t>(a + j) * load<L, acc_t>(st + j) + load<L, acc_t>(x + j);
    store<L, acc_t, acc_t>(st + j, v);
    put(o + j, v, nt);
    if (o2) put(o2 + j, load<L, acc_t>(mul + j) * v, nt2);
  };
  // Vectors at [head, head + body): o + head is 32-byte aligned where the stores stream.
  const int64_t head = nt ? std::min<int64_t>(n, (32 - at % 32) % 32 / sizeof(out_t)) : 0;
  const int64_t body = (n - head) / L * L;
  if (down) {
    for (int64_t j = n - 1; j >= head + body; --j) one(j);
    for (int64_t j = head + body - L; j >= head; j -= L) vec(j);
    for (int64_t j = head - 1; j >= 0; --j) one(j);
  } else {
    for (int64_t j = 0; j < head; ++j) one(j);
    for (int64_t j = head; j < head + body; j += L) vec(j);
    for (int64_t j = head + body; j < n; ++j) one(j);
  }
}

inline void stream_fence() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_sfence();
#endif
}


// st[i] = a[i] * st[i] + x[i] over a row of n channels, the state in a float (double) buffer,
// and with prod, prod[i] *= a[i] too (a reduce pass); 16-bit inputs converted a register at a
// time (as load() does for the register tiles). `down` walks the row from its end, for rows
// visited in descending address order (as StoreState::row).
template <typename in_t, typename acc_t>
inline void step_row(const in_t* __restrict__ a, const in_t* __restrict__ x,
                     acc_t* __restrict__ st, int64_t n, acc_t* __restrict__ prod = nullptr,
                     bool down = false) {
  constexpr int L = 32 / sizeof(acc_t);
  auto vec = [&](int64_t j) {
    const auto av = load<L, acc_t>(a + j);
    store<L, acc_t, acc_t>(st + j, av * load<L, acc_t>(st + j) + load<L, acc_t>(x + j));
    if (prod) store<L, acc_t, acc_t>(prod + j, load<L, acc_t>(prod + j) * av);
  };
  auto one = [&](int64_t j) {
    const acc_t av = static_cast<acc_t>(a[j]);
    st[j] = av * st[j] + static_cast<acc_t>(x[j]);
    if (prod) prod[j] *= av;
  };
  if (down) {
    int64_t i = n;
    for (; i >= L; i -= L) vec(i - L);
    for (; i > 0; --i) one(i - 1);
    return;
  }
  int64_t i = 0;
  if constexpr (!std::is_same_v<in_t, acc_t>) {
    for (; i + L <= n; i += L) vec(i);
  }
  for (; i < n; ++i) one(i);
}

// What a SCAN pass does with the state after each step, at element offset e (put_vec: W
// channels from registers; scan_row, for rows streamed from memory (the pipelined schedule, the
// time split): the whole step for n channels of a row, state in a buffer (step_and_stream), with
// non-temporal stores where streams_lines allows them).
// Emitters are copied into the kernels by value so the compiler keeps their pointers in
// registers across the stores.
template <typename out_t, typename acc_t> struct StoreState {
  out_t* out;
  template <int W> inline void put_vec(int64_t e, const typename VecOf<W, acc_t>::type& v) const {
    store<W, out_t, acc_t>(out + e, v);
  }
  StoreState shifted(int64_t e) const { return {out + e}; }
  // The state lives in the output: where rows() finds the state emitted at offset e.
  const out_t* state_at(int64_t e) const { return out + e; }
  inline void row(int64_t e, const acc_t* __restrict__ a, const acc_t* __restrict__ x,
                  const acc_t* __restrict__ prev, int64_t n, bool down) const {
    acc_t* __restrict__ o = out + e;
    constexpr int V = 32 / sizeof(acc_t);
    if (down) {  // the same loop from the row's end, vector by vector
      int64_t i = n;
      for (; i >= V; i -= V) {
        const int64_t j = i - V;
        const auto v = load<V, acc_t>(a + j) * load<V, acc_t>(prev + j) + load<V, acc_t>(x + j);
        store<V, acc_t, acc_t>(o + j, v);
      }
      for (; i > 0; --i) o[i - 1] = a[i - 1] * prev[i - 1] + x[i - 1];
      return;
    }
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] * prev[i] + x[i];
  }
  bool streams_lines(int64_t row_bytes) const {
    return plrnn::streams_lines<out_t, acc_t>(out, row_bytes);
  }
  template <typename in_t>
  inline void scan_row(int64_t e, const in_t* __restrict__ a, const in_t* __restrict__ x,
                       acc_t* __restrict__ st, int64_t n, bool down, bool nt) const {
    step_and_stream<in_t, acc_t, out_t>(a, x, st, n, out + e, nullptr, nullptr, down, nt);
  }
};

// Backward pass: the state is g = dL/dh accumulated through time; dL/dx = g, dL/da = h_prev * g,
// written in the same pass so the gradient costs one read of (a, dL/dh, h) and one write of each.
template <typename out_t, typename acc_t> struct StoreGrads {
  out_t* gx;
  out_t* ga;
  const out_t* hprev;
  template <int W> inline void put_vec(int64_t e, const typename VecOf<W, acc_t>::type& v) const {
    store<W, out_t, acc_t>(gx + e, v);
    store<W, out_t, acc_t>(ga + e, load<W, acc_t>(hprev + e) * v);
  }
  StoreGrads shifted(int64_t e) const { return {gx + e, ga + e, hprev + e}; }
  const out_t* state_at(int64_t e) const { return gx + e; }
  inline void row(int64_t e, const acc_t* __restrict__ a, const acc_t* __restrict__ x,
                  const acc_t* __restrict__ prev, int64_t n, bool down) const {
    acc_t* __restrict__ g = gx + e;
    acc_t* __restrict__ d = ga + e;
    const acc_t* __restrict__ hp = hprev + e;
    constexpr int V = 32 / sizeof(acc_t);
    if (down) {
      int64_t i = n;
      for (; i >= V; i -= V) {
        const int64_t j = i - V;
        const auto v = load<V, acc_t>(a + j) * load<V, acc_t>(prev + j) + load<V, acc_t>(x + j);
        store<V, acc_t, acc_t>(g + j, v);
        store<V, acc_t, acc_t>(d + j, load<V, acc_t>(hp + j) * v);
      }
      for (; i > 0; --i) {
        const acc_t v = a[i - 1] * prev[i - 1] + x[i - 1];
        g[i - 1] = v;
        d[i - 1] = hp[i - 1] * v;
      }
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      const acc_t v = a[i] * prev[i] + x[i];
      g[i] = v;
      d[i] = hp[i] * v;
    }
  }
  bool streams_lines(int64_t row_bytes) const {
    return plrnn::streams_lines<out_t, acc_t>(gx, row_bytes) &&
           plrnn::streams_lines<out_t, acc_t>(ga, row_bytes);
  }
  template <typename in_t>
  inline void scan_row(int64_t e, const in_t* __restrict__ a, const in_t* __restrict__ x,
                       acc_t* __restrict__ st, int64_t n, bool down, bool nt) const {
    step_and_stream<in_t, acc_t, out_t>(a, x, st, n, gx + e, ga + e, hprev + e, down, nt);
  }
};

// The inputs of one scan: element (r, c) of the impulses is at x[r * stride + c], of the decays at
// a[r * a_stride + c % period] (cpu_kernels.h's DecayLayout in scan order: a_stride is stride for
// the impulses' own layout, 0 for time-invariant decays, +-period for decays shared over a
// batch). A register tile never straddles a multiple of the period (Pass::group cuts the narrow
// channel ranges there, and the strips of wide rows at those multiples too),
// so a run of channels always reads a run of decays. The loops test the layout once per call
// rather than keep a second offset per chunk for every layout, which would cost an add and a
// register per chunk where a few channels are latency-bound; the compiler unswitches the
// invariant tests out of the loops. (Alternating A/B runs of the time-invariant
// test against the kernels before it, 2-core Skylake-SP, 2 threads: 0.87-1.10x over 12 cases,
// noise.)
template <typename in_t> struct Inputs {
  const in_t* a;
  const in_t* x;
  int64_t stride;
  int64_t a_stride;
  int64_t period;
  Inputs shifted(int64_t rows) const {
    return {a + rows * a_stride, x + rows * stride, stride, a_stride, period};
  }
  bool a_like_x() const { return a_stride == stride && (period == stride || period == -stride); }
  // Decays that packed_steps can walk: laid out as the impulses, or one row for every step.
  bool packable_decays() const { return a_like_x() || a_stride == 0; }
};

// Channels [c, c + len) of a row that read one run of decays, from column ca (Inputs).
struct Run {
  int64_t c, len, ca;
};

// Appends channels [c0, c1) of C as runs, cut at every multiple of the decays' period P.
inline void append_runs(std::vector<Run>& runs, int64_t c0, int64_t c1, int64_t P, int64_t C) {
  for (int64_t c = c0; c < c1;) {
    const int64_t end = P >= C ? c1 : std::min(c1, (c / P + 1) * P);
    runs.push_back({c, end - c, c % P});
    c = end;
  }
}

// One step of n channels of a row for 16-bit storage in the whole-row layout (Pass::rows): the
// state lives in st (float, L1-resident), since the output holds it rounded. Vectors walk the
// row downwards where rows are visited in descending address order (as StoreState::row).
template <typename in_t, typename acc_t, typename Emit>
inline void staged_row(const Emit& emit, int64_t e, const in_t* __restrict__ a,
                       const in_t* __restrict__ x, acc_t* __restrict__ st, int64_t n, bool down) {
  constexpr int V = 32 / sizeof(acc_t);
  auto step = [&](int64_t j) {
    const auto v = load<V, acc_t>(a + j) * load<V, acc_t>(st + j) + load<V, acc_t>(x + j);
    store<V, acc_t, acc_t>(st + j, v);
    emit.template put_vec<V>(e + j, v);
  };
  auto one = [&](int64_t j) {
    st[j] = static_cast<acc_t>(a[j]) * st[j] + static_cast<acc_t>(x[j]);
    emit.template put_vec<1>(e + j, st[j]);
  };
  const int64_t whole = n / V * V;
  if (down) {
    for (int64_t j = n - 1; j >= whole; --j) one(j);
    for (int64_t j = whole - V; j >= 0; j -= V) step(j);
  } else {
    for (int64_t j = 0; j < whole; j += V) step(j);
    for (int64_t j = whole; j < n; ++j) one(j);
  }
}

// Registers hold KI chunks x W channels of state: KI independent dependency chains per channel
// keep both FMA pipes busy (4-cycle latency) when the channels alone are too few to. A REDUCE
// pass also carries the running product of decays, so it holds half as many chunks.
// At most this many chunks side by side: 8 ran 1.3x slower than 4 at 4 channels (each chunk is
// three more memory streams for the prefetchers to follow).
constexpr int kMaxChains = 4;

template <int W, bool REDUCE> constexpr int chunks_in_flight() {
  constexpr int scan = W >= 64 ? 1 : (64 / W > kMaxChains ? kMaxChains : 64 / W);
  return REDUCE ? (scan > 1 ? scan / 2 : 1) : scan;
}

// Steps rows [s0, s1) of the KI chunks starting at rows start[0..KI), NV vectors of VW channels
// at channel c, the last at c + last (overlapping the one before it where the tile's width is
// not a multiple of VW, as in strip_steps). st/prod: state and running product of decays of
// chunk k at st[k * ld].
template <int VW, int NV, int KI, bool REDUCE, typename in_t, typename acc_t, typename Emit>
void tile_steps(const Inputs<in_t> in, const int64_t* start, int64_t s0, int64_t s1, int64_t c,
                int64_t last, acc_t* st, acc_t* prod, int64_t ld, const Emit emit) {
  using vec = typename VecOf<VW, acc_t>::type;
  // Offsets of the vectors: constants after unrolling, but the last (kept out of an array,
  // whose runtime element made the compiler reload every offset at every step).
  auto voff = [last](int v) { return v == NV - 1 ? last : int64_t(v) * VW; };
  const in_t* __restrict__ a = in.a;
  const in_t* __restrict__ x = in.x;
  const int64_t stride = in.stride, a_stride = in.a_stride, ca = c % in.period;
  const bool like_x = in.a_like_x(), shared = a_stride == 0;
  vec h[KI][NV], p[KI][NV];
  int64_t off[KI], a_off[KI];
  for (int k = 0; k < KI; ++k) {
    for (int v = 0; v < NV; ++v) {
      h[k][v] = load<VW, acc_t>(st + k * ld + voff(v));
      if constexpr (REDUCE) p[k][v] = load<VW, acc_t>(prod + k * ld + voff(v));
    }
    off[k] = (start[k] + s0) * stride + c;
    a_off[k] = (start[k] + s0) * a_stride + ca;
  }
  for (int64_t s = s0; s < s1; ++s) {
#pragma GCC unroll 8
    for (int k = 0; k < KI; ++k) {
      const int64_t e = off[k], ea = like_x ? e : shared ? ca : a_off[k];
      off[k] += stride;
      if (!like_x && !shared) a_off[k] += a_stride;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const vec av = load<VW, acc_t>(a + ea + voff(v));
        h[k][v] = av * h[k][v] + load<VW, acc_t>(x + e + voff(v));
        if constexpr (REDUCE) {
          p[k][v] *= av;
        } else {
          emit.template put_vec<VW>(e + voff(v), h[k][v]);
        }
      }
    }
  }
  for (int k = 0; k < KI; ++k)
    for (int v = 0; v < NV; ++v) {
      store<VW, acc_t, acc_t>(st + k * ld + voff(v), h[k][v]);
      if constexpr (REDUCE) store<VW, acc_t, acc_t>(prod + k * ld + voff(v), p[k][v]);
    }
}

// Steps the first n / 4 * 4 rows of one vector of channels (a, x and emit at its first row), the
// state in h, and returns how many it stepped. A row of one vector is one dependency chain, an
// FMA's latency per row (4 cycles) while the FMA pipes sit mostly idle. So each group of four
// rows is first folded, off the chain, into h -> A h + X (A = a3 a2 a1 a0, X = the state the
// group reaches from zero; prefix products give its other three rows the same way), and the
// chain takes one FMA per four rows: 10 FMAs or multiplies per group instead of 4, all but one
// independent of the state. Rounding differs from the plain loop's as any regrouping does
// (Algorithm 1 regroups the same way at every chunk boundary). Measured, Zen 4 EPYC VM, one
// thread, fp32, T = 65536, the kernel writing into a given output: 1 channel 84 -> 36 us, 2
// channels 85 -> 45, 4 channels 80 -> 47 (torch.mul: 12, 21 and 37 us), 8 channels 96 -> 83,
// where the L3 already bounds it. Two vectors and more are chains enough by themselves.
// Never inlined: inside Pass::group, among the registers of every other path, it spilled its
// operands to the stack and reloaded them each group (4 channels, T = 65536, one thread, Zen 4
// VM, the kernel called from C++ in one process with both builds: 63-65 -> 46-47 us, torch.mul
// 36-39 us).
template <int VW, typename acc_t, typename in_t, typename Emit>
__attribute__((noinline)) int64_t lookahead_steps(const in_t* __restrict__ a,
                                                  const in_t* __restrict__ x, int64_t stride,
                                                  int64_t a_stride, int64_t n,
                                                  typename VecOf<VW, acc_t>::type& h,
                                                  const Emit emit) {
  using vec = typename VecOf<VW, acc_t>::type;
  vec hv = h;
  int64_t s = 0, e = 0, ea = 0;
  for (; s + 4 <= n; s += 4, e += 4 * stride, ea += 4 * a_stride) {
    const vec a0 = load<VW, acc_t>(a + ea), a1 = load<VW, acc_t>(a + ea + a_stride);
    const vec a2 = load<VW, acc_t>(a + ea + 2 * a_stride);
    const vec a3 = load<VW, acc_t>(a + ea + 3 * a_stride);
    const vec x0 = load<VW, acc_t>(x + e), x1 = load<VW, acc_t>(x + e + stride);
    const vec x2 = load<VW, acc_t>(x + e + 2 * stride), x3 = load<VW, acc_t>(x + e + 3 * stride);
    const vec A1 = a1 * a0, A2 = a2 * A1, A3 = a3 * A2;
    const vec X1 = a1 * x0 + x1, X2 = a2 * X1 + x2, X3 = a3 * X2 + x3;
    emit.template put_vec<VW>(e, a0 * hv + x0);
    emit.template put_vec<VW>(e + stride, A1 * hv + X1);
    emit.template put_vec<VW>(e + 2 * stride, A2 * hv + X2);
    hv = A3 * hv + X3;
    emit.template put_vec<VW>(e + 3 * stride, hv);
  }
  h = hv;
  return s;
}

// Rows of one float leave most of a vector idle in lookahead_steps, one lane of eight (and the
// 16-bit storage types went through a scalar conversion per element). Where such rows lie back
// to back, one 32-byte vector holds m = 8 consecutive rows instead and is scanned within itself
// in log2(m) steps (lane j folds in lane j - D for D = 1, 2, 4, beside the running product of
// decays), after which one FMA applies the state carried out of the vector before:
// h = A * bcast(carry) + X. The general form takes m = W / R rows of R channels, but with four
// rows a vector or fewer the shuffles cost more than they save. Rounding differs from the loop's
// as any regrouping does; a zero shifted in meets a decay as 0 * a, so an infinite decay gives
// NaN where the loop has +-inf, as docs/op.md allows from that step on, and, as in
// lookahead_steps, a product of decays that overflows over one vector's rows (decays above 2^16)
// meets a zero carry as inf * 0. Measured on the Emerald Rapids VM, one thread, T = 65536, the
// op into a given output, old and new library in alternating processes (12 pairs, median of the
// pairwise ratios): float32 forward 0.60x the old time, reverse 0.55x, backward 0.51x; bfloat16
// 0.20-0.26x. With four rows a vector (two floats, one double) a C++ loop ran 0.69-0.71 ns per
// row against lookahead_steps' 0.87-0.91 (two floats), but the op showed no gain beyond the
// host's noise (0.7-1.3x over three pairs), and with two (four floats) the loop ran 1.34 against
// 0.87; so those keep lookahead_steps, and the baseline build's 16-byte vectors never pack. With
// 64-byte vectors, which the shipped builds do not use (setup.py), one float a row reached
// 0.32-0.36 ns per row in the C++ loop against 0.45-0.48 with 32 bytes.
// cpu_parallel's reductions pack the same rows (REDUCE), and such rows never take its in-thread
// chunks (Scanner::ilp_chunks), whose register tiles stepped them one lane per chain. Same VM,
// fp32, one float a row, the op into a given output, old and new library in 6 alternating pairs
// of processes: 2 threads, forward 0.83x the time at T = 65536 and 0.84x at 262144, reverse
// 0.82x and 0.90x (the serial control 1.02x); with the in-thread chunks on, as the Zen 4 VM's
// calibration chose them, 0.40x on 2 threads and 0.28x on one.
constexpr int kPackBytes =
#if defined(__AVX__)
    32;
#else
    16;
#endif
// Whether rows of R channels of acc_t_bytes each go eight to a vector (with their decays laid
// out as Inputs::packable_decays says).
constexpr bool packs_rows(int64_t R, int64_t acc_t_bytes) {
  return R * acc_t_bytes * 8 <= kPackBytes;
}
template <int R, typename acc_t> constexpr bool kPacksRows = packs_rows(R, sizeof(acc_t));

template <int W, typename acc_t> struct MaskOf {
  using lane = std::conditional_t<sizeof(acc_t) == 4, int32_t, int64_t>;
  typedef lane type __attribute__((vector_size(W * sizeof(acc_t))));
};

// Lane i of v takes lane i - D (i + D when DOWN, rows in descending address order), or fill's
// lane i where that lies outside the vector.
template <int D, bool DOWN, typename V, int... I>
inline V shift_lanes(const V& v, const V& fill, std::integer_sequence<int, I...>) {
  constexpr int W = sizeof...(I);
  using M = typename MaskOf<W, std::remove_cv_t<std::remove_reference_t<decltype(v[0])>>>::type;
  return __builtin_shuffle(v, fill, M{(DOWN ? (I + D < W ? I + D : W + I)
                                            : (I >= D ? I - D : W + I))...});
}

// Every row of v set to its last row in scan order (the top R lanes, the bottom R when DOWN).
template <int R, bool DOWN, typename V, int... I>
inline V last_row(const V& v, std::integer_sequence<int, I...>) {
  constexpr int W = sizeof...(I);
  using M = typename MaskOf<W, std::remove_cv_t<std::remove_reference_t<decltype(v[0])>>>::type;
#if defined(__AVX2__)
  // One vpermps. GCC's own choice for the top lane, a permute within each half and a swap of the
  // halves, is a cycle longer on the carry's dependency chain (Emerald Rapids VM, one float a
  // row, in a C++ loop: 0.46 -> 0.40 ns per row).
  if constexpr (W == 8 && sizeof(v[0]) == 4 && !DOWN) {
    return bits_as<V>(_mm256_permutevar8x32_ps(bits_as<__m256>(v),
                                               bits_as<__m256i>(M{(W - R + I % R)...})));
  }
#endif
  return __builtin_shuffle(v, M{(DOWN ? I % R : W - R + I % R)...});
}

// x <- the scan of the vector's rows from a zero state, a <- their running products.
template <int D, bool DOWN, typename V, typename Lanes>
inline void scan_lanes(V& a, V& x, Lanes lanes) {
  if constexpr (D < int(sizeof(V) / sizeof(a[0]))) {
    const V zero{}, one = zero + 1;
    x = a * shift_lanes<D, DOWN>(x, zero, lanes) + x;
    a = a * shift_lanes<D, DOWN>(a, one, lanes);
    scan_lanes<2 * D, DOWN>(a, x, lanes);
  }
}

// Steps the first n / m * m of n rows of R channels that lie back to back (ascending from the
// first row's a and x, descending when DOWN), the state in h; returns how many it stepped.
// Decays are read per row, or, with `shared`, the one row at `a` for every step. A REDUCE pass
// emits nothing and multiplies p by the rows' decays, carrying the running product as the
// state is carried: vectors of prefix products, whose last row goes into the next vector.
template <int R, typename acc_t, bool DOWN, bool REDUCE, typename in_t, typename Emit>
__attribute__((noinline)) int64_t packed_steps(const in_t* __restrict__ a,
                                               const in_t* __restrict__ x, bool shared,
                                               int64_t n, typename VecOf<R, acc_t>::type& h,
                                               typename VecOf<R, acc_t>::type& p,
                                               const Emit emit) {
  constexpr int W = kPackBytes / int(sizeof(acc_t)), m = W / R;
  using vec = typename VecOf<W, acc_t>::type;
  constexpr auto lanes = std::make_integer_sequence<int, W>{};
  auto lane_of = [](const typename VecOf<R, acc_t>::type& v, int i) {
    if constexpr (R == 1) return v; else return v[i];
  };
  vec carry, tile, product{};
  for (int i = 0; i < W; ++i) {
    carry[i] = lane_of(h, i % R);
    tile[i] = shared ? static_cast<acc_t>(a[i % R]) : acc_t(0);
    if constexpr (REDUCE) product[i] = lane_of(p, i % R);
  }
  // Two loops, so that with shared decays their scan (the same every vector) leaves the loop.
  auto run = [&](auto shared_decays) {
    int64_t s = 0;
    for (; s + m <= n; s += m) {
      const int64_t base = DOWN ? -(s + m - 1) * R : s * R;  // the vector's lowest element
      vec av = decltype(shared_decays)::value ? tile : load<W, acc_t>(a + base);
      vec xv = load<W, acc_t>(x + base);
      scan_lanes<R, DOWN>(av, xv, lanes);  // D = R: one row, then 2, 4, ...
      carry = av * last_row<R, DOWN>(carry, lanes) + xv;
      if constexpr (REDUCE) {
        product = av * last_row<R, DOWN>(product, lanes);
      } else {
        emit.template put_vec<W>(base, carry);
      }
    }
    return s;
  };
  const int64_t s = shared ? run(std::true_type{}) : run(std::false_type{});
  if constexpr (R == 1) {
    h = carry[DOWN ? 0 : W - 1];
    if constexpr (REDUCE) p = product[DOWN ? 0 : W - 1];
  } else {
    for (int i = 0; i < R; ++i) {
      h[i] = carry[DOWN ? i : W - R + i];
      if constexpr (REDUCE) p[i] = product[DOWN ? i : W - R + i];
    }
  }
  return s;
}

// Steps rows [s0, s1) of the chunk starting at row `start` for one strip of NV vectors of VW
// channels at channel c (within one period of the decays), the strip's state in registers for
// the rows (st/prod: C values at channel 0 of the chunk's state). Vector v starts at channel
// c + v * VW, the last at c + last: where the strip's width is not a multiple of VW its last
// vector overlaps the one before it, so those channels are stepped twice from the same state
// with the same instructions and written twice with the same values, and a row of any width
// up to one strip is walked once. (Rows of 24, 40, 48 or 56 floats, cut into strips of 32, 16
// and 8, ran at 0.54-0.70 of torch.mul from memory on the Zen 4 VM, where 32 and 64 ran at
// 0.82-0.94: the prefetchers lose a block's extra streams.)
template <int VW, int NV, bool REDUCE, typename in_t, typename acc_t, typename Emit>
void strip_steps(const Inputs<in_t> in, int64_t start, int64_t s0, int64_t s1, int64_t c,
                 int64_t last, acc_t* st, acc_t* prod, const Emit emit) {
  using vec = typename VecOf<VW, acc_t>::type;
  const in_t* __restrict__ a = in.a;
  const in_t* __restrict__ x = in.x;
  const int64_t stride = in.stride, a_stride = in.a_stride;
  auto off = [last](int v) { return v == NV - 1 ? last : int64_t(v) * VW; };  // as in tile_steps
  vec h[NV], p[NV];
  for (int v = 0; v < NV; ++v) {
    h[v] = load<VW, acc_t>(st + c + off(v));
    if constexpr (REDUCE) p[v] = load<VW, acc_t>(prod + c + off(v));
  }
  int64_t e = (start + s0) * stride + c, ea = (start + s0) * a_stride + c % in.period;
  int64_t s = s0;
  if constexpr (NV == 1 && kPacksRows<VW, acc_t>) {
    // Whole rows back to back, their decays too or one row for every step (packed_steps).
    if (c == 0 && (stride == VW || stride == -VW) && in.packable_decays()) {
      const int64_t n = s1 - s0;
      const int64_t done =
          stride > 0
              ? packed_steps<VW, acc_t, false, REDUCE>(a + ea, x + e, a_stride == 0, n, h[0],
                                                       p[0], emit.shifted(e))
              : packed_steps<VW, acc_t, true, REDUCE>(a + ea, x + e, a_stride == 0, n, h[0],
                                                      p[0], emit.shifted(e));
      s += done;
      e += done * stride;
      ea += done * a_stride;
    }
  }
  if constexpr (!REDUCE && NV == 1) {
    const int64_t done = lookahead_steps<VW, acc_t>(a + ea, x + e, stride, a_stride, s1 - s,
                                                    h[0], emit.shifted(e));
    s += done;
    e += done * stride;
    ea += done * a_stride;
  }
  for (; s < s1; ++s, e += stride, ea += a_stride) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const vec av = load<VW, acc_t>(a + ea + off(v));
      h[v] = av * h[v] + load<VW, acc_t>(x + e + off(v));
      if constexpr (REDUCE) {
        p[v] *= av;
      } else {
        emit.template put_vec<VW>(e + off(v), h[v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    store<VW, acc_t, acc_t>(st + c + off(v), h[v]);
    if constexpr (REDUCE) store<VW, acc_t, acc_t>(prod + c + off(v), p[v]);
  }
}

// Rows wider than one strip (float, double) are stepped one of two ways, whichever the CPU runs
// faster (wide_rows_layout, measured once per CPU by calibration.py):
//   sequential  Pass::rows: whole rows one after the other, each step reading the previous state
//               back from the row just written, so memory sees torch.mul's three sequential
//               streams, and rows in descending address order (reverse scans, the backward) are
//               walked from their end, so the streams stay descending end to end.
//   strips      blocks of a few rows: within a block, register tiles of up to kStripVectors
//               vectors of channels (strip_steps) walk its rows one strip after the other, so the
//               state stays in registers and each element costs two loads and a store.
// Measured fp32 forward against torch.mul(out=), one thread, the kernel called from C++:
//   Skylake-SP VM: strips 0.91-0.99 at (512, 1024), (4096, 128), (256, 4096), (1024, 1024)
//     and (65536, 1024), where whole rows with the state in an L1 buffer (a load and a store of
//     it per element more than sequential's) ran at 0.66-0.89.
//   Zen 4 (EPYC) VM: strips 0.55-0.65 at (65536, 128) and (65536, 1024) and 0.8 in cache;
//     sequential 0.9-1.06, and 0.85-0.87 in cache. Every block length from 2 to 256 rows
//     was as slow: this core's prefetchers lose the 2R streams of a block. Reverse scans and the
//     backward ran at 0.35-0.45 walking each row upwards, 0.9-1.1 walking it down.
// Narrow rows (one strip or less) always take strips: their state chain is latency-bound, which
// reading it back from memory would lengthen. Strip blocks span about 16 KiB of each input (at
// least 4 rows): on the Skylake-SP VM 8 or more rows of 4 KiB, all at one page offset, ran at
// half speed.
constexpr int kStripVectors = 8;
inline int64_t strip_rows(int64_t row_bytes) {
  return std::clamp<int64_t>((int64_t(1) << 14) / std::max<int64_t>(1, row_bytes), 4, 256);
}

// Cuts channels [c0, c1) into runs of vectors, each walked over the rows once: whole runs of W
// channels while more than one remains, then one run for the rest in vectors of the widest width
// that fits (V, else 4, 2, 1), its last vector overlapping the one before it where the rest is
// not a multiple of that width (strip_steps). Calls visit(VW, NV, c, last) for each run, VW and
// NV as std::integral_constant, the last vector at c + last.
template <int VW, int NV, typename Visit>
void vector_run(int64_t c, int64_t nv, int64_t last, const Visit& visit) {
  if constexpr (NV > 1) {
    if (nv < NV) return vector_run<VW, NV - 1>(c, nv, last, visit);
  }
  visit(std::integral_constant<int, VW>{}, std::integral_constant<int, NV>{}, c, last);
}

template <int V, int W, typename Visit>
void cut_row(int64_t c0, int64_t c1, const Visit& visit) {
  int64_t c = c0;
  for (; c1 - c > W; c += W) vector_run<V, W / V>(c, W / V, W - V, visit);
  const int64_t n = c1 - c;
  if (n >= V) {
    vector_run<V, W / V>(c, (n + V - 1) / V, n - V, visit);
  } else if (V > 4 && n >= 4) {
    vector_run<4, 2>(c, (n + 3) / 4, n - 4, visit);
  } else if (n >= 2) {
    vector_run<2, 2>(c, (n + 1) / 2, n - 2, visit);
  } else if (n == 1) {
    vector_run<1, 1>(c, 1, 0, visit);
  }
}

constexpr int64_t kNarrowMax = 64;    // up to this many channels, chunks run side by side (tiles)
constexpr int64_t kMinChunk = 16;     // shortest time chunk worth a chunk of its own
constexpr int64_t kInterleaveBytes = 512;  // scan_and_reduce alternates in pieces this long
constexpr int64_t kReduceBlockBytes = int64_t(1) << 20;  // reduce_rows' blocks of inputs
constexpr int64_t kForgetCheck = 64;  // rows_to_forget tests its products this often
constexpr int64_t kForgetRateRows = 64;  // ... and judges their rate from this many rows on
constexpr int64_t kForgetShare = 8;  // scan_forgetting: chunks forget within 1/8 of their rows
constexpr int64_t kMeetBlockBytes = int64_t(1) << 16;  // scan_until_met compares this often
// scan_forgetting: the largest carry that times a product of decays below the smallest normal
// number (1.2e-38 in float) stays below any float rounding: 2^64 x 2^-126 = 2^-62.
template <typename acc_t> constexpr acc_t kForgetCarryMax = acc_t(18446744073709551616.0);

struct Chunks {
  std::vector<int64_t> start, len;
  int64_t count() const { return static_cast<int64_t>(start.size()); }
};

template <typename in_t, typename acc_t, typename Emit> struct Pass {
  Inputs<in_t> in;
  const Chunks& chunks;
  int64_t C;
  acc_t* st;    // K x C
  acc_t* prod;  // K x C (REDUCE only)
  const Emit& emit;
  // Other threads step other channels of the same rows meanwhile, within the same pages: then
  // wide rows take strips whatever the layout (the channel split in scan() says why).
  bool interleaved = false;

  // Steps [s0, s1) of chunks [ka, kb), KI at a time, then the remainder by halves.
  template <int VW, int NV, int KI, bool REDUCE>
  void run_set(int64_t ka, int64_t kb, int64_t s0, int64_t s1, int64_t c, int64_t last) const {
    int64_t k = ka;
    for (; k + KI <= kb; k += KI)
      tile_steps<VW, NV, KI, REDUCE>(in, &chunks.start[k], s0, s1, c, last, st + k * C + c,
                                     REDUCE ? prod + k * C + c : nullptr, C, emit);
    if constexpr (KI > 1) run_set<VW, NV, KI / 2, REDUCE>(k, kb, s0, s1, c, last);
  }

  // Tiles of NV vectors of VW at channel c, the last at c + last. Chunks share one length except
  // a shorter final chunk: run the common steps on all of them, then the rest of the longer ones.
  template <int VW, int NV, bool REDUCE> void tiles(int64_t k0, int64_t k1, int64_t c,
                                                    int64_t last) const {
    constexpr int KI = chunks_in_flight<VW * NV, REDUCE>();
    const int64_t common = chunks.len[k1 - 1], full = chunks.len[k0];
    run_set<VW, NV, KI, REDUCE>(k0, k1, 0, common, c, last);
    if (full > common) run_set<VW, NV, KI, REDUCE>(k0, k1 - 1, common, full, c, last);
  }

  // Chunks [k0, k1) x channels [c0, c1), all on the calling thread: several chunks of narrow
  // rows as register tiles over each chunk's whole length, anything else strip by strip.
  template <bool REDUCE> void group(int64_t k0, int64_t k1, int64_t c0, int64_t c1) const {
    const int64_t P = in.period;
    if constexpr (!REDUCE) {
      if (!interleaved && c1 - c0 > kStripVectors * int64_t(32 / sizeof(acc_t)) &&
          wide_rows_layout().load(std::memory_order_relaxed) == kWideRowsSequential) {
        for (int64_t k = k0; k < k1; ++k) rows(k, c0, c1);
        return;
      }
    }
    if (c1 - c0 > kNarrowMax || k1 - k0 == 1) {
      const int64_t R = strip_rows(C * int64_t(sizeof(in_t)));
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t s0 = 0; s0 < chunks.len[k]; s0 += R) {
          const int64_t s1 = std::min(chunks.len[k], s0 + R);
          for (int64_t c = c0; c < c1;) {
            const int64_t end = P >= C ? c1 : std::min(c1, (c / P + 1) * P);
            strips<REDUCE>(k, s0, s1, c, end);
            c = end;
          }
        }
      return;
    }
    // Register tiles must not straddle a period of the decays (Inputs).
    for (int64_t c = c0; c < c1;) {
      const int64_t end = P >= C ? c1 : std::min(c1, (c / P + 1) * P);
      narrow<REDUCE>(k0, k1, c, end);
      c = end;
    }
  }

  // Every row of chunk k, channels [c0, c1), one row after the other: each step reads the
  // previous state back from the row just emitted (an L1 hit), so memory sees the three
  // sequential streams of torch.mul. 16-bit storage rounds the state it emits, so there the
  // state stays in the chunk's float buffer instead (staged_row).
  void rows(int64_t k, int64_t c0, int64_t c1) const {
    std::vector<Run> runs;
    append_runs(runs, c0, c1, in.period, C);
    const int64_t start = chunks.start[k], len = chunks.len[k];
    acc_t* state = st + k * C;
    const bool down = in.stride < 0;
    for (int64_t s = 0; s < len; ++s) {
      const int64_t row = (start + s) * in.stride, a_row = (start + s) * in.a_stride;
      for (size_t i = 0; i < runs.size(); ++i) {
        const Run& r = down ? runs[runs.size() - 1 - i] : runs[i];
        if constexpr (std::is_same_v<in_t, acc_t>) {
          const acc_t* prev = s == 0 ? state + r.c : emit.state_at(row - in.stride + r.c);
          emit.row(row + r.c, in.a + a_row + r.ca, in.x + row + r.c, prev, r.len, down);
        } else {
          staged_row(emit, row + r.c, in.a + a_row + r.ca, in.x + row + r.c, state + r.c, r.len,
                     down);
        }
      }
    }
    if constexpr (std::is_same_v<in_t, acc_t>) {
      const int64_t last = (start + len - 1) * in.stride;
      for (const Run& r : runs) std::copy_n(emit.state_at(last + r.c), r.len, state + r.c);
    }
  }

  // Rows [s0, s1) of chunk k, channels [c0, c1) (within one period of the decays), in strips of
  // up to kStripVectors vectors (cut_row).
  template <bool REDUCE> void strips(int64_t k, int64_t s0, int64_t s1, int64_t c0,
                                     int64_t c1) const {
    constexpr int V = int(32 / sizeof(acc_t));
    cut_row<V, kStripVectors * V>(c0, c1, [&](auto vw, auto nv, int64_t c, int64_t last) {
      strip_steps<decltype(vw)::value, decltype(nv)::value, REDUCE>(
          in, chunks.start[k], s0, s1, c, last, st + k * C, REDUCE ? prod + k * C : nullptr, emit);
    });
  }

  // Channels [c0, c1) (at most kNarrowMax) of chunks [k0, k1) as register tiles of up to 32
  // channels (cut_row).
  template <bool REDUCE> void narrow(int64_t k0, int64_t k1, int64_t c0, int64_t c1) const {
    cut_row<int(32 / sizeof(acc_t)), 32>(c0, c1, [&](auto vw, auto nv, int64_t c, int64_t last) {
      tiles<decltype(vw)::value, decltype(nv)::value, REDUCE>(k0, k1, c, last);
    });
  }
};

// Smallest distance, modulo 4 KiB, between the starts of the first chunks run side by side.
int64_t start_spread(int64_t L, int64_t row_bytes, int64_t count) {
  int64_t offs[8];
  for (int64_t k = 0; k < count; ++k) offs[k] = k * L * row_bytes % 4096;
  std::sort(offs, offs + count);
  int64_t spread = 4096 - offs[count - 1] + offs[0];
  for (int64_t k = 1; k < count; ++k) spread = std::min(spread, offs[k] - offs[k - 1]);
  return spread;
}

// Cuts rows [s0, s0 + n) into `want` chunks (fewer if they would be shorter than kMinChunk):
// equal lengths L but a shorter last one. The chunks run side by side as separate streams, so
// L is chosen to spread their starts over the 4 KiB that pick L1 sets and store-to-load
// aliasing; equal page offsets thrash one set (measured: 7x slower at 4 channels, T = 65536).
Chunks plan_chunks(int64_t s0, int64_t n, int64_t want, int64_t row_bytes) {
  want = std::max<int64_t>(1, std::min(want, n / kMinChunk));
  int64_t L = (n + want - 1) / want;
  if (want > 1 && row_bytes > 0) {
    const int64_t side_by_side = std::min<int64_t>(want, 8);
    const int64_t good = 4096 / side_by_side / 2;
    const int64_t last = std::min((n - 1) / (want - 1), L + 1024);
    int64_t best = L, best_spread = start_spread(L, row_bytes, side_by_side);
    for (int64_t cand = L + 1; cand <= last && best_spread < good; ++cand) {
      const int64_t spread = start_spread(cand, row_bytes, side_by_side);
      if (spread > best_spread) best = cand, best_spread = spread;
    }
    L = best;
  }
  Chunks ch;
  for (int64_t s = 0; s < n; s += L) {
    ch.start.push_back(s0 + s);
    ch.len.push_back(std::min(L, n - s));
  }
  return ch;
}

// The map h -> p h + r of a stretch of steps (p: the product of its decays, r: the state it
// reaches from zero) applied to the state h entering it. A zero h gives r, as the serial loop
// does: it never multiplies that state by p, which overflows to inf for decays above 1 over a
// long stretch (2^128 for float32), and inf * 0 would put NaN where the loop has r (a zero
// state through decays of 2 and zero inputs stayed 0 serially and became NaN in every later
// chunk). A NaN or infinite decay in the stretch still reaches r, computed from zero through it.
template <typename T> inline T apply_map(T p, T h, T r) { return h == T(0) ? r : p * h + r; }

// Folds chunk totals in time order: st[k] (state reached from 0) becomes the carry into chunk
// k, `carry` (C values) goes in as the state before chunk 0 and comes out as the state after
// the last chunk.
template <typename acc_t>
void carry_scan(int64_t K, int64_t C, acc_t* st, const acc_t* prod, acc_t* carry) {
  for (int64_t k = 0; k < K; ++k) {
    acc_t* s = st + k * C;
    const acc_t* p = prod + k * C;
    for (int64_t c = 0; c < C; ++c) {
      const acc_t reached = s[c];
      s[c] = carry[c];
      carry[c] = apply_map(p[c], carry[c], reached);
    }
  }
}

template <typename in_t, typename acc_t, typename Emit> struct Scanner {
  Inputs<in_t> in;
  int64_t C;
  Emit emit;

  // Chunks that keep every FMA pipe busy: chunks_in_flight<W, false>() of the widest tile of C
  // channels; one when the channels are wide enough by themselves, and one for rows that
  // packed_steps scans several to a vector, whose one chain already runs ahead of memory and
  // which register tiles would step one lane at a time.
  int64_t row_bytes() const { return C * int64_t(sizeof(in_t)); }

  int64_t ilp_chunks() const {
    if (packs_rows(C, sizeof(acc_t)) && in.packable_decays()) return 1;
    return C < 32 ? kMaxChains : C <= kNarrowMax ? 2 : 1;
  }

  // Rows per block for the in-thread Algorithm 1: decays and impulses of a block fill about
  // half of L2, so its second read (the re-scan) hits cache.
  int64_t block_rows() const {
    return std::max<int64_t>(256, (int64_t(1) << 18) / (2 * C * int64_t(sizeof(in_t))));
  }

  // Product of decays P and state reached from zero R over rows [s0, s0 + n), channels all.
  void reduce(int64_t s0, int64_t n, acc_t* R, acc_t* P) const {
    const Chunks chunks = plan_chunks(s0, n, ilp_chunks(), row_bytes());
    const int64_t K = chunks.count();
    Buffer<acc_t> st(K * C, acc_t(0)), prod(K * C, acc_t(1));
    Pass<in_t, acc_t, Emit> pass{in, chunks, C, st.data(), prod.data(), emit};
    pass.template group<true>(0, K, 0, C);
    std::fill(R, R + C, acc_t(0));
    std::fill(P, P + C, acc_t(1));
    carry_scan(K, C, st.data(), prod.data(), R);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) P[c] *= prod[k * C + c];
  }

  // Product of decays P and state reached from zero R over rows [r0, r0 + m), channels all, a
  // whole row after the other and each row in the direction the rows are visited, so that memory
  // sees two sequential streams. From memory on the Zen 4 VM, the register strips of reduce()
  // lost the prefetchers' streams (as the strips layout of scans does, Pass::group): a time-split
  // scan in descending rows (the backward, reverse scans) at (65536, 128) took 5.4-6.2 ms with
  // them and 4.4 ms with whole rows, and its backward went from 0.69-0.73 to 0.74-0.80 of y = a *
  // x's backward (2 threads, both builds called from C++ in one process, alternating).
  // The rows go by blocks of kReduceBlockBytes, the last block first, each from zero and folded
  // into the map of the blocks after it: the time split scans these rows again from their first
  // one, so what stays cached of them (the rows read last) is then what the scan reads first,
  // where rows reduced in order leave their end cached and the scan evicts it before getting
  // there. Zen 4 VM, 2 threads, (65536, 128) and (65536, 1024) forward and reversed, A/B as
  // above over 24 alternating runs: 0.87-1.20x, median 1.04x.
  void reduce_rows(int64_t r0, int64_t m, acc_t* R, acc_t* P) const {
    Buffer<acc_t> reached(C, acc_t(0)), product(C, acc_t(1));  // R and P: slices at any offset
    const bool down = in.stride < 0;
    std::vector<Run> runs;
    append_runs(runs, 0, C, in.period, C);
    if (down) std::reverse(runs.begin(), runs.end());
    const int64_t block = std::max<int64_t>(1, kReduceBlockBytes / (2 * row_bytes()));
    std::fill(R, R + C, acc_t(0));  // the map of the blocks after this one: h -> P h + R
    std::fill(P, P + C, acc_t(1));
    for (int64_t b0 = r0 + (m - 1) / block * block; b0 >= r0; b0 -= block) {
      std::fill(reached.begin(), reached.end(), acc_t(0));
      std::fill(product.begin(), product.end(), acc_t(1));
      for (int64_t q = b0; q < std::min(b0 + block, r0 + m); ++q)
        for (const Run& r : runs)
          step_row(in.a + q * in.a_stride + r.ca, in.x + q * in.stride + r.c,
                   reached.data() + r.c, r.len, product.data() + r.c, down);
      for (int64_t c = 0; c < C; ++c) {
        R[c] = apply_map(P[c], reached[c], R[c]);
        P[c] *= product[c];
      }
    }
  }

  // The rows from s0 (in scan order), at most `limit`, after which the product of every
  // channel's decays is below 2^target (by default zero: the caller flushes subnormals, so a
  // product below the smallest normal number is zero), or -1 where that takes more rows. Rows
  // of decays narrower than 16 values lie several to a block of lcm(width, 16) lanes that one
  // vectorised loop multiplies in, lane l holding a partial product of column l % width (the
  // product of a column is that of its lanes, checked every kForgetCheck rows); wider rows are
  // one block each. At 4 channels a row-by-row loop took 0.45 ns per row (Emerald Rapids VM),
  // as long as 7900 rows of sigmoid(N(5, 1)) gates took to forget, on the critical path of a
  // 50 us call. Lanes go 16 at a time through registers, with two products each over alternate
  // blocks: kept in memory, each block's multiply waited on the last one's store, and with
  // checks every 16 rows the forward at (262144, 4) took 1.15-1.17x as long under
  // sigmoid(N(5, 1)) gates as under U[0, 1); now 1.08-1.12x (Zen 4 VM, 2 threads, the op into a
  // given output, medians of 20 rounds, three processes of each build in turn).
  int64_t rows_to_forget(int64_t s0, int64_t limit,
                         int target = std::numeric_limits<acc_t>::min_exponent - 1) const {
    const int64_t R = in.a_stride < 0 ? -in.a_stride : in.a_stride;  // 0: one row every step
    const int64_t width = R ? R : in.period;
    const int64_t g = R > 0 && R < 16 ? 16 / std::gcd(R, int64_t(16)) : 1;  // rows per block
    const int64_t L = g * width, rows_end = limit / g * g;
    Buffer<acc_t> lanes(L, acc_t(1));
    acc_t* __restrict__ p = lanes.data();
    // The block's lowest address: its first row in scan order, its last where rows descend.
    auto block = [&](int64_t i) -> const in_t* {
      return in.a + (s0 + i + (in.a_stride < 0 ? g - 1 : 0)) * in.a_stride;
    };
    for (int64_t i = 0; i < rows_end;) {
      const int64_t end = std::min(rows_end, i + kForgetCheck);  // end - i: a multiple of g
      int64_t l0 = 0;
      for (; l0 + 16 <= L; l0 += 16) {
        acc_t even[16], odd[16];
        for (int j = 0; j < 16; ++j) even[j] = p[l0 + j], odd[j] = acc_t(1);
        int64_t k = i;
        for (; k + 2 * g <= end; k += 2 * g) {
          const in_t* __restrict__ a0 = block(k) + l0;
          const in_t* __restrict__ a1 = block(k + g) + l0;
          for (int j = 0; j < 16; ++j) {
            even[j] *= static_cast<acc_t>(a0[j]);
            odd[j] *= static_cast<acc_t>(a1[j]);
          }
        }
        if (k < end) {
          const in_t* __restrict__ a0 = block(k) + l0;
          for (int j = 0; j < 16; ++j) even[j] *= static_cast<acc_t>(a0[j]);
        }
        for (int j = 0; j < 16; ++j) p[l0 + j] = even[j] * odd[j];
      }
      for (; l0 < L; ++l0)
        for (int64_t k = i; k < end; k += g) p[l0] *= static_cast<acc_t>(block(k)[l0]);
      i = end;
      acc_t largest = 0;
      for (int64_t c = 0; c < width; ++c) {
        acc_t column = p[c];
        for (int64_t l = c + width; l < L; l += width) column *= p[l];
        if (std::isnan(column)) return -1;
        largest = std::max(largest, std::abs(column));
      }
      if (largest == acc_t(0) || std::ilogb(largest) < target) return i;
      // Where the products shrink too slowly to reach the target within the limit at the rate
      // of the rows so far, stop at once: decays near 1 then cost one check.
      if (i >= kForgetRateRows) {
        const int64_t e = std::ilogb(largest);  // negative while they shrink
        if (e >= 0 || i * target < e * rows_end)
          return -1;
      }
    }
    return -1;
  }

  // Scans rows [s0, s0 + n) over every channel from `state` (updated in place), emitting every
  // step, and at the same time reduces rows [r0, r0 + m) to the state R they reach from zero and
  // the product P of their decays: the scan's reads hit cache (its rows were reduced earlier)
  // while it writes, and the reduction streams the next rows in from memory, so the core keeps
  // reads and writes in flight together. The two alternate every kInterleaveBytes of a row:
  // whole rows of 4 KiB left the memory stream idle while the scan ran from cache (one thread of
  // this schedule moved 0.6 of what a single pass moves at (65536, 1024) fp32; in 512-byte
  // pieces 0.75-0.8, and 2 threads went from 0.62-0.66 to 0.77-0.80 of torch.mul's bandwidth,
  // Skylake-SP VM, a standalone copy of these loops). Finer pieces cost more in loop overhead
  // than they gain (256 bytes the same, 128 bytes 0.66, 64 bytes 0.47); visiting a row's pieces
  // in another order than the scan's, to keep the reduction's loads off the page offsets of the
  // scan's stores, was slower, as it breaks the prefetcher's sequential stream.
  // With m = 0 it only scans (R and P may then be null), as the time split does from memory.
  void scan_and_reduce(int64_t s0, int64_t n, acc_t* state, int64_t r0, int64_t m, acc_t* R,
                       acc_t* P) const {
    if (m > 0) {
      std::fill(R, R + C, acc_t(0));
      std::fill(P, P + C, acc_t(1));
    }
    const in_t* __restrict__ a = in.a;
    const in_t* __restrict__ x = in.x;
    // The row in runs that read one run of decays each, cut at every piece too, in the order
    // they are visited: from the row's end where rows descend, so that every stream does.
    const bool down = in.stride < 0, nt = emit.streams_lines(row_bytes());
    std::vector<Run> runs;
    std::vector<size_t> piece_end;
    const int64_t piece = std::max<int64_t>(16, kInterleaveBytes / int64_t(sizeof(in_t)));
    const int64_t pieces = (C + piece - 1) / piece;
    for (int64_t p = 0; p < pieces; ++p) {
      const int64_t c0 = (down ? pieces - 1 - p : p) * piece;
      const size_t first = runs.size();
      append_runs(runs, c0, std::min(C, c0 + piece), in.period, C);
      if (down) std::reverse(runs.begin() + first, runs.end());
      piece_end.push_back(runs.size());
    }
    for (int64_t i = 0; i < std::max(n, m); ++i) {
      const int64_t r = s0 + i, q = r0 + i;
      size_t k0 = 0;
      for (const size_t k1 : piece_end) {
        if (i < n)
          for (size_t k = k0; k < k1; ++k)
            emit.scan_row(r * in.stride + runs[k].c, a + r * in.a_stride + runs[k].ca,
                          x + r * in.stride + runs[k].c, state + runs[k].c, runs[k].len, down,
                          nt);
        if (i < m)
          for (size_t k = k0; k < k1; ++k) {
            const in_t* __restrict__ ar = a + q * in.a_stride + runs[k].ca;
            const in_t* __restrict__ xr = x + q * in.stride + runs[k].c;
            step_row(ar, xr, R + runs[k].c, runs[k].len, P + runs[k].c, down);
          }
        k0 = k1;
      }
    }
  }

  // Scans rows [s0, s0 + n) over channels [c0, c1) from `state` (C values, updated in place),
  // emitting every step. With `ilp`, Algorithm 1 runs inside each cache-sized block of rows, so
  // a few channels still give the core independent work while memory is read once.
  // `interleaved`: other threads step other channels of these rows meanwhile (Pass).
  void scan(int64_t s0, int64_t n, int64_t c0, int64_t c1, acc_t* state, bool ilp,
            bool interleaved = false) const {
    const int64_t K = ilp ? ilp_chunks() : 1;
    if (K == 1) {
      const Chunks one{{s0}, {n}};
      Pass<in_t, acc_t, Emit> pass{in, one, C, state, nullptr, emit, interleaved};
      pass.template group<false>(0, 1, c0, c1);
      return;
    }
    const int64_t B = block_rows();
    Buffer<acc_t> st, prod;
    for (int64_t b = s0; b < s0 + n; b += B) {
      const Chunks chunks = plan_chunks(b, std::min(B, s0 + n - b), K, row_bytes());
      const int64_t k = chunks.count();
      st.assign(k * C, acc_t(0));
      prod.assign(k * C, acc_t(1));
      Pass<in_t, acc_t, Emit> pass{in, chunks, C, st.data(), prod.data(), emit};
      pass.template group<true>(0, k, c0, c1);
      carry_scan(k, C, st.data(), prod.data(), state);
      pass.template group<false>(0, k, c0, c1);
    }
  }
};

// Runs steps [0, n) in scan order from `init` (C values, or null for zeros), emitting every
// state, and leaves the final state in `final_state` (C values) if it is not null.
//   serial:   threads split the channels in shares of 256 bytes or more, each walks all of time.
//   parallel: threads split time (Algorithm 1: reduce, carry scan, re-scan); inside a thread
//             blocks of rows run Algorithm 1 again with the chunks in registers.
//
// The serial schedule with several threads. Splitting the channels gives each thread a share of
// every row; where that share is short and the data come from memory, the threads stream parts
// of the same pages, and on a 2-core Xeon (Skylake-SP) both together moved little more than one
// thread alone. torch.mul itself on the same column halves, from two Python threads, moved 11.8
// GB/s against 15.4 GB/s on row halves, so the access pattern costs most of it (likely the L2
// streamer prefetching within a page into the other thread's half; the VM exposes no counters to
// confirm it). Neither non-temporal stores for h nor prefetchw of h's lines changed this. So
// there, threads take whole blocks of rows in turn instead, each block in two steps:
//   1. reduce: read the block from memory into this core's cache, computing its map h -> P h + R
//      (product of decays, state reached from zero);
//   2. once the carry into the block is known, publish the carry into the next block (P * carry
//      + R, so the next block's owner waits only for this, never for a scan), then scan the
//      block from cache, writing h with streaming stores, interleaved with step 1 of this
//      thread's next block, so that the core has reads and writes in flight together as
//      torch.mul does.
// The carry into a block is the true state folded through one map per earlier block, so results
// differ from one thread's loop by rounding only (like Algorithm 1), and are the same run to run.
// Fusing the scan and the reduction into one loop over channels ran at 0.3-0.44 of torch.mul
// (five streams at one page offset); interleaving by 2-16 rows or whole blocks measured no better
// than by rows.

// Blocks of the pipelined schedule hold this many bytes of inputs: a fraction of any x86 core's
// L2 (512 KiB and up), so a block reduced while the previous one is scanned is still there when
// its own scan starts (64 KiB to 512 KiB measured 0.61-0.78, the same within noise).
constexpr int64_t kPipelineBytes = int64_t(1) << 18;

// Whether a scan's inputs and output together overflow stream_bytes() (cpu_kernels.h).
inline bool exceeds_cache(int64_t n, int64_t row_bytes) {
  return 3 * n * row_bytes > stream_bytes();
}

// Threads take whole rows in turn when the data come from memory, each thread's share of a row
// would be under 2 KiB, rows are wide enough (64 floats) for one thread alone to keep its FMA
// pipes busy, and there is a block for every thread (with fewer, one thread reduces and then
// scans a block alone, two passes where the channel split makes one). Measured on the
// Skylake-SP VM (fp32, out=, 2 threads, against torch.mul(out=), the kernel called directly
// from C++, 2-3 runs each, pipelined vs channel split):
//   shares under 2 KiB: (65536, 128) 0.78-0.80 vs 0.62-0.64, (65536, 256) 0.79-0.80 vs
//     0.71-0.77, (65536, 512) 0.72-0.78 vs 0.64-0.76;
//   2 KiB and more: (65536, 1024) 0.71-0.75 vs 0.77-0.89, (32768, 2048) 0.63-0.68 vs 0.69-0.77,
//     (4096, 16384) 0.42 vs 0.92;
//   in cache (6 MiB): (512, 1024) 0.45 vs 0.57-0.59, (4096, 64) 0.44 vs 0.48-0.75, (4096, 128)
//     0.47 either way.
// The pipelined scan writes with streaming stores: its output cannot stay cached for whoever
// reads it next anyway, and skipping the write-allocate read leaves more of the bandwidth to the
// inputs (0.71-0.74 -> 0.80-0.81 at (65536, 128)).
inline bool pipeline_pays(int64_t n, int64_t row_bytes, int64_t threads) {
  const int64_t rows_per_block = std::max<int64_t>(1, kPipelineBytes / (2 * row_bytes));
  return row_bytes >= 256 && row_bytes / threads < 2048 && n >= threads * rows_per_block &&
         exceeds_cache(n, row_bytes);
}

// Where cpu_serial takes cpu_parallel's time split instead of splitting the channels: rows wide
// enough to have been pipelined, the threads' shares of a row under a page, and data beyond one
// core's own cache.
// - From memory, if the streaming schedule says so. Measured on a Zen 4 EPYC VM (fp32, 2
//   threads, the kernel called from C++, GB/s at 12 bytes per element, torch.mul(out=) swinging
//   between 25 and 50 on that host): the pipelined schedule and the channel split stayed at
//   17-22 GB/s, what one thread's sequential rows reach alone, whatever the block and piece sizes
//   or the store kind; the time split reached 19-20 at (65536, 128), 23-24 at (65536, 512) and
//   24-28 at (65536, 1024), and in the backward at (65536, 128) twice the pipelined rate (12
//   against 6).
// - From the last-level cache, always: there the channel split lost to the time split on every
//   CPU we met. Emerald Rapids VM (2 MiB of L2, 300 MiB of L3; fp32, out=, 2 threads, of
//   torch.mul(out=) in the same process): 0.40-0.55 against 0.69-0.82 with plain stores from 6
//   to 96 MiB of inputs and output ((4096, 128) to (65536, 128), up to 1024 channels); Zen 4 VM
//   (32 MiB of L3): (4096, 128) 94 against 69 us, (16384, 128) 1456 against 573 us; Skylake-SP
//   VM: cpu_serial's second thread gained nothing at T = 4096 where cpu_parallel's ran 1.1-1.5x
//   faster. (Where the calibration found that such data stream better, exceeds_cache already
//   counts them as streamed: streamed_beyond, cpu_kernels.h.)
// Within one core's cache the channel split stays (stepping its shares in register strips: see
// scan()); there the time split ran no faster (Emerald Rapids VM, 0.75 to 1.5 MiB).
inline bool time_split_pays(int64_t n, int64_t row_bytes, int64_t threads) {
  if (row_bytes < 256 || row_bytes / threads >= 4096) return false;
  if (exceeds_cache(n, row_bytes))
    return streaming_schedule().load(std::memory_order_relaxed) == kStreamTimeSplit;
  return 3 * n * row_bytes > private_cache_bytes();
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#endif
}

// The items of one parallel region, claimed in order (claim), or taken by the threads they are
// meant for (take), a thread taking before any wait every lower item that no thread has taken.
// Each waits only for carries that lower items publish before they wait for anything: every
// wait ends, and one thread alone runs the items in order. An item that throws (a failed
// allocation) makes at::parallel_for rethrow it, but only after every thread has left the
// region, so the waits end on a failure too.
class CarryChain {
 public:
  explicit CarryChain(int64_t published, int64_t items = 0)
      : published_(published), taken_(items > 0 ? new std::atomic<bool>[items]() : nullptr) {}

  // The next item to run: `items` or more when none is left or another item failed.
  int64_t claim(int64_t items) {
    const int64_t k = claimed_.fetch_add(1, std::memory_order_relaxed);
    fail_on_purpose(k);
    return failed_.load(std::memory_order_relaxed) ? std::max(k, items) : k;
  }

  // Whether this thread takes item k (< the `items` constructed with): false where another
  // thread has taken it or an item failed.
  bool take(int64_t k) {
    if (failed_.load(std::memory_order_relaxed) ||
        taken_[k].exchange(true, std::memory_order_relaxed))
      return false;
    fail_on_purpose(k);
    return true;
  }

  // Waits until `count` carries are published; false if an item failed meanwhile.
  bool wait(int64_t count) {
    for (int spins = 0; published_.load(std::memory_order_acquire) < count; ++spins) {
      if (failed_.load(std::memory_order_relaxed)) return false;
      if (spins < 4096) {
        cpu_relax();
      } else {
        std::this_thread::yield();  // more threads than cores: let the publisher run
      }
    }
    return true;
  }

  void publish(int64_t count) { published_.store(count, std::memory_order_release); }

  // One thread's share of the region; a throw marks the chain failed on its way out.
  template <typename Share> void run(const Share& share) {
    try {
      share();
    } catch (...) {
      failed_.store(true, std::memory_order_relaxed);
      throw;
    }
  }

 private:
  static void fail_on_purpose(int64_t k) {
    if (k == fail_item().load(std::memory_order_relaxed))
      throw std::runtime_error("plrnn: item " + std::to_string(k) +
                               " failed on purpose (plrnn::cpu_fail_item)");
  }

  std::atomic<int64_t> claimed_{0}, published_;
  std::atomic<bool> failed_{false};
  std::unique_ptr<std::atomic<bool>[]> taken_;
};

// The time split where the decays forget: Algorithm 1 reduces every chunk but the first to learn
// the carry into the next one, a second pass over a third of the rows on 2 threads. Where the
// product of a chunk's decays reaches zero (below the smallest normal number, subnormals being
// flushed) within its first z rows, the carry into the chunk reaches no row after those, and
// the state the chunk reaches is the state reached from zero. So here each of p chunks (one per
// thread, not p + 1) is scanned from zero at once, the carries pass down the chain as soon as
// each chunk is scanned, and each thread then scans the first z rows of its chunk again from the
// carry into it: p chunks of n / p rows plus z, against Algorithm 1's 2n / (p + 1). Rows from z
// on keep the scan from zero; they differ from the loop's by rounding, as Algorithm 1's
// regrouping does, where the carry times the product of decays is below any float (the carry
// is at most kForgetCarryMax). Carries that are not finite, or larger, scan the whole chunk
// again from them (the loop's NaN and inf from the row they enter on); a zero carry scans
// nothing again. z is found before the threads start (rows_to_forget, at most 1/kForgetShare
// of a chunk), and where a chunk takes longer to forget, Algorithm 1 runs instead (allowing a
// quarter, sigmoid(N(5, 1)) gates, 7900 rows to forget, ran at 1.04x Algorithm 1's time at
// T = 65536). Returns whether it ran.
// Measured on the Emerald Rapids VM, 2 threads, fp32, the op into a given output (in-thread
// chunks off, as calibrated there), both schedules in one build taking turns over 40 rounds,
// the median of the pairwise ratios, forward / backward: (65536, 4) 0.73 / 0.86 with
// sigmoid(N(2, 1)) gates, 0.73 / 0.83 with U[0, 1), 0.82 / 0.88 with U[0.9, 1), 1.01 / 0.99
// with sigmoid(N(5, 1)) and 1.00 / 1.01 with decays in [0.9999, 1) (both Algorithm 1);
// (262144, 4) 0.84 / 0.97 and 0.80 / 0.83 (sigmoid(N(5, 1)), U[0.9, 1)); (65536, 1) 0.78 /
// 1.00; (65536, 32) 0.81 / 0.82 and (16384, 128) 0.83 / 0.83; (16384, 4) 0.92 / 1.00; at
// (4096, 32), where the gates take longer to forget than an eighth of a chunk, 1.05 / 1.06.
// With stream_stores (rows streamed from memory, scan()), every scan writes with streaming stores.
//
// Where the second scan can meet the first (`meets`: the output holds the state as the scan
// carries it, not rounded to 16 bits, and each element steps as in the loop, without in-thread
// chunks or rows packed to a vector, in rows of 256 bytes or more), it needs no z: it scans the
// chunk again block by block and stops at the first block whose last state equals, bit for bit,
// the one the first scan stored there. Every later row of the first scan is then the loop's
// from the true carry, so the chunk's result is the loop's bits, and any carry (NaN, inf, any
// size) is handled alike; a chunk where they never meet is scanned again whole, and its final
// state is the second scan's. That happens long before the product of the decays vanishes: the
// carry's share of a state drops below half its last bit once the product is below about 2^-25
// times the state's ratio to the carry (float32). Scans from zero and from a random carry met at
// row 1832 under sigmoid(N(5, 1)) gates, where the product vanishes at 8272 (416 against 1746
// for U[0.9, 1), 155 against 540 for sigmoid(N(2, 1)); 128 channels). So the probe asks less:
// a product below 2^-(digits + 2) within 1/(2p) of a chunk from memory, a quarter on 2 threads
// (the rescans pass the carries down the chain one after the other, p - 1 of them before the
// last chunk's; at most half a chunk in all), and within an eighth from cache. A chunk
// publishes its carry once its rescan has stopped.
// Measured on the Zen 4 VM (2 threads, fp32, cpu_serial's time split from memory, the op into a
// given output for the forward, both modes in one build taking turns over 8-15 rounds, median of
// the pairwise ratios, this over the underflow probe, forward / backward): sigmoid(N(5, 1)),
// which had run Algorithm 1, 0.90-0.95 / 0.86-0.98 at (65536, 128) and 0.84 / 0.85 at (65536,
// 1024); U[0, 1), U[0.9, 1), sigmoid(N(0, 1)) and sigmoid(N(2, 1)), which forget sooner,
// 0.95-1.06 / 0.90-1.00 and 0.92-0.98 / 0.96-0.99, the loop's bits now.
template <typename in_t, typename acc_t, typename Emit>
bool scan_forgetting(const Scanner<in_t, acc_t, Emit>& scanner, int64_t n, int64_t C,
                     int64_t threads, bool ilp, bool stream_stores, acc_t* state) {
  const Chunks chunks = plan_chunks(0, n, threads, 0);
  const int64_t M = chunks.count();
  if (M < 2) return false;
  using stored_t = std::remove_const_t<std::remove_pointer_t<decltype(scanner.emit.state_at(0))>>;
  constexpr bool kStatesStored = std::is_same_v<stored_t, acc_t>;
  const int64_t row_bytes = scanner.row_bytes();
  const bool meets = kStatesStored && !ilp && row_bytes >= 256 &&
                     (scanner.in.stride == C || scanner.in.stride == -C);
  // From cache, Algorithm 1's second pass costs less than a rescan that one thread runs alone,
  // so there the probe keeps the eighth: allowing a quarter, sigmoid(N(5, 1)) gates at (16384,
  // 128) took 1.16x Algorithm 1's time in one A/B (Zen 4 VM, 2 threads, fp32, 15 rounds; with
  // the threads on two dies, where rows running one path in both modes spread by up to 1.2x).
  const int64_t meet_share = exceeds_cache(n, row_bytes) ? 2 * M : kForgetShare;
  // forget[k]: the rows of chunk k a carry reaches before its decays' product underflows to
  // zero, which the rescan covers; where `meets`, only whether the probe's smaller product came
  // within its limit (the rescan stops where the two scans agree).
  std::vector<int64_t> forget(M, 0);
  {
    const FlushDenormals flush;
    for (int64_t k = 1; k < M; ++k) {
      forget[k] = meets ? scanner.rows_to_forget(chunks.start[k], chunks.len[k] / meet_share,
                                                 -(std::numeric_limits<acc_t>::digits + 2))
                        : scanner.rows_to_forget(chunks.start[k], chunks.len[k] / kForgetShare);
      if (forget[k] < 0) return false;
    }
  }
  Buffer<acc_t> carry(M * C);  // carry[k]: the state entering chunk k
  std::copy(state, state + C, carry.begin());
  CarryChain chain(1, M);  // carry[0 .. published - 1] are known
  // Task t runs the chunk of the t-th stretch of time, in scan order the t-th chunk, or the
  // t-th from the end where scan order descends (reverse scans, the backward): each thread then
  // reads back in the backward the h that it wrote in the forward (see Algorithm 1 below).
  // Running chunk t in scan order instead, forward+backward through the ops (Zen 4 VM, 2
  // threads, fp32, fresh outputs from reused pages, the two ways in one build taking turns, median
  // of the pairwise ratios) took 1.14 the time at (65536, 4) under sigmoid(N(2, 1)) gates with the
  // threads on one die of the host, and 1.72 at (16384, 128) with them on two.
  const bool down = scanner.in.stride < 0;
  auto own = [&](int64_t t) { return down ? M - 1 - t : t; };
  // Rows [s0, s0 + len) from the state st, from memory with streaming stores where the time
  // split writes with them (scan() says why), fenced: a chunk's second scan of its first rows
  // overwrites lines its first scan streamed, and streaming stores are not kept in order.
  auto scan_rows = [&](int64_t s0, int64_t len, acc_t* st) {
    if (stream_stores) {
      scanner.scan_and_reduce(s0, len, st, 0, 0, nullptr, nullptr);
      stream_fence();
    } else {
      scanner.scan(s0, len, 0, C, st, ilp);
    }
  };
  // Where `meets`: rows [s0, s0 + len) again from the state `from`, a block at a time, until a
  // block ends in the state the first scan stored there; `reached` (the first scan's final state)
  // becomes the second scan's where they never meet. A row's state is compared every
  // kMeetBlockBytes of rows, a few hundred bytes read against the block's stream.
  const int64_t block = std::max<int64_t>(16, kMeetBlockBytes / row_bytes);
  auto scan_until_met = [&](int64_t s0, int64_t len, const acc_t* from, acc_t* reached) {
    if constexpr (kStatesStored) {
      Buffer<acc_t> st(from, from + C), stored(C);
      for (int64_t b = 0; b < len; b += block) {
        const int64_t m = std::min(block, len - b);
        const acc_t* last = scanner.emit.state_at((s0 + b + m - 1) * scanner.in.stride);
        std::copy(last, last + C, stored.begin());
        scan_rows(s0 + b, m, st.data());
        if (std::memcmp(stored.data(), st.data(), C * sizeof(acc_t)) == 0) return;
      }
      std::copy(st.begin(), st.end(), reached);
    }
  };
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    chain.run([&] {
      const FlushDenormals worker_flush;
      // As in scan(): before waiting for its carry, an item runs every lower item not taken.
      std::function<bool(int64_t)> run = [&](int64_t k) {
        const int64_t s0 = chunks.start[k], len = chunks.len[k];
        const acc_t* in_carry = carry.data() + k * C;
        acc_t* out = k == M - 1 ? state : carry.data() + (k + 1) * C;
        Buffer<acc_t> mine(C, acc_t(0));
        if (k == 0) std::copy(in_carry, in_carry + C, mine.begin());
        scan_rows(s0, len, mine.data());
        if (k > 0) {
          for (int64_t j = 0; j < k; ++j)
            if (chain.take(j) && !run(j)) return false;
          if (!chain.wait(k + 1)) return false;
          const bool zero =
              std::all_of(in_carry, in_carry + C, [](acc_t v) { return v == acc_t(0); });
          if (meets) {
            if (!zero) scan_until_met(s0, len, in_carry, mine.data());
            std::copy(mine.begin(), mine.end(), out);
            chain.publish(k + 2);
            return true;
          }
          const bool tame = std::all_of(in_carry, in_carry + C, [](acc_t v) {
            return std::abs(v) <= kForgetCarryMax<acc_t>;  // false for NaN
          });
          if (!tame) {
            std::copy(in_carry, in_carry + C, mine.begin());
            scan_rows(s0, len, mine.data());
          }
          std::copy(mine.begin(), mine.end(), out);
          chain.publish(k + 2);
          if (tame && !zero) {
            std::copy(in_carry, in_carry + C, mine.begin());
            scan_rows(s0, forget[k], mine.data());
          }
          return true;
        }
        std::copy(mine.begin(), mine.end(), out);
        chain.publish(2);
        return true;
      };
      for (int64_t t = begin; t < end; ++t)
        if (chain.take(own(t)) && !run(own(t))) return;
      for (int64_t k = 0; k < M; ++k)
        if (chain.take(k) && !run(k)) return;
    });
  });
  return true;
}

template <typename in_t, typename acc_t, typename Emit>
void scan(const Inputs<in_t> in, int64_t n, int64_t C, const acc_t* init, bool parallel,
          const Emit& emit, acc_t* final_state) {
  if (n <= 0) return;
  const Scanner<in_t, acc_t, Emit> scanner{in, C, emit};
  Buffer<acc_t> state(C, acc_t(0));
  if (init) std::copy(init, init + C, state.begin());
  const int64_t work = n * C;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (!parallel && threads > 1 && time_split_pays(n, C * int64_t(sizeof(in_t)), threads))
    parallel = true;
  if (!parallel && threads > 1 && pipeline_pays(n, C * int64_t(sizeof(in_t)), threads)) {
    const int64_t B = std::max<int64_t>(1, kPipelineBytes / (2 * C * int64_t(sizeof(in_t))));
    const int64_t blocks = (n + B - 1) / B;
    CarryChain chain(0);  // item b: block b; b carries published: the one into block b known
    Buffer<acc_t> carries(2 * C);  // the carry into block b at slot b % 2
    std::copy(state.begin(), state.end(), carries.begin());
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      chain.run([&] {
        const FlushDenormals worker_flush;
        Buffer<acc_t> reached(C), product(C), local(C);
        auto rows = [&](int64_t b) { return std::min(B, n - b * B); };
        int64_t b = chain.claim(blocks);
        if (b < blocks) scanner.scan_and_reduce(0, 0, local.data(), b * B, rows(b),
                                                  reached.data(), product.data());
        while (b < blocks) {
          const int64_t next = chain.claim(blocks);
          if (!chain.wait(b)) return;
          const acc_t* in_carry = carries.data() + (b % 2) * C;
          acc_t* out_carry = carries.data() + ((b + 1) % 2) * C;
          for (int64_t c = 0; c < C; ++c) {
            local[c] = in_carry[c];
            out_carry[c] = apply_map(product[c], in_carry[c], reached[c]);
          }
          chain.publish(b + 1);
          scanner.scan_and_reduce(b * B, rows(b), local.data(), next * B,
                                  next < blocks ? rows(next) : 0, reached.data(), product.data());
          if (b == blocks - 1) std::copy(local.begin(), local.end(), state.begin());
          b = next;
        }
        stream_fence();
      });
    });
  } else if (!parallel) {
    // Threads split the channels in shares of at least 256 bytes of a row: with less, each
    // thread's lines sit next to the other's, and the adjacent-line prefetchers of both cores
    // fetch them in pairs. Measured (Zen 4 VM, fp32, out=): two threads with shares of 16 to 32
    // channels ran at 0.54-0.82x the speed of one thread at (65536, 32), (65536, 48), (65536,
    // 64), (4096, 32) and (4096, 64) (there 69 against 50 us); wider rows split the same way
    // either way. On the Skylake-SP VM two threads on such rows gained nothing either.
    // Shares under a page are stepped in register strips, whatever the layout of wide rows. The
    // sequential layout reads each row's state back from the output row just written; the likely
    // cost (no hardware counters to confirm it) is the prefetchers of a core reading lines of a
    // page fetching the rest of it, the other thread's output lines, which that thread must then
    // take back before writing them; strips only write the output. Measured on the Emerald
    // Rapids VM (fp32, out=, 2 threads, the op called directly, medians of 3 interleaved sets):
    // sequential 33.4 -> strips 15.6 us at (256, 256), 26.0 -> 21.2 at (64, 1024), 68.1 -> 43.8
    // at (512, 256), 68.9 -> 52.0 at (256, 512), where one thread took 18.8, 20.0, 50.5 and 57.0
    // (the sequential split had run 1.2-2.1x slower than one thread); at (16, 4096), shares of
    // two pages, both layouts ran alike (16.2 and 15.0 us, one thread 17.4).
    const int64_t U = 256 / int64_t(sizeof(in_t));
    const int64_t tiles = (C + U - 1) / U;
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, n * U));
    at::parallel_for(0, tiles, grain, [&](int64_t b, int64_t e) {
      const FlushDenormals worker_flush;
      // A state of its own, as in the time split below: the strips layout stores and reloads
      // its share at every block of rows, and the shares of two threads meet inside one line.
      const int64_t c0 = b * U, c1 = std::min(e * U, C);
      Buffer<acc_t> mine(state);
      scanner.scan(0, n, c0, c1, mine.data(), false,
                   c1 - c0 < C && (c1 - c0) * int64_t(sizeof(in_t)) < 4096);
      std::copy(mine.begin() + c0, mine.begin() + c1, state.begin() + c0);
    });
  } else {
    // In-thread chunks never paid above 32 channels (0.5-0.8x at 64, AMD EPYC).
    const bool ilp =
        C <= std::min<int64_t>(32, ilp_max_channels().load(std::memory_order_relaxed));
    // Threads pay a second read of their inputs; only worth it for enough work per thread.
    // One chunk more than threads: the first chunk's carry-in is known, so its thread scans it
    // while the others reduce theirs, and every thread then scans one of the rest. (Reducing
    // chunks 0..p-2 first left one of 2 threads idle for the whole first phase: 0.82-0.86x
    // cpu_serial at (65536, 4) in the last benchmark; this schedule 1.05-1.22x at (262144, 4),
    // Skylake-SP VM, 2 threads.)
    const bool split = threads > 1 && work >= (int64_t(1) << 16);
    const int64_t row_bytes = C * int64_t(sizeof(in_t));
    const bool streamed = row_bytes >= 256 && exceeds_cache(n, row_bytes);
    const bool stream_stores = streamed && emit.streams_lines(row_bytes);
    // The forgetting split also runs from memory (cpu_serial's time split of wide rows), with
    // Algorithm 1's streaming stores (below): about 12 bytes of memory traffic per element
    // against Algorithm 1's 14.7. Measured on the Zen 4 VM (2 threads, fp32, the ops called from
    // Python with freed pages reused, the split switched on and off in one build over 10 rounds,
    // median of the pairwise ratios), forward / backward: U[0, 1) 0.83 / 0.83 at (65536, 128),
    // 0.79 / 0.80 at (65536, 512), 0.79 / 0.82 at (65536, 1024), 0.84 / 0.88 at (32768, 256);
    // over the same shapes 0.75-0.98 / 0.77-0.99 under sigmoid(N(2, 1)) and 0.85-0.89 /
    // 0.77-0.91 under U[0.9, 1). Under U[0, 1) the forward went from 0.90-1.06 to 1.21-1.27 of
    // torch.mul(out=) in the same rounds.
    if (split && forgetting_split().load(std::memory_order_relaxed) &&
        scan_forgetting(scanner, n, C, threads, ilp, stream_stores, state.data())) {
      if (final_state) std::copy(state.begin(), state.end(), final_state);
      return;
    }
    const Chunks macro = plan_chunks(0, n, split ? threads + 1 : 1, 0);
    const int64_t M = macro.count();
    if (M == 1) {
      const FlushDenormals flush;
      scanner.scan(0, n, 0, C, state.data(), ilp);
    } else {
      Buffer<acc_t> st(M * C), prod(M * C);  // each chunk's reduction: state reached, product
      // Each thread scans from a state of its own: the chunks' carries lie side by side (carry
      // below), one cache line for a few channels, and a scan stores and reloads its state at every
      // block of rows, so two threads scanning neighbouring chunks passed that line back and
      // forth at each block (4 channels, T = 65536, 2 threads, Zen 4 VM: 49.5 -> 36.5 us).
      // From memory, rows of 256 bytes or more are reduced a whole row after the other
      // (reduce_rows) and, where the output takes streaming stores (streams_lines), scanned with
      // them from a state buffer (scan_and_reduce with nothing to reduce): a plain store first
      // reads its line from memory, so the time split moved 18.7 bytes per element where
      // torch.mul moves 16, and 14.7 with streaming stores. Measured, Zen 4 VM, 2 threads, both
      // builds called from C++ in one process, alternating, against a multiply loop on row
      // halves: (65536, 128) 0.80 -> 0.99, (65536, 512) 0.61 -> 0.76, (65536, 1024) 0.75 -> 0.91,
      // (32768, 256) 0.71 -> 1.00. Descending rows (the backward, reverse scans) stream too,
      // each row walked from its end with the state in a line-aligned buffer: the backward went
      // from 0.62-0.86 to 0.81-1.17 of y = a * x's backward at (65536, 128), 0.64-0.80 to 0.77-0.95
      // at (65536, 1024), 0.85 to 1.07 at (32768, 256). (Walking those rows upwards, or reading
      // the state back from the streamed output, had made streaming stores 2-3x slower than plain
      // ones there.) Giving the first chunk (scanned while the others are only reduced) fewer
      // rows, in proportion to the two passes' traffic, measured no faster.
      // Chunk m scanned from the state `from`; the state it ends in goes to `to` if given.
      auto scan_private = [&](int64_t m, const acc_t* from, acc_t* to) {
        Buffer<acc_t> mine(from, from + C);
        if (stream_stores) {
          scanner.scan_and_reduce(macro.start[m], macro.len[m], mine.data(), 0, 0, nullptr,
                                  nullptr);
          stream_fence();
        } else {
          scanner.scan(macro.start[m], macro.len[m], 0, C, mine.data(), ilp);
        }
        if (to) std::copy(mine.begin(), mine.end(), to);
      };
      // One parallel region of M items (CarryChain):
      //   item 0: scans chunk 0 and publishes the state it ends in, the carry into chunk 1;
      //   item k in 1..M-2: reduces chunk k, waits for the carry into it, publishes the carry
      //     into chunk k + 1, then scans chunk k while it is still in this core's cache;
      //   item M - 1: waits for the carry into the last chunk and scans it.
      // Task t of the region runs item t (task 0 also the last item; task t > 0 item M - 1 - t
      // where scan order descends), taking in order what no task took, so that with 2 threads
      // one runs items 0 and 2 and the other item 1, which reduces and scans the same chunk.
      // Which chunk a thread runs is thus the same from call to call and in the backward, whose
      // chunks mirror the forward's over the same stretches of time: each thread reads back the
      // h it wrote and rewrites the lines it owns. Taken by whichever thread
      // came first, the chunks changed threads from call to call, and lines crossed between the
      // host's dies where it had put the threads on two (Zen 4 VM, 2 threads, the two ways
      // alternating in one process, per cache-line round trip between the threads): at about 300
      // ns, forward+backward at (65536, 4) 548 -> 309 us (cpu_serial 294), forwards at (4096, 32)
      // 34.0 -> 27.7 us, (4096, 64) 65.7 -> 48.9, (262144, 4) 190 -> 151; at about 65 ns (one die)
      // within 3% either way. Against two parallel regions with a serial fold of the carries
      // between them (the same passes), timed in one build behind a switch, the two taking turns in
      // blocks of about 1 ms, 60 rounds, three runs (Zen 4 VM, 2 threads, fp32): forward 0.88-0.94x
      // the time at (16384, 4) and (4096, 32), 0.97-1.03x at (65536, 4) to (16384, 128), the
      // backward 0.93-1.05x; streamed from memory (cpu_serial's time split at (65536, 128), (65536,
      // 1024) and (32768, 256)) 0.99-1.01x with the threads on one die of the host and 0.90-1.03x
      // on two.
      Buffer<acc_t> carry(M * C);  // carry[k]: the state entering chunk k
      std::copy(state.begin(), state.end(), carry.begin());
      CarryChain chain(1, M);  // carry[0 .. published - 1] are known
      at::parallel_for(0, M - 1, 1, [&](int64_t begin, int64_t end) {
        chain.run([&] {
          const FlushDenormals worker_flush;
          // Runs item k, taken; before waiting for its carry, takes and runs every lower item
          // that no thread has taken, so that the wait ends whichever threads show up.
          std::function<bool(int64_t)> run = [&](int64_t k) {
            auto wait = [&] {
              for (int64_t j = 0; j < k; ++j)
                if (chain.take(j) && !run(j)) return false;
              return chain.wait(k + 1);
            };
            acc_t* in_carry = carry.data() + k * C;
            if (k == 0) {
              scan_private(0, in_carry, in_carry + C);
              chain.publish(2);
            } else if (k < M - 1) {
              acc_t *R = st.data() + k * C, *P = prod.data() + k * C;
              if (streamed) {
                scanner.reduce_rows(macro.start[k], macro.len[k], R, P);
              } else {
                scanner.reduce(macro.start[k], macro.len[k], R, P);
              }
              if (!wait()) return false;
              for (int64_t c = 0; c < C; ++c)
                in_carry[C + c] = apply_map(P[c], in_carry[c], R[c]);
              chain.publish(k + 2);
              scan_private(k, in_carry, nullptr);
            } else {
              if (!wait()) return false;
              scan_private(k, in_carry, state.data());
            }
            return true;
          };
          for (int64_t t = begin; t < end; ++t) {
            const int64_t k = t > 0 && scanner.in.stride < 0 ? M - 1 - t : t;
            if (chain.take(k) && !run(k)) return;
          }
          if (begin == 0 && chain.take(M - 1) && !run(M - 1)) return;
          for (int64_t k = 0; k < M; ++k)
            if (chain.take(k) && !run(k)) return;
        });
      });
    }
  }
  if (final_state) std::copy(state.begin(), state.end(), final_state);
}

template <typename acc_t, typename in_t>
std::vector<acc_t> to_acc(const in_t* p, int64_t n) {
  std::vector<acc_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<acc_t>(p[i]);
  return v;
}

}  // namespace

template <typename scalar_t>
void scan_forward_kernel(const scalar_t* a, const scalar_t* x, const scalar_t* h0, scalar_t* out,
                         int64_t T, int64_t C, bool reverse, bool parallel, DecayLayout decays) {
  if (T == 0 || C == 0) return;
  using acc_t = typename AccOf<scalar_t>::type;
  const int64_t first = reverse ? T - 1 : 0, step = reverse ? -C : C;
  const int64_t a_row = decays.per_step ? decays.period : 0;
  const Inputs<scalar_t> in{a + first * a_row, x + first * C, step, reverse ? -a_row : a_row,
                            decays.period};
  const StoreState<scalar_t, acc_t> emit{out + first * C};
  std::vector<acc_t> init;
  if (h0) init = to_acc<acc_t>(h0, C);
  scan(in, T, C, h0 ? init.data() : nullptr, parallel, emit, static_cast<acc_t*>(nullptr));
}

// Gradients of h = scan(a, x, h0) given dL/dh, from the saved h (no recompute).
// Scan order runs against the forward direction: step r is data row d(r) = d0 + r * dir, and
//   g(r) = a[d(r) - dir] * g(r-1) + dL/dh[d(r)],  g(0) = dL/dh[d(0)]
//   dL/dx[d] = g,  dL/da[d] = h[d + dir] * g  (h0 past the last step),  dL/dh0 = a[d(T-1)] * g(T-1)
template <typename scalar_t>
void scan_backward_kernel(const scalar_t* a, const scalar_t* hs, const scalar_t* dh,
                          const scalar_t* h0_in, scalar_t* dx, scalar_t* da, scalar_t* dh0,
                          int64_t T, int64_t C, bool reverse, bool parallel, DecayLayout decays) {
  if (T == 0 || C == 0) return;
  using acc_t = typename AccOf<scalar_t>::type;
  const int64_t dir = reverse ? 1 : -1, d0 = reverse ? 0 : T - 1, step = dir * C;
  const int64_t a_row = decays.per_step ? decays.period : 0, P = decays.period;
  std::vector<acc_t> h0(C, acc_t(0));
  if (h0_in) h0 = to_acc<acc_t>(h0_in, C);

  // Element (r, c) of every buffer below is at base[r * step + c].
  // Decay row 0 is never read; time-invariant decays are the same row at every step.
  const Inputs<scalar_t> in{a + (d0 - dir) * a_row, dh + d0 * C, step, dir * a_row, P};
  const StoreGrads<scalar_t, acc_t> grads{dx + d0 * C, da ? da + d0 * C : nullptr,
                                          hs + (d0 + dir) * C};  // h row T-1 never read
  // Without dL/da the backward is the scan of dL/dh itself, as the forward stores it.
  const StoreState<scalar_t, acc_t> state_only{dx + d0 * C};

  // Edge rows by hand: the first has no decay to apply, the last multiplies h0. Channels go by
  // periods of the decays (P divides C) so that no index takes a division (c % P per channel:
  // a backward call at (2, 256) took 24.9 us with it, 22.0 without, Emerald Rapids VM).
  std::vector<acc_t> g(C);
  auto edge_row = [&](int64_t r, const acc_t* prev, const acc_t* hprev) {
    const FlushDenormals flush;  // outside scan(), on the calling thread
    const int64_t e = r * step;
    const scalar_t* a_row_r = in.a + r * in.a_stride;
    for (int64_t base = 0; base < C; base += P) {
      for (int64_t j = 0; j < P; ++j) {
        const int64_t c = base + j;
        const acc_t decayed = prev ? static_cast<acc_t>(a_row_r[j]) * prev[c] : acc_t(0);
        g[c] = decayed + static_cast<acc_t>(in.x[e + c]);
        grads.gx[e + c] = static_cast<scalar_t>(g[c]);
        if (da) grads.ga[e + c] = static_cast<scalar_t>(hprev[c] * g[c]);
      }
    }
  };
  std::vector<acc_t> hp_row = h0;
  if (T > 1 && da) hp_row = to_acc<acc_t>(grads.hprev, C);
  edge_row(0, nullptr, hp_row.data());
  if (T > 1) {
    std::vector<acc_t> mid = g;
    if (T > 2 && da)
      scan(in.shifted(1), T - 2, C, g.data(), parallel, grads.shifted(step), mid.data());
    else if (T > 2)
      scan(in.shifted(1), T - 2, C, g.data(), parallel, state_only.shifted(step), mid.data());
    edge_row(T - 1, mid.data(), h0.data());
  }
  const scalar_t* a_last = a + (d0 + (T - 1) * dir) * a_row;
  const FlushDenormals flush;
  for (int64_t base = 0; base < C; base += P)
    for (int64_t j = 0; j < P; ++j)
      dh0[base + j] = static_cast<scalar_t>(static_cast<acc_t>(a_last[j]) * g[base + j]);
}

#define PLRNN_INSTANTIATE_CPU_KERNELS(scalar_t)                                                  \
  template void scan_forward_kernel<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, \
                                              scalar_t*, int64_t, int64_t, bool, bool,           \
                                              DecayLayout);                                      \
  template void scan_backward_kernel<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, \
                                               const scalar_t*, scalar_t*, scalar_t*, scalar_t*,  \
                                               int64_t, int64_t, bool, bool, DecayLayout);

}  // namespace plrnn
