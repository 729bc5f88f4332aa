// Fused kernel instance: gathered key chunks (HISA token stage), bf16, H = 64, top-k.
#define HISA_FUSED_DEFINE_LAUNCH
#include "cuda/fused_launch.cuh"

namespace hisa::cuda {
HISA_FUSED_INSTANCE(kBf16, 64, 2, sm90::kGatheredKeys, false)
}  // namespace hisa::cuda
