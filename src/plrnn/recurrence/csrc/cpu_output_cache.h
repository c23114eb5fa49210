// Fresh outputs for the CPU ops, recycled from the buffers of freed outputs
// (cpu_output_cache.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace plrnn {

// An uninitialised contiguous CPU tensor, as at::empty gives; buffers of 1 MiB and more come
// from the cache of freed outputs when it holds one of the same size class.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

// A contiguous copy of t in a buffer from cached_empty: a fresh buffer would fault its pages in.
at::Tensor cached_copy(const at::Tensor& t);

// t itself if contiguous, else cached_copy(t) (an upstream gradient in another layout than h's).
at::Tensor cached_contiguous(const at::Tensor& t);

}  // namespace plrnn
