// C interface of the CUDA scan kernels (scan_serial.cu, scan_paper.cu, scan_parallel.cu).
//
// Plain C types only: the torch binding (cuda_binding.cpp) and the host emulator used by the
// CPU tests call exactly these functions. Every buffer is a time-major (T, C) contiguous array
// on the device; `stream` is a cudaStream_t. Each function returns a cudaError_t value (0 on
// success), checked after every launch.
//
// Scan order. A call runs h(r) = a(r) * h(r-1) + x(r) for steps r = 0..T-1, where step r lives
// at data row first + r * dir (dir = +1, or -1 for reverse=True). The backward entry point runs
// the gradient recurrence of paper section 3.3 in the opposite direction; see
// plrnn_parallel_backward.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Storage types. Accumulation is in float (double for PLRNN_F64); complex numbers (interleaved
// real and imaginary parts, as torch stores them; cuda_parallel only) in their own precision.
enum plrnn_dtype {
  PLRNN_F32 = 0, PLRNN_F64 = 1, PLRNN_F16 = 2, PLRNN_BF16 = 3, PLRNN_C64 = 4, PLRNN_C128 = 5
};

// ---- cuda_serial: the paper's serial baseline (fp32 only) -----------------------------------
// 30 blocks x 1024 threads; one thread per channel loops over all of time.
int plrnn_serial_forward(const float* decays, const float* impulses, const float* initial_state,
                         float* out, int64_t T, int64_t C, int reverse, void* stream);

// ---- cuda_paper: the authors' parallel kernel as described (fp32 only) ----------------------
// Three launches on 30 blocks x 1024 threads; scratch cudaMalloc'd and freed inside the call
// (so the call synchronises the device, as the original did).
int plrnn_paper_forward(const float* decays, const float* impulses, const float* initial_state,
                        float* out, int64_t T, int64_t C, int reverse, void* stream);

// ---- cuda_parallel: the tuned single-pass kernel --------------------------------------------
// `num_sms` sizes the tiles (more, shorter tiles when the problem alone would not fill the GPU).
// `vectorized` must be plrnn_parallel_can_vectorize() of the very pointers, channel count and
// decay period passed later.
// Workspace: plrnn_parallel_workspace_bytes() bytes, 256-byte aligned, contents irrelevant (the
// call clears what it needs, on `stream`); it must stay allocated until the call's work is done.
int plrnn_parallel_can_vectorize(const void* const* pointers, int count, int64_t C,
                                 int64_t decay_period, int dtype);
size_t plrnn_parallel_workspace_bytes(int64_t T, int64_t C, int dtype, int vectorized,
                                      int backward, int num_sms);

// Decays are read in place, never expanded: (T, P) rows with decay_per_step != 0, else one row
// of P values for every step (time-invariant), where the period P = decay_period divides C and
// the decay of channel c is column c % P (P = C: one decay per channel; P < C: decays shared by
// the C / P blocks of P channels, e.g. over a batch of (T, B, P) impulses).
//
// h = scan(decays, impulses) from initial_state (may be null: zeros); all (T, C) but the state
// and the decays.
int plrnn_parallel_forward(const void* decays, const void* impulses, const void* initial_state,
                           void* out, int64_t T, int64_t C, int reverse, int dtype,
                           int64_t decay_period, int decay_per_step, int vectorized,
                           int num_sms, void* workspace, void* stream);

// Gradients of h = scan(decays, impulses, initial_state, reverse) given grad_h, from the saved
// h, in one pass against the forward direction (g = dL/dh accumulated through time):
//   grad_impulses[t] = g[t],   grad_decays[t] = h[t - dir] * g[t] (h0 or zero past the edge),
//   grad_initial_state = decays[first] * g[first]   (written only if the pointer is not null).
// grad_decays is (T, C), per step and channel, whatever the decays' layout (the caller sums it
// to the decays' shape).
int plrnn_parallel_backward(const void* decays, const void* h, const void* grad_h,
                            const void* initial_state, void* grad_impulses, void* grad_decays,
                            void* grad_initial_state, int64_t T, int64_t C, int reverse,
                            int dtype, int64_t decay_period, int decay_per_step, int vectorized,
                            int num_sms, void* workspace, void* stream);

// ---- cuda_parallel on a packed batch of short sequences --------------------------------------
// N sequences back to back along time: sequence n is rows cu_seqlens[n] .. cu_seqlens[n+1]-1 of
// the (T, C) buffers (N + 1 int64 offsets in device memory, trusted: 0 = cu[0] <= ... <= cu[N] =
// T), each run from row n of initial_state (N, C; null: zeros). One thread per sequence and
// column of V channels walks that sequence's rows, so no state crosses a boundary. For batches of
// many short sequences, where Algorithm 1 would take one launch per sequence for little work.
// Decays as for plrnn_parallel_forward; `vectorized` is plrnn_parallel_can_vectorize() of the
// pointers (initial states included), C and the period.
int plrnn_packed_forward(const void* decays, const void* impulses, const void* initial_state,
                         void* out, const int64_t* cu_seqlens, int64_t N, int64_t C, int reverse,
                         int dtype, int64_t decay_period, int decay_per_step, int vectorized,
                         void* stream);

// Its gradients from the saved h, as plrnn_parallel_backward; grad_initial_state is (N, C),
// written when not null (zero for an empty sequence).
int plrnn_packed_backward(const void* decays, const void* h, const void* grad_h,
                          const void* initial_state, void* grad_impulses, void* grad_decays,
                          void* grad_initial_state, const int64_t* cu_seqlens, int64_t N,
                          int64_t C, int reverse, int dtype, int64_t decay_period,
                          int decay_per_step, int vectorized, void* stream);

#ifdef __cplusplus
}
#endif
