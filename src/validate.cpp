#include "hisa/validate.hpp"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <map>

#include "hisa/error.hpp"

namespace hisa {
namespace {

bool is_qk_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F8E4M3; }

// Index of the first non-finite value of n elements of dtype t, or -1.
int64_t first_non_finite(DType t, const void* p, int64_t n) {
  switch (t) {
    case DType::F32: {
      const float* f = static_cast<const float*>(p);
      for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(f[i])) return i;
      return -1;
    }
    case DType::BF16: {
      const uint16_t* h = static_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i)
        if ((h[i] & 0x7f80) == 0x7f80) return i;
      return -1;
    }
    case DType::F8E4M3: {
      const uint8_t* b = static_cast<const uint8_t*>(p);
      for (int64_t i = 0; i < n; ++i)
        if ((b[i] & 0x7f) == 0x7f) return i;
      return -1;
    }
    default:
      return -1;
  }
}

void check_common(int heads, int dim, DType dtype, const char* what) {
  HISA_CHECK(heads >= 1 && heads <= 128, what, ": num_heads must be in [1, 128] (models use 32 or 64), got ",
             heads);
  HISA_CHECK(dim == 64 || dim == 128, what, ": head_dim must be 128 or 64, got ", dim);
  HISA_CHECK(is_qk_dtype(dtype), what, ": q/k dtype must be F8_E4M3, BF16 or F32, got ",
             dtype_name(dtype));
}

}  // namespace

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
}

void validate_prefill(const PrefillInputs& in, const SelectConfig& cfg, bool check_values) {
  validate_prefill_shapes(in, cfg);
  if (in.num_q == 0) return;
  if (in.cu_seqlens_q) {
    const int32_t* cq = in.cu_seqlens_q;
    const int32_t* ck = in.cu_seqlens_k;
    HISA_CHECK(cq[0] == 0 && ck[0] == 0, "prefill: cu_seqlens must start at 0 (got q ", cq[0], ", k ",
               ck[0], ")");
    HISA_CHECK(cq[in.num_seqs] == in.num_q, "prefill: cu_seqlens_q[N] = ", cq[in.num_seqs],
               " but q has T = ", in.num_q, " rows");
    HISA_CHECK(ck[in.num_seqs] == in.num_k, "prefill: cu_seqlens_k[N] = ", ck[in.num_seqs],
               " but k has S = ", in.num_k, " rows");
    for (int b = 0; b < in.num_seqs; ++b) {
      const int64_t tb = int64_t(cq[b + 1]) - cq[b], sb = int64_t(ck[b + 1]) - ck[b];
      HISA_CHECK(tb >= 0 && sb >= 0, "prefill: cu_seqlens must be non-decreasing (sequence ", b, ")");
      HISA_CHECK(tb <= sb, "prefill: sequence ", b, " has T_b = ", tb, " queries but only S_b = ", sb,
                 " keys (causality needs T_b <= S_b)");
    }
  } else {
    for (int64_t t = 0; t < in.num_q; ++t) {
      HISA_CHECK(in.ks[t] >= 0 && in.ks[t] <= in.ke[t] && in.ke[t] <= in.num_k, "prefill: row ", t,
                 " has ks = ", in.ks[t], ", ke = ", in.ke[t], " (need 0 <= ks <= ke <= S = ", in.num_k, ")");
    }
  }
  if (!check_values) return;
  const int64_t qn = in.num_q * in.num_heads * in.head_dim;
  int64_t bad = first_non_finite(in.dtype, in.q, qn);
  HISA_CHECK(bad < 0, "prefill: q has a non-finite value at flat index ", bad);
  bad = first_non_finite(in.dtype, in.k, in.num_k * in.head_dim);
  HISA_CHECK(bad < 0, "prefill: k has a non-finite value at flat index ", bad);
  bad = first_non_finite(DType::F32, in.w, in.num_q * in.num_heads);
  HISA_CHECK(bad < 0, "prefill: w has a non-finite value at row ", bad / in.num_heads, ", head ",
             bad % in.num_heads);
  if (in.k_scale) {
    for (int64_t p = 0; p < in.num_k; ++p) {
      HISA_CHECK(std::isfinite(in.k_scale[p]) && in.k_scale[p] > 0.0f, "prefill: k_scale[", p, "] = ",
                 in.k_scale[p], " (scales must be finite and > 0)");
    }
  }
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
}

void validate_decode(const DecodeInputs& in, const SelectConfig& cfg, bool check_values) {
  validate_decode_shapes(in, cfg);
  for (int b = 0; b < in.batch; ++b) {
    const int64_t len = in.seq_lens[b];
    HISA_CHECK(len >= in.next_n && len <= int64_t(in.max_pages) * in.page_size, "decode: seq_lens[", b,
               "] = ", len, " must be in [next_n = ", in.next_n, ", max_pages * page_size = ",
               int64_t(in.max_pages) * in.page_size, "]");
    const int64_t used = (len + in.page_size - 1) / in.page_size;
    for (int64_t j = 0; j < used; ++j) {
      const int32_t page = in.block_table[int64_t(b) * in.max_pages + j];
      HISA_CHECK(page >= 0 && page < in.num_pages, "decode: block_table[", b, ", ", j, "] = ", page,
                 " is out of range [0, ", in.num_pages, ")");
    }
  }
  if (!check_values) return;
  const int64_t rows = int64_t(in.batch) * in.next_n;
  int64_t bad = first_non_finite(in.q_dtype, in.q, rows * in.num_heads * in.head_dim);
  HISA_CHECK(bad < 0, "decode: q has a non-finite value at flat index ", bad);
  bad = first_non_finite(DType::F32, in.w, rows * in.num_heads);
  HISA_CHECK(bad < 0, "decode: w has a non-finite value at row ", bad / in.num_heads, ", head ",
             bad % in.num_heads);
}

}  // namespace hisa
