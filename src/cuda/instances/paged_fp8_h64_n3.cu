// Fused kernel instance: paged fp8 cache (flat decode), H = 64, next_n = 3.
#define HISA_FUSED_DEFINE_LAUNCH
#include "cuda/fused_launch.cuh"

namespace hisa::cuda {
HISA_FUSED_INSTANCE(kFp8, 64, 3, sm90::kPagedKeys, false)
}  // namespace hisa::cuda
