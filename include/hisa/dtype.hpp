// hisa: element types and the fp8 / bf16 conversions the indexer inputs use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace hisa {

enum class DType : int { F32 = 0, BF16 = 1, F8E4M3 = 2, I32 = 3, U8 = 4, F64 = 5, I64 = 6 };

size_t dtype_size(DType t);
// Names as safetensors spells them: "F32", "BF16", "F8_E4M3", "I32", "U8", "F64", "I64".
std::string dtype_name(DType t);
DType dtype_from_name(const std::string& name);  // throws hisa::Error on an unknown name

// ---- Scalar conversions (exact, table-free decode; round-to-nearest-even encode) ----
float bf16_to_float(uint16_t v);
uint16_t float_to_bf16(float f);  // RNE; NaN stays NaN
// OCP fp8 e4m3 ("e4m3fn"): bias 7, max finite 448, no infinities, 0x7f / 0xff are NaN.
float fp8e4m3_to_float(uint8_t v);
uint8_t float_to_fp8e4m3(float f);  // RNE, saturating to +-448 (as torch's cast with clamp does)

// Dequantise n values of dtype `t` (F32, BF16 or F8E4M3) starting at `src` into `dst`.
void to_float(DType t, const void* src, float* dst, size_t n);

// ---- Per-token key scale conventions in use for fp8 keys ----
enum class ScaleRule : int {
  Amax = 0,   // scale = amax / 448 (exact amax mapping)
  UE8M0 = 1,  // DeepSeek-V3.2: scale = 2^ceil(log2(amax / 448)) (power of two, 'ue8m0')
};
// Quantise `rows` rows of `cols` fp32 values each to fp8 e4m3 with one fp32 scale per row, so that
// out[r, c] * scale[r] approximates in[r, c]. A row of zeros gets scale 1. Throws on NaN/inf input.
void quantize_fp8_rows(const float* in, size_t rows, size_t cols, ScaleRule rule, uint8_t* out,
                       float* scale);

}  // namespace hisa
