// Measurement instances of the fused flat kernel for the benchmarked shapes (prefill fp8 H = 64;
// decode fp8 H = 64, next_n = 1): FlatParams::prof / debug_mode honoured (PROF = true).
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 1, 0)
}  // namespace hisa::cuda
