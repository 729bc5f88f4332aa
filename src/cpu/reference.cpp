// The float64 reference: plain loops, every rule of SEMANTICS.md, the oracle every test trusts.
#include "hisa/reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "hisa/error.hpp"
#include "hisa/validate.hpp"

namespace hisa::reference {
namespace {

std::vector<double> dequantize(DType t, const void* src, int64_t n) {
  std::vector<float> f(static_cast<size_t>(n));
  to_float(t, src, f.data(), size_t(n));
  return std::vector<double>(f.begin(), f.end());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Row t's given blocks (its entries before the first -1), when the call has given_blocks.
void attach_given(std::vector<Row>& rows, const int32_t* given, int width, const char* who) {
  if (!given) return;
  HISA_CHECK(width > 0, who, ": inputs with given_blocks need the config's top_blocks as the ",
             "width of its rows");
  for (size_t t = 0; t < rows.size(); ++t) {
    rows[t].has_given = true;
    const int32_t* g = given + t * size_t(width);
    for (int c = 0; c < width && g[c] >= 0; ++c) rows[t].given.push_back(g[c]);
  }
}

}  // namespace

std::vector<Row> prefill_rows(const PrefillInputs& in, int given_width) {
  SelectConfig flat;
  flat.method = Method::Flat;
  flat.topk = 1;
  PrefillInputs plain = in;  // (the given blocks are checked against the call's config)
  plain.given_blocks = nullptr;
  validate_prefill(plain, flat);
  const auto spans = prefill_row_spans(in);
  const int H = in.num_heads, D = in.head_dim;
  const size_t esz = dtype_size(in.dtype);
  // One dequantised key array per distinct sequence start.
  std::vector<std::pair<int64_t, std::shared_ptr<const std::vector<double>>>> seqs;
  auto keys_of = [&](int64_t start, int64_t count) {
    for (auto& s : seqs)
      if (s.first == start && int64_t(s.second->size()) == count * D) return s.second;
    auto keys = std::make_shared<std::vector<double>>(
        dequantize(in.dtype, static_cast<const uint8_t*>(in.k) + size_t(start) * D * esz, count * D));
    if (in.k_scale)
      for (int64_t p = 0; p < count; ++p)
        for (int d = 0; d < D; ++d) (*keys)[size_t(p * D + d)] *= double(in.k_scale[start + p]);
    seqs.push_back({start, keys});
    return std::shared_ptr<const std::vector<double>>(keys);
  };
  std::vector<Row> rows(size_t(in.num_q));
  for (int64_t t = 0; t < in.num_q; ++t) {
    Row& r = rows[size_t(t)];
    r.num_heads = H;
    r.head_dim = D;
    r.q = dequantize(in.dtype, static_cast<const uint8_t*>(in.q) + size_t(t) * H * D * esz, int64_t(H) * D);
    r.w.assign(in.w + t * H, in.w + (t + 1) * H);
    r.keys = keys_of(spans[size_t(t)].key_start, spans[size_t(t)].seq_keys);
    r.seq_keys = spans[size_t(t)].seq_keys;
    r.visible = spans[size_t(t)].visible;
  }
  attach_given(rows, in.given_blocks, given_width, "prefill_rows");
  return rows;
}

std::vector<Row> decode_rows(const DecodeInputs& in, int given_width) {
  SelectConfig flat;
  flat.method = Method::Flat;
  flat.topk = 1;
  DecodeInputs plain = in;  // (the given blocks are checked against the call's config)
  plain.given_blocks = nullptr;
  validate_decode(plain, flat);
  const int H = in.num_heads, D = in.head_dim, ps = in.page_size;
  const size_t qsz = dtype_size(in.q_dtype);
  const int64_t pbytes = page_bytes(ps, D);
  std::vector<Row> rows;
  for (int b = 0; b < in.batch; ++b) {
    const int64_t len = in.seq_lens[b];
    auto keys = std::make_shared<std::vector<double>>(size_t(len * D));
    for (int64_t p = 0; p < len; ++p) {
      const int32_t page = in.block_table[int64_t(b) * in.max_pages + p / ps];
      const uint8_t* base = in.kv_cache + page * pbytes;
      const int64_t off = p % ps;
      float scale;
      std::memcpy(&scale, base + int64_t(ps) * D + off * 4, 4);
      HISA_CHECK(std::isfinite(scale) && scale > 0.0f, "decode: cache scale of request ", b, " token ", p,
                 " is ", scale, " (must be finite and > 0)");
      for (int d = 0; d < D; ++d) {
        const uint8_t v = base[off * D + d];
        HISA_CHECK((v & 0x7f) != 0x7f, "decode: cache value of request ", b, " token ", p, " is NaN");
        (*keys)[size_t(p * D + d)] = double(fp8e4m3_to_float(v)) * double(scale);
      }
    }
    for (int j = 0; j < in.next_n; ++j) {
      const int64_t t = int64_t(b) * in.next_n + j;
      Row r;
      r.num_heads = H;
      r.head_dim = D;
      r.q = dequantize(in.q_dtype, static_cast<const uint8_t*>(in.q) + size_t(t) * H * D * qsz, int64_t(H) * D);
      r.w.assign(in.w + t * H, in.w + (t + 1) * H);
      r.keys = keys;
      r.seq_keys = len;
      r.visible = len - in.next_n + j + 1;
      rows.push_back(std::move(r));
    }
  }
  attach_given(rows, in.given_blocks, given_width, "decode_rows");
  return rows;
}

static double head_sum(const Row& row, const double* key) {
  const int H = row.num_heads, D = row.head_dim;
  double total = 0;
  for (int h = 0; h < H; ++h) {
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += row.q[size_t(h * D + d)] * key[d];
    total += row.w[size_t(h)] * std::max(0.0, dot);
  }
  return total;
}

std::vector<double> token_scores(const Row& row) {
  std::vector<double> s(size_t(row.visible));
  for (int64_t p = 0; p < row.visible; ++p) s[size_t(p)] = head_sum(row, row.keys->data() + p * row.head_dim);
  return s;
}

void round_pooled(std::vector<double>& key, PooledRounding rounding) {
  if (rounding == PooledRounding::Exact) return;
  std::vector<float> f(key.begin(), key.end());  // the fp32 mean (round to nearest)
  if (rounding == PooledRounding::Fp8Block) {
    float amax = 0.0f;
    for (float v : f) amax = std::max(amax, std::fabs(v));
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    for (size_t d = 0; d < f.size(); ++d)
      key[d] = double(fp8e4m3_to_float(float_to_fp8e4m3(f[d] / scale))) * double(scale);
  } else if (rounding == PooledRounding::Bf16) {
    for (size_t d = 0; d < f.size(); ++d) key[d] = double(bf16_to_float(float_to_bf16(f[d])));
  } else {
    for (size_t d = 0; d < f.size(); ++d) key[d] = double(f[d]);
  }
}

std::vector<double> pooled_key(const Row& row, int64_t block, int B, Pooling pooling,
                               PooledRounding rounding) {
  const int D = row.head_dim;
  HISA_CHECK((block + 1) * B <= row.seq_keys, "pooled_key: block ", block, " is not complete");
  std::vector<double> out(size_t(D), pooling == Pooling::Max ? -std::numeric_limits<double>::infinity() : 0.0);
  for (int64_t p = block * B; p < (block + 1) * B; ++p)
    for (int d = 0; d < D; ++d) {
      const double v = (*row.keys)[size_t(p * D + d)];
      out[size_t(d)] = pooling == Pooling::Max ? std::max(out[size_t(d)], v) : out[size_t(d)] + v;
    }
  if (pooling == Pooling::Mean)
    for (double& v : out) v /= B;
  round_pooled(out, rounding);
  return out;
}

std::vector<double> block_scores(const Row& row, int B, Pooling pooling, PooledRounding rounding) {
  const int64_t J = ceil_div(row.visible, B);
  std::vector<double> s(size_t(J), std::numeric_limits<double>::quiet_NaN());
  const int64_t complete = std::min(J, row.seq_keys / B);
  for (int64_t j = 0; j < complete; ++j) s[size_t(j)] = head_sum(row, pooled_key(row, j, B, pooling, rounding).data());
  return s;
}

std::vector<int32_t> choose_blocks(const Row& row, const SelectConfig& cfg, PooledRounding rounding) {
  const int B = cfg.block_size, m = cfg.top_blocks;
  const int64_t J = ceil_div(row.visible, B);
  if (row.has_given) return row.given;
  std::vector<int32_t> chosen;
  if (J <= m) {
    for (int64_t j = 0; j < J; ++j) chosen.push_back(int32_t(j));
    return chosen;
  }
  const std::vector<double> score = block_scores(row, B, cfg.pooling, rounding);
  for (int j = 0; j < cfg.sink_blocks; ++j) chosen.push_back(j);
  std::vector<int32_t> others;
  for (int64_t j = cfg.sink_blocks; j < J - cfg.local_blocks; ++j) others.push_back(int32_t(j));
  const size_t want = size_t(m - cfg.sink_blocks - cfg.local_blocks);
  std::stable_sort(others.begin(), others.end(), [&](int32_t a, int32_t b) {
    if (score[size_t(a)] != score[size_t(b)]) return score[size_t(a)] > score[size_t(b)];
    return a < b;
  });
  others.resize(std::min(want, others.size()));
  chosen.insert(chosen.end(), others.begin(), others.end());
  for (int64_t j = J - cfg.local_blocks; j < J; ++j) chosen.push_back(int32_t(j));
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::vector<int32_t> candidates(const Row& row, const SelectConfig& cfg, const std::vector<int32_t>& blocks) {
  std::vector<int32_t> c;
  if (cfg.method == Method::Flat) {
    c.resize(size_t(row.visible));
    std::iota(c.begin(), c.end(), 0);
    return c;
  }
  const int64_t B = cfg.block_size;
  for (int32_t j : blocks)
    for (int64_t p = j * B; p < std::min<int64_t>((j + 1) * B, row.visible); ++p) c.push_back(int32_t(p));
  return c;
}

std::vector<int32_t> select_topk(const std::vector<double>& scores, const std::vector<int32_t>& cand, int k) {
  std::vector<int32_t> order = cand;
  const size_t n = std::min(size_t(k), order.size());
  auto better = [&](int32_t a, int32_t b) {
    if (scores[size_t(a)] != scores[size_t(b)]) return scores[size_t(a)] > scores[size_t(b)];
    return a < b;
  };
  std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(n), order.end(), better);
  order.resize(n);
  std::sort(order.begin(), order.end());
  return order;
}

void select_row(const Row& row, const SelectConfig& cfg, int32_t* indices, int32_t* blocks,
                PooledRounding rounding) {
  const int width = cfg.out_width();
  std::fill(indices, indices + width, -1);
  std::vector<int32_t> chosen;
  if (cfg.method != Method::Flat) {
    chosen = choose_blocks(row, cfg, rounding);
    if (blocks) {
      std::fill(blocks, blocks + cfg.top_blocks, -1);
      std::copy(chosen.begin(), chosen.end(), blocks);
    }
  }
  const std::vector<int32_t> cand = candidates(row, cfg, chosen);
  if (cfg.method == Method::Block) {
    std::copy(cand.begin(), cand.end(), indices);
    return;
  }
  const std::vector<int32_t> sel = select_topk(token_scores(row), cand, cfg.topk);
  std::copy(sel.begin(), sel.end(), indices);
}

}  // namespace hisa::reference
