// Same-run A/B instances (fp8, H = 64; sm90_flat_topk.cuh, FlatConfig): the prefill's cut digit
// counts with __match_any_sync (TUNE 9, runs 1-58's production); the decode with four key
// stages (14), two N = 32 banks (15), runs 61-63's decode (16), the select warps' tail (17),
// sleeping polls (18, 19), the exact cut before the end with uncut lists published (20), the
// merge keeping the merging split's own list in shared memory (21), the decode without the
// early prefetch of its first item's inputs (22) and six key stages (24). A file of their own so
// that they compile in parallel with flat_profiled.cu.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, false, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 2, false, true, 9, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 14, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 14, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 15, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 15, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 16, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 16, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 17, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 17, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 18, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 18, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 19, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 19, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 20, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 20, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 21, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 21, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 22, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 22, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, false, 24, 0)
HISA_FLAT_VARIANT_INSTANCE(kFp8, 64, 1, true, true, 24, 0)
}  // namespace hisa::cuda
