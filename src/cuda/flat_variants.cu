// Same-run A/B instances of session 8 (fp8, H = 64; sm90_flat_topk.cuh, FlatConfig): the cuts'
// digit counts with __match_any_sync (TUNE 9, runs 1-58's production; prefill and decode) and the
// decode of runs 38-59 (TUNE 13: five key stages; the host gives it the 256 B L2 promotion), five
// key stages with production's map (14), w in registers (15; run 63) and with one N = 64 bank (16).
// A file of their own so that they compile in parallel with flat_profiled.cu.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 13, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 13, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 14, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 14, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 15, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 15, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 16, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 16, 0)
}  // namespace hisa::cuda
