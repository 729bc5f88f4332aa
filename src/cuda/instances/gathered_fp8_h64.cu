// Fused kernel instance: gathered key chunks (HISA token stage), fp8, H = 64, top-k.
#define HISA_FUSED_DEFINE_LAUNCH
#include "cuda/fused_launch.cuh"

namespace hisa::cuda {
HISA_FUSED_INSTANCE(kFp8, 64, 2, sm90::kGatheredKeys, false)
}  // namespace hisa::cuda
