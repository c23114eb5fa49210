// plrnn::cpu_thread_round_trip_ns: how long one cache line takes to go from the first thread of
// torch's intra-op pool (the pool every parallel region of the kernels runs on) to the second and
// back. Benchmarks record it with their timings because it is a property of where the host put
// the threads, not of the kernels: on a 2-vCPU Zen 4 EPYC VM it switched, every 0.1 to a few
// seconds, between 55-65 ns (both vCPUs on one die) and 320-340 ns (on two dies), and every
// 2-thread method (cpu_parallel, torch's own scan) was up to 2x slower in the second state, while
// one thread's loop and the vCPUs' arithmetic speed did not change.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace plrnn {
namespace {

using Clock = std::chrono::steady_clock;

// A thread that the host stopped would otherwise keep the other spinning forever: give up after
// this long and report nan.
constexpr auto kGiveUp = std::chrono::seconds(1);

struct alignas(64) Line {
  std::atomic<int64_t> value{0};
};

// Spins until `line` holds `want`; false if `quit` was raised or kGiveUp passed.
bool wait_for(const Line& line, int64_t want, std::atomic<bool>& quit, Clock::time_point start) {
  for (uint32_t spins = 1; line.value.load(std::memory_order_acquire) != want; ++spins) {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
    if (spins % 4096 == 0 &&
        (quit.load(std::memory_order_relaxed) || Clock::now() - start > kGiveUp)) {
      quit.store(true, std::memory_order_relaxed);
      return false;
    }
  }
  return true;
}

double thread_round_trip_ns(int64_t round_trips) {
  TORCH_CHECK(round_trips > 0, "cpu_thread_round_trip_ns: round_trips must be positive, got ",
              round_trips);
  if (at::in_parallel_region() || at::get_num_threads() < 2) return NAN;
  Line turn;
  std::atomic<bool> quit{false};
  double ns = NAN;
  const auto start = Clock::now();
  at::parallel_for(0, 2, 1, [&](int64_t b, int64_t e) {
    if (e - b != 1) return;  // a team of one thread got both halves: nothing to measure
    if (b == 1) {            // the second thread answers each odd value with the next even one
      for (int64_t i = 0; i <= round_trips; ++i) {
        if (!wait_for(turn, 2 * i + 1, quit, start)) return;
        turn.value.store(2 * i + 2, std::memory_order_release);
      }
      return;
    }
    // The first round trip only proves that both threads run; the clock starts after it.
    turn.value.store(1, std::memory_order_release);
    if (!wait_for(turn, 2, quit, start)) return;
    const auto t0 = Clock::now();
    for (int64_t i = 1; i <= round_trips; ++i) {
      turn.value.store(2 * i + 1, std::memory_order_release);
      if (!wait_for(turn, 2 * i + 2, quit, start)) return;
    }
    ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / double(round_trips);
  });
  return ns;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(plrnn, m) {
  m.def("cpu_thread_round_trip_ns(int round_trips) -> float", &thread_round_trip_ns);
}

}  // namespace plrnn
