// Measurement and experimental instances of the fused flat kernel for the benchmarked shapes
// (prefill fp8 H = 64; decode fp8 H = 64, next_n = 1): FlatParams::prof / debug_mode honoured
// (PROF = true); variant 1 (Options::variant, TUNE 1), for A/B timing in the same run: prefill
// as in run 27 (768 threads, two N = 64 banks), decode as in run 22 (a 16-stage epilogue ring);
// the decode key stream alone (2); the prefill with two N = 64 banks (3) and with w read from
// shared memory every stage (4, runs 35-55's production); the key scales loaded at the top of the
// stage (7, run 56's production; sm90_flat_topk.cuh).
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 0, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 0, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 1, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 2, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 3, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 3, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 4, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 4, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 7, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 7, 0)
}  // namespace hisa::cuda
