#include "hisa/validate.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>

#include "hisa/error.hpp"

namespace hisa {
namespace {

bool is_qk_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F8E4M3; }

// One pass over n values of dtype t: the largest magnitude and the first non-finite value. The
// magnitude bits of every q/k dtype order like the values they encode, so the scan compares
// integers and the decode of the largest code gives the largest |value|.
struct ValueScan {
  int64_t first_bad = -1;  // index of the first NaN/inf, or -1
  double max_abs = 0;      // largest |value| (meaningless when first_bad >= 0)
};

template <class Bits>
ValueScan scan_bits(const Bits* v, int64_t n, Bits magnitude_mask, Bits first_bad_code,
                    double (*decode)(Bits)) {
  Bits top = 0;
  for (int64_t i = 0; i < n; ++i) top = std::max<Bits>(top, Bits(v[i] & magnitude_mask));
  ValueScan r;
  if (top >= first_bad_code) {
    for (int64_t i = 0; i < n; ++i)
      if (Bits(v[i] & magnitude_mask) >= first_bad_code) return {i, 0};
  }
  r.max_abs = decode(top);
  return r;
}

ValueScan scan_values(DType t, const void* p, int64_t n) {
  switch (t) {
    case DType::F32:
      return scan_bits<uint32_t>(static_cast<const uint32_t*>(p), n, 0x7fffffffu, 0x7f800000u,
                                 [](uint32_t b) { return double(__builtin_bit_cast(float, b)); });
    case DType::BF16:
      return scan_bits<uint16_t>(static_cast<const uint16_t*>(p), n, 0x7fff, 0x7f80,
                                 [](uint16_t b) { return double(bf16_to_float(b)); });
    case DType::F8E4M3:
      return scan_bits<uint8_t>(static_cast<const uint8_t*>(p), n, 0x7f, 0x7f,
                                [](uint8_t b) { return double(fp8e4m3_to_float(b)); });
    default:
      return {};
  }
}

// Scans w [rows, heads]: the first non-finite entry, and the largest sum_h |w[t, h]| of a row.
ValueScan scan_weights(const float* w, int64_t rows, int heads) {
  ValueScan r;
  for (int64_t t = 0; t < rows; ++t) {
    double sum = 0;
    for (int h = 0; h < heads; ++h) sum += std::fabs(double(w[t * heads + h]));
    if (!std::isfinite(sum)) {
      for (int h = 0; h < heads; ++h)
        if (!std::isfinite(w[t * heads + h])) return {t * heads + h, 0};
    }
    r.max_abs = std::max(r.max_abs, sum);
  }
  return r;
}

// Every backend accumulates scores in fp32. Any product or partial sum a backend forms from q, k,
// k_scale and w is at most terms * max(1, max|q|) * max(1, max|k|) * max(1, max k_scale) *
// max(1, max_t sum_h |w[t, h]|), with terms = max(D, B): a dot product sums D products, a score
// sums H weighted dot products (bounded through sum_h |w|) times a key scale, a pooled key sums B
// scaled keys. Each factor is taken at least 1 so that the bound holds whatever order a backend
// multiplies in. A sixteenth of FLT_MAX leaves room for rounding; real indexer inputs (fp8 values
// <= 448, weights near 1) stay below 1e12.
constexpr double kScoreLimit = double(std::numeric_limits<float>::max()) / 16;

// `keys` names the key factors in the message.
void check_score_bound(const char* what, double max_q, double max_k, double max_scale,
                       double max_weight_sum, int64_t terms, const std::string& keys) {
  const double bound = double(terms) * std::max(1.0, max_q) * std::max(1.0, max_k) *
                       std::max(1.0, max_scale) * std::max(1.0, max_weight_sum);
  HISA_CHECK(bound <= kScoreLimit, what, ": scores could overflow fp32: max|q| = ", max_q, ", ",
             keys, ", max_t sum_h |w[t, h]| = ", max_weight_sum, " and ", terms,
             " terms per sum bound a partial score by ", bound, " > ", kScoreLimit,
             " (FLT_MAX / 16: every backend sums in fp32; scale q or w down)");
}

void check_common(int heads, int dim, DType dtype, const char* what) {
  HISA_CHECK(heads >= 1 && heads <= 128, what, ": num_heads must be in [1, 128] (models use 32 or 64), got ",
             heads);
  HISA_CHECK(dim == 64 || dim == 128, what, ": head_dim must be 128 or 64, got ", dim);
  HISA_CHECK(is_qk_dtype(dtype), what, ": q/k dtype must be F8_E4M3, BF16 or F32, got ",
             dtype_name(dtype));
}

// Each row's given blocks (check_given_blocks_row).
template <class Visible>
void check_given_blocks(const char* what, const int32_t* g, int64_t rows, const SelectConfig& cfg,
                        Visible visible) {
  for (int64_t t = 0; t < rows; ++t)
    check_given_blocks_row(what, t, g + t * cfg.top_blocks, cfg.top_blocks, visible(t),
                           cfg.block_size);
}

}  // namespace

void check_given_blocks_row(const char* what, int64_t t, const int32_t* row, int m,
                            int64_t visible, int block_size) {
  const int64_t nb = (visible + block_size - 1) / block_size;
  int32_t prev = -1;
  bool ended = false;
  for (int c = 0; c < m; ++c) {
    const int32_t b = row[c];
    if (b < 0) {
      HISA_CHECK(b == -1, what, ": given_blocks[", t, ", ", c, "] = ", b,
                 " is negative (only -1 pads a row)");
      ended = true;
      continue;
    }
    HISA_CHECK(!ended, what, ": given_blocks[", t, ", ", c, "] = ", b, " follows the -1 ",
               "padding (a row lists its blocks first, then -1 only)");
    HISA_CHECK(b < nb, what, ": given_blocks[", t, ", ", c, "] = ", b, " is past the row's ", nb,
               " eligible blocks (it sees ", visible, " positions, B = ", block_size, ")");
    HISA_CHECK(b > prev, what, ": given_blocks[", t, ", ", c, "] = ", b, " does not ascend (",
               "the entry before it is ", prev, "; blocks are ascending and distinct)");
    prev = b;
  }
}

void validate_prefill_shapes(const PrefillInputs& in, const SelectConfig& cfg) {
  cfg.validate();
  check_common(in.num_heads, in.head_dim, in.dtype, "prefill");
  HISA_CHECK(in.num_q >= 0 && in.num_k >= 0, "prefill: negative T or S (T = ", in.num_q, ", S = ",
             in.num_k, ")");
  HISA_CHECK(in.num_k < (int64_t(1) << 31), "prefill: S = ", in.num_k, " exceeds int32 positions");
  HISA_CHECK(in.num_q < (int64_t(1) << 31), "prefill: T = ", in.num_q, " exceeds int32 rows");
  if (in.num_q == 0) return;
  HISA_CHECK(in.q && in.w, "prefill: q and w must be given");
  HISA_CHECK(in.num_k == 0 || in.k, "prefill: k must be given");
  const bool cu = in.cu_seqlens_q || in.cu_seqlens_k;
  const bool kske = in.ks || in.ke;
  HISA_CHECK(cu != kske, "prefill: give either cu_seqlens_q/cu_seqlens_k or ks/ke (", cu ? "both" : "neither",
             " given)");
  if (cu) {
    HISA_CHECK(in.cu_seqlens_q && in.cu_seqlens_k, "prefill: cu_seqlens_q and cu_seqlens_k go together");
    HISA_CHECK(in.num_seqs >= 1, "prefill: num_seqs must be >= 1 with cu_seqlens, got ", in.num_seqs);
  } else {
    HISA_CHECK(in.ks && in.ke, "prefill: ks and ke go together");
  }
  HISA_CHECK(!in.given_blocks || cfg.has_blocks(), "prefill: given_blocks is for methods hisa and ",
             "block (method ", method_name(cfg.method), " chooses no blocks)");
}

void validate_prefill(const PrefillInputs& in, const SelectConfig& cfg, bool check_values) {
  validate_prefill_shapes(in, cfg);
  if (in.num_q == 0) return;
  if (in.cu_seqlens_q) {
    const int32_t* cq = in.cu_seqlens_q;
    const int32_t* ck = in.cu_seqlens_k;
    HISA_CHECK(cq[0] == 0 && ck[0] == 0, "prefill: cu_seqlens must start at 0 (got q ", cq[0], ", k ",
               ck[0], ")");
    // Order first, so that a bad entry is named rather than reported as a wrong total.
    for (int b = 0; b < in.num_seqs; ++b) {
      HISA_CHECK(cq[b + 1] >= cq[b],
                 "prefill: cu_seqlens_q must be non-decreasing, but cu_seqlens_q[", b + 1,
                 "] = ", cq[b + 1], " < cu_seqlens_q[", b, "] = ", cq[b]);
      HISA_CHECK(ck[b + 1] >= ck[b],
                 "prefill: cu_seqlens_k must be non-decreasing, but cu_seqlens_k[", b + 1,
                 "] = ", ck[b + 1], " < cu_seqlens_k[", b, "] = ", ck[b]);
    }
    HISA_CHECK(cq[in.num_seqs] == in.num_q, "prefill: cu_seqlens_q[N] = ", cq[in.num_seqs],
               " but q has T = ", in.num_q, " rows");
    HISA_CHECK(ck[in.num_seqs] == in.num_k, "prefill: cu_seqlens_k[N] = ", ck[in.num_seqs],
               " but k has S = ", in.num_k, " rows");
    for (int b = 0; b < in.num_seqs; ++b) {
      const int64_t tb = int64_t(cq[b + 1]) - cq[b], sb = int64_t(ck[b + 1]) - ck[b];
      HISA_CHECK(tb <= sb, "prefill: sequence ", b, " has T_b = ", tb, " queries but only S_b = ", sb,
                 " keys (causality needs T_b <= S_b)");
    }
  } else {
    for (int64_t t = 0; t < in.num_q; ++t) {
      HISA_CHECK(in.ks[t] >= 0 && in.ks[t] <= in.ke[t] && in.ke[t] <= in.num_k, "prefill: row ", t,
                 " has ks = ", in.ks[t], ", ke = ", in.ke[t], " (need 0 <= ks <= ke <= S = ", in.num_k, ")");
    }
  }
  if (in.given_blocks) {
    const auto spans = prefill_row_spans(in);
    check_given_blocks("prefill", in.given_blocks, in.num_q, cfg,
                       [&](int64_t t) { return spans[size_t(t)].visible; });
  }
  if (!check_values) return;
  const ValueScan q = scan_values(in.dtype, in.q, in.num_q * in.num_heads * in.head_dim);
  HISA_CHECK(q.first_bad < 0, "prefill: q has a non-finite value at row ",
             q.first_bad / (int64_t(in.num_heads) * in.head_dim), ", head ",
             q.first_bad / in.head_dim % in.num_heads, ", dim ", q.first_bad % in.head_dim);
  const ValueScan k = scan_values(in.dtype, in.k, in.num_k * in.head_dim);
  HISA_CHECK(k.first_bad < 0, "prefill: k has a non-finite value at key row ",
             k.first_bad / in.head_dim, ", dim ", k.first_bad % in.head_dim);
  const ValueScan w = scan_weights(in.w, in.num_q, in.num_heads);
  HISA_CHECK(w.first_bad < 0, "prefill: w has a non-finite value at row ",
             w.first_bad / in.num_heads, ", head ", w.first_bad % in.num_heads);
  float max_scale = 1.0f;
  if (in.k_scale) {
    max_scale = 0.0f;
    for (int64_t p = 0; p < in.num_k; ++p) {
      HISA_CHECK(std::isfinite(in.k_scale[p]) && in.k_scale[p] > 0.0f, "prefill: k_scale[", p, "] = ",
                 in.k_scale[p], " (scales must be finite and > 0)");
      max_scale = std::max(max_scale, in.k_scale[p]);
    }
  }
  check_score_bound("prefill", q.max_abs, k.max_abs, max_scale, w.max_abs,
                    std::max(in.head_dim, cfg.has_blocks() ? cfg.block_size : 0),
                    detail::concat("max|k| = ", k.max_abs, ", max k_scale = ", max_scale));
}

std::vector<RowSpan> prefill_row_spans(const PrefillInputs& in) {
  std::vector<RowSpan> spans(size_t(in.num_q));
  if (in.cu_seqlens_q) {
    for (int b = 0; b < in.num_seqs; ++b) {
      const int64_t q0 = in.cu_seqlens_q[b], q1 = in.cu_seqlens_q[b + 1];
      const int64_t k0 = in.cu_seqlens_k[b], sb = int64_t(in.cu_seqlens_k[b + 1]) - k0;
      const int64_t tb = q1 - q0;
      for (int64_t t = 0; t < tb; ++t) spans[size_t(q0 + t)] = {k0, sb - tb + t + 1, sb};
    }
  } else {
    for (int64_t t = 0; t < in.num_q; ++t) spans[size_t(t)] = {in.ks[t], int64_t(in.ke[t]) - in.ks[t], 0};
    // Rows sharing ks are one sequence; its present keys are up to the max ke among them.
    std::map<int32_t, int32_t> end_of;  // ks -> max ke
    for (int64_t t = 0; t < in.num_q; ++t) {
      auto it = end_of.emplace(in.ks[t], in.ke[t]).first;
      it->second = std::max(it->second, in.ke[t]);
    }
    for (int64_t t = 0; t < in.num_q; ++t) spans[size_t(t)].seq_keys = int64_t(end_of[in.ks[t]]) - in.ks[t];
  }
  return spans;
}

void validate_decode_shapes(const DecodeInputs& in, const SelectConfig& cfg) {
  cfg.validate();
  check_common(in.num_heads, in.head_dim, in.q_dtype, "decode");
  HISA_CHECK(in.batch >= 1, "decode: batch must be >= 1, got ", in.batch);
  HISA_CHECK(in.next_n >= 1 && in.next_n <= 4, "decode: next_n must be in 1..4, got ", in.next_n);
  HISA_CHECK(in.page_size >= 1, "decode: page_size must be >= 1, got ", in.page_size);
  HISA_CHECK(in.num_pages >= 1 && in.max_pages >= 1, "decode: num_pages and max_pages must be >= 1");
  HISA_CHECK(in.q && in.w && in.kv_cache && in.block_table && in.seq_lens,
             "decode: q, w, kv_cache, block_table and seq_lens must all be given");
  if (cfg.has_blocks()) {
    HISA_CHECK(cfg.block_size % in.page_size == 0, "decode: block_size (", cfg.block_size,
               ") must be a multiple of page_size (", in.page_size, ")");
  }
  HISA_CHECK(int64_t(in.max_pages) * in.page_size < (int64_t(1) << 31),
             "decode: max_pages * page_size exceeds int32 positions");
  HISA_CHECK(!in.given_blocks || cfg.has_blocks(), "decode: given_blocks is for methods hisa and ",
             "block (method ", method_name(cfg.method), " chooses no blocks)");
}

void validate_decode(const DecodeInputs& in, const SelectConfig& cfg, bool check_values) {
  validate_decode_shapes(in, cfg);
  for (int b = 0; b < in.batch; ++b) {
    const int64_t len = in.seq_lens[b];
    HISA_CHECK(len >= in.next_n, "decode: seq_lens[", b, "] = ", len,
               " is shorter than next_n = ", in.next_n,
               " (a request's cache holds its next_n query tokens)");
    HISA_CHECK(len <= int64_t(in.max_pages) * in.page_size, "decode: seq_lens[", b, "] = ", len,
               " runs past the block table: max_pages * page_size = ", in.max_pages, " * ",
               in.page_size, " = ", int64_t(in.max_pages) * in.page_size);
    const int64_t used = (len + in.page_size - 1) / in.page_size;
    for (int64_t j = 0; j < used; ++j) {
      const int32_t page = in.block_table[int64_t(b) * in.max_pages + j];
      HISA_CHECK(page >= 0 && page < in.num_pages, "decode: block_table[", b, ", ", j, "] = ", page,
                 " is out of range [0, ", in.num_pages, ")");
    }
  }
  if (in.given_blocks) {
    check_given_blocks("decode", in.given_blocks, int64_t(in.batch) * in.next_n, cfg,
                       [&](int64_t r) {
                         return int64_t(in.seq_lens[r / in.next_n]) - in.next_n + r % in.next_n + 1;
                       });
  }
  if (!check_values) return;
  const int64_t rows = int64_t(in.batch) * in.next_n;
  const ValueScan q = scan_values(in.q_dtype, in.q, rows * in.num_heads * in.head_dim);
  HISA_CHECK(q.first_bad < 0, "decode: q has a non-finite value at row ",
             q.first_bad / (int64_t(in.num_heads) * in.head_dim), ", head ",
             q.first_bad / in.head_dim % in.num_heads, ", dim ", q.first_bad % in.head_dim,
             " (row b * next_n + j is query j of request b)");
  const ValueScan w = scan_weights(in.w, rows, in.num_heads);
  HISA_CHECK(w.first_bad < 0, "decode: w has a non-finite value at row ",
             w.first_bad / in.num_heads, ", head ", w.first_bad % in.num_heads);
  // The cache's fp8 values are at most 448 in magnitude. Its scales are not scanned here (that
  // would read every page of every request); a backend that reads a scale too large for fp32 sums
  // must refuse the call itself (the fast CPU backend checks its scores).
  check_score_bound("decode", q.max_abs, 448.0, 1.0, w.max_abs,
                    std::max(in.head_dim, cfg.has_blocks() ? cfg.block_size : 0),
                    "cache keys at most 448 (fp8) with scale 1");
}

}  // namespace hisa
