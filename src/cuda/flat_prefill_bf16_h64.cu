// Fused flat kernel instances: prefill, bf16 q/k, H = 64 (top-k and score modes).
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_INSTANCE(kBf16, 64, 2, false, false)
HISA_FLAT_INSTANCE(kBf16, 64, 2, false, true)
}  // namespace hisa::cuda
