// Fresh outputs for the CPU ops, recycled from the buffers of freed outputs
// (cpu_output_cache.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace plrnn {

// An uninitialised contiguous CPU tensor, as at::empty gives; buffers of 1 MiB and more come
// from the cache of freed outputs when it holds one of the same size class.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace plrnn
