// Element loads of the CUDA-core kernels: fp8 e4m3, bf16 and fp32 values as fp32 (exact).
#pragma once

#include <cstdint>

#include "hisa/dtype.hpp"

namespace hisa::cuda {

__device__ __forceinline__ float fp8e4m3_value(uint8_t v) {
  const uint32_t s = v >> 7, e = (v >> 3) & 0xF, m = v & 7;
  const float mag = e ? __uint_as_float(((e + 120u) << 23) | (m << 20)) : float(m) * 0.001953125f;
  return s ? -mag : mag;
}

__device__ __forceinline__ float load_value(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::F8E4M3:
      return fp8e4m3_value(static_cast<const uint8_t*>(base)[i]);
    case DType::BF16:
      return __uint_as_float(uint32_t(static_cast<const uint16_t*>(base)[i]) << 16);
    default:
      return static_cast<const float*>(base)[i];
  }
}

}  // namespace hisa::cuda
