// cuda_paper: the authors' parallel kernel (Algorithm 1 on the GPU), re-implemented from the
// description in the paper and its README (section 2), fp32 only, weaknesses included, so that
// Table 1 can be reproduced as published. No code is taken from the original.
//
// Schedule: 30 blocks x 1024 threads (hard-coded, "15 SMs x 2 blocks"), i.e. 960 warps. Time is
// cut into 960 contiguous chunks of ceil(T / 960) steps, one per warp; a warp's 32 lanes take
// 32 channels at a time (coalesced over channels) and loop over the channels in steps of 32.
//   launch 1  reduce: each warp, for each channel, the product P of its chunk's decays and the
//             state R reached from zero at the chunk's end;
//   launch 2  carry scan: one thread per channel walks the 960 chunk totals in order,
//             carry = P * carry + R, starting from h0, and leaves each chunk's carry-in;
//   launch 3  re-scan: each warp runs its chunk again from its carry-in and writes h.
// Inputs are read twice. Scratch (2 x 960 x C floats) is cudaMalloc'd and cudaFree'd inside
// every call; cudaFree waits for the device, so the call is synchronous, as the original was.
#include "cuda_compat.h"
#include "cuda_scan.h"

namespace {

constexpr int kBlocks = 30;
constexpr int kThreads = 1024;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kChunks = kBlocks * kWarpsPerBlock;  // 960

struct Chunk {
  int64_t begin, end;  // steps [begin, end) in scan order
};

__device__ __forceinline__ Chunk chunk_of_warp(int64_t T) {
  const int64_t warp = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int64_t len = (T + kChunks - 1) / kChunks;
  const int64_t begin = warp * len < T ? warp * len : T;
  const int64_t end = begin + len < T ? begin + len : T;
  return {begin, end};
}

__global__ void __launch_bounds__(kThreads)
    paper_reduce(const float* __restrict__ a, const float* __restrict__ x, float* __restrict__ P,
                 float* __restrict__ R, int64_t T, int64_t C, int64_t stride) {
  const Chunk ch = chunk_of_warp(T);
  const int64_t warp = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  for (int64_t c = threadIdx.x % 32; c < C; c += 32) {
    float p = 1.0f, r = 0.0f;
    for (int64_t s = ch.begin; s < ch.end; ++s) {
      const float as = a[s * stride + c];
      r = as * r + x[s * stride + c];
      p *= as;
    }
    P[warp * C + c] = p;
    R[warp * C + c] = r;
  }
}

// R[k] (state reached from zero) becomes the carry into chunk k.
__global__ void __launch_bounds__(kThreads)
    paper_carry_scan(const float* __restrict__ P, float* __restrict__ R,
                     const float* __restrict__ h0, int64_t C) {
  const int64_t threads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += threads) {
    float carry = h0 ? h0[c] : 0.0f;
    for (int k = 0; k < kChunks; ++k) {
      const float reached = R[k * C + c];
      R[k * C + c] = carry;
      carry = P[k * C + c] * carry + reached;
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    paper_rescan(const float* __restrict__ a, const float* __restrict__ x,
                 const float* __restrict__ carry_in, float* __restrict__ out, int64_t T,
                 int64_t C, int64_t stride) {
  const Chunk ch = chunk_of_warp(T);
  const int64_t warp = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  for (int64_t c = threadIdx.x % 32; c < C; c += 32) {
    float h = carry_in[warp * C + c];
    for (int64_t s = ch.begin; s < ch.end; ++s) {
      h = a[s * stride + c] * h + x[s * stride + c];
      out[s * stride + c] = h;
    }
  }
}

}  // namespace

extern "C" int plrnn_paper_forward(const float* decays, const float* impulses,
                                   const float* initial_state, float* out, int64_t T, int64_t C,
                                   int reverse, void* stream_) {
  if (T <= 0 || C <= 0) return cudaSuccess;
  const auto stream = static_cast<cudaStream_t>(stream_);
  const int64_t first = reverse ? (T - 1) * C : 0;
  const int64_t stride = reverse ? -C : C;
  const float* a = decays + first;
  const float* x = impulses + first;
  float* h = out + first;

  float* scratch = nullptr;
  cudaError_t err = cudaMalloc(reinterpret_cast<void**>(&scratch),
                               sizeof(float) * 2 * size_t(kChunks) * size_t(C));
  if (err != cudaSuccess) return err;
  float* P = scratch;
  float* R = scratch + int64_t(kChunks) * C;

  PLRNN_LAUNCH(paper_reduce, dim3(kBlocks), dim3(kThreads), stream, a, x, P, R, T, C, stride);
  err = cudaGetLastError();
  if (err == cudaSuccess) {
    PLRNN_LAUNCH(paper_carry_scan, dim3(kBlocks), dim3(kThreads), stream, P, R, initial_state,
                 C);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) {
    PLRNN_LAUNCH(paper_rescan, dim3(kBlocks), dim3(kThreads), stream, a, x, R, h, T, C, stride);
    err = cudaGetLastError();
  }
  const cudaError_t freed = cudaFree(scratch);
  return err != cudaSuccess ? err : freed;
}
