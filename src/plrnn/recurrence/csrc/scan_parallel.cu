// cuda_parallel: the tuned kernel. One pass over memory (inputs read once, outputs written once),
// fp32 accumulation (fp64 for fp64) with fp32/fp64/fp16/bf16 storage, forward and backward.
//
// Schedule: a single-pass Algorithm 1. The (T, C) problem is cut into tiles of `rows` steps x
// (CL x V) channels, one block per tile, taken in ticket order (atomicAdd on a counter, time-
// major, so every earlier tile of a channel group holds an earlier ticket and is running or done).
// A block is 8 data warps and 1 helper warp:
//   data warps  CL channel lanes x (256 / CL) time slices. Lane `cl` of a slice owns V adjacent
//               channels (V = 16 bytes / element size when every row is 16-byte aligned, else 1),
//               so each step of a slice is one coalesced run of CL x 16 bytes. CL is a power of
//               two <= 32 chosen from C: few channels give CL = 1 and 256 slices of time per
//               block, many give CL = 32 and several channel groups side by side. Each thread
//               loads its S steps into registers (all loads in flight at once), reduces them to
//               one affine map h -> p * h + q, and the warps scan those maps (shuffles across the
//               slices of a warp, shared memory across warps). They hand the 8 warp totals to
//               the helper, wait for the carry into the tile, and re-run their S steps from
//               registers, storing every state.
//   helper warp publishes the tile's map to global memory (flag per map, release/acquire), then
//               computes the carry-in: h0 (or zero) folded through the maps of all earlier tiles.
//               To keep that fold short and its result bitwise deterministic, the last tile of
//               every aligned group of 16 tiles (16^2, ...) also publishes the group's map, built
//               from its 15 siblings' maps and its own. Tile k then folds, in time order, at most
//               15 maps per base-16 digit of k. Publishing never waits for a carry (only for
//               siblings' maps), so there is no chain of carries from tile to tile; the longest
//               wait is the depth of that tree.
// S (steps per thread) shrinks when the tiles would not give every SM two blocks.
//
// Decays are read where they lie, in any layout cuda_scan.h allows: a thread's channels c0..c0+V-1
// read decay columns c0 % P.. (P, the period, is a multiple of V when vectorized), and the decay
// rows advance by P per step, or by 0 for time-invariant decays (one row for every step: 8 bytes
// per fp32 element of DRAM traffic in the forward instead of 12). Decays shared by the blocks of
// P channels (a batch) are read once per block from L2 rather than once per element from DRAM.
//
// Complex storage (complex64 / complex128, accumulated in its own precision) runs the same
// schedule on Cplx values: a 16-byte access holds 2 complex64 or 1 complex128, and the backward
// pass conjugates the decays and the saved h as it loads them (torch's convention for complex
// gradients: dL/da = conj(h[t-1]) * g, g carried back through conj(a)).
//
// Packed batches of short sequences (cu_seqlens) have a second, simple kernel at the end of this
// file: a thread per sequence and column walks its sequence's rows, one launch for the batch.
//
// The backward pass is the same schedule against the forward direction (paper section 3.3):
// g(r) = a[row(r-1)] * g(r-1) + dL/dh[row(r)], storing dL/dx = g and dL/da = h[row(r+1)] * g in
// the same pass (h0, or zero, past the last step), and dL/dh0 = a[last row] * g at the end.
#include <algorithm>

#include "cuda_compat.h"
#include "cuda_scan.h"

namespace {

constexpr int kDataWarps = 8;
constexpr int kDataThreads = kDataWarps * 32;
constexpr int kThreads = kDataThreads + 32;  // + the helper warp
// 16 maps per published group, at every level: a tile folds ~7.5 maps per level on average,
// against ~15.5 with 32 over only a fifth fewer levels (the fold is on every tile's critical
// path; the group publishes, on a few tiles' only). Not yet tuned on a GPU.
constexpr int kFanBits = 4;
constexpr unsigned kFan = 1u << kFanBits;
constexpr int kMaxLevels = 8;                // 16^8 > 2^31 tiles
constexpr unsigned kBarTotals = 1;           // data warps -> helper: warp totals are in smem
constexpr unsigned kBarCarry = 2;            // helper -> data warps: the carry is in smem

// Steps of (a, x) each data thread holds in registers: as many as fit two blocks per SM without
// spilling (96 registers a thread; scripts/nvcc_check.sh prints the counts). Wider vectors
// carry more fp32 state per thread (V values of several maps), the backward pass a third input.
// By register footprint: a 16-byte vector of fp32 (V = 4) is the lightest; fp64 and complex64
// pairs, complex128 and 8-wide fp16/bf16 (8 fp32 values of state) the heaviest. The scalar
// complex64 backward pass held 8 steps in 96 registers on sm_90 until the decays' column (c % P)
// took two more; it holds 6.
PLRNN_HOST_DEVICE constexpr int max_steps(int elem_bytes, int V, bool backward) {
  if (V == 1 && elem_bytes <= 8) return backward && elem_bytes == 8 ? 6 : 8;
  return V == 4 ? (backward ? 4 : 6) : (backward ? 3 : 4);
}

// ---------------------------------------------------------------------------- element types

// A complex number with torch's layout (c10::complex: real then imaginary part, aligned to its
// size). The default constructor stays trivial so that arrays of it can live in shared memory.
template <typename R> struct alignas(2 * sizeof(R)) Cplx {
  R re, im;
  Cplx() = default;
  PLRNN_HOST_DEVICE constexpr Cplx(R r, R i = R(0)) : re(r), im(i) {}
};
template <typename R> PLRNN_HOST_DEVICE Cplx<R> operator*(Cplx<R> a, Cplx<R> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <typename R> PLRNN_HOST_DEVICE Cplx<R> operator+(Cplx<R> a, Cplx<R> b) {
  return {a.re + b.re, a.im + b.im};
}
template <typename R> PLRNN_HOST_DEVICE Cplx<R>& operator*=(Cplx<R>& a, Cplx<R> b) {
  return a = a * b;
}

template <typename T> PLRNN_HOST_DEVICE T conj(T v) { return v; }
template <typename R> PLRNN_HOST_DEVICE Cplx<R> conj(Cplx<R> v) { return {v.re, -v.im}; }

// The map h -> p h + q (p: a stretch's product of decays, q: the state it reaches from zero)
// applied to h; a zero h gives q, as the serial loop does, which never multiplies that state by
// p: for decays above 1, p overflows to inf over a long enough stretch, and inf * 0 would put NaN
// where the loop has q (cpu_kernels_impl.h, apply_map).
template <typename A> PLRNN_DEVICE bool is_zero(A v) { return v == A(0); }
template <typename R> PLRNN_DEVICE bool is_zero(Cplx<R> v) { return v.re == R(0) && v.im == R(0); }
template <typename A> PLRNN_DEVICE A apply_map(A p, A h, A q) { return is_zero(h) ? q : p * h + q; }

// shuffles move 4- or 8-byte registers: a complex value is two of them
template <typename A> PLRNN_DEVICE A shfl_up(A v, unsigned delta) {
  return __shfl_up_sync(0xffffffffu, v, delta);
}
template <typename R> PLRNN_DEVICE Cplx<R> shfl_up(Cplx<R> v, unsigned delta) {
  return {shfl_up(v.re, delta), shfl_up(v.im, delta)};
}

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename R> struct AccOf<Cplx<R>> { using type = Cplx<R>; };

template <typename T> PLRNN_DEVICE typename AccOf<T>::type to_acc(T v) { return v; }
template <> PLRNN_DEVICE float to_acc<__half>(__half v) { return __half2float(v); }
template <> PLRNN_DEVICE float to_acc<__nv_bfloat16>(__nv_bfloat16 v) {
#if defined(__CUDACC__) && !defined(PLRNN_EMULATE)
  // bf16 -> fp32 is a register move; as an opaque instruction the compiler converts again
  // where a value is used twice instead of keeping both forms live (with the intrinsic it kept
  // every converted value of the first pass until the re-scan, and spilled).
  float f;
  asm volatile("mov.b32 %0, {0, %1};" : "=f"(f) : "h"(__bfloat16_as_ushort(v)));
  return f;
#else
  return __bfloat162float(v);
#endif
}

template <typename T> PLRNN_DEVICE T from_acc(typename AccOf<T>::type v) { return v; }
template <> PLRNN_DEVICE __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> PLRNN_DEVICE __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// V adjacent elements moved as one access (16 bytes in the vectorized kernels).
template <typename T, int V> struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V> PLRNN_DEVICE Pack<T, V> load_pack(const T* p) {
#ifdef PLRNN_EMULATE
  if (reinterpret_cast<uintptr_t>(p) % sizeof(Pack<T, V>) != 0)
    plrnn_emu::fail("emulator: misaligned vector load");
#endif
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V> PLRNN_DEVICE void store_pack(T* p, const Pack<T, V>& x) {
#ifdef PLRNN_EMULATE
  if (reinterpret_cast<uintptr_t>(p) % sizeof(Pack<T, V>) != 0)
    plrnn_emu::fail("emulator: misaligned vector store");
  *reinterpret_cast<Pack<T, V>*>(p) = x;
#else
  if constexpr (sizeof(Pack<T, V>) == 16) {
    // one 16-byte store (st.global.v4): as a struct copy, or through a uint4 built with
    // memcpy, the compiler split it into four 4-byte stores
    unsigned w[4];
    memcpy(w, &x, 16);
    asm("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(w[0]), "r"(w[1]), "r"(w[2]),
        "r"(w[3])
        : "memory");
  } else {
    *reinterpret_cast<Pack<T, V>*>(p) = x;
  }
#endif
}

template <typename T, int V> PLRNN_DEVICE Pack<T, V> filled(typename AccOf<T>::type value) {
  Pack<T, V> out;
#pragma unroll
  for (int v = 0; v < V; ++v) out.v[v] = from_acc<T>(value);
  return out;
}

// V published accumulator values read at L2, 16 bytes at a time where they are that wide.
template <typename A, int V> PLRNN_DEVICE void load_published(const A* p, A (&out)[V]) {
  constexpr int kBytes = int(sizeof(A)) * V;
  if constexpr (kBytes % 16 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i)
      plrnn_dev::load_cg_bytes<16>(p + i * (16 / sizeof(A)), out + i * (16 / sizeof(A)));
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) plrnn_dev::load_cg_bytes<int(sizeof(A))>(p + v, out + v);
  }
}

// --------------------------------------------------------------------------------- the plan

struct Plan {
  int64_t T, C;
  int64_t cols;   // vector columns: C / V
  int CL;         // channel lanes per time slice (power of two, <= 32)
  int log2CL;
  int S;          // steps per thread, 1..max_steps
  int64_t rows;   // steps per tile: (kDataThreads / CL) * S
  unsigned K;     // tiles along time
  unsigned G;     // channel groups: ceil(cols / CL); K * G < 2^31 (one block per tile)
  int L;          // levels of published maps: smallest L with 16^L >= K (0 when K == 1)
  unsigned n_flags;     // flags of all levels (the ticket counter follows them)
  size_t flag_bytes;    // flags + counter: what every call clears
  size_t values_at;     // byte offset of the published maps in the workspace
  size_t workspace_bytes;
  bool ok;
};

// Level l holds ceil(K / 16^l) maps per channel group: flags [count][G] and values
// [count][2 (p, q)][C], one level after the other.
PLRNN_HOST_DEVICE unsigned level_count(const Plan& p, int l) {
  return ((p.K - 1u) >> (kFanBits * l)) + 1u;
}
PLRNN_HOST_DEVICE unsigned flag_offset(const Plan& p, int l) {
  unsigned off = 0;
  for (int j = 0; j < l; ++j) off += level_count(p, j) * p.G;
  return off;
}
PLRNN_HOST_DEVICE int64_t value_offset(const Plan& p, int l) {
  int64_t off = 0;
  for (int j = 0; j < l; ++j) off += int64_t(level_count(p, j)) * 2 * p.C;
  return off;
}
// Digit l of tile k in base 16: how many level-l maps tile k folds at level l.
PLRNN_HOST_DEVICE unsigned digit(unsigned k, int l) {
  return (k >> (kFanBits * l)) & (kFan - 1u);
}
// Index of the first level-l map in the level-(l+1) group that contains tile k.
PLRNN_HOST_DEVICE unsigned group_start(unsigned k, int l) {
  return unsigned((uint64_t(k) >> (kFanBits * (l + 1))) << kFanBits);
}

constexpr size_t align256(size_t n) { return (n + 255) / 256 * 256; }

int elem_size(int dtype) {
  switch (dtype) {
    case PLRNN_F32: return 4;
    case PLRNN_F64: return 8;
    case PLRNN_F16: return 2;
    case PLRNN_BF16: return 2;
    case PLRNN_C64: return 8;
    case PLRNN_C128: return 16;
    default: return 0;
  }
}

// Bytes of one accumulator value (the published maps).
int acc_size(int dtype) {
  return dtype == PLRNN_F64 || dtype == PLRNN_C64 ? 8 : dtype == PLRNN_C128 ? 16 : 4;
}

Plan make_plan(int64_t T, int64_t C, int dtype, bool vectorized, bool backward, int num_sms) {
  Plan p{};
  p.ok = false;
  if (T <= 0 || C <= 0 || elem_size(dtype) == 0) return p;
  const int V = vectorized ? 16 / elem_size(dtype) : 1;
  if (C % V != 0) return p;
  p.T = T;
  p.C = C;
  p.cols = C / V;
  if (p.cols <= 32) {
    p.CL = 1;
    while (p.CL < p.cols) p.CL *= 2;
  } else {  // the lane width (32, 16 or 8) that leaves the fewest lanes idle; ties to wider
    int64_t best = -1;
    for (int cl = 32; cl >= 8; cl /= 2) {
      const int64_t lanes = (p.cols + cl - 1) / cl * cl;
      if (best < 0 || lanes < best) best = lanes, p.CL = cl;
    }
  }
  p.log2CL = 0;
  while ((1 << p.log2CL) < p.CL) ++p.log2CL;
  const int64_t groups = (p.cols + p.CL - 1) / p.CL;
  const int64_t slices = kDataThreads / p.CL;
  const int64_t want_tiles = 2 * int64_t(std::max(num_sms, 1));
  p.S = max_steps(elem_size(dtype), V, backward);
  while (p.S > 1 && (T + slices * p.S - 1) / (slices * p.S) * groups < want_tiles) p.S /= 2;
  p.rows = slices * p.S;
  const int64_t tiles = (T + p.rows - 1) / p.rows;
  if (tiles * groups > 0x7fffffff) return p;
  p.K = unsigned(tiles);
  p.G = unsigned(groups);
  p.L = 0;
  while (p.L < kMaxLevels && (uint64_t(1) << (kFanBits * p.L)) < p.K) ++p.L;
  if (p.L == 0) {  // one tile along time: nothing is published, no ticket is taken
    p.n_flags = 0;
    p.flag_bytes = p.values_at = p.workspace_bytes = 0;
  } else {
    p.n_flags = flag_offset(p, p.L);
    p.flag_bytes = sizeof(unsigned) * (size_t(p.n_flags) + 1);
    p.values_at = align256(p.flag_bytes);
    p.workspace_bytes = p.values_at + size_t(acc_size(dtype)) * size_t(value_offset(p, p.L));
  }
  p.ok = true;
  return p;
}

// ------------------------------------------------------------------------------- the kernel

template <typename T> struct Args {
  const T* a;      // decays at the row of step 0 (backward: step r reads the row of step r-1)
  const T* x;      // impulses (backward: dL/dh) at the row of step 0
  const T* h0;     // forward: initial state; backward: the forward's (for dL/da at the end)
  const T* hnext;  // backward: saved h at the row of step 0 (step r reads the row of step r+1)
  T* out;          // forward: h; backward: dL/dx
  T* out2;         // backward: dL/da
  T* out_h0;       // backward: dL/dh0 (may be null)
  int64_t stride;  // elements from one step's row to the next (+-C)
  int64_t a_stride;  // the same for the decays: +-period, or 0 for one row at every step
  int64_t a_period;  // channel c reads decay column c % a_period
  unsigned* flags;
  typename AccOf<T>::type* values;
};

template <typename A, int V> struct Shared {
  A tot_p[kDataWarps][32 * V];  // each data warp's map, per channel of the tile
  A tot_q[kDataWarps][32 * V];
  A carry[32 * V];              // the state entering the tile
  unsigned ticket;
};

// Where tile k's and its groups' maps live, for the helper's channel lane (c0 = first channel).
template <typename A> struct Maps {
  unsigned* flags;
  A* values;
  const Plan* p;
  unsigned grp;
  PLRNN_DEVICE unsigned* flag(int level, unsigned index) const {
    return flags + flag_offset(*p, level) + index * p->G + grp;
  }
  PLRNN_DEVICE A* value(int level, unsigned index, int64_t c0) const {
    return values + value_offset(*p, level) + int64_t(index) * 2 * p->C + c0;
  }
};

// The helper warp: publish this tile's map (and its groups'), then the carry into the tile.
// Lanes < CL own the V channels of channel lane `lane`; the whole warp polls flags and syncs.
// Maps the helper loads before applying them: 8 in flight (4 for 8-wide vectors) keeps a fold of
// ~15 maps to two round trips to L2 within the data warps' register budget.
template <int V> PLRNN_HOST_DEVICE constexpr int fold_unroll() { return V == 8 ? 4 : 8; }

template <typename T, int V>
PLRNN_DEVICE void helper_warp(const Args<T>& args, const Plan& p,
                              Shared<typename AccOf<T>::type, V>& sh, unsigned k, unsigned grp,
                              bool backward) {
  using acc = typename AccOf<T>::type;
  const int lane = threadIdx.x % 32;
  const bool worker = lane < p.CL;
  const int64_t col = int64_t(grp) * p.CL + lane;
  const bool io = worker && col < p.cols;
  const int64_t c0 = col * V;
  const Maps<acc> maps{args.flags, args.values, &p, grp};

  acc carry[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    carry[v] = acc(0);
    if (!backward && io && args.h0) carry[v] = to_acc(args.h0[c0 + v]);
  }

  plrnn_dev::barrier_sync(kBarTotals, kThreads);
  if (p.L > 0) {
    // -- the tile's map: the data warps' maps in order
    acc mp[V], mq[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      mp[v] = acc(1), mq[v] = acc(0);
      if (worker) {
#pragma unroll
        for (int w = 0; w < kDataWarps; ++w) {
          const acc tp = sh.tot_p[w][lane * V + v], tq = sh.tot_q[w][lane * V + v];
          mq[v] = apply_map(tp, mq[v], tq);
          mp[v] = tp * mp[v];
        }
      }
    }
    // -- publish it; then, while this tile ends an aligned group of 16^l tiles, the group's
    //    map: its 15 earlier sibling groups' maps (level l-1, published by earlier tiles) and
    //    then the map just published
    for (int l = 0; l < p.L; ++l) {
      const unsigned index = l == 0 ? k : ((k + 1u) >> (kFanBits * l)) - 1u;
      if (l > 0) {
        if (((k + 1u) & ((1u << (kFanBits * l)) - 1u)) != 0u) break;
        const unsigned first = index << kFanBits;
        if (lane < int(kFan) - 1) plrnn_dev::wait_nonzero(maps.flag(l - 1, first + lane));
        __syncwarp();
        plrnn_dev::fence();
        if (io) {
          acc gp[V], gq[V];
#pragma unroll
          for (int v = 0; v < V; ++v) gp[v] = acc(1), gq[v] = acc(0);
#pragma unroll(fold_unroll<V>())
          for (unsigned j = 0; j + 1 < kFan; ++j) {
            const acc* e = maps.value(l - 1, first + j, c0);
            acc sp[V], sq[V];
            load_published<acc, V>(e, sp);
            load_published<acc, V>(e + p.C, sq);
#pragma unroll
            for (int v = 0; v < V; ++v) {
              gq[v] = apply_map(sp[v], gq[v], sq[v]);
              gp[v] = sp[v] * gp[v];
            }
          }
#pragma unroll
          for (int v = 0; v < V; ++v) {
            mq[v] = apply_map(mp[v], gq[v], mq[v]);
            mp[v] = mp[v] * gp[v];
          }
        }
      }
      if (io) {
        acc* dst = maps.value(l, index, c0);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          dst[v] = mp[v];
          dst[p.C + v] = mq[v];
        }
        plrnn_dev::fence();
      }
      __syncwarp();
      if (lane == 0) {
        plrnn_dev::fence();
        plrnn_dev::st_release(maps.flag(l, index), 1u);
      }
    }

    // -- the carry: wait for every map tile k folds (all lanes poll, in parallel), then fold
    //    them in time order, highest level first
    unsigned n = 0;
    for (int l = 0; l < p.L; ++l) n += digit(k, l);
    for (unsigned e = unsigned(lane); e < n; e += 32u) {
      unsigned rest = e;
      for (int l = p.L - 1; l >= 0; --l) {
        const unsigned d = digit(k, l);
        if (rest < d) {
          plrnn_dev::wait_nonzero(maps.flag(l, group_start(k, l) + rest));
          break;
        }
        rest -= d;
      }
    }
    __syncwarp();
    plrnn_dev::fence();
    if (io) {
      for (int l = p.L - 1; l >= 0; --l) {
        const unsigned d = digit(k, l), first = group_start(k, l);
#pragma unroll(fold_unroll<V>())
        for (unsigned j = 0; j < d; ++j) {
          const acc* e = maps.value(l, first + j, c0);
          acc sp[V], sq[V];
          load_published<acc, V>(e, sp);
          load_published<acc, V>(e + p.C, sq);
#pragma unroll
          for (int v = 0; v < V; ++v) carry[v] = apply_map(sp[v], carry[v], sq[v]);
        }
      }
    }
  }
  if (worker) {
#pragma unroll
    for (int v = 0; v < V; ++v) sh.carry[lane * V + v] = carry[v];
  }
  plrnn_dev::barrier_arrive(kBarCarry, kThreads);
}

// A data warp: load, reduce, scan within the block, wait for the carry, re-scan and store.
template <typename T, int V, bool BWD>
PLRNN_DEVICE void data_warp(const Args<T>& args, const Plan& p,
                            Shared<typename AccOf<T>::type, V>& sh, unsigned k, unsigned grp) {
  using acc = typename AccOf<T>::type;
  constexpr int kSteps = max_steps(int(sizeof(T)), V, BWD);
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int cl = tid & (p.CL - 1);      // channel lane
  const int slice = tid >> p.log2CL;    // time slice within the tile
  const int wslice = lane >> p.log2CL;  // time slice within the warp
  const int wslices = 32 >> p.log2CL;
  const int64_t col = int64_t(grp) * p.CL + cl;
  const bool col_ok = col < p.cols;
  const int64_t c0 = col * V;
  const int64_t ca = c0 % args.a_period;  // this thread's first decay column
  const int64_t r0 = int64_t(k) * p.rows + int64_t(slice) * p.S;
  const int64_t stride = args.stride;

  // -- this thread's steps; steps past the end are the identity map (a = 1, x = 0)
  Pack<T, V> ra[kSteps], rx[kSteps];
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    const int64_t r = r0 + s;
    const bool ok = s < p.S && r < p.T && col_ok;
    if (ok && !(BWD && r == 0)) {
      ra[s] = load_pack<T, V>(args.a + (BWD ? r - 1 : r) * args.a_stride + ca);
    } else {
      ra[s] = filled<T, V>(ok ? acc(0) : acc(1));  // backward step 0 has no decay: g(-1) = 0
    }
    rx[s] = ok ? load_pack<T, V>(args.x + r * stride + c0) : filled<T, V>(acc(0));
    if constexpr (BWD) {
#pragma unroll
      for (int v = 0; v < V; ++v) ra[s].v[v] = conj(ra[s].v[v]);
    }
  }

  // -- this thread's map h -> p * h + q over its steps
  acc mp[V], mq[V];
#pragma unroll
  for (int v = 0; v < V; ++v) mp[v] = acc(1), mq[v] = acc(0);
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    if (s < p.S) {
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const acc av = to_acc(ra[s].v[v]);
        mq[v] = av * mq[v] + to_acc(rx[s].v[v]);
        mp[v] *= av;
      }
    }
  }

  // -- inclusive scan over the slices of this warp (same channel lane, earlier slice =
  //    lane - d * CL); earlier (pp, qq) then (p, q) composes to (p * pp, p * qq + q)
  for (int d = 1; d < wslices; d *= 2) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const acc pp = shfl_up(mp[v], unsigned(d * p.CL));
      const acc qq = shfl_up(mq[v], unsigned(d * p.CL));
      if (wslice >= d) {
        mq[v] = apply_map(mp[v], qq, mq[v]);
        mp[v] = mp[v] * pp;
      }
    }
  }
  // exclusive: the map of the earlier slices of this warp
  acc ep[V], eq[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    ep[v] = shfl_up(mp[v], unsigned(p.CL));
    eq[v] = shfl_up(mq[v], unsigned(p.CL));
    if (wslice == 0) ep[v] = acc(1), eq[v] = acc(0);
  }
  if (wslice == wslices - 1) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      sh.tot_p[warp][cl * V + v] = mp[v];
      sh.tot_q[warp][cl * V + v] = mq[v];
    }
  }
  plrnn_dev::barrier_arrive(kBarTotals, kThreads);
  plrnn_dev::barrier_sync(kBarCarry, kThreads);

  // -- this thread's starting state: carry-in, then the earlier warps, then the earlier slices
  acc h[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    h[v] = sh.carry[cl * V + v];
    for (int w = 0; w < warp; ++w)
      h[v] = apply_map(sh.tot_p[w][cl * V + v], h[v], sh.tot_q[w][cl * V + v]);
    h[v] = apply_map(ep[v], h[v], eq[v]);
  }

  if constexpr (!BWD) {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int64_t r = r0 + s;
      if (s < p.S) {
        Pack<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) {
          h[v] = to_acc(ra[s].v[v]) * h[v] + to_acc(rx[s].v[v]);
          o.v[v] = from_acc<T>(h[v]);
        }
        if (r < p.T && col_ok) store_pack<T, V>(args.out + r * stride + c0, o);
      }
    }
  } else {
    // dL/da of step r needs h at step r+1 (h0, or zero, past the last step)
    Pack<T, V> rh[kSteps];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int64_t r = r0 + s;
      if (s < p.S && col_ok && r + 1 < p.T) {
        rh[s] = load_pack<T, V>(args.hnext + (r + 1) * stride + c0);
      } else {
        rh[s] = filled<T, V>(acc(0));
        if (s < p.S && col_ok && r + 1 == p.T && args.h0) {
#pragma unroll
          for (int v = 0; v < V; ++v) rh[s].v[v] = args.h0[c0 + v];
        }
      }
#pragma unroll
      for (int v = 0; v < V; ++v) rh[s].v[v] = conj(rh[s].v[v]);
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int64_t r = r0 + s;
      if (s < p.S) {
        Pack<T, V> gx, ga;
#pragma unroll
        for (int v = 0; v < V; ++v) {
          h[v] = to_acc(ra[s].v[v]) * h[v] + to_acc(rx[s].v[v]);
          gx.v[v] = from_acc<T>(h[v]);
          ga.v[v] = from_acc<T>(to_acc(rh[s].v[v]) * h[v]);
        }
        if (r < p.T && col_ok) {
          store_pack<T, V>(args.out + r * stride + c0, gx);
          store_pack<T, V>(args.out2 + r * stride + c0, ga);
          if (r == p.T - 1 && args.out_h0) {
            const Pack<T, V> a_last = load_pack<T, V>(args.a + r * args.a_stride + ca);
#pragma unroll
            for (int v = 0; v < V; ++v)
              args.out_h0[c0 + v] = from_acc<T>(to_acc(conj(a_last.v[v])) * h[v]);
          }
        }
      }
    }
  }
}

template <typename T, int V, bool BWD>
__global__ void __launch_bounds__(kThreads, 2) parallel_scan(const Args<T> args, const Plan p) {
  using acc = typename AccOf<T>::type;
  __shared__ Shared<acc, V> sh;
  const bool helper = threadIdx.x >= kDataThreads;
  // tickets in launch order: time-major, so earlier tiles of a channel group hold earlier ones
  unsigned ticket = blockIdx.x;
  if (p.L > 0) {
    if (threadIdx.x == kDataThreads) sh.ticket = plrnn_dev::next_ticket(args.flags + p.n_flags);
    __syncthreads();
    ticket = sh.ticket;
  }
  const unsigned k = ticket / p.G, grp = ticket % p.G;
  if (helper) {
    helper_warp<T, V>(args, p, sh, k, grp, BWD);
  } else {
    data_warp<T, V, BWD>(args, p, sh, k, grp);
  }
}

// ------------------------------------------------------------------------------- launchers

template <typename T, int V, bool BWD>
cudaError_t launch(const Args<T>& args, const Plan& p, cudaStream_t stream) {
  const auto kernel = parallel_scan<T, V, BWD>;
  PLRNN_LAUNCH(kernel, dim3(p.K * p.G), dim3(kThreads), stream, args, p);
  return cudaGetLastError();
}

template <typename T, bool BWD>
int run(Args<T> args, const Plan& p, bool vectorized, void* workspace, void* stream_) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  if (p.L > 0) {
    if (!workspace) return cudaErrorInvalidValue;
    args.flags = static_cast<unsigned*>(workspace);
    args.values = reinterpret_cast<typename AccOf<T>::type*>(static_cast<char*>(workspace) +
                                                             p.values_at);
    const cudaError_t err = cudaMemsetAsync(workspace, 0, p.flag_bytes, stream);
    if (err != cudaSuccess) return err;
  }
  constexpr int kVec = int(16 / sizeof(T));
  return vectorized ? launch<T, kVec, BWD>(args, p, stream) : launch<T, 1, BWD>(args, p, stream);
}

// The decay layout of cuda_scan.h, set on `args` walking from data row `first_row` by `dir`.
template <typename T>
void set_decays(Args<T>& args, const void* decays, int64_t period, bool per_step,
                int64_t first_row, int64_t dir) {
  args.a = static_cast<const T*>(decays) + (per_step ? first_row * period : 0);
  args.a_stride = per_step ? dir * period : 0;
  args.a_period = period;
}

template <typename T>
int forward(const void* decays, const void* impulses, const void* initial_state, void* out,
            const Plan& p, int reverse, int64_t period, bool per_step, bool vectorized,
            void* workspace, void* stream) {
  const int64_t first_row = reverse ? p.T - 1 : 0, dir = reverse ? -1 : 1;
  const int64_t first = first_row * p.C;
  Args<T> args{};
  set_decays(args, decays, period, per_step, first_row, dir);
  args.x = static_cast<const T*>(impulses) + first;
  args.h0 = static_cast<const T*>(initial_state);
  args.out = static_cast<T*>(out) + first;
  args.stride = dir * p.C;
  return run<T, false>(args, p, vectorized, workspace, stream);
}

template <typename T>
int backward(const void* decays, const void* h, const void* grad_h, const void* initial_state,
             void* grad_impulses, void* grad_decays, void* grad_initial_state, const Plan& p,
             int reverse, int64_t period, bool per_step, bool vectorized, void* workspace,
             void* stream) {
  // against the forward direction: from the forward's last row back to its first
  const int64_t first_row = reverse ? 0 : p.T - 1, dir = reverse ? 1 : -1;
  const int64_t first = first_row * p.C;
  Args<T> args{};
  set_decays(args, decays, period, per_step, first_row, dir);
  args.x = static_cast<const T*>(grad_h) + first;
  args.h0 = static_cast<const T*>(initial_state);
  args.hnext = static_cast<const T*>(h) + first;
  args.out = static_cast<T*>(grad_impulses) + first;
  args.out2 = static_cast<T*>(grad_decays) + first;
  args.out_h0 = static_cast<T*>(grad_initial_state);
  args.stride = dir * p.C;
  return run<T, true>(args, p, vectorized, workspace, stream);
}

// A period that divides C and, for the vectorized kernels, holds whole vectors.
bool decay_layout_ok(int64_t C, int64_t period, int dtype, int vectorized) {
  const int size = elem_size(dtype);
  if (period <= 0 || C % period != 0 || size == 0) return false;
  return !vectorized || period % (16 / size) == 0;
}

// ---------------------------------------------------------------- packed batches, short ones

constexpr int kPackedThreads = 128;

template <typename T> struct PackedArgs {
  const T* a;       // decays: rows of a_period columns (a_row = a_period, or 0: one row)
  const T* x;       // impulses (backward: dL/dh)
  const T* h0;      // (N, C) initial states, or null
  const T* h;       // backward: the saved h
  T* out;           // forward: h; backward: dL/dx
  T* out2;          // backward: dL/da
  T* out_h0;        // backward: (N, C) dL/dh0, or null
  const int64_t* cu;
  int64_t N, C, cols, a_row, a_period;
  int64_t dir;      // the forward's direction: +1, or -1 for reverse
};

// Thread (n, column) runs sequence n over its V channels: consecutive threads take consecutive
// columns of one sequence, so a warp's loads of a step are one contiguous run of its row.
template <typename T, int V, bool BWD>
__global__ void __launch_bounds__(kPackedThreads) packed_scan(const PackedArgs<T> args) {
  using acc = typename AccOf<T>::type;
  const int64_t id = int64_t(blockIdx.x) * kPackedThreads + threadIdx.x;
  if (id >= args.N * args.cols) return;
  const int64_t n = id / args.cols, c0 = (id % args.cols) * V, ca = c0 % args.a_period;
  const int64_t lo = args.cu[n], len = args.cu[n + 1] - lo, C = args.C, dir = args.dir;
  const int64_t first = dir > 0 ? lo : lo + len - 1;  // the forward's first row
  acc st[V];
  if constexpr (!BWD) {
#pragma unroll
    for (int v = 0; v < V; ++v) st[v] = args.h0 ? to_acc(args.h0[n * C + c0 + v]) : acc(0);
#pragma unroll 4
    for (int64_t r = 0; r < len; ++r) {
      const int64_t row = first + r * dir;
      const Pack<T, V> a = load_pack<T, V>(args.a + row * args.a_row + ca);
      const Pack<T, V> x = load_pack<T, V>(args.x + row * C + c0);
      Pack<T, V> o;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        st[v] = to_acc(a.v[v]) * st[v] + to_acc(x.v[v]);
        o.v[v] = from_acc<T>(st[v]);
      }
      store_pack<T, V>(args.out + row * C + c0, o);
    }
  } else {
    // g[t] = conj(a[t + dir]) * g[t + dir] + dL/dh[t], from the forward's last row back; then
    // dL/dx = g, dL/da[t] = conj(h[t - dir]) * g[t] (h0, or zero, before the first row)
#pragma unroll
    for (int v = 0; v < V; ++v) st[v] = acc(0);
    const int64_t last = first + (len - 1) * dir;
#pragma unroll 4
    for (int64_t r = 0; r < len; ++r) {
      const int64_t row = last - r * dir;
      const Pack<T, V> gh = load_pack<T, V>(args.x + row * C + c0);
      Pack<T, V> carried = filled<T, V>(acc(0)), hp = filled<T, V>(acc(0));
      if (r > 0) carried = load_pack<T, V>(args.a + (row + dir) * args.a_row + ca);
      if (r + 1 < len) {
        hp = load_pack<T, V>(args.h + (row - dir) * C + c0);
      } else if (args.h0) {
#pragma unroll
        for (int v = 0; v < V; ++v) hp.v[v] = args.h0[n * C + c0 + v];
      }
      Pack<T, V> gx, ga;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        st[v] = to_acc(conj(carried.v[v])) * st[v] + to_acc(gh.v[v]);
        gx.v[v] = from_acc<T>(st[v]);
        ga.v[v] = from_acc<T>(to_acc(conj(hp.v[v])) * st[v]);
      }
      store_pack<T, V>(args.out + row * C + c0, gx);
      store_pack<T, V>(args.out2 + row * C + c0, ga);
    }
    if (args.out_h0) {  // dL/dh0 = conj(a[first]) * g[first]; zero for an empty sequence
      const Pack<T, V> a =
          len > 0 ? load_pack<T, V>(args.a + first * args.a_row + ca) : filled<T, V>(acc(0));
#pragma unroll
      for (int v = 0; v < V; ++v)
        args.out_h0[n * C + c0 + v] = from_acc<T>(to_acc(conj(a.v[v])) * st[v]);
    }
  }
}

template <typename T, bool BWD>
int packed_run(PackedArgs<T> args, int reverse, int64_t period, bool per_step, bool vectorized,
               void* stream_) {
  constexpr int kVec = int(16 / sizeof(T));
  args.dir = reverse ? -1 : 1;
  args.a_period = period;
  args.a_row = per_step ? period : 0;
  args.cols = args.C / (vectorized ? kVec : 1);
  const int64_t blocks = (args.N * args.cols + kPackedThreads - 1) / kPackedThreads;
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const auto stream = static_cast<cudaStream_t>(stream_);
  if (vectorized) {
    const auto kernel = packed_scan<T, kVec, BWD>;
    PLRNN_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(kPackedThreads), stream, args);
  } else {
    const auto kernel = packed_scan<T, 1, BWD>;
    PLRNN_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(kPackedThreads), stream, args);
  }
  return cudaGetLastError();
}

}  // namespace

extern "C" int plrnn_parallel_can_vectorize(const void* const* pointers, int count, int64_t C,
                                            int64_t decay_period, int dtype) {
  const int size = elem_size(dtype);
  if (size == 0 || C % (16 / size) != 0 || decay_period % (16 / size) != 0) return 0;
  for (int i = 0; i < count; ++i)
    if (pointers[i] && (reinterpret_cast<uintptr_t>(pointers[i]) & 15u) != 0) return 0;
  return 1;
}

extern "C" size_t plrnn_parallel_workspace_bytes(int64_t T, int64_t C, int dtype,
                                                 int vectorized, int backward, int num_sms) {
  const Plan p = make_plan(T, C, dtype, vectorized != 0, backward != 0, num_sms);
  return p.ok ? p.workspace_bytes : 0;
}

extern "C" int plrnn_parallel_forward(const void* decays, const void* impulses,
                                      const void* initial_state, void* out, int64_t T, int64_t C,
                                      int reverse, int dtype, int64_t decay_period,
                                      int decay_per_step, int vectorized, int num_sms,
                                      void* workspace, void* stream) {
  if (T <= 0 || C <= 0) return cudaSuccess;
  if (!decay_layout_ok(C, decay_period, dtype, vectorized)) return cudaErrorInvalidValue;
  const Plan p = make_plan(T, C, dtype, vectorized != 0, false, num_sms);
  if (!p.ok) return cudaErrorInvalidValue;
  const bool vec = vectorized != 0;
#define PLRNN_FORWARD(type) \
  forward<type>(decays, impulses, initial_state, out, p, reverse, decay_period,                 \
                decay_per_step != 0, vec, workspace, stream)
  switch (dtype) {
    case PLRNN_F32: return PLRNN_FORWARD(float);
    case PLRNN_F64: return PLRNN_FORWARD(double);
    case PLRNN_F16: return PLRNN_FORWARD(__half);
    case PLRNN_BF16: return PLRNN_FORWARD(__nv_bfloat16);
    case PLRNN_C64: return PLRNN_FORWARD(Cplx<float>);
    case PLRNN_C128: return PLRNN_FORWARD(Cplx<double>);
    default: return cudaErrorInvalidValue;
  }
#undef PLRNN_FORWARD
}

extern "C" int plrnn_parallel_backward(const void* decays, const void* h, const void* grad_h,
                                       const void* initial_state, void* grad_impulses,
                                       void* grad_decays, void* grad_initial_state, int64_t T,
                                       int64_t C, int reverse, int dtype, int64_t decay_period,
                                       int decay_per_step, int vectorized, int num_sms,
                                       void* workspace, void* stream) {
  if (T <= 0 || C <= 0) return cudaSuccess;
  if (!decay_layout_ok(C, decay_period, dtype, vectorized)) return cudaErrorInvalidValue;
  const Plan p = make_plan(T, C, dtype, vectorized != 0, true, num_sms);
  if (!p.ok) return cudaErrorInvalidValue;
  const bool vec = vectorized != 0;
#define PLRNN_BACKWARD(type)                                                                   \
  backward<type>(decays, h, grad_h, initial_state, grad_impulses, grad_decays,                 \
                 grad_initial_state, p, reverse, decay_period, decay_per_step != 0, vec,       \
                 workspace, stream)
  switch (dtype) {
    case PLRNN_F32: return PLRNN_BACKWARD(float);
    case PLRNN_F64: return PLRNN_BACKWARD(double);
    case PLRNN_F16: return PLRNN_BACKWARD(__half);
    case PLRNN_BF16: return PLRNN_BACKWARD(__nv_bfloat16);
    case PLRNN_C64: return PLRNN_BACKWARD(Cplx<float>);
    case PLRNN_C128: return PLRNN_BACKWARD(Cplx<double>);
    default: return cudaErrorInvalidValue;
  }
#undef PLRNN_BACKWARD
}

extern "C" int plrnn_packed_forward(const void* decays, const void* impulses,
                                    const void* initial_state, void* out,
                                    const int64_t* cu_seqlens, int64_t N, int64_t C, int reverse,
                                    int dtype, int64_t decay_period, int decay_per_step,
                                    int vectorized, void* stream) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  if (!decay_layout_ok(C, decay_period, dtype, vectorized)) return cudaErrorInvalidValue;
#define PLRNN_PACKED_FORWARD(type)                                                             \
  packed_run<type, false>(                                                                     \
      PackedArgs<type>{static_cast<const type*>(decays), static_cast<const type*>(impulses),   \
                       static_cast<const type*>(initial_state), nullptr,                       \
                       static_cast<type*>(out), nullptr, nullptr, cu_seqlens, N, C, 0, 0, 0, 0}, \
      reverse, decay_period, decay_per_step != 0, vectorized != 0, stream)
  switch (dtype) {
    case PLRNN_F32: return PLRNN_PACKED_FORWARD(float);
    case PLRNN_F64: return PLRNN_PACKED_FORWARD(double);
    case PLRNN_F16: return PLRNN_PACKED_FORWARD(__half);
    case PLRNN_BF16: return PLRNN_PACKED_FORWARD(__nv_bfloat16);
    case PLRNN_C64: return PLRNN_PACKED_FORWARD(Cplx<float>);
    case PLRNN_C128: return PLRNN_PACKED_FORWARD(Cplx<double>);
    default: return cudaErrorInvalidValue;
  }
#undef PLRNN_PACKED_FORWARD
}

extern "C" int plrnn_packed_backward(const void* decays, const void* h, const void* grad_h,
                                     const void* initial_state, void* grad_impulses,
                                     void* grad_decays, void* grad_initial_state,
                                     const int64_t* cu_seqlens, int64_t N, int64_t C, int reverse,
                                     int dtype, int64_t decay_period, int decay_per_step,
                                     int vectorized, void* stream) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  if (!decay_layout_ok(C, decay_period, dtype, vectorized)) return cudaErrorInvalidValue;
#define PLRNN_PACKED_BACKWARD(type)                                                            \
  packed_run<type, true>(                                                                      \
      PackedArgs<type>{static_cast<const type*>(decays), static_cast<const type*>(grad_h),     \
                       static_cast<const type*>(initial_state), static_cast<const type*>(h),   \
                       static_cast<type*>(grad_impulses), static_cast<type*>(grad_decays),     \
                       static_cast<type*>(grad_initial_state), cu_seqlens, N, C, 0, 0, 0, 0},  \
      reverse, decay_period, decay_per_step != 0, vectorized != 0, stream)
  switch (dtype) {
    case PLRNN_F32: return PLRNN_PACKED_BACKWARD(float);
    case PLRNN_F64: return PLRNN_PACKED_BACKWARD(double);
    case PLRNN_F16: return PLRNN_PACKED_BACKWARD(__half);
    case PLRNN_BF16: return PLRNN_PACKED_BACKWARD(__nv_bfloat16);
    case PLRNN_C64: return PLRNN_PACKED_BACKWARD(Cplx<float>);
    case PLRNN_C128: return PLRNN_PACKED_BACKWARD(Cplx<double>);
    default: return cudaErrorInvalidValue;
  }
#undef PLRNN_PACKED_BACKWARD
}
