// Measurement and experimental instances of the fused flat kernel for the benchmarked shapes
// (prefill fp8 H = 64; decode fp8 H = 64, next_n = 1): FlatParams::prof / debug_mode honoured
// (PROF = true); variant 1: a select warpgroup per query (SEL = 2); variant 2: one key stage per
// select step (SUB = 1, the run-3 select loop) for A/B timing.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 2, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 2, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 1, 1)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 1)
}  // namespace hisa::cuda
