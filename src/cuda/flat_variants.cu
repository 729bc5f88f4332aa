// Same-run A/B instances of session 8 (fp8, H = 64; sm90_flat_topk.cuh, FlatConfig): per-warp
// stage-barrier arrivals (TUNE 8: prefill and decode; 10: the decode key stream alone) and the
// cuts' digit counts without __match_any_sync (TUNE 9: prefill) and with 8 loads in flight per
// thread (TUNE 12: prefill). A file of their own so that they
// compile in parallel with flat_profiled.cu.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 8, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 8, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 12, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 12, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 8, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 8, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 10, 0)
}  // namespace hisa::cuda
