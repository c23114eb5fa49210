// Outputs of the CPU ops recycled from freed outputs, so that a loop of calls does not fault
// its outputs in page by page on every call.
//
// Why: glibc serves buffers of 32 MiB and more (and smaller ones whenever its moving threshold
// or heap trimming says so) from fresh mmap'd pages and unmaps them when they are freed, and
// torch's CPU allocator keeps nothing. Each 4 KiB page of such an output then costs a page fault
// at its first write. On the 2-core Zen 4 VM a fault cost 0.7-1.3 us: T = 65536 x 128 fp32,
// linear_recurrence(a, x) with autograd.grad in a plain loop took 33-36 ms and 24579 faults a
// call, where the kernels take 5-7 ms; with the buffers reused, 0 faults and 7 ms. Populating
// the pages in one madvise(MADV_POPULATE_WRITE) instead cost more than faulting them (10.5 ms
// per 32 MiB against 6), and huge pages stalled on VMs that return free memory to their host
// (docs/benchmarks.md).
//
// So buffers of 1 MiB and more that our ops allocate go back, when their tensor is freed, into a
// small cache here rather than to glibc, up to a cap in bytes (PLRNN_CPU_OUTPUT_CACHE, default
// the lesser of 1 GiB and 1/16 of physical memory; 0 turns it off), and the next output of the
// same size class (size_class) takes one. Buffers idle for 10 s, or beyond the cap (least
// recently freed first), go back to glibc; plrnn.empty_cache() releases them all. Only our
// outputs, and the copies the op makes of strided inputs for the kernels (plrnn::cpu_contiguous),
// pass through here: the process's other allocations and glibc's settings are untouched.
#include "cpu_output_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace plrnn {
namespace {

using Clock = std::chrono::steady_clock;

// Smaller buffers are left to glibc: its heap serves them from recycled pages once warm, and a
// fault per 4 KiB costs little beside the call's fixed cost there.
constexpr size_t kMinBytes = size_t(1) << 20;
constexpr auto kIdle = std::chrono::seconds(10);

int64_t default_cap() {
  if (const char* env = std::getenv("PLRNN_CPU_OUTPUT_CACHE"); env && *env) {
    char* end = nullptr;
    const long long bytes = std::strtoll(env, &end, 10);
    TORCH_CHECK_VALUE(*end == '\0' && bytes >= 0,
                      "PLRNN_CPU_OUTPUT_CACHE must be a number of bytes (0: off), got '", env, "'");
    return bytes;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const int64_t gib = int64_t(1) << 30;
  return pages > 0 && page > 0 ? std::min(gib, int64_t(pages) * page / 16) : gib;
}

// Requests round up to one of eight sizes per power of two, so that outputs whose lengths vary
// a little from call to call (packed batches of varying total length, say) share buffers; at
// most 1/8 of a buffer goes unused, and its untouched pages cost no memory.
size_t size_class(size_t n) {
  size_t step = size_t(1) << 17;  // kMinBytes / 8
  while (step * 16 <= n) step <<= 1;
  return (n + step - 1) / step * step;
}

struct Freed {
  void* ptr;
  size_t bytes;
  Clock::time_point at;
};

class OutputCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kMinBytes) return c10::GetDefaultCPUAllocator()->allocate(n);
    const size_t block = size_class(n);
    void* p = take(block);
    if (!p) {
      try {
        p = c10::alloc_cpu(block);
      } catch (const c10::Error&) {
        release_all();  // what the cache holds may be what the allocation lacks
        p = c10::alloc_cpu(block);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_[p] = block;
    }
    // As torch's own CPU allocator does, so that the profiler's memory view counts our outputs.
    c10::profiledCPUMemoryReporter().New(p, n);
    return {p, p, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Sets the cap (negative: only reads it); returns the previous one.
  int64_t set_cap(int64_t bytes) {
    std::vector<void*> drop;
    int64_t previous;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      previous = cap_;
      if (bytes < 0) return previous;
      cap_ = bytes;
      evict_locked(0, drop);
    }
    free_all(drop);
    return previous;
  }

  int64_t held() {
    std::lock_guard<std::mutex> lock(mutex_);
    return int64_t(held_);
  }

  int64_t release_all() {
    std::vector<void*> drop;
    size_t released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released = held_;
      for (const Freed& f : freed_) drop.push_back(f.ptr);
      freed_.clear();
      held_ = 0;
    }
    free_all(drop);
    return int64_t(released);
  }

  static OutputCache& get() {
    // Never destroyed: tensors freed while the process exits still call give_back.
    static OutputCache* cache = new OutputCache();
    return *cache;
  }

 private:
  OutputCache() : cap_(default_cap()) {
    // A fork while another thread holds the lock (autograd freeing an output as a DataLoader
    // forks its workers) would leave the child's copy locked for good.
    pthread_atfork([] { get().mutex_.lock(); }, [] { get().mutex_.unlock(); },
                   [] { get().mutex_.unlock(); });
  }

  // The most recently freed buffer of exactly n bytes (a size class), or null.
  void* take(size_t n) {
    std::vector<void*> drop;
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      drop_idle_locked(drop);
      for (auto it = freed_.rbegin(); it != freed_.rend(); ++it) {
        if (it->bytes != n) continue;
        p = it->ptr;
        held_ -= n;
        freed_.erase(std::next(it).base());
        break;
      }
    }
    free_all(drop);
    return p;
  }

  static void give_back(void* p) {
    c10::profiledCPUMemoryReporter().Delete(p);
    get().put(p);
  }

  void put(void* p) {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = live_.find(p);
      const size_t n = it->second;
      live_.erase(it);
      drop_idle_locked(drop);
      if (int64_t(n) <= cap_) {
        evict_locked(n, drop);
        freed_.push_back({p, n, Clock::now()});
        held_ += n;
      } else {
        drop.push_back(p);
      }
    }
    free_all(drop);  // munmap outside the lock
  }

  // Evicts the least recently freed buffers until `incoming` more bytes fit under the cap.
  void evict_locked(size_t incoming, std::vector<void*>& drop) {
    while (!freed_.empty() && int64_t(held_ + incoming) > cap_) pop_oldest_locked(drop);
  }

  void drop_idle_locked(std::vector<void*>& drop) {
    const auto now = Clock::now();
    while (!freed_.empty() && now - freed_.front().at > kIdle) pop_oldest_locked(drop);
  }

  // The buffer freed least recently leaves the cache; the caller frees it outside the lock.
  void pop_oldest_locked(std::vector<void*>& drop) {
    drop.push_back(freed_.front().ptr);
    held_ -= freed_.front().bytes;
    freed_.pop_front();
  }

  static void free_all(const std::vector<void*>& drop) {
    for (void* p : drop) c10::free_cpu(p);
  }

  std::mutex mutex_;
  std::deque<Freed> freed_;  // oldest first
  std::unordered_map<void*, size_t> live_;  // handed out, by address: its byte size
  size_t held_ = 0;
  int64_t cap_;
};

int64_t set_output_cache(int64_t max_bytes) { return OutputCache::get().set_cap(max_bytes); }
int64_t output_cache_held() { return OutputCache::get().held(); }
int64_t empty_output_cache() { return OutputCache::get().release_all(); }

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::detail::empty_generic(sizes, &OutputCache::get(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()),
                                   at::MemoryFormat::Contiguous);
}

at::Tensor cached_copy(const at::Tensor& t) {
  return cached_empty(t.sizes(), t.options()).copy_(t);
}

at::Tensor cached_contiguous(const at::Tensor& t) { return t.is_contiguous() ? t : cached_copy(t); }

TORCH_LIBRARY_FRAGMENT(plrnn, m) {
  m.def("cpu_output_cache(int max_bytes) -> int", &set_output_cache);
  m.def("cpu_output_cache_held() -> int", &output_cache_held);
  m.def("cpu_empty_output_cache() -> int", &empty_output_cache);
  // Contiguous copies the Python side makes for the kernels (strided inputs, decays they cannot
  // read where they are), recycled as the outputs are; its autograd rule is registered there.
  m.def("cpu_contiguous(Tensor self) -> Tensor");
}

TORCH_LIBRARY_IMPL(plrnn, CPU, m) { m.impl("cpu_contiguous", &cached_copy); }

}  // namespace plrnn
