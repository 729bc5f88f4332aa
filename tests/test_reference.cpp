// The float64 reference checked against hand-computed tiny cases (SEMANTICS.md sections 2-6).
//
// Every case uses one query head reading coordinate 0 (or two heads reading coordinates 0 and 1),
// so that a key's score is the value written into it and each expected output can be read off by
// hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "hisa/indexer.hpp"
#include "hisa/reference.hpp"
#include "testing.hpp"

namespace hisa {
namespace {

using test::error_message;
using test::make_config;
using V = std::vector<int32_t>;

// A tiny F32 prefill: H heads, D = 64, one sequence unless cu_k says otherwise.
struct Tiny {
  int H = 1, D = 64;
  std::vector<float> q, k, w, k_scale;  // [T, H, D], [S, D], [T, H], [S] or empty
  V cu_q, cu_k;

  // T queries, S keys, q[t, h, h] = 1 (head h reads coordinate h), w = 1.
  Tiny(int64_t T, int64_t S, int heads = 1) : H(heads) {
    q.assign(size_t(T * H * D), 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) q[size_t((t * H + h) * D + h)] = 1.0f;
    k.assign(size_t(S * D), 0.0f);
    w.assign(size_t(T * H), 1.0f);
    cu_q = {0, int32_t(T)};
    cu_k = {0, int32_t(S)};
  }
  float& key(int64_t p, int d = 0) { return k[size_t(p * D + d)]; }
  PrefillInputs inputs() const {
    PrefillInputs in;
    in.num_q = cu_q.back();
    in.num_k = cu_k.back();
    in.num_heads = H;
    in.head_dim = D;
    in.dtype = DType::F32;
    in.q = q.data();
    in.k = k.data();
    in.k_scale = k_scale.empty() ? nullptr : k_scale.data();
    in.w = w.data();
    in.num_seqs = int(cu_q.size()) - 1;
    in.cu_seqlens_q = cu_q.data();
    in.cu_seqlens_k = cu_k.data();
    return in;
  }
};

struct Out {
  V indices, blocks;
};
Out select(const PrefillInputs& in, const SelectConfig& cfg) {
  auto ref = make_indexer("reference");
  const auto s = test::run_prefill(*ref, in, cfg);
  return {s.indices, s.blocks};
}

SelectConfig flat(int k) { return make_config(Method::Flat, 64, 3, k); }

// Scores {3, 1, 3, 0, 2}: key p carries its score in coordinate 0 (the -2 is cut by the ReLU).
Tiny five_keys() {
  Tiny c(1, 5);
  const float v[] = {3, 1, 3, -2, 2};
  for (int p = 0; p < 5; ++p) c.key(p) = v[p];
  return c;
}

TEST(Reference, TokenScoresAreReluWeightedHeadSums) {
  const auto rows = reference::prefill_rows(five_keys().inputs());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].visible, 5);
  EXPECT_EQ(reference::token_scores(rows[0]), (std::vector<double>{3, 1, 3, 0, 2}));
}

TEST(Reference, FlatTiesGoTowardTheLowerPosition) {
  const Tiny c = five_keys();
  EXPECT_EQ(select(c.inputs(), flat(1)).indices, (V{0}));  // 3 at 0 and 2: 0 wins
  EXPECT_EQ(select(c.inputs(), flat(2)).indices, (V{0, 2}));
  EXPECT_EQ(select(c.inputs(), flat(3)).indices, (V{0, 2, 4}));
  EXPECT_EQ(select(c.inputs(), flat(4)).indices, (V{0, 1, 2, 4}));
}

TEST(Reference, FewerVisibleKeysThanKArePaddedWithMinusOne) {
  EXPECT_EQ(select(five_keys().inputs(), flat(8)).indices, (V{0, 1, 2, 3, 4, -1, -1, -1}));
}

TEST(Reference, ReluThenSignedWeights) {
  // Head 0 reads coordinate 0 with weight 2, head 1 reads coordinate 1 with weight -1.
  Tiny c(1, 5, 2);
  c.w = {2, -1};
  const float a[] = {1, 0, -5, 2, 1}, b[] = {0, 3, -5, 1, 1};
  for (int p = 0; p < 5; ++p) c.key(p, 0) = a[p], c.key(p, 1) = b[p];
  const auto rows = reference::prefill_rows(c.inputs());
  EXPECT_EQ(reference::token_scores(rows[0]), (std::vector<double>{2, -3, 0, 3, 1}));
  EXPECT_EQ(select(c.inputs(), flat(2)).indices, (V{0, 3}));
  EXPECT_EQ(select(c.inputs(), flat(4)).indices, (V{0, 2, 3, 4}));
}

TEST(Reference, KeyScaleMultipliesTheScore) {
  Tiny c = five_keys();
  c.k_scale = {1, 4, 0.5f, 1, 1};  // scores {3, 4, 1.5, 0, 2}
  EXPECT_EQ(reference::token_scores(reference::prefill_rows(c.inputs())[0]),
            (std::vector<double>{3, 4, 1.5, 0, 2}));
  EXPECT_EQ(select(c.inputs(), flat(2)).indices, (V{0, 1}));
}

TEST(Reference, CausalityIsBottomRightAligned) {
  // T = 2 queries over S = 5 keys: row 0 sees 4 keys, row 1 sees 5.
  Tiny c(2, 5);
  const float v[] = {3, 1, 3, -2, 2};
  for (int p = 0; p < 5; ++p) c.key(p) = v[p];
  const auto rows = reference::prefill_rows(c.inputs());
  EXPECT_EQ(rows[0].visible, 4);
  EXPECT_EQ(rows[1].visible, 5);
  EXPECT_EQ(select(c.inputs(), flat(5)).indices, (V{0, 1, 2, 3, -1, 0, 1, 2, 3, 4}));
  EXPECT_EQ(select(c.inputs(), flat(3)).indices, (V{0, 1, 2, 0, 2, 4}));
}

TEST(Reference, SequencesArePositionedFromTheirOwnStart) {
  // Sequence 0: keys 0-2 (one query), sequence 1: keys 3-6 (two queries); ks/ke says the same.
  Tiny c(3, 7);
  const float v[] = {1, 5, 2, 4, 0, 4, 9};
  for (int p = 0; p < 7; ++p) c.key(p) = v[p];
  c.cu_q = {0, 1, 3};
  c.cu_k = {0, 3, 7};
  // Row 0 sees {1, 5, 2}; row 1 sees {4, 0, 4} (a tie: 0 before 2); row 2 sees {4, 0, 4, 9}.
  const V expect = {1, 2, 0, 2, 0, 3};
  EXPECT_EQ(select(c.inputs(), flat(2)).indices, expect);
  const V ks = {0, 3, 3}, ke = {3, 6, 7};
  PrefillInputs in = c.inputs();
  in.num_seqs = 0;
  in.cu_seqlens_q = in.cu_seqlens_k = nullptr;
  in.ks = ks.data();
  in.ke = ke.data();
  EXPECT_EQ(select(in, flat(2)).indices, expect);
}

// Six blocks of B = 64 over S = 350 keys; every key of block j scores v[j]; block 5 is partial
// (positions 320-349).
Tiny six_blocks(const std::vector<float>& v) {
  Tiny c(1, 350);
  for (int64_t p = 0; p < 350; ++p) c.key(p) = v[size_t(p / 64)];
  return c;
}
V range(int32_t lo, int32_t hi) {  // [lo, hi)
  V r;
  for (int32_t i = lo; i < hi; ++i) r.push_back(i);
  return r;
}
V concat(std::initializer_list<V> parts, size_t width) {
  V r;
  for (const V& p : parts) r.insert(r.end(), p.begin(), p.end());
  r.resize(width, -1);
  return r;
}

TEST(Reference, PooledKeyIsTheMeanOrMaxOfTheScaledBlock) {
  Tiny c(1, 128);
  for (int64_t p = 0; p < 128; ++p) c.key(p) = float(p % 64);
  c.k_scale.assign(128, 1.0f);
  for (int64_t p = 64; p < 128; ++p) c.k_scale[size_t(p)] = 2.0f;
  const auto row = reference::prefill_rows(c.inputs())[0];
  EXPECT_EQ(reference::pooled_key(row, 0, 64, Pooling::Mean)[0], 31.5);
  EXPECT_EQ(reference::pooled_key(row, 1, 64, Pooling::Mean)[0], 63.0);
  EXPECT_EQ(reference::pooled_key(row, 1, 64, Pooling::Max)[0], 126.0);
  EXPECT_EQ(reference::pooled_key(row, 1, 64, Pooling::Mean)[1], 0.0);
  EXPECT_EQ(reference::pooled_key(row, 0, 128, Pooling::Mean)[0],
            47.25);  // (2016 + 2 * 2016) / 128
}

TEST(Reference, BlockScoresAndForcedBlocksCountInsideM) {
  const Tiny c = six_blocks({0, 5, 1, 7, 2, 9});
  const auto row = reference::prefill_rows(c.inputs())[0];
  const auto bs = reference::block_scores(row, 64, Pooling::Mean);
  ASSERT_EQ(bs.size(), 6u);  // J = ceil(350 / 64)
  for (int j = 0; j < 5; ++j)
    EXPECT_EQ(bs[size_t(j)], (std::vector<double>{0, 5, 1, 7, 2})[size_t(j)]);
  EXPECT_TRUE(std::isnan(bs[5]));  // partial: no pooled key

  // m = 3: sink block 0 (lowest score) and local block 5 are forced; one free slot goes to block 3.
  SelectConfig hisa = make_config(Method::Hisa, 64, 3, 100);
  EXPECT_EQ(reference::choose_blocks(row, hisa), (V{0, 3, 5}));
  // Candidates: 64 + 64 + 30 = 158. Top 100: block 5 (9, 30 keys), block 3 (7, 64 keys), then six
  // of block 0 (score 0, ties toward the lower position).
  const Out h = select(c.inputs(), hisa);
  EXPECT_EQ(h.blocks, (V{0, 3, 5}));
  EXPECT_EQ(h.indices, concat({range(0, 6), range(192, 256), range(320, 350)}, 100));
  // Flat instead takes six keys of block 1 (score 5) where hisa had to take block 0's.
  EXPECT_EQ(select(c.inputs(), flat(100)).indices,
            concat({range(64, 70), range(192, 256), range(320, 350)}, 100));
  // Block-sparse: every visible key of the chosen blocks, padded to m * B = 192.
  const Out b = select(c.inputs(), make_config(Method::Block, 64, 3, 100));
  EXPECT_EQ(b.blocks, (V{0, 3, 5}));
  EXPECT_EQ(b.indices, concat({range(0, 64), range(192, 256), range(320, 350)}, 192));
}

TEST(Reference, TiedBlocksGoTowardTheLowerBlock) {
  const Tiny c = six_blocks({0, 5, 5, 5, 2, 9});
  const auto row = reference::prefill_rows(c.inputs())[0];
  EXPECT_EQ(reference::choose_blocks(row, make_config(Method::Hisa, 64, 4, 100)), (V{0, 1, 2, 5}));
  // More sink and local blocks: sink {0, 1}, local {4, 5}, one free slot: block 2 beats 3 on the
  // tie.
  SelectConfig cfg = make_config(Method::Hisa, 64, 5, 100);
  cfg.sink_blocks = 2;
  cfg.local_blocks = 2;
  EXPECT_EQ(reference::choose_blocks(row, cfg), (V{0, 1, 2, 4, 5}));
}

TEST(Reference, FewBlocksMeansHisaEqualsFlat) {
  // J = 6 <= m = 6: every block is chosen and the selection is flat's.
  const Tiny c = six_blocks({0, 5, 1, 7, 2, 9});
  const Out h = select(c.inputs(), make_config(Method::Hisa, 64, 6, 100));
  EXPECT_EQ(h.blocks, (V{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(h.indices, select(c.inputs(), flat(100)).indices);
  // Same for a row whose e <= m * B with more keys present after it (T = 2: row 0 sees 349 keys).
  Tiny two(2, 350);
  for (int64_t p = 0; p < 350; ++p) two.key(p) = float((p * 7) % 11);
  EXPECT_EQ(select(two.inputs(), make_config(Method::Hisa, 64, 6, 50)).indices,
            select(two.inputs(), flat(50)).indices);
}

TEST(Reference, ConfigurationErrorsAreClear) {
  const Tiny c = five_keys();
  EXPECT_NE(error_message([&] {
              select(c.inputs(), make_config(Method::Hisa, 64, 3, 256));
            }).find("must be at least topk"),
            std::string::npos);
  SelectConfig cfg = make_config(Method::Hisa, 64, 2, 64);
  EXPECT_NE(error_message([&] { select(c.inputs(), cfg); }).find("sink_blocks + local_blocks + 1"),
            std::string::npos);
  EXPECT_NE(error_message([&] {
              select(c.inputs(), make_config(Method::Hisa, 96, 3, 64));
            }).find("power of two"),
            std::string::npos);
}

TEST(Reference, DecodeReadsThePagedCache) {
  // One request of 100 tokens over two pages stored in reverse order (block_table {1, 0}),
  // next_n 2. Token 98 holds 1.0 (fp8 0x38), token 99 holds 1.0 with scale 2; everything else is 0.
  const int D = 64, ps = 64;
  std::vector<uint8_t> cache(size_t(2 * page_bytes(ps, D)), 0);
  auto slot = [&](int p) { return &cache[size_t((p < 64 ? 1 : 0) * page_bytes(ps, D))]; };
  for (int p = 0; p < 100; ++p) {
    const float s = p == 99 ? 2.0f : 1.0f;
    std::memcpy(slot(p) + ps * D + (p % ps) * 4, &s, 4);
  }
  slot(98)[(98 % ps) * D] = 0x38;
  slot(99)[(99 % ps) * D] = 0x38;
  std::vector<float> q(2 * D, 0.0f), w = {1, 1};
  q[0] = q[D] = 1.0f;
  const V table = {1, 0}, lens = {100};
  DecodeInputs in;
  in.batch = 1;
  in.next_n = 2;
  in.num_heads = 1;
  in.head_dim = D;
  in.q_dtype = DType::F32;
  in.q = q.data();
  in.w = w.data();
  in.num_pages = 2;
  in.page_size = ps;
  in.kv_cache = cache.data();
  in.max_pages = 2;
  in.block_table = table.data();
  in.seq_lens = lens.data();
  const auto rows = reference::decode_rows(in);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].visible, 99);
  EXPECT_EQ(rows[1].visible, 100);
  EXPECT_EQ(reference::token_scores(rows[1])[99], 2.0);
  auto ref = make_indexer("reference");
  const auto s = test::run_decode(*ref, in, flat(2));
  EXPECT_EQ(s.indices, (V{0, 98, 98, 99}));  // row 0: 98 then the first of the zeros
}

}  // namespace
}  // namespace hisa
