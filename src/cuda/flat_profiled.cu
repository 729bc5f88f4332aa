// Measurement instances of the fused flat kernel (FlatParams::prof / debug_mode honoured):
// prefill fp8 H = 64 and decode fp8 H = 64, next_n = 1, the benchmarked shapes.
#define HISA_FLAT_DEFINE_LAUNCH
#include "cuda/flat_launch.cuh"

namespace hisa::cuda {
HISA_FLAT_PROFILED_INSTANCE(kFp8, 64, 2, false)
HISA_FLAT_PROFILED_INSTANCE(kFp8, 64, 1, true)
}  // namespace hisa::cuda
