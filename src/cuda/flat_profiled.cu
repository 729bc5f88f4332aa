// Measurement and experimental instances of the fused flat kernel for the benchmarked shapes
// (prefill fp8 H = 64; decode fp8 H = 64, next_n = 1): FlatParams::prof / debug_mode honoured
// (PROF = true); variant 2: four key stages per select step (SUB = 4), for A/B timing.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 1, 4)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 4)
}  // namespace hisa::cuda
