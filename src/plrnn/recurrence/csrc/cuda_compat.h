// The few device facilities the scan kernels use, behind one small interface, so that the same
// kernel source compiles two ways:
//   nvcc                 the real thing (this file then only adds inline-PTX helpers);
//   g++ -DPLRNN_EMULATE  a host emulator that runs every block of a launch in turn, one OS thread
//                        per CUDA thread, with real barriers for __syncthreads/__syncwarp and the
//                        warp shuffles. CI has no GPU; the emulator lets it execute the kernels'
//                        index arithmetic, tiling, in-block scans and cross-block protocol
//                        against the float64 reference (tests/recurrence/test_cuda_build.py).
// Blocks run in blockIdx order in the emulator, so a kernel that waits on a flag that no earlier
// block has set would wait forever on a GPU too (or only by luck of scheduling): the emulator
// reports that as an error instead of spinning. It does not model the memory model (fences,
// caches), warp divergence or resource limits; those are what the GPU tests are for.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(__CUDACC__) && !defined(PLRNN_EMULATE)

#include <cuda_runtime.h>

#define PLRNN_DEVICE __device__ __forceinline__
#define PLRNN_HOST_DEVICE __host__ __device__ __forceinline__
#define PLRNN_LAUNCH(kernel, grid, block, stream, ...) \
  kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)

namespace plrnn_dev {

// Flags between blocks: a relaxed poll plus a fence is an acquire (PTX memory model, "fence-based
// synchronization"); polling with relaxed loads lets one thread have several polls in flight.
PLRNN_DEVICE unsigned ld_relaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

PLRNN_DEVICE void st_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

PLRNN_DEVICE void fence() { __threadfence(); }

// Spins until *p != 0, then fences: with the publisher's release this is an acquire, so what
// was written before the flag is visible to this thread (and, through a later barrier, to the
// threads it synchronises with). Callers only wait on blocks that took an earlier ticket (they
// are running or done), so this always ends.
PLRNN_DEVICE void wait_nonzero(const unsigned* p) {
  while (ld_relaxed(p) == 0u) __nanosleep(64);
  fence();
}

// Values published by other blocks are read at L2 (ld.global.cg): L1 is not coherent.
template <typename T> PLRNN_DEVICE T load_cg(const T* p) { return __ldcg(p); }

PLRNN_DEVICE unsigned next_ticket(unsigned* counter) { return atomicAdd(counter, 1u); }

// Reads N = 4, 8 or 16 bytes at L2 (published values; see load_cg).
template <int N> PLRNN_DEVICE void load_cg_bytes(const void* p, void* out) {
  static_assert(N == 4 || N == 8 || N == 16, "4, 8 or 16 bytes");
  if constexpr (N == 16) {
    *static_cast<uint4*>(out) = __ldcg(static_cast<const uint4*>(p));
  } else if constexpr (N == 8) {
    *static_cast<uint2*>(out) = __ldcg(static_cast<const uint2*>(p));
  } else {
    *static_cast<unsigned*>(out) = __ldcg(static_cast<const unsigned*>(p));
  }
}

// Named barriers for warp-specialised blocks: unlike __syncthreads they may be reached from
// different places in the code (by whole warps); `arrive` does not wait.
PLRNN_DEVICE void barrier_sync(unsigned id, unsigned count) {
  asm volatile("barrier.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
PLRNN_DEVICE void barrier_arrive(unsigned id, unsigned count) {
  asm volatile("barrier.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}

PLRNN_DEVICE bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

}  // namespace plrnn_dev

#else  // ------------------------------------------------------------------------ host emulator

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>  // the types (cudaError_t, cudaStream_t, dim3); not the library

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define PLRNN_DEVICE inline
#define PLRNN_HOST_DEVICE inline

namespace plrnn_emu {

struct Warp {
  std::barrier<> bar{32};
  alignas(16) unsigned char slot[32][16];
};

struct State {
  std::atomic<int> error{0};
  std::mutex mu;
  std::string message;
  std::unique_ptr<std::barrier<>> block_bar;
  std::unique_ptr<std::barrier<>> named[16];
  unsigned named_count[16] = {};
  std::vector<std::unique_ptr<Warp>> warps;
  dim3 block_dim, grid_dim;
};

inline State& state() {
  static State s;
  return s;
}

inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;

inline void fail(const char* what) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.error.load() == 0) s.message = what;
  s.error.store(int(cudaErrorLaunchFailure));
}

// Runs kernel() for every block of a 1-D grid in blockIdx order, blockDim.x threads at a time.
template <typename F> void launch(dim3 grid, dim3 block, F&& kernel) {
  State& s = state();
  if (block.x == 0 || block.x % 32 != 0 || block.x > 1024 || block.y != 1 || block.z != 1 ||
      grid.y != 1 || grid.z != 1) {
    fail("emulator: 1-D launches of whole warps (32..1024 threads) only");
    return;
  }
  if (grid.x == 0) return;
  s.block_dim = block;
  s.grid_dim = grid;
  s.block_bar = std::make_unique<std::barrier<>>(block.x);
  for (auto& b : s.named) b.reset();
  s.warps.clear();
  for (unsigned w = 0; w < block.x / 32; ++w) s.warps.push_back(std::make_unique<Warp>());
  std::vector<std::thread> threads;
  threads.reserve(block.x);
  for (unsigned t = 0; t < block.x; ++t) {
    threads.emplace_back([&, t] {
      thread_idx = dim3(t);
      for (unsigned b = 0; b < grid.x; ++b) {
        block_idx = dim3(b);
        kernel();
        s.block_bar->arrive_and_wait();  // the block is done before the next one starts
      }
    });
  }
  for (auto& th : threads) th.join();
}

inline Warp& my_warp() { return *state().warps[thread_idx.x / 32]; }

inline std::barrier<>* named_barrier(unsigned id, unsigned count) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (id == 0 || id >= 16 || count == 0 || count % 32 != 0 || count > s.block_dim.x) {
    fail("emulator: bad named barrier");
    return nullptr;
  }
  if (!s.named[id]) {
    s.named[id] = std::make_unique<std::barrier<>>(count);
    s.named_count[id] = count;
  } else if (s.named_count[id] != count) {
    fail("emulator: one named barrier used with two thread counts");
    return nullptr;
  }
  return s.named[id].get();
}

}  // namespace plrnn_emu

#define threadIdx (::plrnn_emu::thread_idx)
#define blockIdx (::plrnn_emu::block_idx)
#define blockDim (::plrnn_emu::state().block_dim)
#define gridDim (::plrnn_emu::state().grid_dim)

#define PLRNN_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), ::plrnn_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); }))

inline void __syncthreads() { plrnn_emu::state().block_bar->arrive_and_wait(); }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) plrnn_emu::fail("emulator: __syncwarp with a partial mask");
  plrnn_emu::my_warp().bar.arrive_and_wait();
}

template <typename T> T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
  static_assert(sizeof(T) <= 16, "shuffle of a type wider than 16 bytes");
  if (mask != 0xffffffffu) plrnn_emu::fail("emulator: shuffle with a partial mask");
  plrnn_emu::Warp& w = plrnn_emu::my_warp();
  const unsigned lane = threadIdx.x % 32;
  std::memcpy(w.slot[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T out = v;
  if (lane >= delta) std::memcpy(&out, w.slot[lane - delta], sizeof(T));
  w.bar.arrive_and_wait();
  return out;
}

namespace plrnn_emu {

inline cudaError_t get_last_error() {
  return static_cast<cudaError_t>(state().error.exchange(0));
}
inline const char* error_string(cudaError_t e) {
  return e == cudaSuccess ? "no error" : state().message.c_str();
}
inline cudaError_t memset_async(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t device_malloc(void** p, size_t n) {
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t device_free(void* p) {
  std::free(p);
  return cudaSuccess;
}

}  // namespace plrnn_emu

// The kernels' host code calls the runtime by its usual names; here they reach the emulator.
#define cudaGetLastError plrnn_emu::get_last_error
#define cudaGetErrorString plrnn_emu::error_string
#define cudaMemsetAsync plrnn_emu::memset_async
#define cudaMalloc plrnn_emu::device_malloc
#define cudaFree plrnn_emu::device_free

namespace plrnn_dev {

inline unsigned ld_relaxed(const unsigned* p) {
  return std::atomic_ref<const unsigned>(*p).load(std::memory_order_relaxed);
}
inline void st_release(unsigned* p, unsigned v) {
  std::atomic_ref<unsigned>(*p).store(v, std::memory_order_release);
}
inline void fence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Blocks run in order here: a flag that is not set yet will never be.
inline void wait_nonzero(const unsigned* p) {
  if (ld_relaxed(p) == 0u) plrnn_emu::fail("emulator: waited on a flag no earlier block set");
  fence();
}

template <typename T> inline T load_cg(const T* p) { return *p; }

template <int N> inline void load_cg_bytes(const void* p, void* out) {
  static_assert(N == 4 || N == 8 || N == 16, "4, 8 or 16 bytes");
  if (reinterpret_cast<uintptr_t>(p) % N != 0) plrnn_emu::fail("emulator: misaligned load");
  std::memcpy(out, p, N);
}

inline void barrier_sync(unsigned id, unsigned count) {
  if (auto* b = plrnn_emu::named_barrier(id, count)) b->arrive_and_wait();
}
inline void barrier_arrive(unsigned id, unsigned count) {
  if (auto* b = plrnn_emu::named_barrier(id, count)) (void)b->arrive();
}

inline unsigned next_ticket(unsigned* counter) {
  return std::atomic_ref<unsigned>(*counter).fetch_add(1u);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace plrnn_dev

#endif
