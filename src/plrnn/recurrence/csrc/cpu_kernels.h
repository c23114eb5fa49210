// Entry points of the CPU kernels on raw (T, C) row-major buffers, one instantiation per storage
// type (cpu_kernels_{f32,f64,f16}.cpp); the torch binding (cpu_scan.cpp) calls them.
#pragma once

#include <c10/util/complex.h>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>  // sysconf
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // _mm_getcsr, _mm_setcsr
#endif

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace plrnn {

// Flush-to-zero and denormals-are-zero on the calling thread while a kernel runs, restoring the
// caller's floating-point state afterwards. Running products of decays cross the subnormal range
// whenever gates sit in (0.5, 1) and a chunk is long, and every subnormal operand costs a
// microcode assist (measured on an Intel Xeon: cpu_parallel up to 17x slower with decays in
// [0.5, 1) than with flushing). What is flushed is below 1.2e-38 (float) or 2.2e-308 (double) in
// magnitude, far under the rounding error of any state it is added to; a state that itself
// decays into that range reads as exactly 0 instead of a subnormal. The OpenMP workers of
// at::parallel_for keep their own control registers, so every parallel region sets it too, and the
// calling thread holds it only around its own arithmetic, never across a parallel region: a
// worker that OpenMP starts there copies the starting thread's register, and would go on flushing
// after the call, its own save and restore keeping the flushed state (seen when a test raised the
// thread count just before a call).
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtzDaz); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bit 15 (FTZ) and bit 6 (DAZ)
  unsigned saved_;
#elif defined(__aarch64__)
  FlushDenormals() {
    asm volatile("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t flushed = saved_ | (uint64_t(1) << 24);  // FPCR.FZ
    asm volatile("msr fpcr, %0" : : "r"(flushed));
  }
  ~FlushDenormals() { asm volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#else
  FlushDenormals() {}  // other architectures: subnormals stay exact (and may be slow)
#endif
 public:
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// Where the decay of step t, channel c lives: a[(per_step ? t : 0) * period + c % period].
//   the impulses' own layout           {C, true}
//   time-invariant (one row of C)      {C, false}
//   shared over a batch: (T, 1, P) decays for (T, B, P) impulses, C = B * P     {P, true}
struct DecayLayout {
  int64_t period;
  bool per_step;
};

// Widest rows (channels) for which cpu_parallel also runs Algorithm 1 inside each thread, with
// chunks side by side in registers. Whether that pays depends on the CPU (calibration.py
// measures it once per CPU): 32 is what an AMD EPYC measured; on an Intel Xeon (Skylake-SP) it
// ran at 0.56-0.81x the plain loop at every width. Process-wide, set through the
// plrnn::cpu_ilp_channels op.
inline std::atomic<int64_t>& ilp_max_channels() {
  static std::atomic<int64_t> channels{32};
  return channels;
}

// How the CPU kernels step rows wider than one register strip (64 floats, 32 doubles), float
// and double: one whole row after the other, the state read back from the row just written
// (sequential), or blocks of rows strip by strip with the state in registers (strips). Which is
// faster depends on the CPU's prefetchers (calibration.py measures it once per CPU).
// Process-wide, set through the plrnn::cpu_wide_rows op.
constexpr int64_t kWideRowsSequential = 0, kWideRowsStrips = 1;
inline std::atomic<int64_t>& wide_rows_layout() {
  static std::atomic<int64_t> layout{kWideRowsSequential};
  return layout;
}

// How cpu_serial spreads a scan over 2+ threads where the data overflow the last-level cache and
// each thread's share of a row would be under 4 KiB (threads that split the channels then stream
// parts of the same pages): the pipelined schedule (threads take blocks of rows in turn, each
// block reduced as it is read and scanned from cache; shares of 2 KiB and more split the
// channels) or a time split (Algorithm 1, cpu_parallel's schedule: every input read twice, but
// each thread streams a contiguous range). Which is faster depends on the CPU (calibration.py
// measures it per CPU and thread count). Process-wide, set through the
// plrnn::cpu_streaming_schedule op.
constexpr int64_t kStreamPipelined = 0, kStreamTimeSplit = 1;
inline std::atomic<int64_t>& streaming_schedule() {
  static std::atomic<int64_t> schedule{kStreamPipelined};
  return schedule;
}

// Where scans count as streamed from memory (stream_bytes): beyond the last-level cache, or
// already beyond one core's own cache. With a large last-level cache shared with other tenants,
// treating data there as streamed (the time split with streaming stores, which leave the cache to
// the inputs) can pay: on an Emerald Rapids VM (300 MiB of L3) cpu_serial moved 0.82-0.98 of
// torch.mul's bandwidth that way against 0.67-0.82 from 6 to 192 MiB (2 threads, fp32, out=),
// and forward+backward at (65536, 128) rose from 0.78 to 0.98 of y = a * x's. Which holds is
// measured per CPU and thread count (calibration.py). Process-wide, set through the
// plrnn::cpu_streamed_beyond op.
constexpr int64_t kBeyondLastLevel = 0, kBeyondPrivate = 1;
inline std::atomic<int64_t>& streamed_beyond() {
  static std::atomic<int64_t> where{kBeyondLastLevel};
  return where;
}

// Whether cpu_parallel's time split scans chunks whose decays forget from zero at once
// (scan_forgetting in cpu_kernels_impl.h) where they forget soon enough; on by default, off to
// compare it with Algorithm 1's two passes. Process-wide, set through the
// plrnn::cpu_forgetting_split op.
inline std::atomic<int64_t>& forgetting_split() {
  static std::atomic<int64_t> on{1};
  return on;
}

// For the tests: the item of a carry-chained parallel region (cpu_parallel's time split,
// cpu_serial's pipelined schedule) that throws where it is claimed, as a failed allocation inside
// it would; -1 (the default): none. Process-wide, set through the plrnn::cpu_fail_item op.
inline std::atomic<int64_t>& fail_item() {
  static std::atomic<int64_t> item{-1};
  return item;
}

// The number at the start of a sysfs file and the character after it ("32768K": 32768, 'K').
// C stdio, not iostreams: where the extension is linked with a libstdc++ of its own (as the lent
// H200 machine's g++ did), extracting a number from a std::ifstream goes through a locale facet
// of the process's other libstdc++: it crashed there (the first scan on several threads, seen
// with cuda-gdb) and, built with -static-libstdc++ on the Zen 4 VM, failed silently (glibc's
// 320 MiB taken for sysfs's 32 MiB). sources.LINK_FLAGS now keeps such a copy to itself too.
inline bool read_sysfs_number(const std::string& path, long long& value, char& unit) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (!file) return false;
  unit = '\0';
  const bool read = std::fscanf(file, "%lld%c", &value, &unit) >= 1;
  std::fclose(file);
  return read;
}

// Bytes of one instance of CPU 0's cache at `level` as Linux's sysfs lists it (0: the highest
// level listed), or 0 where sysfs lists none.
inline int64_t sysfs_cache_bytes(long long level_wanted) {
  int64_t best_level = 0, b = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    long long level = 0, size = 0;
    char unit = '\0', ignored = '\0';
    if (!read_sysfs_number(dir + "/level", level, ignored) ||
        !read_sysfs_number(dir + "/size", size, unit))
      continue;
    size *= unit == 'K' ? 1024 : unit == 'M' ? 1 << 20 : 1;
    if (level_wanted ? level == level_wanted && size > b : level >= best_level && size > 0)
      best_level = level, b = size;
  }
  return b;
}

// Bytes of one instance of the last-level cache: what Linux's sysfs says of CPU 0's highest
// cache level, else glibc's figure, else a 32 MiB guess. sysfs first: on a Zen 4 EPYC VM glibc
// reported 320 MiB of L3 where sysfs (and lscpu) said 32 MiB, which kept every scan of up to 100
// MiB off the pipelined schedule.
inline int64_t llc_bytes() {
  static const int64_t bytes = [] {
    int64_t b = sysfs_cache_bytes(0);
#if defined(_SC_LEVEL3_CACHE_SIZE)
    if (b <= 0) b = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (b <= 0) b = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return b > 0 ? b : int64_t(32) << 20;
  }();
  return bytes;
}

// Bytes of one core's own cache, the L2 of every x86 CPU we met (1 MiB on Zen 4, 2 MiB on
// Sapphire and Emerald Rapids): sysfs, else glibc's figure, else a 1 MiB guess.
inline int64_t private_cache_bytes() {
  static const int64_t bytes = [] {
    int64_t b = sysfs_cache_bytes(2);
#if defined(_SC_LEVEL2_CACHE_SIZE)
    if (b <= 0) b = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return b > 0 ? b : int64_t(1) << 20;
  }();
  return bytes;
}

// Above this many bytes of inputs and output together a scan streams from memory: the
// last-level cache or one core's own (streamed_beyond), or PLRNN_STREAM_BYTES (read per call) in
// their place; the tests set it to 0 to take every scan that could be pipelined through the
// pipelined schedule.
inline int64_t stream_bytes() {
  const char* env = std::getenv("PLRNN_STREAM_BYTES");
  if (env && *env) return std::strtoll(env, nullptr, 10);
  return streamed_beyond().load(std::memory_order_relaxed) == kBeyondPrivate
             ? private_cache_bytes()
             : llc_bytes();
}

// h = scan(a, x, h0) in time order (reverse: from row T-1 down); h0 may be null (zeros).
template <typename scalar_t>
void scan_forward_kernel(const scalar_t* a, const scalar_t* x, const scalar_t* h0, scalar_t* out,
                         int64_t T, int64_t C, bool reverse, bool parallel, DecayLayout decays);

// dL/dx, dL/da and dL/dh0 (C values) from the saved h and dL/dh; h0 may be null (zeros).
// grad_a is (T, C), one term per step and channel, for decays with the impulses' layout {C, true};
// for decays shared by several channels or steps it is null, and only dL/dx and dL/dh0 are
// written (shared_decay_grad finds dL/da from dL/dx).
template <typename scalar_t>
void scan_backward_kernel(const scalar_t* a, const scalar_t* h, const scalar_t* grad_h,
                          const scalar_t* h0, scalar_t* grad_x, scalar_t* grad_a,
                          scalar_t* grad_h0, int64_t T, int64_t C, bool reverse, bool parallel,
                          DecayLayout decays);

// dL/da of decays {P, per_step} with P < C or not per step, from the saved h and dL/dx of a
// packed batch: sequence n is rows [cu[n], cu[n + 1]) of T = cu[N], its first step (in scan
// order) following h0 + n * C (zeros if h0 is null); a dense batch is N = 1, cu = {0, T}. Per
// step, (T, P) sums over each row's C / P channel groups of conj(h_prev) * dL/dx; otherwise P
// sums over every step and group. Accumulated in double precision, in an order fixed by the
// shape (cpu_decay_grad.cpp).
template <typename scalar_t>
void shared_decay_grad(const scalar_t* h, const scalar_t* grad_x, const scalar_t* h0,
                       const int64_t* cu, int64_t N, int64_t C, int64_t P, bool per_step,
                       bool reverse, scalar_t* grad_a);

// complex64 / complex128: plain-loop kernels (cpu_kernels_complex.cpp), gradients conjugated as
// torch's complex autograd expects.
#define PLRNN_DECLARE_COMPLEX_KERNELS(scalar_t)                                                   \
  template <>                                                                                     \
  void scan_forward_kernel<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, scalar_t*, \
                                     int64_t, int64_t, bool, bool, DecayLayout);                  \
  template <>                                                                                     \
  void scan_backward_kernel<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*,          \
                                      const scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t,  \
                                      int64_t, bool, bool, DecayLayout);
PLRNN_DECLARE_COMPLEX_KERNELS(c10::complex<float>)
PLRNN_DECLARE_COMPLEX_KERNELS(c10::complex<double>)
#undef PLRNN_DECLARE_COMPLEX_KERNELS

}  // namespace plrnn
