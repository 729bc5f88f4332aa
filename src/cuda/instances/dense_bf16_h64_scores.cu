// Fused kernel instance: dense keys, bf16, H = 64, scores written (k above the fused limit).
#define HISA_FUSED_DEFINE_LAUNCH
#include "cuda/fused_launch.cuh"

namespace hisa::cuda {
HISA_FUSED_INSTANCE(kBf16, 64, 2, sm90::kDenseKeys, true)
}  // namespace hisa::cuda
