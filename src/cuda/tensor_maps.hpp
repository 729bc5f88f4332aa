// TMA tensor maps (cuTensorMapEncodeTiled through the runtime's driver entry point) of the fused
// kernel's operands. Each throws hisa::Error when the driver refuses the encoding.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "hisa/dtype.hpp"

namespace hisa::cuda {

// [rows, 128] q or key rows of dtype t (fp8 or bf16), 128-byte swizzle, a box of box_rows rows
// (fp8: 128 bytes; bf16: 64 elements = one swizzle atom, copied twice). L2 promotion 256 B (keys
// are read again from L2 by the other tiles).
CUtensorMap map_rows(const void* base, DType t, uint64_t rows, uint32_t box_rows,
                     const char* what);
// [n] fp32 key scales, a box of box_n.
CUtensorMap map_scales(const float* base, uint64_t n, uint32_t box_n);
// The paged cache as [pages, 64 tokens, 128 bytes] with the page stride of 64 * 132 bytes; no L2
// promotion: each page is read once (the cache's pages streamed in 263 us at b64 x 128K without
// promotion, 280 us with the 256 B promotion).
CUtensorMap map_cache(const uint8_t* base, uint64_t pages);

}  // namespace hisa::cuda
