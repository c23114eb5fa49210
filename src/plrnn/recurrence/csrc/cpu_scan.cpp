// torch binding of the CPU kernels (cpu_kernels.h): the ops plrnn::cpu_scan, cpu_scan_out and
// cpu_scan_backward, their checks, dtype dispatch and a C++ autograd rule.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <tuple>

#include "cpu_kernels.h"

namespace plrnn {
namespace {

// Inputs are (T, *) and contiguous, so they are (T, C) buffers with C = numel / T whatever their
// trailing shape: no reshape on the way in or out (each costs microseconds of dispatch).
void check_inputs(const at::Tensor& a, const at::Tensor& x, const c10::optional<at::Tensor>& h0) {
  TORCH_CHECK(a.device().is_cpu() && x.device().is_cpu(), "plrnn cpu kernels need CPU tensors");
  TORCH_CHECK(a.sizes() == x.sizes() && a.dim() >= 1, "decays and impulses must share a (T, *) shape");
  TORCH_CHECK(a.scalar_type() == x.scalar_type(), "decays and impulses must share a dtype");
  TORCH_CHECK(a.is_contiguous() && x.is_contiguous(), "plrnn cpu kernels need contiguous inputs");
  if (h0) {
    TORCH_CHECK(h0->is_contiguous() && h0->scalar_type() == x.scalar_type() && h0->device().is_cpu(),
                "initial_state must be a contiguous CPU tensor with the impulses' dtype");
    TORCH_CHECK(h0->sizes() == x.sizes().slice(1), "initial_state must have shape impulses.shape[1:]");
  }
}

int64_t channels_of(const at::Tensor& x) { return x.size(0) ? x.numel() / x.size(0) : 0; }

// Faults the pages of a fresh output in, each thread a contiguous range, before the kernel writes
// it. A large fresh tensor is freshly mmap'd memory (glibc), so its first write costs a page fault
// per 4 KiB, several times the kernel's own time. The serial schedule has every thread write a
// slice of every row, so both threads fault on the same pages and wait on each other; torch's
// elementwise ops split memory into contiguous ranges and fault in parallel. Measured on a 2-core
// Xeon (Skylake-SP), T = 65536 x 128 fp32 forward with a fresh output: 2.1 -> 3.2 GB/s, against
// torch.mul's 3.6-4.4 GB/s under the same conditions. One byte per page: the kernel zeroes the
// page anyway, and pages already mapped (a reused allocation) cost a store each.
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

void scan_forward_out(const at::Tensor& decays, const at::Tensor& impulses,
                      const c10::optional<at::Tensor>& initial_state, bool reverse, bool parallel,
                      at::Tensor& out) {
  check_inputs(decays, impulses, initial_state);
  TORCH_CHECK(out.sizes() == impulses.sizes() && out.is_contiguous() &&
                  out.scalar_type() == impulses.scalar_type() && out.device().is_cpu(),
              "out must be a contiguous CPU tensor with the impulses' shape and dtype");
  const int64_t T = impulses.size(0), C = channels_of(impulses);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, impulses.scalar_type(), "plrnn_cpu_scan", [&] {
    scan_forward_kernel<scalar_t>(decays.const_data_ptr<scalar_t>(),
                                  impulses.const_data_ptr<scalar_t>(),
                                  data_or_null<scalar_t>(initial_state),
                                  out.mutable_data_ptr<scalar_t>(), T, C, reverse, parallel);
  });
}

at::Tensor scan_forward(const at::Tensor& decays, const at::Tensor& impulses,
                        const c10::optional<at::Tensor>& initial_state, bool reverse,
                        bool parallel) {
  at::Tensor out = at::empty_like(impulses, at::MemoryFormat::Contiguous);
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
  at::Tensor gx = at::empty_like(grad_h), ga = at::empty_like(grad_h);
  first_touch(gx);
  first_touch(ga);
  const int64_t T = grad_h.size(0), C = channels_of(grad_h);
  at::Tensor gh0 = at::zeros(grad_h.sizes().slice(1), grad_h.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_h.scalar_type(), "plrnn_cpu_scan_backward", [&] {
    scan_backward_kernel<scalar_t>(
        decays.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(),
        grad_h.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(initial_state),
        gx.mutable_data_ptr<scalar_t>(), ga.mutable_data_ptr<scalar_t>(),
        gh0.mutable_data_ptr<scalar_t>(), T, C, reverse, parallel);
  });
  return {gx, ga, gh0};
}

// Autograd in C++ rather than through torch.library.register_autograd: the Python wrapper cost
// ~16 us per call, three times the kernel's own overhead. Both kernels are reached through the
// dispatcher, so fake tensors (torch.compile) take the registered fake kernels, and the backward
// op's own autograd rule (registered from Python) refuses a double backward.
struct ScanAutograd : public torch::autograd::Function<ScanAutograd> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& decays,
                            const at::Tensor& impulses,
                            const c10::optional<at::Tensor>& h0, bool reverse, bool parallel) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("plrnn::cpu_scan", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const c10::optional<at::Tensor>&, bool, bool)>();
    at::Tensor h;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      h = op.call(decays, impulses, h0, reverse, parallel);
    }
    ctx->save_for_backward({decays, h, h0.value_or(at::Tensor())});
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["parallel"] = parallel;
    return h;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("plrnn::cpu_scan_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const c10::optional<at::Tensor>&, bool, bool)>();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& h0 = saved[2];
    auto [gx, ga, gh0] = op.call(
        saved[0], saved[1], grads[0].contiguous(),
        h0.defined() ? c10::optional<at::Tensor>(h0) : c10::nullopt,
        ctx->saved_data["reverse"].toBool(), ctx->saved_data["parallel"].toBool());
    return {ga, gx, h0.defined() ? gh0 : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor scan_autograd(const at::Tensor& decays, const at::Tensor& impulses,
                         const c10::optional<at::Tensor>& initial_state, bool reverse,
                         bool parallel) {
  return ScanAutograd::apply(decays, impulses, initial_state, reverse, parallel);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(plrnn, m) {
  m.def("cpu_scan(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, bool parallel) -> Tensor");
  m.def("cpu_scan_out(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, bool parallel, *, Tensor(a!) out) -> ()");
  m.def("cpu_scan_backward(Tensor decays, Tensor h, Tensor grad_h, Tensor? initial_state, bool reverse, bool parallel) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(plrnn, CPU, m) {
  m.impl("cpu_scan", &scan_forward);
  m.impl("cpu_scan_out", &scan_forward_out);
  m.impl("cpu_scan_backward", &scan_backward);
}

TORCH_LIBRARY_IMPL(plrnn, Autograd, m) { m.impl("cpu_scan", &scan_autograd); }

}  // namespace plrnn
