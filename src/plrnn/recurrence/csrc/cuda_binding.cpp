// The torch side of the CUDA kernels (scan_serial.cu, scan_paper.cu, scan_parallel.cu, called
// through the plain C interface in cuda_scan.h): argument checks, outputs and workspace from
// torch's caching allocator, the current stream, and the ops' registration.
//
//   plrnn::cuda_scan(decays, impulses, initial_state?, reverse, kernel) -> h
//   plrnn::cuda_scan_backward(decays, h, grad_h, initial_state?, reverse, kernel)
//       -> (grad_impulses, grad_decays, grad_initial_state)
//   plrnn::cuda_scan_packed(decays, impulses, initial_state?, reverse, cu_seqlens) -> h
//   plrnn::cuda_scan_packed_backward(decays, h, grad_h, initial_state?, reverse, cu_seqlens)
//       -> (grad_impulses, grad_decays, grad_initial_state)
// kernel: 0 = cuda_serial, 1 = cuda_paper (both fp32 only, as in the paper), 2 = cuda_parallel.
// The packed ops are cuda_parallel's path for a packed batch of short sequences: cu_seqlens is a
// CPU int64 tensor of N + 1 offsets, checked here and copied to the device, and initial_state is
// (N, C).
// cuda_parallel also takes decays that broadcast, read in place without being expanded: (T, P) or
// (1, P) with P dividing C, channel c reading column c % P (one (1, C) row is time-invariant;
// (T, P) rows are shared by the C / P blocks of P channels, e.g. over a batch). Their gradient
// comes back in their own shape, summed over the steps and blocks that share each decay.
// Autograd is scan_autograd.h's C++ rule; the fake kernels and the backward ops' refusal of a
// double backward are registered from Python (cuda.py).
//
// Built with -DPLRNN_EMULATE (tests only, tests/recurrence/test_cuda_build.py), the same binding
// registers plrnn_emulated::cuda_scan{,_backward} for CPU tensors on top of the host emulator of
// the kernels, so that everything here but the stream and the device guard runs in CI.
#include <ATen/ATen.h>
#include <torch/library.h>

#ifndef PLRNN_EMULATE
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#define PLRNN_OPS plrnn
#define PLRNN_DEVICE_KEY CUDA
#define PLRNN_DEVICE_GUARD(t) const c10::cuda::CUDAGuard device_guard((t).device())
#else
#define PLRNN_OPS plrnn_emulated
#define PLRNN_DEVICE_KEY CPU
#define PLRNN_DEVICE_GUARD(t)
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <tuple>

#include "cuda_scan.h"
#include "scan_autograd.h"

namespace plrnn {
namespace {

enum Kernel : int64_t { kSerial = 0, kPaper = 1, kParallel = 2 };

const char* kernel_name(int64_t kernel) {
  return kernel == kSerial ? "cuda_serial" : kernel == kPaper ? "cuda_paper" : "cuda_parallel";
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return PLRNN_F32;
    case at::kDouble: return PLRNN_F64;
    case at::kHalf: return PLRNN_F16;
    case at::kBFloat16: return PLRNN_BF16;
    case at::kComplexFloat: return PLRNN_C64;
    case at::kComplexDouble: return PLRNN_C128;
    default: TORCH_CHECK_TYPE(false, "plrnn CUDA kernels: unsupported dtype ", t);
  }
  return -1;
}

void check_cuda(int err, int64_t kernel) {
#ifndef PLRNN_EMULATE
  TORCH_CHECK(err == 0, "plrnn ", kernel_name(kernel), " failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
#else
  TORCH_CHECK(err == 0, "plrnn ", kernel_name(kernel), " (emulated) failed: error ", err);
#endif
}

bool on_kernel_device(const at::Tensor& t) {
#ifndef PLRNN_EMULATE
  return t.is_cuda();
#else
  return t.is_cpu();
#endif
}

void* current_stream(const at::Tensor& t) {
#ifndef PLRNN_EMULATE
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
#else
  (void)t;
  return nullptr;
#endif
}

// `t` on like's device with like's dtype, contiguous and aligned, of shape `sizes` (like's).
void check_buffer(const at::Tensor& t, const at::Tensor& like, const char* name,
                  at::IntArrayRef sizes = {}) {
  if (sizes.empty()) sizes = like.sizes();
  TORCH_CHECK(on_kernel_device(t) && t.device() == like.device(), "plrnn CUDA kernels: ", name,
              " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.sizes() == sizes, "plrnn CUDA kernels: ", name,
              " must have the shape ", sizes, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), "plrnn CUDA kernels: ", name,
                   " must have dtype ", like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "plrnn CUDA kernels: ", name, " must be contiguous");
  // a complex128 value is one 16-byte access in the kernel
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % t.element_size() == 0,
              "plrnn CUDA kernels: ", name, " must be aligned to its element size (",
              t.element_size(), " bytes)");
}

// How the kernel reads the decays (cuda_scan.h): `period` columns per row, one row per step or
// one for all steps.
struct DecayLayout {
  int64_t period;
  bool per_step;
};

// Decays of the impulses' (T, C) shape, or for cuda_parallel (T, P) or (1, P) with P dividing C.
DecayLayout check_decays(const at::Tensor& a, const at::Tensor& like, int64_t kernel) {
  const int64_t T = like.size(0), C = like.size(1);
  const bool broadcast = a.dim() == 2 && a.sizes() != like.sizes() &&
                         (a.size(0) == 1 || a.size(0) == T) &&
                         (a.size(1) > 0 ? C % a.size(1) == 0 : C == 0);
  TORCH_CHECK(!broadcast || kernel == kParallel, kernel_name(kernel),
              " takes decays of the impulses' (T, C) shape only; time-invariant or shared "
              "(1 or T, P) decays are for cuda_parallel");
  check_buffer(a, like, "decays", broadcast ? a.sizes() : like.sizes());
  return {a.size(1), a.size(0) == T};
}

// dL/da, written per step and channel, summed to the decays' own shape.
at::Tensor reduce_to_decays(const at::Tensor& ga, const at::Tensor& a) {
  if (a.sizes() == ga.sizes()) return ga;
  const int64_t T = ga.size(0), C = ga.size(1), P = a.size(1);
  const at::Tensor terms = ga.view({T, C / P, P});
  if (a.size(0) == T && T > 1) return terms.sum(1);
  return terms.sum(at::IntArrayRef{0, 1}).view(a.sizes());
}

void check_state(const c10::optional<at::Tensor>& h0, const at::Tensor& like) {
  if (!h0) return;
  TORCH_CHECK(on_kernel_device(*h0) && h0->device() == like.device(),
              "plrnn CUDA kernels: initial_state must be on ", like.device());
  TORCH_CHECK(h0->dim() == 1 && h0->size(0) == like.size(1),
              "plrnn CUDA kernels: initial_state must have shape (C,) = (", like.size(1),
              ",), got ", h0->sizes());
  TORCH_CHECK_TYPE(h0->scalar_type() == like.scalar_type(),
                   "plrnn CUDA kernels: initial_state must have dtype ", like.scalar_type());
  TORCH_CHECK(h0->is_contiguous(), "plrnn CUDA kernels: initial_state must be contiguous");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(h0->data_ptr()) % h0->element_size() == 0,
              "plrnn CUDA kernels: initial_state must be aligned to its element size");
}

void check_kernel(int64_t kernel, at::ScalarType dtype) {
  TORCH_CHECK(kernel == kSerial || kernel == kPaper || kernel == kParallel,
              "plrnn CUDA kernels: kernel must be 0 (serial), 1 (paper) or 2 (parallel), got ",
              kernel);
  TORCH_CHECK_TYPE(kernel == kParallel || dtype == at::kFloat, kernel_name(kernel),
                   " is the paper's float32-only kernel; got ", dtype,
                   " (cuda_parallel takes float16, bfloat16, float32, float64, complex64 and "
                   "complex128)");
}

// The SM count of the tensor's device (read once per device; the plan of cuda_parallel's tiles
// depends on it).
int num_sms(const at::Tensor& t) {
#ifdef PLRNN_EMULATE
  (void)t;
  return 4;  // a small GPU: tiles as short as a few SMs ask for
#endif
  static std::array<std::atomic<int>, 256> cached{};
  const int device = t.device().index();
  TORCH_CHECK(device >= 0 && device < int(cached.size()), "plrnn: device index ", device);
  int n = cached[device].load(std::memory_order_relaxed);
  if (n > 0) return n;
#ifndef PLRNN_EMULATE
  const cudaError_t err = cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
  TORCH_CHECK(err == cudaSuccess, "plrnn: cannot read the SM count: ", cudaGetErrorString(err));
#endif
  cached[device].store(n, std::memory_order_relaxed);
  return n;
}

const void* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t ? t->data_ptr() : nullptr;
}

void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// cuda_parallel's workspace (tile flags and carries), on the tensor's device; none (undefined)
// where the plan has a single tile along time, as short sequences do, so they pay no allocation:
// in Table 1 on the H200 cuda_parallel took 1.08-1.16x cuda_serial's time at T = 16 (22-41 us a
// call).
at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  if (bytes == 0) return at::Tensor();
  return at::empty({int64_t(bytes)}, like.options().dtype(at::kByte));
}

void forward_into(const at::Tensor& decays, const at::Tensor& impulses,
                  const c10::optional<at::Tensor>& h0, bool reverse, int64_t kernel,
                  at::Tensor& out, DecayLayout layout) {
  const int64_t T = impulses.size(0), C = impulses.size(1);
  if (T == 0 || C == 0) return;
  void* stream = current_stream(impulses);
  if (kernel == kParallel) {
    const int code = dtype_code(impulses.scalar_type());
    const void* ptrs[] = {decays.data_ptr(), impulses.data_ptr(), out.data_ptr()};
    const int vec = plrnn_parallel_can_vectorize(ptrs, 3, C, layout.period, code);
    const int sms = num_sms(impulses);
    const at::Tensor work = workspace(plrnn_parallel_workspace_bytes(T, C, code, vec, 0, sms),
                                      impulses);
    check_cuda(plrnn_parallel_forward(decays.data_ptr(), impulses.data_ptr(), ptr_or_null(h0),
                                      out.data_ptr(), T, C, reverse, code, layout.period,
                                      layout.per_step, vec, sms, ptr_or_null(work), stream),
               kernel);
    return;
  }
  const auto f = kernel == kSerial ? plrnn_serial_forward : plrnn_paper_forward;
  check_cuda(f(decays.data_ptr<float>(), impulses.data_ptr<float>(),
               h0 ? h0->data_ptr<float>() : nullptr, out.data_ptr<float>(), T, C, reverse,
               stream),
             kernel);
}

at::Tensor scan_forward(const at::Tensor& decays, const at::Tensor& impulses,
                        const c10::optional<at::Tensor>& initial_state, bool reverse,
                        int64_t kernel) {
  TORCH_CHECK(on_kernel_device(impulses), "plrnn CUDA kernels need CUDA tensors, got ",
              impulses.device());
  check_buffer(impulses, impulses, "impulses");
  check_kernel(kernel, impulses.scalar_type());
  const DecayLayout layout = check_decays(decays, impulses, kernel);
  check_state(initial_state, impulses);
  PLRNN_DEVICE_GUARD(impulses);
  at::Tensor out = at::empty_like(impulses, at::MemoryFormat::Contiguous);
  forward_into(decays, impulses, initial_state, reverse, kernel, out, layout);
  return out;
}

// Gradients of h = scan(decays, impulses, h0) given dL/dh, from the saved h (paper section 3.3).
// cuda_parallel has a fused kernel; the paper's kernels run their forward kernel in the other
// direction on the decays shifted by one step, then one elementwise product, as the paper did.
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward(
    const at::Tensor& decays, const at::Tensor& h, const at::Tensor& grad_h,
    const c10::optional<at::Tensor>& initial_state, bool reverse, int64_t kernel) {
  TORCH_CHECK(on_kernel_device(grad_h), "plrnn CUDA kernels need CUDA tensors, got ",
              grad_h.device());
  check_buffer(grad_h, grad_h, "grad_h");
  check_kernel(kernel, grad_h.scalar_type());
  const DecayLayout layout = check_decays(decays, grad_h, kernel);
  check_buffer(h, grad_h, "h");
  check_state(initial_state, grad_h);
  PLRNN_DEVICE_GUARD(grad_h);
  const int64_t T = grad_h.size(0), C = grad_h.size(1);
  if (T == 0 || C == 0) {
    return {at::zeros_like(grad_h), at::zeros_like(decays), at::zeros({C}, grad_h.options())};
  }
  if (kernel == kParallel) {
    at::Tensor gx = at::empty_like(grad_h), ga = at::empty_like(grad_h);
    at::Tensor gh0 = at::empty({C}, grad_h.options());
    const int code = dtype_code(grad_h.scalar_type());
    const void* ptrs[] = {decays.data_ptr(), h.data_ptr(), grad_h.data_ptr(), gx.data_ptr(),
                          ga.data_ptr()};
    const int vec = plrnn_parallel_can_vectorize(ptrs, 5, C, layout.period, code);
    const int sms = num_sms(grad_h);
    const at::Tensor work = workspace(plrnn_parallel_workspace_bytes(T, C, code, vec, 1, sms),
                                      grad_h);
    void* stream = current_stream(grad_h);
    check_cuda(plrnn_parallel_backward(decays.data_ptr(), h.data_ptr(), grad_h.data_ptr(),
                                       ptr_or_null(initial_state), gx.data_ptr(), ga.data_ptr(),
                                       gh0.data_ptr(), T, C, reverse, code, layout.period,
                                       layout.per_step, vec, sms, ptr_or_null(work), stream),
               kernel);
    return {gx, reduce_to_decays(ga, decays), gh0};
  }
  // g[t] = a[t + dir] * g[t + dir] + dL/dh[t]: the forward kernel against `dir`, its decay row
  // t being a[t + dir] (zero past the edge, where g starts).
  at::Tensor next_decays = at::zeros_like(decays);
  at::Tensor h_prev = at::empty_like(h);  // h[t - dir], h0 (or zero) at the first step
  const at::Tensor edge = initial_state ? initial_state->view({1, C}) : at::zeros({1, C}, h.options());
  if (!reverse) {
    next_decays.narrow(0, 0, T - 1).copy_(decays.narrow(0, 1, T - 1));
    h_prev.narrow(0, 1, T - 1).copy_(h.narrow(0, 0, T - 1));
    h_prev.narrow(0, 0, 1).copy_(edge);
  } else {
    next_decays.narrow(0, 1, T - 1).copy_(decays.narrow(0, 0, T - 1));
    h_prev.narrow(0, 0, T - 1).copy_(h.narrow(0, 1, T - 1));
    h_prev.narrow(0, T - 1, 1).copy_(edge);
  }
  at::Tensor g = at::empty_like(grad_h);
  forward_into(next_decays, grad_h, c10::nullopt, !reverse, kernel, g, {C, true});
  at::Tensor ga = h_prev * g;
  const int64_t first = reverse ? T - 1 : 0;  // the forward's first step
  at::Tensor gh0 = decays.select(0, first) * g.select(0, first);
  return {g, ga, gh0};
}

// The offsets of a packed batch of T rows, checked on the host (the kernel trusts them) and
// copied to the device of `like`.
at::Tensor device_offsets(const at::Tensor& cu_seqlens, const at::Tensor& like) {
  TORCH_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.numel() >= 2 &&
                  cu_seqlens.scalar_type() == at::kLong && cu_seqlens.device().is_cpu(),
              "plrnn CUDA kernels: cu_seqlens must be a 1-D int64 CPU tensor of N + 1 >= 2 "
              "offsets");
  const at::Tensor cu = cu_seqlens.contiguous();
  const int64_t* p = cu.const_data_ptr<int64_t>();
  const int64_t N = cu.numel() - 1;
  TORCH_CHECK(p[0] == 0 && p[N] == like.size(0),
              "plrnn CUDA kernels: cu_seqlens must run from 0 to impulses.size(0)");
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(p[n + 1] >= p[n], "plrnn CUDA kernels: cu_seqlens must be non-decreasing");
  return cu.to(like.device());
}

void check_states(const c10::optional<at::Tensor>& h0, const at::Tensor& like, int64_t N) {
  if (!h0) return;
  check_buffer(*h0, like, "initial_state", {N, like.size(1)});
}

at::Tensor scan_packed_forward(const at::Tensor& decays, const at::Tensor& impulses,
                               const c10::optional<at::Tensor>& initial_state, bool reverse,
                               const at::Tensor& cu_seqlens) {
  TORCH_CHECK(on_kernel_device(impulses), "plrnn CUDA kernels need CUDA tensors, got ",
              impulses.device());
  check_buffer(impulses, impulses, "impulses");
  const DecayLayout layout = check_decays(decays, impulses, kParallel);
  PLRNN_DEVICE_GUARD(impulses);
  const at::Tensor cu = device_offsets(cu_seqlens, impulses);
  const int64_t N = cu.numel() - 1, C = impulses.size(1);
  check_states(initial_state, impulses, N);
  at::Tensor out = at::empty_like(impulses, at::MemoryFormat::Contiguous);
  if (impulses.numel() == 0) return out;
  const int code = dtype_code(impulses.scalar_type());
  const void* ptrs[] = {decays.data_ptr(), impulses.data_ptr(), out.data_ptr(),
                        ptr_or_null(initial_state)};
  const int vec = plrnn_parallel_can_vectorize(ptrs, 4, C, layout.period, code);
  check_cuda(plrnn_packed_forward(decays.data_ptr(), impulses.data_ptr(), ptr_or_null(initial_state),
                                  out.data_ptr(), cu.const_data_ptr<int64_t>(), N, C, reverse, code,
                                  layout.period, layout.per_step, vec, current_stream(impulses)),
             kParallel);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_packed_backward(
    const at::Tensor& decays, const at::Tensor& h, const at::Tensor& grad_h,
    const c10::optional<at::Tensor>& initial_state, bool reverse, const at::Tensor& cu_seqlens) {
  TORCH_CHECK(on_kernel_device(grad_h), "plrnn CUDA kernels need CUDA tensors, got ",
              grad_h.device());
  check_buffer(grad_h, grad_h, "grad_h");
  const DecayLayout layout = check_decays(decays, grad_h, kParallel);
  check_buffer(h, grad_h, "h");
  PLRNN_DEVICE_GUARD(grad_h);
  const at::Tensor cu = device_offsets(cu_seqlens, grad_h);
  const int64_t N = cu.numel() - 1, C = grad_h.size(1);
  check_states(initial_state, grad_h, N);
  at::Tensor gx = at::empty_like(grad_h), ga = at::empty_like(grad_h);
  at::Tensor gh0 = at::zeros({N, C}, grad_h.options());
  if (grad_h.numel() == 0) return {gx, at::zeros_like(decays), gh0};
  const int code = dtype_code(grad_h.scalar_type());
  const void* ptrs[] = {decays.data_ptr(), h.data_ptr(), grad_h.data_ptr(), gx.data_ptr(),
                        ga.data_ptr(), gh0.data_ptr(), ptr_or_null(initial_state)};
  const int vec = plrnn_parallel_can_vectorize(ptrs, 7, C, layout.period, code);
  check_cuda(plrnn_packed_backward(decays.data_ptr(), h.data_ptr(), grad_h.data_ptr(),
                                   ptr_or_null(initial_state), gx.data_ptr(), ga.data_ptr(),
                                   gh0.data_ptr(), cu.const_data_ptr<int64_t>(), N, C, reverse,
                                   code, layout.period, layout.per_step, vec,
                                   current_stream(grad_h)),
             kParallel);
  return {gx, reduce_to_decays(ga, decays), gh0};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(PLRNN_OPS, m) {
  m.def("cuda_scan(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, int kernel) -> Tensor");
  m.def("cuda_scan_backward(Tensor decays, Tensor h, Tensor grad_h, Tensor? initial_state, bool reverse, int kernel) -> (Tensor, Tensor, Tensor)");
  m.def("cuda_scan_packed(Tensor decays, Tensor impulses, Tensor? initial_state, bool reverse, Tensor cu_seqlens) -> Tensor");
  m.def("cuda_scan_packed_backward(Tensor decays, Tensor h, Tensor grad_h, Tensor? initial_state, bool reverse, Tensor cu_seqlens) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(PLRNN_OPS, PLRNN_DEVICE_KEY, m) {
  m.impl("cuda_scan", &scan_forward);
  m.impl("cuda_scan_backward", &scan_backward);
  m.impl("cuda_scan_packed", &scan_packed_forward);
  m.impl("cuda_scan_packed_backward", &scan_packed_backward);
}

#define PLRNN_STR(x) #x
#define PLRNN_OP_NAME(ns, name) PLRNN_STR(ns) "::" name

namespace {  // internal linkage, as scan_autograd.h asks
struct CudaScanOps {
  static constexpr const char* scan = PLRNN_OP_NAME(PLRNN_OPS, "cuda_scan");
  static constexpr const char* backward = PLRNN_OP_NAME(PLRNN_OPS, "cuda_scan_backward");
  static at::Tensor contiguous(const at::Tensor& t) { return t.contiguous(); }
};
struct CudaScanPackedOps {
  static constexpr const char* scan = PLRNN_OP_NAME(PLRNN_OPS, "cuda_scan_packed");
  static constexpr const char* backward = PLRNN_OP_NAME(PLRNN_OPS, "cuda_scan_packed_backward");
  static at::Tensor contiguous(const at::Tensor& t) { return t.contiguous(); }
};
}  // namespace

TORCH_LIBRARY_IMPL(PLRNN_OPS, Autograd, m) {
  m.impl("cuda_scan", &ScanAutograd<CudaScanOps, int64_t>::call);  // kernel
  m.impl("cuda_scan_packed", &ScanAutograd<CudaScanPackedOps, const at::Tensor&>::call);
}

}  // namespace plrnn
