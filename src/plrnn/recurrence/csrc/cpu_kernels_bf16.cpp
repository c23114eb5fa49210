// bfloat16 instantiation of the CPU kernels (stored in 16 bits, accumulated in float).
//
// In the avx512_bf16 library (setup.py), loaded only on CPUs with AVX-512 BF16, this translation
// unit alone compiles for AVX-512 with BF16, so each store rounds in one instruction (narrow_to);
// the other dtypes compile exactly as in the avx2 library. A whole-library AVX-512 build made
// bfloat16 as fast but the other dtypes no faster (Zen 4 VM, within its noise). The library as a
// whole runs only where every instruction in it exists, so inline functions of shared headers
// compiled here for AVX-512 are safe wherever the linker keeps them.
#if defined(PLRNN_AVX512_BF16) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,prefer-vector-width=256")
#define PLRNN_BF16_INSTRUCTIONS 1  // the pragma, unlike -m flags, defines no __AVX512BF16__
#endif
#include "cpu_kernels_impl.h"

namespace plrnn {
PLRNN_INSTANTIATE_CPU_KERNELS(c10::BFloat16)
}  // namespace plrnn
