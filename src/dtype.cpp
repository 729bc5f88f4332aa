#include "hisa/dtype.hpp"

#include <cmath>
#include <cstring>

#include "hisa/error.hpp"

namespace hisa {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F8E4M3: return 1;
    case DType::I32: return 4;
    case DType::U8: return 1;
    case DType::F64: return 8;
    case DType::I64: return 8;
  }
  throw Error("dtype_size: unknown dtype");
}

std::string dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F8E4M3: return "F8_E4M3";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "F32") return DType::F32;
  if (n == "BF16") return DType::BF16;
  if (n == "F8_E4M3") return DType::F8E4M3;
  if (n == "I32") return DType::I32;
  if (n == "U8") return DType::U8;
  if (n == "F64") return DType::F64;
  if (n == "I64") return DType::I64;
  throw Error("unknown dtype '" + n + "' (expected F32, BF16, F8_E4M3, I32, U8, F64 or I64)");
}

float bf16_to_float(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return uint16_t((bits >> 16) | 0x40);  // keep it a (quiet) NaN
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return uint16_t((bits + rounding) >> 16);
}

float fp8e4m3_to_float(uint8_t v) {
  const int sign = v >> 7;
  const int exp = (v >> 3) & 0xf;
  const int man = v & 0x7;
  float out;
  if (exp == 0xf && man == 0x7) {
    out = std::nanf("");
  } else if (exp == 0) {
    out = std::ldexp(float(man), -9);  // subnormal: man/8 * 2^-6
  } else {
    out = std::ldexp(1.0f + float(man) / 8.0f, exp - 7);
  }
  return sign ? -out : out;
}

uint8_t float_to_fp8e4m3(float f) {
  // Bit-level RNE, the scheme of c10's fp32 -> e4m3fn conversion but saturating instead of
  // returning NaN on overflow: ~1 ns a value instead of ~11 ns with frexp/nearbyint, and identical
  // to that version on all 2^32 inputs (checked once exhaustively; test_dtype.cpp keeps a sweep).
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80);
  bits &= 0x7fffffffu;
  if (bits > 0x7f800000u) return 0x7f;                   // NaN
  if (bits >= 0x43e00000u) return uint8_t(sign | 0x7e);  // >= 448 (and inf): saturate
  if (bits < 0x3c800000u) {
    // Below 2^-6 e4m3 is subnormal with step 2^-9: adding 2^14 (whose fp32 ulp is 2^-9) makes the
    // fp32 adder round to that grid, ties to even; the result's low bits are the e4m3 code (0..8,
    // where 8 is the smallest normal 2^-6, code 0x08).
    float a;
    std::memcpy(&a, &bits, 4);
    const float r = a + 16384.0f;
    uint32_t rb;
    std::memcpy(&rb, &r, 4);
    return uint8_t(sign | (rb - 0x46800000u));  // 0x46800000 = 16384.0f
  }
  // Normal: rebias the exponent (127 -> 7) and round the 23-bit mantissa to 3 bits, ties to even.
  // Values below 448 never round past 0x7e because 448 is cut above.
  const uint32_t odd = (bits >> 20) & 1;
  bits += (uint32_t(7 - 127) << 23) + 0x7ffffu + odd;
  return uint8_t(sign | (bits >> 20));
}

void to_float(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
    case DType::F8E4M3: {
      static const struct Table {
        float v[256];
        Table() {
          for (int i = 0; i < 256; ++i) v[i] = fp8e4m3_to_float(uint8_t(i));
        }
      } table;
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = table.v[s[i]];
      return;
    }
    default:
      throw Error("to_float: dtype " + dtype_name(t) + " is not a q/k dtype (F32, BF16, F8_E4M3)");
  }
}

void quantize_fp8_rows(const float* in, size_t rows, size_t cols, ScaleRule rule, uint8_t* out,
                       float* scale) {
  for (size_t r = 0; r < rows; ++r) {
    const float* x = in + r * cols;
    float amax = 0.0f;
    for (size_t c = 0; c < cols; ++c) {
      HISA_CHECK(std::isfinite(x[c]), "quantize_fp8_rows: non-finite value at row ", r, " col ", c);
      amax = std::fmax(amax, std::fabs(x[c]));
    }
    float s = 1.0f;
    if (amax > 0.0f) {
      s = amax / 448.0f;
      // Exact 2^ceil(log2(s)) from the exponent bits, as DeepSeek's fast_round_scale does: a float
      // log2 rounds s = 2^k * (1 + 2^-23) down to k, and amax / s would then exceed 448.
      if (rule == ScaleRule::UE8M0) {
        int e;
        const float m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
        s = m == 0.5f ? s : std::ldexp(1.0f, e);
      }
    }
    scale[r] = s;
    // Multiply by the reciprocal as DeepGEMM's per_token_cast_to_fp8 and vLLM do (for UE8M0 it
    // equals x / s exactly). A row with amax below ~5e-36 has a subnormal scale whose reciprocal
    // overflows: divide instead, or its zeros would become 0 * inf = NaN.
    const float inv = 1.0f / s;
    if (std::isfinite(inv)) {
      for (size_t c = 0; c < cols; ++c) out[r * cols + c] = float_to_fp8e4m3(x[c] * inv);
    } else {
      for (size_t c = 0; c < cols; ++c) out[r * cols + c] = float_to_fp8e4m3(x[c] / s);
    }
  }
}

}  // namespace hisa
