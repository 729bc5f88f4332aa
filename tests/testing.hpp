// Shared test helpers: seeded prefill and paged-decode inputs that own their buffers, running a
// backend into owned outputs, and judging every row against the float64 reference
// (SEMANTICS.md section 7). Header-only so that any test binary (CPU or CUDA) can use it.
//
//   hisa::test::PrefillSpec spec;  spec.dtype = DType::F8E4M3;  spec.seed = 7;
//   const auto data = hisa::test::make_prefill(spec);
//   const auto sel = hisa::test::run_prefill(*indexer, data.inputs(), cfg);
//   EXPECT_EQ(hisa::test::judge_prefill(data.inputs(), cfg, sel, spec.exact), "");
//
// The namespace is hisa::test, not hisa::testing, so that GoogleTest's ::testing stays reachable
// as testing:: inside namespace hisa.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/dtype.hpp"
#include "hisa/error.hpp"
#include "hisa/indexer.hpp"
#include "hisa/judge.hpp"
#include "hisa/params.hpp"
#include "hisa/pooled.hpp"
#include "hisa/reference.hpp"

namespace hisa::test {

// splitmix64 and Box-Muller written out, so that a seed gives the same data with every standard
// library (std::normal_distribution is implementation-defined).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1p-53; }  // [0, 1)
  int64_t integer(int64_t lo, int64_t hi) {                    // [lo, hi]
    return lo + int64_t(next() % uint64_t(hi - lo + 1));
  }
  double normal() {
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }

 private:
  uint64_t s_;
};

// How q, k and w values are drawn (shared by prefill and decode).
struct ValueSpec {
  // exact: small integers (|q|, |k| <= max_int, w in [-1, 3]) and power-of-two key scales, so that
  // every fp32 sum is exact and backends must return the reference's sets, ties included.
  bool exact = false;
  int max_int = 4;
  double density =
      0.3;  // exact only: fraction of nonzero q and k entries (sparse: many equal scores)
  double tie_rate = 0.0;  // fraction of keys that copy an earlier key (tied token scores)
  double block_tie_rate =
      0.0;                 // fraction of 64-key runs that copy the previous 64 keys (tied blocks)
  bool key_scales = true;  // fp8 keys: per-key scales (random, or powers of two when exact)
};

struct PrefillSpec : ValueSpec {
  DType dtype = DType::F32;  // q and k
  int num_heads = 8;
  int head_dim = 128;
  std::vector<int64_t> seq_keys = {1000};  // S_b of each sequence
  std::vector<int64_t> seq_queries = {
      16};  // T_b (<= S_b); a single entry applies to every sequence
  uint64_t seed = 1;
};

struct PrefillData {
  PrefillSpec spec;
  int64_t num_q = 0, num_k = 0;
  std::vector<uint8_t> q, k;        // [T, H, D], [S, D] in spec.dtype
  std::vector<float> k_scale;       // [S] fp32, empty when the keys have no scale
  std::vector<float> w;             // [T, H] fp32
  std::vector<int32_t> cu_q, cu_k;  // [N + 1]
  std::vector<int32_t> ks, ke;      // [T]: the same rows in ks/ke form

  // Pointers into this object (which must outlive them): cu_seqlens form, or ks/ke form.
  PrefillInputs inputs(bool ks_ke = false) const {
    PrefillInputs in;
    in.num_q = num_q;
    in.num_k = num_k;
    in.num_heads = spec.num_heads;
    in.head_dim = spec.head_dim;
    in.dtype = spec.dtype;
    in.q = q.data();
    in.k = k.data();
    in.k_scale = k_scale.empty() ? nullptr : k_scale.data();
    in.w = w.data();
    if (ks_ke) {
      in.ks = ks.data();
      in.ke = ke.data();
    } else {
      in.num_seqs = int(cu_q.size()) - 1;
      in.cu_seqlens_q = cu_q.data();
      in.cu_seqlens_k = cu_k.data();
    }
    return in;
  }
};

struct DecodeSpec : ValueSpec {
  DType q_dtype = DType::F8E4M3;
  int num_heads = 8;
  int head_dim = 128;
  int page_size = 64;
  int next_n = 1;
  std::vector<int64_t> seq_lens = {1000};  // tokens in each request's cache
  int spare_pages = 3;        // extra pages, poisoned (NaN values and scales): reading one throws
  bool shuffle_pages = true;  // physical pages in random order, not 0..n-1
  uint64_t seed = 1;
};

struct DecodeData {
  DecodeSpec spec;
  int num_pages = 0, max_pages = 0;
  std::vector<uint8_t> q;            // [N * next_n, H, D] spec.q_dtype
  std::vector<float> w;              // [N * next_n, H]
  std::vector<uint8_t> kv_cache;     // [num_pages, page_size, D + 4]; unused slots poisoned
  std::vector<int32_t> block_table;  // [N, max_pages]
  std::vector<int32_t> seq_lens;     // [N]
  std::vector<float> pooled;         // [N, pooled_max_blocks, D] after pool()
  int pooled_max_blocks = 0;

  DecodeInputs inputs() const {
    DecodeInputs in;
    in.batch = int(seq_lens.size());
    in.next_n = spec.next_n;
    in.num_heads = spec.num_heads;
    in.head_dim = spec.head_dim;
    in.q_dtype = spec.q_dtype;
    in.q = q.data();
    in.w = w.data();
    in.num_pages = num_pages;
    in.page_size = spec.page_size;
    in.kv_cache = kv_cache.data();
    in.max_pages = max_pages;
    in.block_table = block_table.data();
    in.seq_lens = seq_lens.data();
    in.pooled = pooled.empty() ? nullptr : pooled.data();
    in.pooled_max_blocks = pooled_max_blocks;
    return in;
  }

  // Pools every complete block from scratch (hisa::update_pooled_keys with old_lens = nullptr).
  void pool(int block_size, Pooling pooling = Pooling::Mean) {
    pooled_max_blocks = max_pages * spec.page_size / block_size;
    pooled.assign(seq_lens.size() * size_t(pooled_max_blocks) * spec.head_dim, 0.0f);
    update_pooled_keys(inputs(), nullptr, seq_lens.data(), block_size, pooling, pooled.data(),
                       pooled_max_blocks);
  }
};

namespace detail {

inline void encode(DType t, const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    if (t == DType::F32) {
      std::memcpy(out + 4 * i, &x[i], 4);
    } else if (t == DType::BF16) {
      const uint16_t b = float_to_bf16(x[i]);
      std::memcpy(out + 2 * i, &b, 2);
    } else {
      out[i] = float_to_fp8e4m3(x[i]);
    }
  }
}

inline float draw(const ValueSpec& v, Rng& rng) {
  if (!v.exact) return float(rng.normal());
  if (rng.uniform() >= v.density) return 0.0f;
  return float(rng.integer(-v.max_int, v.max_int));
}

// n query rows of H * D values, and their weights.
inline void make_queries(const ValueSpec& v, DType t, int64_t n, int H, int D, Rng& rng,
                         std::vector<uint8_t>& q, std::vector<float>& w) {
  std::vector<float> x(size_t(n) * H * D);
  for (float& f : x) f = draw(v, rng);
  q.assign(x.size() * dtype_size(t), 0);
  encode(t, x.data(), int64_t(x.size()), q.data());
  w.resize(size_t(n) * H);
  for (float& f : w) f = v.exact ? float(rng.integer(-1, 3)) : float(rng.normal());
}

// n keys [n, D] in dtype t (fp8 with one scale per key when v.key_scales), with the requested ties.
inline void make_keys(const ValueSpec& v, DType t, int64_t n, int D, Rng& rng,
                      std::vector<uint8_t>& k, std::vector<float>& scale) {
  const size_t row = size_t(D) * dtype_size(t);
  k.assign(size_t(n) * row, 0);
  const bool scaled = t == DType::F8E4M3 && v.key_scales;
  scale.assign(scaled ? size_t(n) : 0, 1.0f);
  std::vector<float> x(static_cast<size_t>(D));
  for (int64_t p = 0; p < n; ++p) {
    int64_t src = -1;
    if (p % 64 == 0 && p >= 64 && rng.uniform() < v.block_tie_rate) {
      std::memcpy(&k[size_t(p) * row], &k[size_t(p - 64) * row],
                  std::min<int64_t>(64, n - p) * row);
      for (int64_t i = p; scaled && i < std::min<int64_t>(p + 64, n); ++i) scale[i] = scale[i - 64];
      p += 63;
      continue;
    }
    if (p > 0 && rng.uniform() < v.tie_rate) src = rng.integer(0, p - 1);
    if (src >= 0) {
      std::memcpy(&k[size_t(p) * row], &k[size_t(src) * row], row);
      if (scaled) scale[size_t(p)] = scale[size_t(src)];
      continue;
    }
    for (float& f : x) f = draw(v, rng);
    if (scaled && v.exact) {
      scale[size_t(p)] = std::ldexp(1.0f, int(rng.integer(-1, 1)));  // 0.5, 1 or 2
      encode(t, x.data(), D, &k[size_t(p) * row]);
    } else if (scaled) {
      quantize_fp8_rows(x.data(), 1, size_t(D), ScaleRule::Amax, &k[size_t(p) * row],
                        &scale[size_t(p)]);
    } else {
      encode(t, x.data(), D, &k[size_t(p) * row]);
    }
  }
}

}  // namespace detail

inline PrefillData make_prefill(const PrefillSpec& spec) {
  HISA_CHECK(!spec.seq_keys.empty(), "make_prefill: no sequences");
  HISA_CHECK(spec.seq_queries.size() == 1 || spec.seq_queries.size() == spec.seq_keys.size(),
             "make_prefill: seq_queries needs one entry or one per sequence");
  PrefillData d;
  d.spec = spec;
  Rng rng(spec.seed);
  const int H = spec.num_heads, D = spec.head_dim;
  d.cu_q = {0};
  d.cu_k = {0};
  for (size_t b = 0; b < spec.seq_keys.size(); ++b) {
    const int64_t sb = spec.seq_keys[b];
    const int64_t tb =
        spec.seq_queries.size() == 1 ? std::min(spec.seq_queries[0], sb) : spec.seq_queries[b];
    HISA_CHECK(tb <= sb, "make_prefill: T_b > S_b in sequence ", b);
    for (int64_t t = 0; t < tb; ++t) {
      d.ks.push_back(d.cu_k.back());
      d.ke.push_back(int32_t(d.cu_k.back() + sb - tb + t + 1));
    }
    d.cu_q.push_back(int32_t(d.cu_q.back() + tb));
    d.cu_k.push_back(int32_t(d.cu_k.back() + sb));
  }
  d.num_q = d.cu_q.back();
  d.num_k = d.cu_k.back();
  detail::make_queries(spec, spec.dtype, d.num_q, H, D, rng, d.q, d.w);
  detail::make_keys(spec, spec.dtype, d.num_k, D, rng, d.k, d.k_scale);
  return d;
}

inline DecodeData make_decode(const DecodeSpec& spec) {
  DecodeData d;
  d.spec = spec;
  Rng rng(spec.seed);
  const int H = spec.num_heads, D = spec.head_dim, ps = spec.page_size;
  const int N = int(spec.seq_lens.size());
  d.seq_lens.assign(spec.seq_lens.begin(), spec.seq_lens.end());
  int64_t used = 0, longest = 0;
  for (int64_t len : spec.seq_lens) {
    used += (len + ps - 1) / ps;
    longest = std::max(longest, len);
  }
  d.max_pages =
      int((longest + ps - 1) / ps) + 1;  // one unused column: tables are padded in engines
  d.num_pages = int(used) + spec.spare_pages;
  std::vector<int32_t> order(static_cast<size_t>(d.num_pages));
  std::iota(order.begin(), order.end(), 0);
  if (spec.shuffle_pages)
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
  // Poison: NaN fp8 values and NaN scales everywhere, overwritten where tokens are written.
  const int64_t pbytes = page_bytes(ps, D);
  d.kv_cache.assign(size_t(d.num_pages * pbytes), 0x7f);
  d.block_table.assign(size_t(N) * d.max_pages, -1);
  detail::make_queries(spec, spec.q_dtype, int64_t(N) * spec.next_n, H, D, rng, d.q, d.w);
  size_t next_page = 0;
  for (int b = 0; b < N; ++b) {
    const int64_t len = spec.seq_lens[size_t(b)];
    std::vector<uint8_t> k;
    std::vector<float> scale;
    ValueSpec v = spec;
    v.key_scales = true;
    detail::make_keys(v, DType::F8E4M3, len, D, rng, k, scale);
    for (int64_t j = 0; j < (len + ps - 1) / ps; ++j)
      d.block_table[size_t(b) * d.max_pages + size_t(j)] = order[next_page++];
    for (int64_t p = 0; p < len; ++p) {
      uint8_t* page = &d.kv_cache[size_t(d.block_table[size_t(b) * d.max_pages + p / ps] * pbytes)];
      std::memcpy(page + (p % ps) * D, &k[size_t(p) * D], size_t(D));
      std::memcpy(page + int64_t(ps) * D + (p % ps) * 4, &scale[size_t(p)], 4);
    }
  }
  return d;
}

// ---- Running a backend and judging its output ----

struct Selection {
  std::vector<int32_t> indices;  // [rows, cfg.out_width()]
  std::vector<int32_t> blocks;   // [rows, cfg.top_blocks] for hisa/block, else empty
};

// Outputs start as -7 so that an entry the backend never wrote fails the judge.
inline Selection run_prefill(Indexer& indexer, const PrefillInputs& in, const SelectConfig& cfg) {
  Selection s;
  s.indices.assign(size_t(in.num_q) * cfg.out_width(), -7);
  if (cfg.has_blocks()) s.blocks.assign(size_t(in.num_q) * cfg.top_blocks, -7);
  indexer.select_prefill(in, cfg, {s.indices.data(), s.blocks.empty() ? nullptr : s.blocks.data()});
  return s;
}

inline Selection run_decode(Indexer& indexer, const DecodeInputs& in, const SelectConfig& cfg) {
  Selection s;
  const size_t rows = size_t(in.batch) * in.next_n;
  s.indices.assign(rows * cfg.out_width(), -7);
  if (cfg.has_blocks()) s.blocks.assign(rows * cfg.top_blocks, -7);
  indexer.select_decode(in, cfg, {s.indices.data(), s.blocks.empty() ? nullptr : s.blocks.data()});
  return s;
}

// Judges every row with hisa::judge_row (rows in parallel: the float64 scores dominate test time).
// Returns "" or the first failing row's message.
inline std::string judge_rows(const std::vector<reference::Row>& rows, const SelectConfig& cfg,
                              const Selection& sel, double rel_eps, bool exact,
                              PooledRounding rounding = PooledRounding::Exact) {
  const int64_t n = int64_t(rows.size());
  if (sel.indices.size() != size_t(n) * cfg.out_width()) return "judge_rows: wrong indices size";
  if (cfg.has_blocks() && sel.blocks.size() != size_t(n) * cfg.top_blocks)
    return "judge_rows: wrong blocks size";
  std::vector<std::string> errors(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < n; ++t) {
    errors[size_t(t)] =
        judge_row(rows[size_t(t)], cfg, sel.indices.data() + t * cfg.out_width(),
                  cfg.has_blocks() ? sel.blocks.data() + t * cfg.top_blocks : nullptr, rel_eps,
                  exact, rounding);
  }
  for (int64_t t = 0; t < n; ++t)
    if (!errors[size_t(t)].empty()) return "row " + std::to_string(t) + ": " + errors[size_t(t)];
  return "";
}

inline std::string judge_prefill(const PrefillInputs& in, const SelectConfig& cfg,
                                 const Selection& sel, bool exact) {
  return judge_rows(reference::prefill_rows(in, cfg.top_blocks), cfg, sel, judge_rel_eps(in.dtype),
                    exact);
}

// The cache is fp8, so the fp8 tolerance applies whatever q's dtype.
inline std::string judge_decode(const DecodeInputs& in, const SelectConfig& cfg,
                                const Selection& sel, bool exact,
                                PooledRounding rounding = PooledRounding::Exact) {
  return judge_rows(reference::decode_rows(in, cfg.top_blocks), cfg, sel, judge_rel_eps(DType::F8E4M3),
                    exact,
                    rounding);
}

// "flat k=64 | F32 H=8 D=128 exact seed=3": for SCOPED_TRACE, so that a failure names its inputs.
inline std::string describe(const SelectConfig& cfg, DType dtype, int H, int D, bool exact,
                            uint64_t seed) {
  std::ostringstream os;
  os << cfg.describe() << " | " << dtype_name(dtype) << " H=" << H << " D=" << D
     << (exact ? " exact" : "") << " seed=" << seed;
  return os.str();
}

// The message of the hisa::Error that fn throws, or "(no error)".
inline std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline SelectConfig make_config(Method method, int block_size, int top_blocks, int topk,
                                Pooling pooling = Pooling::Mean) {
  SelectConfig c;
  c.method = method;
  c.block_size = block_size;
  c.top_blocks = top_blocks;
  c.topk = topk;
  c.pooling = pooling;
  return c;
}

}  // namespace hisa::test
