// float16 instantiation of the CPU kernels (stored in 16 bits, accumulated in float).
#include "cpu_kernels_impl.h"

namespace plrnn {
PLRNN_INSTANTIATE_CPU_KERNELS(c10::Half)
}  // namespace plrnn
