// Entry points of the CPU kernels on raw (T, C) row-major buffers, one instantiation per storage
// type (cpu_kernels_{f32,f64,f16}.cpp); the torch binding (cpu_scan.cpp) calls them.
#pragma once

#include <c10/util/complex.h>

#include <cstdint>

namespace plrnn {

// h = scan(a, x, h0) in time order (reverse: from row T-1 down); h0 may be null (zeros).
// a_shared: a is one row of C decays used at every step (time-invariant), not T rows.
template <typename scalar_t>
void scan_forward_kernel(const scalar_t* a, const scalar_t* x, const scalar_t* h0, scalar_t* out,
                         int64_t T, int64_t C, bool reverse, bool parallel, bool a_shared);

// dL/dx, dL/da and dL/dh0 (C values) from the saved h and dL/dh; h0 may be null (zeros).
// grad_a has T rows even with a_shared (the caller sums them).
template <typename scalar_t>
void scan_backward_kernel(const scalar_t* a, const scalar_t* h, const scalar_t* grad_h,
                          const scalar_t* h0, scalar_t* grad_x, scalar_t* grad_a,
                          scalar_t* grad_h0, int64_t T, int64_t C, bool reverse, bool parallel,
                          bool a_shared);

// complex64 / complex128: plain-loop kernels (cpu_kernels_complex.cpp), gradients conjugated as
// torch's complex autograd expects.
#define PLRNN_DECLARE_COMPLEX_KERNELS(scalar_t)                                                   \
  template <>                                                                                     \
  void scan_forward_kernel<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, scalar_t*, \
                                     int64_t, int64_t, bool, bool, bool);                         \
  template <>                                                                                     \
  void scan_backward_kernel<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*,          \
                                      const scalar_t*, scalar_t*, scalar_t*, scalar_t*, int64_t,  \
                                      int64_t, bool, bool, bool);
PLRNN_DECLARE_COMPLEX_KERNELS(c10::complex<float>)
PLRNN_DECLARE_COMPLEX_KERNELS(c10::complex<double>)
#undef PLRNN_DECLARE_COMPLEX_KERNELS

}  // namespace plrnn
