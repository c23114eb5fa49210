// torch binding of the CPU kernels (cpu_kernels.h): the ops plrnn::cpu_scan, cpu_scan_out,
// cpu_scan_backward and their packed-batch forms cpu_scan_varlen(_backward), their checks, dtype
// dispatch, and their autograd kernels (the rule is scan_autograd.h's).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_output_cache.h"
#include "scan_autograd.h"

namespace plrnn {
namespace {

int64_t channels_of(const at::Tensor& x) { return x.size(0) ? x.numel() / x.size(0) : 0; }

// Inputs are (T, *) and contiguous, so they are (T, C) buffers with C = numel / T whatever their
// trailing shape: no reshape on the way in or out (each costs microseconds of dispatch). Decays
// have the impulses' shape, or are 2-D (R, P): R = 1 row for every step (time-invariant) or R = T,
// and P dividing C, channel c reading column c % P (decays shared over a batch of C / P).
bool decays_fit(const at::Tensor& a, const at::Tensor& x) {
  if (a.sizes() == x.sizes()) return true;
  if (a.dim() != 2 || x.dim() < 1 || (a.size(0) != 1 && a.size(0) != x.size(0))) return false;
  const int64_t C = channels_of(x), P = a.size(1);
  return P > 0 ? C % P == 0 : C == 0;
}

void check_inputs(const at::Tensor& a, const at::Tensor& x, const c10::optional<at::Tensor>& h0) {
  TORCH_CHECK(a.device().is_cpu() && x.device().is_cpu(), "plrnn cpu kernels need CPU tensors");
  TORCH_CHECK(x.dim() >= 1 && decays_fit(a, x),
              "decays must have the impulses' (T, *) shape, or be 2-D (1 or T, P) with P "
              "dividing the impulses' channels; got decays ", a.sizes(), " for impulses ",
              x.sizes());
  TORCH_CHECK(a.scalar_type() == x.scalar_type(), "decays and impulses must share a dtype");
  TORCH_CHECK(a.is_contiguous() && x.is_contiguous(), "plrnn cpu kernels need contiguous inputs");
  if (h0) {
    TORCH_CHECK(h0->is_contiguous() && h0->scalar_type() == x.scalar_type() && h0->device().is_cpu(),
                "initial_state must be a contiguous CPU tensor with the impulses' dtype");
    TORCH_CHECK(h0->sizes() == x.sizes().slice(1), "initial_state must have shape impulses.shape[1:]");
  }
}

DecayLayout layout_of(const at::Tensor& a, const at::Tensor& x) {
  const int64_t C = channels_of(x);
  if (a.sizes() == x.sizes()) return {C, true};
  return {a.size(1), a.size(0) == x.size(0) && a.size(0) > 1};
}

// Whether the decays have the impulses' layout, one per step and channel: then the backward
// kernel writes dL/da itself; decays shared by several channels or steps take shared_decay_grad.
bool per_element(const DecayLayout& layout, int64_t C) {
  return layout.per_step && layout.period == C;
}

// Where dL/da goes: the impulses' (T, C) for per-element decays (viewed in the decays' shape
// afterwards), the decays' own shape otherwise.
at::Tensor decay_grad_buffer(const at::Tensor& a, const at::Tensor& grad_h, bool per_element) {
  return cached_empty(per_element ? grad_h.sizes() : a.sizes(), grad_h.options());
}

// Faults the pages of a fresh output in, each thread a contiguous range, before the kernel writes
// it. A large fresh tensor is freshly mmap'd memory (glibc), so its first write costs a page fault
// per 4 KiB, several times the kernel's own time. The serial schedule has every thread write a
// slice of every row, so both threads fault on the same pages and wait on each other; torch's
// elementwise ops split memory into contiguous ranges and fault in parallel. Measured on a 2-core
// Xeon (Skylake-SP), T = 65536 x 128 fp32 forward with a fresh output: 2.1 -> 3.2 GB/s, against
// torch.mul's 3.6-4.4 GB/s under the same conditions. One byte per page: the kernel zeroes the
// page anyway, and pages already mapped (a buffer recycled by cpu_output_cache.cpp) cost a store
// each.
void first_touch(const at::Tensor& t) {
  const int64_t bytes = t.numel() * t.element_size();
  if (bytes < (int64_t(1) << 20) || at::get_num_threads() < 2) return;
  char* p = static_cast<char*>(t.data_ptr());
  const int64_t pages = bytes / 4096;
  at::parallel_for(0, pages, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i * 4096] = 0;
  });
}

template <typename scalar_t>
const scalar_t* data_or_null(const c10::optional<at::Tensor>& t) {
  return t ? t->const_data_ptr<scalar_t>() : nullptr;
}

// Refuses an output that shares memory with an input, compared by address as
// linear_recurrence's check_out does (two storages over one buffer count too), with its message:
// the kernel would read what it has already overwritten. Every tensor here is contiguous.
void check_apart(const at::Tensor& out, const at::Tensor& input, const char* name) {
  if (out.numel() == 0 || input.numel() == 0) return;
  const auto* o = static_cast<const char*>(out.const_data_ptr());
  const auto* i = static_cast<const char*>(input.const_data_ptr());
  TORCH_CHECK_VALUE(o + out.nbytes() <= i || i + input.nbytes() <= o,
                    "out must not share memory with ", name, "; pass a separate tensor");
}

// Returns nothing: torch.compile cannot functionalize a custom op whose output aliases an input
// (-> Tensor(a!)). So torch's conjugate and negation fallbacks, which copy back what an op
// returns, cannot serve a conj()/neg view as `out` (they abort): Python refuses those.
void scan_forward_out(const at::Tensor& decays, const at::Tensor& impulses,
                      const c10::optional<at::Tensor>& initial_state, bool reverse, bool parallel,
                      at::Tensor& out) {
  check_inputs(decays, impulses, initial_state);
  // torch's rule for writing into tensors, which the op would skip without an autograd kernel.
  TORCH_CHECK(!out.is_inference() || c10::InferenceMode::is_enabled(),
              "out is an inference tensor, which is written only inside torch.inference_mode()");
  TORCH_CHECK(out.sizes() == impulses.sizes() && out.is_contiguous() &&
                  out.scalar_type() == impulses.scalar_type() && out.device().is_cpu(),
              "out must be a contiguous CPU tensor with the impulses' shape and dtype");
  check_apart(out, decays, "decays");
  check_apart(out, impulses, "impulses");
  if (initial_state) check_apart(out, *initial_state, "initial_state");
  const int64_t T = impulses.size(0), C = channels_of(impulses);
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES_AND2(at::kHalf, at::kBFloat16, impulses.scalar_type(), "plrnn_cpu_scan", [&] {
    scan_forward_kernel<scalar_t>(decays.const_data_ptr<scalar_t>(),
                                  impulses.const_data_ptr<scalar_t>(),
                                  data_or_null<scalar_t>(initial_state),
                                  out.mutable_data_ptr<scalar_t>(), T, C, reverse, parallel,
                                  layout_of(decays, impulses));
  });
}

at::Tensor scan_forward(const at::Tensor& decays, const at::Tensor& impulses,
                        const c10::optional<at::Tensor>& initial_state, bool reverse,
                        bool parallel) {
  at::Tensor out = cached_empty(impulses.sizes(), impulses.options());
  first_touch(out);
  scan_forward_out(decays, impulses, initial_state, reverse, parallel, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward(
    const at::Tensor& decays, const at::Tensor& h, const at::Tensor& grad_h,
    const c10::optional<at::Tensor>& initial_state, bool reverse, bool parallel) {
  check_inputs(decays, grad_h, initial_state);
  TORCH_CHECK(h.sizes() == grad_h.sizes() && h.is_contiguous() && h.scalar_type() == grad_h.scalar_type(),
              "saved h must match grad_h");
  const DecayLayout layout = layout_of(decays, grad_h);
  const int64_t T = grad_h.size(0), C = channels_of(grad_h);
  const bool own = per_element(layout, C);
  at::Tensor gx = cached_empty(grad_h.sizes(), grad_h.options());
  at::Tensor ga = decay_grad_buffer(decays, grad_h, own);
  first_touch(gx);
  first_touch(ga);
  at::Tensor gh0 = at::zeros(grad_h.sizes().slice(1), grad_h.options());
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES_AND2(at::kHalf, at::kBFloat16, grad_h.scalar_type(), "plrnn_cpu_scan_backward", [&] {
    const scalar_t* h0 = data_or_null<scalar_t>(initial_state);
    scalar_t* dx = gx.mutable_data_ptr<scalar_t>();
    scalar_t* da = ga.mutable_data_ptr<scalar_t>();
    scan_backward_kernel<scalar_t>(
        decays.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(),
        grad_h.const_data_ptr<scalar_t>(), h0, dx, own ? da : nullptr,
        gh0.mutable_data_ptr<scalar_t>(), T, C, reverse, parallel, layout);
    if (!own) {
      const int64_t cu[2] = {0, T};
      shared_decay_grad<scalar_t>(h.const_data_ptr<scalar_t>(), dx, h0, cu, 1, C, layout.period,
                                  layout.per_step, reverse, da);
    }
  });
  return {gx, own ? ga.view(decays.sizes()) : ga, gh0};
}

// The offsets of a packed batch of T rows, checked: N + 1 non-decreasing int64 from 0 to T.
const int64_t* checked_offsets(const at::Tensor& cu_seqlens, int64_t T) {
  TORCH_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.numel() >= 2 && cu_seqlens.is_contiguous() &&
                  cu_seqlens.scalar_type() == at::kLong && cu_seqlens.device().is_cpu(),
              "cu_seqlens must be a contiguous 1-D int64 CPU tensor of N + 1 >= 2 offsets");
  const int64_t* cu = cu_seqlens.const_data_ptr<int64_t>();
  const int64_t N = cu_seqlens.numel() - 1;
  TORCH_CHECK(cu[0] == 0 && cu[N] == T, "cu_seqlens must run from 0 to impulses.size(0)");
  for (int64_t n = 0; n < N; ++n) TORCH_CHECK(cu[n + 1] >= cu[n], "cu_seqlens must be non-decreasing");
  return cu;
}

// Packed batches: sequence n is rows [cu[n], cu[n+1]) and runs as its own (T_n, C) scan on those
// rows, so no state crosses a boundary and nothing is copied. A sequence with at least a thread's
// share of the work runs alone on all threads (the kernels' own schedules); the others are spread
// over the threads a sequence at a time, each kernel single-threaded inside the parallel region.
template <typename Body>
void for_each_sequence(const int64_t* cu, int64_t N, int64_t C, const Body& body) {
  const int64_t total = cu[N] * C, threads = at::get_num_threads();
  std::vector<int64_t> shared;
  int64_t shared_work = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t work = (cu[n + 1] - cu[n]) * C;
    if (work == 0) continue;
    if (threads > 1 && work * threads >= total) {
      body(n, cu[n], cu[n + 1] - cu[n]);
    } else {
      shared.push_back(n);
      shared_work += work;
    }
  }
  if (shared.empty()) return;
  // Tasks of at least ~32k elements each, so that short sequences do not pay a thread handoff.
  const int64_t count = int64_t(shared.size());
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) * count / shared_work);
  at::parallel_for(0, count, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = shared[i];
      body(n, cu[n], cu[n + 1] - cu[n]);
    }
  });
}

at::Tensor scan_varlen(const at::Tensor& decays, const at::Tensor& impulses,
                       const c10::optional<at::Tensor>& initial_states, bool reverse,
                       const at::Tensor& cu_seqlens, bool parallel) {
  check_inputs(decays, impulses, c10::nullopt);
  const int64_t* cu = checked_offsets(cu_seqlens, impulses.size(0));
  const int64_t C = channels_of(impulses), N = cu_seqlens.numel() - 1;
  if (initial_states) {
    TORCH_CHECK(initial_states->is_contiguous() && initial_states->scalar_type() == impulses.scalar_type() &&
                    initial_states->numel() == N * C,
                "initial_state must be a contiguous (N, *) tensor with the impulses' dtype");
  }
  at::Tensor out = cached_empty(impulses.sizes(), impulses.options());
  first_touch(out);
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES_AND2(at::kHalf, at::kBFloat16, impulses.scalar_type(), "plrnn_cpu_scan_varlen", [&] {
    const scalar_t* a = decays.const_data_ptr<scalar_t>();
    const scalar_t* x = impulses.const_data_ptr<scalar_t>();
    const scalar_t* h0 = data_or_null<scalar_t>(initial_states);
    scalar_t* h = out.mutable_data_ptr<scalar_t>();
    const DecayLayout layout = layout_of(decays, impulses);
    const int64_t a_row = layout.per_step ? layout.period : 0;
    for_each_sequence(cu, N, C, [&](int64_t n, int64_t row, int64_t len) {
      scan_forward_kernel<scalar_t>(a + row * a_row, x + row * C, h0 ? h0 + n * C : nullptr,
                                    h + row * C, len, C, reverse, parallel, layout);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_varlen_backward(
    const at::Tensor& decays, const at::Tensor& h, const at::Tensor& grad_h,
    const c10::optional<at::Tensor>& initial_states, bool reverse, const at::Tensor& cu_seqlens,
    bool parallel) {
  check_inputs(decays, grad_h, c10::nullopt);
  TORCH_CHECK(h.sizes() == grad_h.sizes() && h.is_contiguous() && h.scalar_type() == grad_h.scalar_type(),
              "saved h must match grad_h");
  const int64_t* cu = checked_offsets(cu_seqlens, grad_h.size(0));
  const int64_t C = channels_of(grad_h), N = cu_seqlens.numel() - 1;
  if (initial_states) {
    TORCH_CHECK(initial_states->is_contiguous() && initial_states->scalar_type() == grad_h.scalar_type() &&
                    initial_states->numel() == N * C,
                "initial_state must be a contiguous (N, *) tensor with the impulses' dtype");
  }
  const DecayLayout layout = layout_of(decays, grad_h);
  const bool own = per_element(layout, C);
  at::Tensor gx = cached_empty(grad_h.sizes(), grad_h.options());
  at::Tensor ga = decay_grad_buffer(decays, grad_h, own);
  first_touch(gx);
  first_touch(ga);
  std::vector<int64_t> state_shape{N};
  for (int64_t d = 1; d < grad_h.dim(); ++d) state_shape.push_back(grad_h.size(d));
  at::Tensor gh0 = at::zeros(state_shape, grad_h.options());
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES_AND2(at::kHalf, at::kBFloat16, grad_h.scalar_type(), "plrnn_cpu_scan_varlen_backward", [&] {
    const scalar_t* a = decays.const_data_ptr<scalar_t>();
    const scalar_t* hs = h.const_data_ptr<scalar_t>();
    const scalar_t* dh = grad_h.const_data_ptr<scalar_t>();
    const scalar_t* h0 = data_or_null<scalar_t>(initial_states);
    scalar_t* dx = gx.mutable_data_ptr<scalar_t>();
    scalar_t* da = ga.mutable_data_ptr<scalar_t>();
    scalar_t* dh0 = gh0.mutable_data_ptr<scalar_t>();
    const int64_t a_row = layout.per_step ? layout.period : 0;
    for_each_sequence(cu, N, C, [&](int64_t n, int64_t row, int64_t len) {
      const int64_t e = row * C;
      scan_backward_kernel<scalar_t>(a + row * a_row, hs + e, dh + e,
                                     h0 ? h0 + n * C : nullptr, dx + e, own ? da + e : nullptr,
                                     dh0 + n * C, len, C, reverse, parallel, layout);
    });
    if (!own)
      shared_decay_grad<scalar_t>(hs, dx, h0, cu, N, C, layout.period, layout.per_step, reverse,
                                  da);
  });
  return {gx, own ? ga.view(decays.sizes()) : ga, gh0};
}

// The ops' autograd rule (scan_autograd.h): their Autograd kernels.
struct CpuScanOps {
  static constexpr const char* scan = "plrnn::cpu_scan";
  static constexpr const char* backward = "plrnn::cpu_scan_backward";
  static at::Tensor contiguous(const at::Tensor& t) { return cached_contiguous(t); }
};
struct CpuScanVarlenOps {
  static constexpr const char* scan = "plrnn::cpu_scan_varlen";
  static constexpr const char* backward = "plrnn::cpu_scan_varlen_backward";
  static at::Tensor contiguous(const at::Tensor& t) { return cached_contiguous(t); }
};
using CpuScanAutograd = ScanAutograd<CpuScanOps, bool>;  // parallel
using CpuScanVarlenAutograd = ScanAutograd<CpuScanVarlenOps, const at::Tensor&, bool>;

// Sets the widest rows for which cpu_parallel chunks time inside each thread too (negative: only
// reads it); returns the previous value.
int64_t set_ilp_channels(int64_t channels) {
  return channels < 0 ? ilp_max_channels().load() : ilp_max_channels().exchange(channels);
}

// Turns scan_forgetting on (1) or off (0) (negative: only reads it); returns the previous value.
int64_t set_forgetting_split(int64_t on) {
  return on < 0 ? forgetting_split().load() : forgetting_split().exchange(on ? 1 : 0);
}

// For the tests: makes the carry-chained item `item` of every later threaded scan throw
// (negative: none); returns the previous value.
int64_t set_fail_item(int64_t item) { return fail_item().exchange(item < 0 ? -1 : item); }

// Sets how the kernels step rows wider than one register strip (0: sequential, 1: strips;
// negative: only reads it); returns the previous value.
int64_t set_wide_rows(int64_t layout) {
  TORCH_CHECK(layout < 0 || layout == kWideRowsSequential || layout == kWideRowsStrips,
              "cpu_wide_rows: layout must be 0 (sequential) or 1 (strips), got ", layout);
  return layout < 0 ? wide_rows_layout().load() : wide_rows_layout().exchange(layout);
}

// Sets cpu_serial's schedule for scans that stream from memory on several threads (0:
// pipelined, 1: time split; negative: only reads it); returns the previous value.
int64_t set_streaming_schedule(int64_t schedule) {
  TORCH_CHECK(schedule < 0 || schedule == kStreamPipelined || schedule == kStreamTimeSplit,
              "cpu_streaming_schedule: schedule must be 0 (pipelined) or 1 (time split), got ",
              schedule);
  return schedule < 0 ? streaming_schedule().load() : streaming_schedule().exchange(schedule);
}

// Sets where scans count as streamed from memory (0: beyond the last-level cache, 1: beyond one
// core's own cache; negative: only reads it); returns the previous value.
int64_t set_streamed_beyond(int64_t where) {
  TORCH_CHECK(where < 0 || where == kBeyondLastLevel || where == kBeyondPrivate,
              "cpu_streamed_beyond: where must be 0 (the last-level cache) or 1 (one core's own "
              "cache), got ", where);
  return where < 0 ? streamed_beyond().load() : streamed_beyond().exchange(where);
}

// The bytes (inputs and output together) above which a scan counts as streamed from memory
// (exceeds_cache), for auto's choice in registry.py.
int64_t get_stream_bytes() { return stream_bytes(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(plrnn, m) {
  m.def("cpu_stream_bytes() -> int", &get_stream_bytes);
  m.def("cpu_streaming_schedule(int schedule) -> int", &set_streaming_schedule);
  m.def("cpu_streamed_beyond(int where) -> int", &set_streamed_beyond);
  m.def("cpu_ilp_channels(int channels) -> int", &set_ilp_channels);
  m.def("cpu_wide_rows(int layout) -> int", &set_wide_rows);
  m.def("cpu_fail_item(int item) -> int", &set_fail_item);
  m.def("cpu_forgetting_split(int on) -> int", &set_forgetting_split);
  m.def("cpu_scan(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, bool parallel) -> Tensor");
  m.def("cpu_scan_out(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, bool parallel, *, Tensor(a!) out) -> ()");
  m.def("cpu_scan_backward(Tensor decays, Tensor h, Tensor grad_h, Tensor? initial_state, bool reverse, bool parallel) -> (Tensor, Tensor, Tensor)");
  m.def("cpu_scan_varlen(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, Tensor cu_seqlens, bool parallel) -> Tensor");
  m.def("cpu_scan_varlen_backward(Tensor decays, Tensor h, Tensor grad_h, Tensor? initial_state, bool reverse, Tensor cu_seqlens, bool parallel) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(plrnn, CPU, m) {
  m.impl("cpu_scan", &scan_forward);
  m.impl("cpu_scan_out", &scan_forward_out);
  m.impl("cpu_scan_backward", &scan_backward);
  m.impl("cpu_scan_varlen", &scan_varlen);
  m.impl("cpu_scan_varlen_backward", &scan_varlen_backward);
}

TORCH_LIBRARY_IMPL(plrnn, Autograd, m) {
  m.impl("cpu_scan", &CpuScanAutograd::call);
  m.impl("cpu_scan_varlen", &CpuScanVarlenAutograd::call);
}

}  // namespace plrnn
