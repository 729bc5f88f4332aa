#include "cpu/fast_kernels.hpp"

#include <cmath>
#include <cstring>

#include "hisa/error.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace hisa::cpu {
namespace {

// fp8 e4m3 -> fp32 without a table (a table lookup is a scalar load per value and would cost
// about a quarter of the scoring work in hisa decode). Scalar form: normal values move the
// exponent bias 7 -> 127 (+120 in the exponent field); subnormals (exponent 0) are mag * 2^-9
// through an int -> float conversion. No fp32 denormal appears, so DAZ/FTZ modes cannot change the
// result. NaN codes are reported by the caller.
inline uint32_t fp8_bits(uint32_t v) {
  const uint32_t mag = v & 0x7fu;
  const uint32_t sub = __builtin_bit_cast(uint32_t, float(int(mag)) * 0x1p-9f);
  const uint32_t normal = (mag << 20) + (120u << 23);
  const uint32_t is_sub = 0u - uint32_t(mag < 8);
  return (sub & is_sub) | (normal & ~is_sub) | ((v & 0x80u) << 24);
}

// Vector form, 16 values per step (about 0.1 ns per value, 3x the auto-vectorised scalar form):
// e4m3 placed in fp16 bits (magnitude << 7, sign << 8) is the same number times 2^-8, and F16C
// converts fp16 subnormals exactly; the * 256 lands in normal fp32 range.
#if defined(__AVX2__) && defined(__F16C__)
inline int64_t fp8_to_float_avx2(const uint8_t* src, float* dst, int64_t n, bool* nan) {
  const __m256i mag_mask = _mm256_set1_epi16(0x7f), sign_mask = _mm256_set1_epi16(0x80);
  const __m128i nan_code = _mm_set1_epi8(0x7f);
  const __m256 scale = _mm256_set1_ps(256.0f);
  __m128i bad = _mm_setzero_si128();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    bad = _mm_or_si128(bad, _mm_cmpeq_epi8(_mm_and_si128(b, nan_code), nan_code));
    const __m256i h = _mm256_cvtepu8_epi16(b);
    const __m256i f16 = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(h, mag_mask), 7),
                                        _mm256_slli_epi16(_mm256_and_si256(h, sign_mask), 8));
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(f16)), scale));
    _mm256_storeu_ps(dst + i + 8,
                     _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(f16, 1)), scale));
  }
  *nan = !_mm_testz_si128(bad, bad);
  return i;
}
#endif

// Microkernel: NK keys against one packed query row. Per head chunk, NK x 16 dot products live in
// 2 * NK accumulators (12 for NK = 6, plus 2 query vectors and a broadcast: 15 of 16 ymm
// registers); each d step costs 8 loads for 12 FMAs, so the loop is FMA-bound. The ReLU-weight-sum
// epilogue folds each chunk into one 8-lane partial per key; lanes are summed once at the end,
// always in the same order. The ReLU is max(0, x) with x second: maxps returns its second operand
// when one is NaN, so a dot product that overflowed to NaN reaches the score (which the backend
// checks) instead of becoming 0.
#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <int NK>
void score_slab(const float* keys, int D, const PackedQuery& q, int chunks, float* out) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 part[NK];
  for (int i = 0; i < NK; ++i) part[i] = zero;
  for (int c = 0; c < chunks; ++c) {
    const float* qc = q.qt + int64_t(c) * D * kHeadLanes;
    __m256 lo[NK], hi[NK];
    for (int i = 0; i < NK; ++i) lo[i] = hi[i] = zero;
    for (int d = 0; d < D; ++d) {
      const __m256 q0 = _mm256_loadu_ps(qc + d * kHeadLanes);
      const __m256 q1 = _mm256_loadu_ps(qc + d * kHeadLanes + 8);
      for (int i = 0; i < NK; ++i) {
        const __m256 k = _mm256_broadcast_ss(keys + i * D + d);
        lo[i] = _mm256_fmadd_ps(k, q0, lo[i]);
        hi[i] = _mm256_fmadd_ps(k, q1, hi[i]);
      }
    }
    const __m256 w0 = _mm256_loadu_ps(q.w + c * kHeadLanes);
    const __m256 w1 = _mm256_loadu_ps(q.w + c * kHeadLanes + 8);
    for (int i = 0; i < NK; ++i) {
      part[i] = _mm256_fmadd_ps(_mm256_max_ps(zero, lo[i]), w0, part[i]);
      part[i] = _mm256_fmadd_ps(_mm256_max_ps(zero, hi[i]), w1, part[i]);
    }
  }
  for (int i = 0; i < NK; ++i) out[i] = hsum(part[i]);
}
#else
// Portable version of the same computation (builds without AVX2/FMA).
template <int NK>
void score_slab(const float* keys, int D, const PackedQuery& q, int chunks, float* out) {
  float part[NK][8] = {};
  for (int c = 0; c < chunks; ++c) {
    const float* qc = q.qt + int64_t(c) * D * kHeadLanes;
    float acc[NK][kHeadLanes] = {};
    for (int d = 0; d < D; ++d)
      for (int i = 0; i < NK; ++i)
        for (int l = 0; l < kHeadLanes; ++l) acc[i][l] += keys[i * D + d] * qc[d * kHeadLanes + l];
    for (int i = 0; i < NK; ++i)
      for (int l = 0; l < kHeadLanes; ++l)
        part[i][l % 8] += std::max(acc[i][l], 0.0f) * q.w[c * kHeadLanes + l];
  }
  for (int i = 0; i < NK; ++i) {
    const float* p = part[i];
    out[i] = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
  }
}
#endif

// The same microkernel with AVX-512 (runtime-selected where the CPU has it; on a Zen 5 or recent
// Xeon it doubles the FMA width). One zmm holds a 16-head chunk; two chunks go at once, so the
// 6-key slab again costs 8 loads for 12 FMAs. Partials have 16 lanes, so sums differ in the last
// bits from the AVX2 kernel: outputs are deterministic per machine, not across instruction sets.
#if defined(__x86_64__) && defined(__GNUC__)
#define HISA_HAVE_AVX512 1
#define HISA_AVX512 __attribute__((target("avx512f")))

template <int NK, int NC>
HISA_AVX512 inline void chunks_avx512(const float* keys, int D, const float* qt, const float* w,
                                      __m512* part) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 acc[NC][NK];
  for (int c = 0; c < NC; ++c)
    for (int i = 0; i < NK; ++i) acc[c][i] = zero;
  for (int d = 0; d < D; ++d) {
    __m512 qv[NC];
    for (int c = 0; c < NC; ++c) qv[c] = _mm512_loadu_ps(qt + (int64_t(c) * D + d) * kHeadLanes);
    for (int i = 0; i < NK; ++i) {
      const __m512 k = _mm512_set1_ps(keys[i * D + d]);
      for (int c = 0; c < NC; ++c) acc[c][i] = _mm512_fmadd_ps(k, qv[c], acc[c][i]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    const __m512 wv = _mm512_loadu_ps(w + c * kHeadLanes);
    for (int i = 0; i < NK; ++i)
      part[i] = _mm512_fmadd_ps(_mm512_maskz_max_ps(0xffff, zero, acc[c][i]), wv, part[i]);
  }
}

template <int NK>
HISA_AVX512 void score_slab_avx512(const float* keys, int D, const PackedQuery& q, int chunks,
                                   float* out) {
  __m512 part[NK];
  for (int i = 0; i < NK; ++i) part[i] = _mm512_setzero_ps();
  int c = 0;
  for (; c + 2 <= chunks; c += 2)
    chunks_avx512<NK, 2>(keys, D, q.qt + int64_t(c) * D * kHeadLanes, q.w + c * kHeadLanes, part);
  if (c < chunks)
    chunks_avx512<NK, 1>(keys, D, q.qt + int64_t(c) * D * kHeadLanes, q.w + c * kHeadLanes, part);
  for (int i = 0; i < NK;
       ++i) {  // fixed-order lane sum (the header's reduce trips gcc 12 warnings)
    float l[16];
    _mm512_storeu_ps(l, part[i]);
    for (int s = 8; s >= 1; s /= 2)
      for (int j = 0; j < s; ++j) l[j] += l[j + s];
    out[i] = l[0];
  }
}
#endif

constexpr int kSlab = 6;

}  // namespace

bool dequantize(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return false;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = __builtin_bit_cast(float, uint32_t(s[i]) << 16);
      return false;
    }
    case DType::F8E4M3: {
      const uint8_t* s = static_cast<const uint8_t*>(src);
      uint32_t nan = 0;
      int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
      bool vector_nan = false;
      i = fp8_to_float_avx2(s, dst, n, &vector_nan);
      nan = vector_nan;
#endif
      for (; i < n; ++i) {  // the tail, or every value without AVX2
        dst[i] = __builtin_bit_cast(float, fp8_bits(s[i]));
        nan |= uint32_t((s[i] & 0x7f) == 0x7f);
      }
      return nan != 0;
    }
    default:
      throw Error("dequantize: dtype " + dtype_name(t) + " is not a q/k dtype");
  }
}

PackedQuery pack_query(DType t, const void* q, const float* w, int H, int D, float* buf,
                       float* scratch) {
  const int chunks = head_chunks(H);
  float* qt = buf;
  float* wp = buf + int64_t(chunks) * kHeadLanes * D;
  dequantize(t, q, scratch, int64_t(H) * D);
  for (int c = 0; c < chunks; ++c)
    for (int d = 0; d < D; ++d)
      for (int l = 0; l < kHeadLanes; ++l) {
        const int h = c * kHeadLanes + l;
        qt[(int64_t(c) * D + d) * kHeadLanes + l] = h < H ? scratch[int64_t(h) * D + d] : 0.0f;
      }
  for (int h = 0; h < chunks * kHeadLanes; ++h) wp[h] = h < H ? w[h] : 0.0f;
  return {qt, wp};
}

namespace {

struct Avx2Slab {  // the AVX2 kernel, or the portable one in builds without AVX2
  template <int NK>
  static void run(const float* keys, int D, const PackedQuery& q, int chunks, float* out) {
    score_slab<NK>(keys, D, q, chunks, out);
  }
};
#ifdef HISA_HAVE_AVX512
struct Avx512Slab {
  template <int NK>
  static void run(const float* keys, int D, const PackedQuery& q, int chunks, float* out) {
    score_slab_avx512<NK>(keys, D, q, chunks, out);
  }
};
#endif

template <class Slab>
void score_slabs(const float* keys, int n, int D, const PackedQuery& q, int chunks, float* out) {
  int i = 0;
  for (; i + kSlab <= n; i += kSlab)
    Slab::template run<kSlab>(keys + int64_t(i) * D, D, q, chunks, out + i);
  const float* rest = keys + int64_t(i) * D;
  switch (n - i) {
    case 5:
      Slab::template run<5>(rest, D, q, chunks, out + i);
      break;
    case 4:
      Slab::template run<4>(rest, D, q, chunks, out + i);
      break;
    case 3:
      Slab::template run<3>(rest, D, q, chunks, out + i);
      break;
    case 2:
      Slab::template run<2>(rest, D, q, chunks, out + i);
      break;
    case 1:
      Slab::template run<1>(rest, D, q, chunks, out + i);
      break;
    default:
      break;
  }
}

bool cpu_has_avx512() {
#ifdef HISA_HAVE_AVX512
  __builtin_cpu_init();                      // may run before libgcc's own constructor
  return __builtin_cpu_supports("avx512f");  // includes the OS check (XCR0)
#else
  return false;
#endif
}

Kernel& kernel() {
  static Kernel k = cpu_has_avx512() ? Kernel::Avx512 : Kernel::Avx2;
  return k;
}

}  // namespace

Kernel active_kernel() { return kernel(); }

void set_kernel(Kernel k) {
  HISA_CHECK(k == Kernel::Avx2 || cpu_has_avx512(), "set_kernel: this CPU has no AVX-512");
  kernel() = k;
}

void score_keys(const float* keys, const float* scale, int n, int D, const PackedQuery& q,
                int chunks, float* out) {
#ifdef HISA_HAVE_AVX512
  if (kernel() == Kernel::Avx512)
    score_slabs<Avx512Slab>(keys, n, D, q, chunks, out);
  else
#endif
    score_slabs<Avx2Slab>(keys, n, D, q, chunks, out);
  // Scales > 0 commute with the ReLU, so they apply once per key after the head sum.
  if (scale)
    for (int j = 0; j < n; ++j) out[j] *= scale[j];
}

KeyTile DenseKeys::load(int64_t p, int n, TileBuffer& buf) const {
  const float* s = k_scale ? k_scale + p : nullptr;
  if (dtype == DType::F32) return {static_cast<const float*>(k) + p * head_dim, s};  // no copy
  const size_t esz = dtype_size(dtype);
  dequantize(dtype, static_cast<const uint8_t*>(k) + size_t(p) * head_dim * esz, buf.keys.data(),
             int64_t(n) * head_dim);  // values were checked by validate_prefill
  return {buf.keys.data(), s};
}

namespace {
void prefetch_bytes(const uint8_t* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}
}  // namespace

void DenseKeys::prefetch(int64_t p, int n) const {
  const size_t row = size_t(head_dim) * dtype_size(dtype);
  prefetch_bytes(static_cast<const uint8_t*>(k) + size_t(p) * row, int64_t(n) * int64_t(row));
}

void PagedKeys::prefetch(int64_t p, int n) const {
  const int64_t page_stride = int64_t(page_size) * (head_dim + 4);
  for (int i = 0; i < n;) {
    const int off = int((p + i) % page_size);
    const int run = std::min(n - i, page_size - off);
    const uint8_t* page = cache + pages[(p + i) / page_size] * page_stride;
    prefetch_bytes(page + int64_t(off) * head_dim, int64_t(run) * head_dim);
    prefetch_bytes(page + int64_t(page_size) * head_dim + int64_t(off) * 4, int64_t(run) * 4);
    i += run;
  }
}

KeyTile PagedKeys::load(int64_t p, int n, TileBuffer& buf) const {
  const int64_t page_stride = int64_t(page_size) * (head_dim + 4);
  for (int i = 0; i < n;) {
    const int64_t pos = p + i;
    const int off = int(pos % page_size);
    const int run = std::min(n - i, page_size - off);  // tokens of this page: contiguous values
    const uint8_t* page = cache + pages[pos / page_size] * page_stride;
    const bool nan = dequantize(DType::F8E4M3, page + int64_t(off) * head_dim,
                                buf.keys.data() + int64_t(i) * head_dim, int64_t(run) * head_dim);
    HISA_CHECK(!nan, "decode: the cache holds a NaN fp8 value in request ", request, ", tokens [",
               pos, ", ", pos + run, ")");
    std::memcpy(buf.scale.data() + i, page + int64_t(page_size) * head_dim + int64_t(off) * 4,
                size_t(run) * 4);
    for (int j = i; j < i + run; ++j) {
      const float s = buf.scale[size_t(j)];
      HISA_CHECK(std::isfinite(s) && s > 0.0f, "decode: cache scale of request ", request,
                 " token ", p + j, " is ", s, " (must be finite and > 0)");
    }
    i += run;
  }
  return {buf.keys.data(), buf.scale.data()};
}

void top_positions(const std::vector<uint64_t>& keys, int k, std::vector<uint64_t>& scratch,
                   std::vector<int32_t>& out) {
  const size_t n = std::min(size_t(k), keys.size());
  out.clear();
  if (n == 0) return;
  // The n-th best rank is the threshold; ranks are unique, so exactly n pass it, and reading them
  // in input order gives ascending positions without a sort.
  uint64_t threshold = 0;
  if (n < keys.size()) {
    scratch.assign(keys.begin(), keys.end());
    std::nth_element(scratch.begin(), scratch.begin() + std::ptrdiff_t(n - 1), scratch.end(),
                     [](uint64_t a, uint64_t b) { return a > b; });
    threshold = scratch[n - 1];
  }
  for (uint64_t key : keys)
    if (key >= threshold) out.push_back(rank_pos(key));
}

}  // namespace hisa::cpu
