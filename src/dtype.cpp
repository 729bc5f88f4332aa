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
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;  // saturate to the max finite value
  // Round to nearest even over the finite e4m3 grid. Values below 2^-6 are subnormal (step 2^-9).
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int exp_unbiased = e - 1;
  if (exp_unbiased < -6) exp_unbiased = -6;
  const float step = std::ldexp(1.0f, exp_unbiased - 3);
  float q = std::nearbyint(a / step) * step;  // default FE_TONEAREST = ties to even
  if (q >= 448.0f) return sign | 0x7e;
  if (q == 0.0f) return sign;
  int qe;
  std::frexp(q, &qe);
  int qexp = qe - 1;
  if (qexp < -6) {  // subnormal
    return sign | uint8_t(int(q / std::ldexp(1.0f, -9)));
  }
  const int man = int((q / std::ldexp(1.0f, qexp) - 1.0f) * 8.0f + 0.5f);
  return sign | uint8_t(((qexp + 7) << 3) | man);
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
      if (rule == ScaleRule::UE8M0) s = std::exp2(std::ceil(std::log2(s)));
    }
    scale[r] = s;
    const float inv = 1.0f / s;
    for (size_t c = 0; c < cols; ++c) out[r * cols + c] = float_to_fp8e4m3(x[c] * inv);
  }
}

}  // namespace hisa
