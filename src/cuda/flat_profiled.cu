// Measurement and experimental instances of the fused flat kernel for the benchmarked shapes
// (prefill fp8 H = 64; decode fp8 H = 64, next_n = 1): FlatParams::prof / debug_mode honoured
// (PROF = true); prefill variants for A/B timing (Options::variant): four key stages per select
// step (SUB = 4) with the production lists and ring (TUNE 0), a 16-stage ring (TUNE 1), or
// 5120-entry lists and a third key stage (TUNE 2).
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 0, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 0, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 0, 4)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 0, 4)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 1, 4)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 4)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 2, 4)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 2, 4)
}  // namespace hisa::cuda
