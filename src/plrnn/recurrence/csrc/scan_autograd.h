// The autograd rule of the compiled scan ops (paper section 3.3) in C++, shared by the CPU
// binding (cpu_scan.cpp) and the CUDA one (cuda_binding.cpp). torch.library.register_autograd,
// the Python form of the same rule (autograd.py), cost about 25 us per forward+backward at small
// shapes on CPU, and up to 140 us for a packed batch: more than the kernels' own overhead.
//
// An op pair is
//   scan(decays, impulses, initial_state?, reverse, extra...) -> h
//   scan_backward(decays, h, grad_h, initial_state?, reverse, extra...)
//       -> (grad_impulses, grad_decays, grad_initial_state)
// where extra is what selects the kernel (bool parallel, int kernel) and a packed batch's
// offsets (Tensor cu_seqlens). The backward runs the reverse-time recurrence from the saved h.
// Both ops are called through the dispatcher, so fake tensors (torch.compile) take their
// registered fake kernels, and the backward op's own rule (registered from Python,
// autograd.refuse_double_backward) refuses a double backward.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace plrnn {

// Ops: a struct naming the pair (static constexpr const char* scan, backward: "ns::name") and
// making the upstream gradient contiguous (static at::Tensor contiguous(const at::Tensor&)), in
// an anonymous namespace: the instantiation's function-local statics (the op handles) then
// belong to its library. With external linkage the dynamic linker would make them one object
// for every library that instantiates the same Ops, as the CUDA binding and its emulated build
// do in one test process, and one library's autograd would call the other's ops.
template <typename Ops, typename... Extra>
struct ScanAutograd : public torch::autograd::Function<ScanAutograd<Ops, Extra...>> {
  using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
  using ScanSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                             const c10::optional<at::Tensor>&, bool, Extra...);
  using BackwardSig = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const c10::optional<at::Tensor>&, bool, Extra...);

  static const c10::TypedOperatorHandle<ScanSig>& scan_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(Ops::scan, "").template typed<ScanSig>();
    return op;
  }

  static const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow(Ops::backward, "")
                               .template typed<BackwardSig>();
    return op;
  }

  // The op's Autograd kernel. Calls that need no gradient (no_grad, inference, inputs that do
  // not require grad) skip the Function, whose bookkeeping cost about 1.5 us a call (a T = 16
  // CPU call: 4.1 -> 2.6 us, against torch.mul's 1.3; Zen 4 VM). Its output would not require
  // grad either.
  static at::Tensor call(const at::Tensor& decays, const at::Tensor& impulses,
                         const c10::optional<at::Tensor>& initial_state, bool reverse,
                         Extra... extra) {
    const bool needs_grad =
        at::GradMode::is_enabled() &&
        (decays.requires_grad() || impulses.requires_grad() ||
         (initial_state && initial_state->requires_grad()));
    if (needs_grad)
      return ScanAutograd::apply(decays, impulses, initial_state, reverse, extra...);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return scan_op().call(decays, impulses, initial_state, reverse, extra...);
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& decays,
                            const at::Tensor& impulses, const c10::optional<at::Tensor>& h0,
                            bool reverse, Extra... extra) {
    at::Tensor h;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      h = scan_op().call(decays, impulses, h0, reverse, extra...);
    }
    // Tensors among the extras are saved as tensors, so that changing one in place before the
    // backward raises; the others go into saved_data.
    std::vector<at::Tensor> saved{decays, h, h0.value_or(at::Tensor())};
    save_extras(ctx, saved, std::index_sequence_for<Extra...>{}, extra...);
    ctx->save_for_backward(saved);
    ctx->saved_data["reverse"] = reverse;
    return h;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& h0 = saved[2];
    const auto h0_opt = h0.defined() ? c10::optional<at::Tensor>(h0) : c10::nullopt;
    const at::Tensor grad_h = Ops::contiguous(grads[0]);
    // Below autograd unless grad mode is on (create_graph), where the backward op's own rule,
    // registered from Python, refuses the double backward: through that Python rule a CPU
    // backward took 16 us at (16, 4) against 3.5 us for the forward (Zen 3 VM).
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    auto [gx, ga, gh0] = call_backward(ctx, saved, grad_h, h0_opt,
                                       std::index_sequence_for<Extra...>{});
    torch::autograd::variable_list out{ga, gx, h0.defined() ? gh0 : at::Tensor(), at::Tensor()};
    out.resize(out.size() + sizeof...(Extra));  // no gradient for the extras
    return out;
  }

 private:
  static std::string key(std::size_t i) { return "extra" + std::to_string(i); }

  template <std::size_t... I>
  static void save_extras(torch::autograd::AutogradContext* ctx, std::vector<at::Tensor>& saved,
                          std::index_sequence<I...>, Extra... extra) {
    (save_extra(ctx, saved, I, extra), ...);
  }

  template <typename T>
  static void save_extra(torch::autograd::AutogradContext* ctx, std::vector<at::Tensor>& saved,
                         std::size_t i, const T& value) {
    if constexpr (std::is_same_v<T, at::Tensor>) {
      ctx->saved_data[key(i)] = static_cast<int64_t>(saved.size());  // its index in saved
      saved.push_back(value);
    } else {
      ctx->saved_data[key(i)] = value;
    }
  }

  template <typename T>
  static T load_extra(torch::autograd::AutogradContext* ctx,
                      const torch::autograd::variable_list& saved, std::size_t i) {
    const c10::IValue& value = ctx->saved_data[key(i)];
    if constexpr (std::is_same_v<T, at::Tensor>) {
      return saved[value.toInt()];
    } else {
      return value.to<T>();
    }
  }

  template <std::size_t... I>
  static Grads call_backward(torch::autograd::AutogradContext* ctx,
                             const torch::autograd::variable_list& saved,
                             const at::Tensor& grad_h, const c10::optional<at::Tensor>& h0,
                             std::index_sequence<I...>) {
    return backward_op().call(saved[0], saved[1], grad_h, h0,
                              ctx->saved_data["reverse"].toBool(),
                              load_extra<std::decay_t<Extra>>(ctx, saved, I)...);
  }
};

}  // namespace plrnn
