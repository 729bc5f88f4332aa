// fp8 e4m3 / bf16 conversions and the two per-row fp8 scale rules (hisa/dtype.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "hisa/dtype.hpp"
#include "hisa/error.hpp"

namespace hisa {
namespace {

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// The OCP e4m3 ("e4m3fn") value of a code, from the definition, in double: sign, 4-bit exponent
// with bias 7, 3-bit mantissa; exponent 0 is subnormal (m/8 * 2^-6); S.1111.111 is NaN; no inf.
double ocp_e4m3(uint8_t c) {
  const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  double v;
  if (e == 15 && m == 7) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = m / 512.0;
  } else {
    v = (8 + m) * std::pow(2.0, e - 10);  // (1 + m/8) * 2^(e-7)
  }
  return s ? -v : v;
}

// An independent encoder to check against: round to nearest on the e4m3 grid by frexp and
// nearbyint (the formulation hisa used first), saturating at 448.
uint8_t slow_fp8(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  int e;
  std::frexp(a, &e);
  const int exp_unbiased = std::max(e - 1, -6);
  const float step = std::ldexp(1.0f, exp_unbiased - 3);
  const float q = std::nearbyint(a / step) * step;
  if (q >= 448.0f) return sign | 0x7e;
  if (q == 0.0f) return sign;
  int qe;
  std::frexp(q, &qe);
  const int qexp = qe - 1;
  if (qexp < -6) return sign | uint8_t(int(q / std::ldexp(1.0f, -9)));
  const int man = int((q / std::ldexp(1.0f, qexp) - 1.0f) * 8.0f + 0.5f);
  return sign | uint8_t(((qexp + 7) << 3) | man);
}

bool is_fp8_nan(uint8_t c) { return (c & 0x7f) == 0x7f; }

TEST(Fp8, EveryCodeDecodesToItsOcpValue) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const double want = ocp_e4m3(uint8_t(c));
    const float got = fp8e4m3_to_float(uint8_t(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "code 0x" << std::hex << c;
      ++nans;
      continue;
    }
    EXPECT_EQ(double(got), want) << "code 0x" << std::hex << c;
    EXPECT_EQ(std::signbit(got), c >= 0x80) << "code 0x" << std::hex << c;
  }
  EXPECT_EQ(nans, 2);  // only 0x7f and 0xff
  // A few values by hand.
  EXPECT_EQ(fp8e4m3_to_float(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8e4m3_to_float(0x80)));
  EXPECT_EQ(fp8e4m3_to_float(0x01), std::ldexp(1.0f, -9));      // smallest subnormal
  EXPECT_EQ(fp8e4m3_to_float(0x07), 7 * std::ldexp(1.0f, -9));  // largest subnormal
  EXPECT_EQ(fp8e4m3_to_float(0x08), std::ldexp(1.0f, -6));      // smallest normal
  EXPECT_EQ(fp8e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(fp8e4m3_to_float(0xb8), -1.0f);
  EXPECT_EQ(fp8e4m3_to_float(0x3c), 1.5f);
  EXPECT_EQ(fp8e4m3_to_float(0x77), 240.0f);
  EXPECT_EQ(fp8e4m3_to_float(0x7d), 416.0f);
  EXPECT_EQ(fp8e4m3_to_float(0x7e), 448.0f);  // max finite
  EXPECT_EQ(fp8e4m3_to_float(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(fp8e4m3_to_float(0x7f)));
  EXPECT_TRUE(std::isnan(fp8e4m3_to_float(0xff)));
}

TEST(Fp8, EncodeRoundTripsEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    if (is_fp8_nan(uint8_t(c))) continue;
    EXPECT_EQ(int(float_to_fp8e4m3(fp8e4m3_to_float(uint8_t(c)))), c) << "code 0x" << std::hex << c;
  }
}

TEST(Fp8, EncodeRoundsToNearestTiesToEven) {
  // Between every two neighbouring positive codes: the midpoint goes to the even code, one fp32
  // ulp either side goes to the nearer one. Negative values mirror.
  for (int c = 0; c + 1 <= 0x7e; ++c) {
    const float lo = fp8e4m3_to_float(uint8_t(c)), hi = fp8e4m3_to_float(uint8_t(c + 1));
    const float mid = (lo + hi) / 2;  // exact: both have at most 4 significant bits
    ASSERT_EQ(double(mid), (double(lo) + double(hi)) / 2);
    const int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(int(float_to_fp8e4m3(mid)), even)
        << "tie between 0x" << std::hex << c << " and 0x" << c + 1;
    EXPECT_EQ(int(float_to_fp8e4m3(-mid)), even | 0x80) << "negative tie at 0x" << std::hex << c;
    EXPECT_EQ(int(float_to_fp8e4m3(std::nextafter(mid, 1e9f))), c + 1)
        << "above tie 0x" << std::hex << c;
    EXPECT_EQ(int(float_to_fp8e4m3(std::nextafter(mid, 0.0f))), c)
        << "below tie 0x" << std::hex << c;
  }
  // Some by hand: 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39): even is 0x38.
  EXPECT_EQ(float_to_fp8e4m3(1.0625f), 0x38);
  EXPECT_EQ(float_to_fp8e4m3(1.1875f), 0x3a);  // halfway 1.125 / 1.25 -> 1.25 (0x3a, even)
  EXPECT_EQ(float_to_fp8e4m3(432.0f), 0x7e);   // halfway 416 / 448 -> 448 (mantissa 6, even)
}

TEST(Fp8, EncodeSaturatesAt448) {
  for (float v : {448.0f, 448.5f, 463.9f, 464.0f, 465.0f, 480.0f, 1e6f, FLT_MAX,
                  std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(float_to_fp8e4m3(v), 0x7e) << v;
    EXPECT_EQ(float_to_fp8e4m3(-v), 0xfe) << -v;
  }
  EXPECT_EQ(float_to_fp8e4m3(447.0f), 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(420.0f), 0x7d);  // 416 is nearer than 448
}

TEST(Fp8, NaN) {
  EXPECT_TRUE(is_fp8_nan(float_to_fp8e4m3(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_fp8_nan(float_to_fp8e4m3(-std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_fp8_nan(float_to_fp8e4m3(from_bits(0x7f800001u))));  // signalling NaN, not inf
  EXPECT_TRUE(is_fp8_nan(float_to_fp8e4m3(from_bits(0xffffffffu))));
}

TEST(Fp8, Subnormals) {
  const float step = std::ldexp(1.0f, -9);
  for (int k = 0; k <= 7; ++k) EXPECT_EQ(int(float_to_fp8e4m3(k * step)), k);
  EXPECT_EQ(float_to_fp8e4m3(8 * step), 0x08);     // 2^-6: smallest normal
  EXPECT_EQ(float_to_fp8e4m3(0.5f * step), 0x00);  // tie 0 / 2^-9 -> 0 (even)
  EXPECT_EQ(float_to_fp8e4m3(1.5f * step), 0x02);  // tie 1 / 2 -> 2 (even)
  EXPECT_EQ(float_to_fp8e4m3(2.5f * step), 0x02);  // tie 2 / 3 -> 2 (even)
  EXPECT_EQ(float_to_fp8e4m3(7.5f * step), 0x08);  // tie 7 / 8 -> 8 (even): rounds into the normals
  EXPECT_EQ(float_to_fp8e4m3(std::nextafter(0.5f * step, 1.0f)), 0x01);
  EXPECT_EQ(float_to_fp8e4m3(1e-30f), 0x00);
  EXPECT_EQ(float_to_fp8e4m3(-1e-30f), 0x80);
  EXPECT_EQ(float_to_fp8e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(float_to_fp8e4m3(-3 * step), 0x83);
}

TEST(Fp8, EncodeMatchesAnIndependentEncoderOnABitSweep) {
  // Every 3061st fp32 bit pattern (1.4M inputs across all exponents and both signs), then every
  // pattern within 200000 ulps of the edges of the e4m3 range and of 1.0. (The whole 2^32 sweep
  // was run once when the bit-level encoder replaced this one: identical.)
  int64_t checked = 0;
  for (uint64_t b = 0; b < (uint64_t(1) << 32); b += 3061) {
    const float f = from_bits(uint32_t(b));
    const uint8_t want = slow_fp8(f), got = float_to_fp8e4m3(f);
    if (is_fp8_nan(want)) {
      ASSERT_TRUE(is_fp8_nan(got)) << std::hex << b;
    } else {
      ASSERT_EQ(int(got), int(want)) << "fp32 bits 0x" << std::hex << b;
    }
    ++checked;
  }
  for (uint32_t center :
       {0x43e00000u, 0x3c800000u, 0x3b000000u, 0x3f800000u}) {  // 448, 2^-6, 2^-9, 1
    for (uint32_t d = 0; d < 200000; ++d) {
      for (uint32_t b : {center + d, center - d, (center + d) | 0x80000000u}) {
        ASSERT_EQ(int(float_to_fp8e4m3(from_bits(b))), int(slow_fp8(from_bits(b))))
            << "fp32 bits 0x" << std::hex << b;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 2000000);
}

TEST(Bf16, DecodeEncodeBasics) {
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xc000), -2.0f);
  EXPECT_EQ(bf16_to_float(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
}

TEST(Bf16, EveryCodeRoundTrips) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const float f = bf16_to_float(uint16_t(c));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << std::hex << c;
    } else {
      EXPECT_EQ(uint32_t(float_to_bf16(f)), c) << std::hex << c;
    }
  }
}

TEST(Bf16, RoundsToNearestTiesToEven) {
  // 1 + 2^-8 is halfway between 1 (0x3f80) and 1 + 2^-7 (0x3f81): even is 0x3f80.
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // halfway 0x3f81 / 0x3f82
  EXPECT_EQ(float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(float_to_bf16(-(1.0f + std::ldexp(1.0f, -8))), 0xbf80);
  EXPECT_EQ(float_to_bf16(FLT_MAX), 0x7f80);  // rounds up past the largest bf16: inf, as RNE does
  EXPECT_EQ(float_to_bf16(from_bits(0x00008000u)), 0x0000);  // subnormal tie -> even (0)
  EXPECT_EQ(float_to_bf16(from_bits(0x00018000u)), 0x0002);  // subnormal tie -> even (2)

  // Against rounding done in double, on a sweep of fp32 bit patterns. Magnitudes: lo truncates,
  // hi is the next bf16 up; past the largest finite bf16 the next "value" is 2^128 (IEEE rounds
  // to inf from halfway there).
  auto magnitude = [](uint16_t h) {
    return (h & 0x7fff) == 0x7f80 ? std::ldexp(1.0, 128) : std::fabs(double(bf16_to_float(h)));
  };
  for (uint64_t b = 0; b < (uint64_t(1) << 32); b += 4099) {
    const float f = from_bits(uint32_t(b));
    if (!std::isfinite(f)) continue;
    const uint16_t lo = uint16_t(b >> 16);
    const uint16_t hi = uint16_t(lo + 1);
    const double dlo = magnitude(lo), dhi = magnitude(hi);
    const double a = std::fabs(double(f));
    uint16_t want;
    if (a - dlo < dhi - a) {
      want = lo;
    } else if (a - dlo > dhi - a) {
      want = hi;
    } else {
      want = (lo & 1) ? hi : lo;
    }
    ASSERT_EQ(float_to_bf16(f), want) << "fp32 bits 0x" << std::hex << b;
  }
}

TEST(Bf16, NaNStaysNaN) {
  for (uint32_t bits :
       {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7f80ffffu, 0xff800001u, 0x7fffffffu}) {
    const uint16_t h = float_to_bf16(from_bits(bits));
    EXPECT_TRUE(std::isnan(bf16_to_float(h))) << std::hex << bits << " -> " << h;
  }
}

TEST(Dtype, NamesSizesAndToFloat) {
  const DType all[] = {DType::F32, DType::BF16, DType::F8E4M3, DType::I32,
                       DType::U8,  DType::F64,  DType::I64};
  const size_t sizes[] = {4, 2, 1, 4, 1, 8, 8};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(dtype_from_name(dtype_name(all[i])), all[i]);
    EXPECT_EQ(dtype_size(all[i]), sizes[i]);
  }
  EXPECT_EQ(dtype_name(DType::F8E4M3), "F8_E4M3");
  try {
    dtype_from_name("F16");
    ADD_FAILURE() << "F16 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown dtype 'F16'"), std::string::npos) << e.what();
  }

  std::vector<uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) codes[size_t(c)] = uint8_t(c);
  std::vector<float> out(256);
  to_float(DType::F8E4M3, codes.data(), out.data(), 256);
  for (int c = 0; c < 256; ++c) {
    const float want = fp8e4m3_to_float(uint8_t(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[size_t(c)]));
    } else {
      EXPECT_EQ(to_bits(out[size_t(c)]), to_bits(want)) << c;
    }
  }
  const uint16_t h[3] = {0x3f80, 0xc000, 0x4049};
  to_float(DType::BF16, h, out.data(), 3);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], bf16_to_float(0x4049));
  const float f[2] = {1.5f, -7.25f};
  to_float(DType::F32, f, out.data(), 2);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -7.25f);
  const int32_t i32[1] = {3};
  try {
    to_float(DType::I32, i32, out.data(), 1);
    ADD_FAILURE() << "I32 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I32"), std::string::npos) << e.what();
  }
}

// Random rows spanning magnitudes 1e-3 .. 1e3, one row of each sign pattern.
std::vector<float> random_rows(size_t rows, size_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> log_mag(-3.0f, 3.0f);
  std::vector<float> x(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    const float mag = std::pow(10.0f, log_mag(rng));
    for (size_t c = 0; c < cols; ++c) x[r * cols + c] = mag * normal(rng);
  }
  return x;
}

float row_amax(const float* x, size_t cols) {
  float a = 0;
  for (size_t c = 0; c < cols; ++c) a = std::max(a, std::fabs(x[c]));
  return a;
}

TEST(QuantizeFp8Rows, AmaxMapsTheLargestValueTo448) {
  const uint64_t seed = 20250301;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::cout << "[ seed ] " << seed << "\n";
  const size_t rows = 64, cols = 128;
  const std::vector<float> x = random_rows(rows, cols, seed);
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> s(rows);
  quantize_fp8_rows(x.data(), rows, cols, ScaleRule::Amax, q.data(), s.data());
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    const float amax = row_amax(xr, cols);
    EXPECT_EQ(s[r], amax / 448.0f) << "row " << r;
    for (size_t c = 0; c < cols; ++c) {
      const uint8_t code = q[r * cols + c];
      ASSERT_FALSE(is_fp8_nan(code));
      if (std::fabs(xr[c]) == amax) {
        EXPECT_EQ(code & 0x7f, 0x7e) << "row " << r << ": max |x| must map to 448";
        EXPECT_NEAR(fp8e4m3_to_float(code) * s[r], xr[c], 1e-6 * amax);
      }
      // Half an e4m3 step: 2^-4 relative for normals, 2^-10 * s absolute for subnormals.
      const double err = std::fabs(double(fp8e4m3_to_float(code)) * s[r] - xr[c]);
      EXPECT_LE(err, std::max(std::fabs(double(xr[c])) / 16, double(s[r]) / 1024) * 1.0001)
          << "row " << r << " col " << c;
    }
  }
}

TEST(QuantizeFp8Rows, Ue8m0ScaleIsTheSmallestPowerOfTwoThatFits) {
  const uint64_t seed = 777;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::cout << "[ seed ] " << seed << "\n";
  const size_t cols = 128;
  std::vector<float> x = random_rows(64, cols, seed);
  // Adversarial rows: amax / 448 just above, at and just below a power of two. A float log2 rounds
  // 2^k * (1 + 2^-23) down to k, which would give amax / scale > 448.
  for (int k : {-12, -3, 0, 5}) {
    for (int ulps : {-2, -1, 0, 1, 2, 3}) {
      const float target = from_bits(uint32_t(int64_t(to_bits(std::ldexp(1.0f, k))) + ulps));
      std::vector<float> row(cols, 0.25f * target);
      row[7] = -target * 448.0f;
      x.insert(x.end(), row.begin(), row.end());
    }
  }
  const size_t rows = x.size() / cols;
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> s(rows);
  quantize_fp8_rows(x.data(), rows, cols, ScaleRule::UE8M0, q.data(), s.data());
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    const float amax = row_amax(xr, cols);
    int e;
    EXPECT_EQ(std::frexp(s[r], &e), 0.5f)
        << "row " << r << ": scale " << s[r] << " is not a power of two";
    EXPECT_LE(amax / s[r], 448.0f) << "row " << r << ": amax " << std::hexfloat << amax << " scale "
                                   << s[r] << " amax/scale " << amax / s[r];
    EXPECT_GT(amax / s[r], 224.0f) << "row " << r << ": a smaller power of two would fit";
    for (size_t c = 0; c < cols; ++c) {
      // The scale is a power of two, so x / s is exact and the code is x / s rounded.
      EXPECT_EQ(q[r * cols + c], float_to_fp8e4m3(xr[c] / s[r])) << "row " << r << " col " << c;
    }
  }
}

TEST(QuantizeFp8Rows, ZeroTinyAndNonFiniteRows) {
  const size_t cols = 4;
  const float zero[cols] = {0, 0, -0.0f, 0};
  uint8_t q[cols];
  float s;
  for (ScaleRule rule : {ScaleRule::Amax, ScaleRule::UE8M0}) {
    quantize_fp8_rows(zero, 1, cols, rule, q, &s);
    EXPECT_EQ(s, 1.0f);
    for (uint8_t c : q) EXPECT_EQ(c & 0x7f, 0);
    // A row so small that 1 / scale overflows must still quantise (no 0 * inf = NaN).
    const float tiny[cols] = {1e-38f, 0.0f, -5e-39f, 0.0f};
    quantize_fp8_rows(tiny, 1, cols, rule, q, &s);
    EXPECT_GT(s, 0.0f);
    for (uint8_t c : q) EXPECT_FALSE(is_fp8_nan(c));
    EXPECT_EQ(q[0], float_to_fp8e4m3(tiny[0] / s));
    EXPECT_EQ(q[1], 0x00);
  }
  const float bad[cols] = {1, 2, std::numeric_limits<float>::quiet_NaN(), 4};
  try {
    quantize_fp8_rows(bad, 1, cols, ScaleRule::Amax, q, &s);
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite value at row 0 col 2"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace hisa
