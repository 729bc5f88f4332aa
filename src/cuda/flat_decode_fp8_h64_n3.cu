// Fused flat kernel instance: paged decode, fp8, H = 64, next_n = 3.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_INSTANCE(kFp8, 64, 3, true, false)
}  // namespace hisa::cuda
