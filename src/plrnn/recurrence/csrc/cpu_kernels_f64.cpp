// float64 instantiation of the CPU kernels (compiled in parallel with the other dtypes).
#include "cpu_kernels_impl.h"

namespace plrnn {
PLRNN_INSTANTIATE_CPU_KERNELS(double)
}  // namespace plrnn
