// Fused kernel instance: dense keys (flat prefill, HISA block stage), fp8, H = 32, top-k.
#define HISA_FUSED_DEFINE_LAUNCH
#include "cuda/fused_launch.cuh"

namespace hisa::cuda {
HISA_FUSED_INSTANCE(kFp8, 32, 2, sm90::kDenseKeys, false)
}  // namespace hisa::cuda
