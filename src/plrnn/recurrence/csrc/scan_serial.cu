// cuda_serial: the serial baseline of Martin & Cundy (2018), written from the paper's description
// (docs/paper.md), fp32 only.
//
// Schedule: a fixed grid of 30 blocks x 1024 threads. Thread i takes channels i, i + 30720, ...
// and for each walks all T steps: h = a[t] * h + x[t]. Consecutive threads take consecutive
// channels, so every step's loads and stores are coalesced over channels. With few channels
// almost every thread idles, and each step waits for the previous one's memory round trip: this
// is the kernel that the parallel kernels are measured against in Table 1.
#include "cuda_compat.h"
#include "cuda_scan.h"

namespace {

constexpr int kBlocks = 30;    // "15 SMs x 2 blocks", as in the paper's code
constexpr int kThreads = 1024;

__global__ void __launch_bounds__(kThreads)
    serial_scan(const float* __restrict__ a, const float* __restrict__ x,
                const float* __restrict__ h0, float* __restrict__ out, int64_t T, int64_t C,
                int64_t stride) {
  const int64_t threads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += threads) {
    float h = h0 ? h0[c] : 0.0f;
    int64_t e = c;  // element of step r is r * stride + c, relative to the first row
    for (int64_t r = 0; r < T; ++r, e += stride) {
      h = a[e] * h + x[e];
      out[e] = h;
    }
  }
}

}  // namespace

extern "C" int plrnn_serial_forward(const float* decays, const float* impulses,
                                    const float* initial_state, float* out, int64_t T,
                                    int64_t C, int reverse, void* stream) {
  if (T <= 0 || C <= 0) return cudaSuccess;
  const int64_t first = reverse ? (T - 1) * C : 0;
  const int64_t stride = reverse ? -C : C;
  PLRNN_LAUNCH(serial_scan, dim3(kBlocks), dim3(kThreads), static_cast<cudaStream_t>(stream),
               decays + first, impulses + first, initial_state, out + first, T, C, stride);
  return cudaGetLastError();
}
