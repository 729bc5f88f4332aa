// The fast CPU backend against the float64 reference: every output row judged with hisa::judge_row
// (SEMANTICS.md section 7), on random inputs, exact small-integer inputs (identical sets, ties
// included), edge cases, paged decode, incremental pooled keys, input errors and determinism.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/fast_kernels.hpp"
#include "cpu/threads.hpp"
#include "hisa/indexer.hpp"
#include "hisa/pooled.hpp"
#include "testing.hpp"

namespace hisa {
namespace {

using test::DecodeSpec;
using test::error_message;
using test::make_config;
using test::PrefillSpec;

std::unique_ptr<Indexer> cpu_indexer() { return make_indexer("cpu"); }

// Small configurations in which rows have more than m blocks, so hisa and block differ from flat.
SelectConfig small_config(Method method) { return make_config(method, 64, 6, 128); }

// Runs the cpu backend on a generated prefill case and judges every row.
void expect_prefill_matches(const PrefillSpec& spec, const SelectConfig& cfg, bool ks_ke = false) {
  SCOPED_TRACE(
      test::describe(cfg, spec.dtype, spec.num_heads, spec.head_dim, spec.exact, spec.seed) +
      (ks_ke ? " ks/ke" : ""));
  const auto data = test::make_prefill(spec);
  const PrefillInputs in = data.inputs(ks_ke);
  const auto sel = test::run_prefill(*cpu_indexer(), in, cfg);
  EXPECT_EQ(test::judge_prefill(in, cfg, sel, spec.exact), "");
}

void expect_decode_matches(const DecodeSpec& spec, const SelectConfig& cfg) {
  SCOPED_TRACE(
      test::describe(cfg, spec.q_dtype, spec.num_heads, spec.head_dim, spec.exact, spec.seed) +
      " next_n=" + std::to_string(spec.next_n));
  auto data = test::make_decode(spec);
  if (cfg.has_blocks()) data.pool(cfg.block_size, cfg.pooling);
  const DecodeInputs in = data.inputs();
  const auto sel = test::run_decode(*cpu_indexer(), in, cfg);
  EXPECT_EQ(test::judge_decode(in, cfg, sel, spec.exact), "");
}

const Method kMethods[] = {Method::Flat, Method::Hisa, Method::Block};
const DType kDtypes[] = {DType::F8E4M3, DType::BF16, DType::F32};

class MethodDtype : public ::testing::TestWithParam<std::tuple<Method, DType>> {};

// Three ragged sequences, each a cached prefix plus a chunk of queries; partial last blocks.
TEST_P(MethodDtype, RandomPrefillMatchesReference) {
  const auto [method, dtype] = GetParam();
  PrefillSpec spec;
  spec.dtype = dtype;
  spec.seq_keys = {1100, 700, 1500};
  spec.seq_queries = {24, 8, 16};
  spec.tie_rate = 0.05;
  spec.seed = 100 + 10 * uint64_t(method) + uint64_t(dtype);
  expect_prefill_matches(spec, small_config(method));
}

// Small integers: every fp32 sum is exact, so the sets must be the reference's, ties included.
// Sparse values, copied keys and copied 64-key runs make token and block ties frequent.
TEST_P(MethodDtype, ExactPrefillIsIdenticalToReference) {
  const auto [method, dtype] = GetParam();
  PrefillSpec spec;
  spec.dtype = dtype;
  spec.exact = true;
  spec.density = 0.1;
  spec.tie_rate = 0.3;
  spec.block_tie_rate = 0.3;
  spec.seq_keys = {900, 1300};
  spec.seq_queries = {20};
  spec.seed = 200 + 10 * uint64_t(method) + uint64_t(dtype);
  expect_prefill_matches(spec, small_config(method));
  spec.seed += 1000;
  expect_prefill_matches(spec, make_config(method, 128, 4, 256));
}

TEST_P(MethodDtype, RandomDecodeMatchesReference) {
  const auto [method, dtype] = GetParam();
  for (int next_n = 1; next_n <= 4; ++next_n) {
    DecodeSpec spec;
    spec.q_dtype = dtype;
    spec.next_n = next_n;
    spec.seq_lens = {1000, 333, 1601, int64_t(64 + next_n)};
    spec.tie_rate = 0.05;
    spec.seed = 300 + 10 * uint64_t(method) + uint64_t(dtype) + 1000 * uint64_t(next_n);
    expect_decode_matches(spec, small_config(method));
  }
}

TEST_P(MethodDtype, ExactDecodeIsIdenticalToReference) {
  const auto [method, dtype] = GetParam();
  DecodeSpec spec;
  spec.q_dtype = dtype;
  spec.exact = true;
  spec.density = 0.1;
  spec.tie_rate = 0.3;
  spec.block_tie_rate = 0.3;
  spec.next_n = 3;
  spec.seq_lens = {1200, 700, 900};
  spec.seed = 400 + 10 * uint64_t(method) + uint64_t(dtype);
  expect_decode_matches(spec, small_config(method));
}

INSTANTIATE_TEST_SUITE_P(All, MethodDtype,
                         ::testing::Combine(::testing::ValuesIn(kMethods),
                                            ::testing::ValuesIn(kDtypes)),
                         [](const auto& info) {
                           std::string d = dtype_name(std::get<1>(info.param));
                           d.erase(std::remove(d.begin(), d.end(), '_'), d.end());
                           return method_name(std::get<0>(info.param)) + "_" + d;
                         });

TEST(CpuBackend, MaxPoolingMatchesReference) {
  PrefillSpec spec;
  spec.dtype = DType::F8E4M3;
  spec.seq_keys = {1500};
  spec.seq_queries = {16};
  spec.seed = 501;
  expect_prefill_matches(spec, make_config(Method::Hisa, 64, 6, 128, Pooling::Max));
  spec.exact = true;
  spec.density = 0.1;
  spec.block_tie_rate = 0.3;
  expect_prefill_matches(spec, make_config(Method::Block, 64, 6, 128, Pooling::Max));
  DecodeSpec dec;
  dec.seq_lens = {1500, 900};
  dec.next_n = 2;
  dec.seed = 502;
  expect_decode_matches(dec, make_config(Method::Hisa, 64, 6, 128, Pooling::Max));
}

// ---- Edge cases ----

TEST(CpuBackend, FewerKeysThanK) {
  PrefillSpec spec;
  spec.seq_keys = {100, 40};
  spec.seq_queries = {100, 10};  // full prefill of the first sequence: e = 1 .. 100
  spec.seed = 601;
  for (Method m : kMethods) expect_prefill_matches(spec, small_config(m));
}

TEST(CpuBackend, VisibleJustAboveK) {
  // Flat with e = k - 2 .. k + 5; hisa with e just above m * B (J = m + 1).
  PrefillSpec spec;
  spec.seq_keys = {133};
  spec.seq_queries = {8};
  spec.seed = 602;
  expect_prefill_matches(spec, make_config(Method::Flat, 64, 3, 128));
  spec.seq_keys = {200};
  expect_prefill_matches(spec, make_config(Method::Hisa, 64, 3, 192));
  expect_prefill_matches(spec, make_config(Method::Block, 64, 3, 192));
}

TEST(CpuBackend, HisaEqualsFlatWhenAllBlocksFit) {
  // e <= m * B: every block is chosen; the fast backend scores each key the same way on every path,
  // so hisa's output is flat's, bitwise.
  for (DType dtype : kDtypes) {
    PrefillSpec spec;
    spec.dtype = dtype;
    spec.seq_keys = {384, 300};
    spec.seq_queries = {40};
    spec.seed = 603;
    const auto data = test::make_prefill(spec);
    auto cpu = cpu_indexer();
    const auto flat = test::run_prefill(*cpu, data.inputs(), small_config(Method::Flat));
    const auto hisa = test::run_prefill(*cpu, data.inputs(), small_config(Method::Hisa));
    EXPECT_EQ(hisa.indices, flat.indices) << dtype_name(dtype);
    EXPECT_EQ(test::judge_prefill(data.inputs(), small_config(Method::Hisa), hisa, false), "");
  }
}

TEST(CpuBackend, FullPrefillAndPartialLastBlock) {
  PrefillSpec spec;
  spec.dtype = DType::BF16;
  spec.seq_keys = {500};  // 500 = 7 * 64 + 52
  spec.seq_queries = {500};
  spec.seed = 604;
  for (Method m : kMethods) expect_prefill_matches(spec, make_config(m, 64, 4, 64));
}

TEST(CpuBackend, KsKeFormEqualsCuSeqlensForm) {
  PrefillSpec spec;
  spec.dtype = DType::F8E4M3;
  spec.seq_keys = {900, 1200};
  spec.seq_queries = {12, 20};
  spec.seed = 605;
  const auto data = test::make_prefill(spec);
  auto cpu = cpu_indexer();
  for (Method m : kMethods) {
    const SelectConfig cfg = small_config(m);
    const auto cu = test::run_prefill(*cpu, data.inputs(false), cfg);
    const auto kk = test::run_prefill(*cpu, data.inputs(true), cfg);
    EXPECT_EQ(cu.indices, kk.indices) << method_name(m);
    EXPECT_EQ(cu.blocks, kk.blocks) << method_name(m);
    EXPECT_EQ(test::judge_prefill(data.inputs(true), cfg, kk, false), "") << method_name(m);
  }
}

TEST(CpuBackend, ProductionHeadCounts) {
  for (int H : {32, 64}) {
    PrefillSpec spec;
    spec.dtype = DType::F8E4M3;
    spec.num_heads = H;
    spec.seq_keys = {1500};
    spec.seq_queries = {6};
    spec.seed = 606 + uint64_t(H);
    for (Method m : kMethods) expect_prefill_matches(spec, small_config(m));
    DecodeSpec dec;
    dec.num_heads = H;
    dec.seq_lens = {1300, 700};
    dec.next_n = 2;
    dec.seed = 607 + uint64_t(H);
    expect_decode_matches(dec, small_config(Method::Hisa));
  }
}

TEST(CpuBackend, OddHeadCountAndHeadDim64) {
  PrefillSpec spec;
  spec.num_heads = 5;  // padded to 16 lanes inside the kernel
  spec.head_dim = 64;
  spec.seq_keys = {1000};
  spec.seq_queries = {9};
  spec.seed = 608;
  for (Method m : kMethods) expect_prefill_matches(spec, small_config(m));
  spec.exact = true;
  spec.tie_rate = 0.3;
  expect_prefill_matches(spec, small_config(Method::Hisa));
}

TEST(CpuBackend, LargerRealisticCase) {
  // H = 64, D = 128, fp8, 4K context, k = 512 from 8 blocks of 128.
  PrefillSpec spec;
  spec.dtype = DType::F8E4M3;
  spec.num_heads = 64;
  spec.seq_keys = {4096};
  spec.seq_queries = {8};
  spec.seed = 609;
  expect_prefill_matches(spec, make_config(Method::Hisa, 128, 8, 512));
}

TEST(CpuBackend, DecodePageSizes) {
  // Pages smaller than a key tile (tiles span pages) and pages as large as a block.
  for (int page_size : {16, 128}) {
    DecodeSpec spec;
    spec.page_size = page_size;
    spec.seq_lens = {1000, 1711, 257};
    spec.next_n = 2;
    spec.seed = 611 + uint64_t(page_size);
    for (Method m : kMethods) expect_decode_matches(spec, make_config(m, 128, 4, 256));
  }
}

TEST(CpuBackend, DecodeShortRequestsHisaEqualsFlat) {
  DecodeSpec spec;
  spec.seq_lens = {384, 70, 200};
  spec.next_n = 4;
  spec.seed = 610;
  auto data = test::make_decode(spec);
  data.pool(64);
  auto cpu = cpu_indexer();
  const auto flat = test::run_decode(*cpu, data.inputs(), small_config(Method::Flat));
  const auto hisa = test::run_decode(*cpu, data.inputs(), small_config(Method::Hisa));
  EXPECT_EQ(hisa.indices, flat.indices);
}

// ---- Given blocks (cross-layer reuse) ----

// One layer's chosen blocks reused by the next layer's call (other q and w, same rows): the
// tokens are chosen inside the given blocks, the blocks output repeats them, and no pooled keys
// are read. Exact inputs: the sets equal the reference's; random inputs: judged.
TEST(CpuBackend, GivenBlocksReuseAnotherLayersChoice) {
  for (bool exact : {true, false}) {
    for (Method method : {Method::Hisa, Method::Block}) {
      PrefillSpec spec;
      spec.exact = exact;
      spec.density = exact ? 0.1 : 1.0;
      spec.tie_rate = exact ? 0.3 : 0.05;
      spec.seq_keys = {1100, 1500};
      spec.seq_queries = {24, 16};
      spec.seed = 650 + uint64_t(exact);
      const SelectConfig cfg = small_config(method);
      SCOPED_TRACE(
          test::describe(cfg, spec.dtype, spec.num_heads, spec.head_dim, exact, spec.seed));
      const auto layer0 = test::make_prefill(spec);
      const auto first = test::run_prefill(*cpu_indexer(), layer0.inputs(), cfg);
      spec.seed += 100;  // the next layer: new queries, weights and keys on the same rows
      const auto layer1 = test::make_prefill(spec);
      PrefillInputs in = layer1.inputs();
      in.given_blocks = first.blocks.data();
      const auto reused = test::run_prefill(*cpu_indexer(), in, cfg);
      EXPECT_EQ(reused.blocks, first.blocks);
      EXPECT_EQ(test::judge_prefill(in, cfg, reused, exact), "");  // exact: the same sets
    }
  }
  // Decode: blocks of any valid form (here the first and every third eligible block), with no
  // pooled keys at all.
  DecodeSpec spec;
  spec.seq_lens = {1000, 333, 1601};
  spec.next_n = 2;
  spec.seed = 660;
  const auto data = test::make_decode(spec);
  const SelectConfig cfg = small_config(Method::Hisa);
  std::vector<int32_t> given(6 * size_t(cfg.top_blocks), -1);
  for (int r = 0; r < 6; ++r) {
    const int64_t e = spec.seq_lens[size_t(r / 2)] - 2 + r % 2 + 1;
    const int nb = int((e + cfg.block_size - 1) / cfg.block_size);
    int c = 0;
    for (int b = 0; b < nb && c < cfg.top_blocks; b += (b == 0 ? 1 : 3))
      given[size_t(r * cfg.top_blocks + c++)] = b;
  }
  DecodeInputs in = data.inputs();
  in.given_blocks = given.data();
  const auto sel = test::run_decode(*cpu_indexer(), in, cfg);
  EXPECT_EQ(sel.blocks, given);
  EXPECT_EQ(test::judge_decode(in, cfg, sel, false), "");
}

TEST(CpuBackend, GivenBlocksErrorsNameTheEntry) {
  PrefillSpec spec;
  spec.seq_keys = {1100};
  spec.seq_queries = {4};
  const auto data = test::make_prefill(spec);
  const SelectConfig cfg = small_config(Method::Hisa);  // B = 64, m = 6: 18 blocks visible
  const auto run = [&](std::vector<int32_t> rows0, const SelectConfig& c) {
    std::vector<int32_t> g(4 * size_t(c.top_blocks), -1);
    std::copy(rows0.begin(), rows0.end(), g.begin() + c.top_blocks);  // row 1
    PrefillInputs in = data.inputs();
    in.given_blocks = g.data();
    return error_message([&] { test::run_prefill(*cpu_indexer(), in, c); });
  };
  EXPECT_EQ(run({0, 3, 17}, cfg), "(no error)");
  EXPECT_NE(run({0, 5, 3}, cfg).find("given_blocks[1, 2] = 3 does not ascend"), std::string::npos);
  EXPECT_NE(run({0, 2, 2}, cfg).find("given_blocks[1, 2] = 2 does not ascend"), std::string::npos);
  EXPECT_NE(run({0, 18}, cfg).find("given_blocks[1, 1] = 18 is past the row's 18 eligible"),
            std::string::npos);
  EXPECT_NE(run({0, -1, 4}, cfg).find("given_blocks[1, 2] = 4 follows the -1 padding"),
            std::string::npos);
  EXPECT_NE(run({0, -2}, cfg).find("given_blocks[1, 1] = -2 is negative"), std::string::npos);
  EXPECT_NE(run({0}, small_config(Method::Flat)).find("given_blocks is for methods hisa and block"),
            std::string::npos);
}

// ---- Pooled keys of the paged cache ----

TEST(PooledKeys, IncrementalUpdatesEqualFromScratchAndTouchNothingElse) {
  DecodeSpec spec;
  spec.seq_lens = {1000, 700, 1300};
  spec.seed = 701;
  for (Pooling pooling : {Pooling::Mean, Pooling::Max}) {
    auto data = test::make_decode(spec);
    data.pool(64, pooling);  // from scratch
    const DecodeInputs cache = data.inputs();
    const int D = spec.head_dim, max_blocks = data.pooled_max_blocks;
    // Incremental: lengths grow in uneven steps; the buffer starts poisoned with NaN.
    std::vector<float> inc(data.pooled.size(), std::numeric_limits<float>::quiet_NaN());
    const std::vector<std::vector<int32_t>> steps = {
        {0, 0, 0}, {63, 1, 64}, {64, 130, 64}, {65, 130, 600}, {640, 700, 601}, {1000, 700, 1300}};
    for (size_t s = 1; s < steps.size(); ++s) {
      const std::vector<float> before = inc;
      update_pooled_keys(cache, steps[s - 1].data(), steps[s].data(), 64, pooling, inc.data(),
                         max_blocks);
      for (int b = 0; b < 3; ++b)
        for (int j = 0; j < max_blocks; ++j) {
          const bool fresh = j >= steps[s - 1][size_t(b)] / 64 && j < steps[s][size_t(b)] / 64;
          const size_t at = (size_t(b) * max_blocks + size_t(j)) * D;
          const float* want = fresh ? &data.pooled[at] : &before[at];
          EXPECT_EQ(std::memcmp(&inc[at], want, size_t(D) * 4), 0)
              << "step " << s << " request " << b << " block " << j
              << (fresh ? " (new)" : " (old)");
        }
    }
    // Every complete block is filled; blocks past each request's end stay poisoned.
    for (int b = 0; b < 3; ++b)
      for (int j = 0; j < max_blocks; ++j)
        EXPECT_EQ(std::isnan(inc[(size_t(b) * max_blocks + size_t(j)) * D]),
                  j >= spec.seq_lens[size_t(b)] / 64);
  }
}

TEST(PooledKeys, ReadOnlyTheNewBlocks) {
  // Poison the cache of every complete old block: an incremental update must not read them.
  DecodeSpec spec;
  spec.seq_lens = {640};
  spec.seed = 702;
  auto data = test::make_decode(spec);
  data.pool(128);
  const std::vector<float> scratch = data.pooled;
  for (int64_t page = 0; page < 4; ++page) {  // blocks 0, 1 (pages 0-3) were complete before
    uint8_t* p = &data.kv_cache[size_t(data.block_table[size_t(page)] * page_bytes(64, 128))];
    std::memset(p, 0x7f, size_t(64 * 128));
  }
  std::vector<float> inc(scratch.size(), 0.0f);
  const int32_t old_len = 300, new_len = 640;
  update_pooled_keys(data.inputs(), &old_len, &new_len, 128, Pooling::Mean, inc.data(),
                     data.pooled_max_blocks);
  EXPECT_EQ(std::memcmp(&inc[2 * 128], &scratch[2 * 128], 3 * 128 * 4), 0);
}

// ---- Input errors ----

void expect_error(const std::function<void()>& fn, const std::string& part) {
  const std::string msg = error_message(fn);
  EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg;
}

TEST(CpuBackend, PrefillInputErrorsAreClear) {
  PrefillSpec spec;
  spec.seq_keys = {300, 200};
  spec.seq_queries = {10};
  auto data = test::make_prefill(spec);
  auto cpu = cpu_indexer();
  const SelectConfig cfg = small_config(Method::Hisa);
  auto run = [&](const PrefillInputs& in, const SelectConfig& c) {
    return [&cpu, in, c] { test::run_prefill(*cpu, in, c); };
  };
  PrefillInputs in = data.inputs();
  std::vector<int32_t> cu_q = data.cu_q;
  cu_q[2] = 25;
  in.cu_seqlens_q = cu_q.data();
  expect_error(run(in, cfg), "cu_seqlens_q[N] = 25");

  in = data.inputs();
  std::vector<int32_t> cu_k = {0, 5, 500};  // sequence 0: 10 queries, 5 keys
  in.cu_seqlens_k = cu_k.data();
  expect_error(run(in, cfg), "T_b = 10 queries but only S_b = 5 keys");

  // A decreasing entry is named, even where the total is wrong too.
  in = data.inputs();
  cu_k = {0, 400, 350};
  in.cu_seqlens_k = cu_k.data();
  expect_error(run(in, cfg), "cu_seqlens_k[2] = 350 < cu_seqlens_k[1] = 400");
  in = data.inputs();
  cu_q = {0, 12, 11};
  in.cu_seqlens_q = cu_q.data();
  expect_error(run(in, cfg), "cu_seqlens_q[2] = 11 < cu_seqlens_q[1] = 12");

  in = data.inputs();
  std::vector<float> w = data.w;
  w[3 * spec.num_heads + 2] = std::numeric_limits<float>::quiet_NaN();
  in.w = w.data();
  expect_error(run(in, cfg), "w has a non-finite value at row 3, head 2");

  expect_error(run(data.inputs(), make_config(Method::Hisa, 64, 4, 512)), "must be at least topk");
  expect_error(run(data.inputs(), make_config(Method::Block, 64, 2, 64)), "top_blocks (m = 2)");
  expect_error([&] { cpu->select_prefill(data.inputs(), cfg, {}); }, "out.indices must be given");
}

TEST(CpuBackend, DecodeInputErrorsAreClear) {
  DecodeSpec spec;
  spec.seq_lens = {700, 300};
  auto data = test::make_decode(spec);
  auto cpu = cpu_indexer();
  const SelectConfig cfg = small_config(Method::Hisa);
  auto run = [&](const DecodeInputs& in) {
    return [&cpu, in, cfg] { test::run_decode(*cpu, in, cfg); };
  };
  expect_error(run(data.inputs()), "needs pooled keys");
  data.pool(64);
  DecodeInputs in = data.inputs();
  in.pooled_max_blocks = 5;
  expect_error(run(in), "pooled_max_blocks = 5 but request 0 has 10 complete blocks");

  std::vector<int32_t> table = data.block_table;
  table[size_t(data.max_pages) + 2] = data.num_pages;
  in = data.inputs();
  in.block_table = table.data();
  expect_error(run(in),
               "block_table[1, 2] = " + std::to_string(data.num_pages) + " is out of range");

  // A NaN written into the cache where a flat scan reads it.
  std::vector<uint8_t> cache = data.kv_cache;
  cache[size_t(data.block_table[3] * page_bytes(64, 128) + 5 * 128 + 7)] = 0xff;
  in = data.inputs();
  in.kv_cache = cache.data();
  expect_error([&] { test::run_decode(*cpu, in, small_config(Method::Flat)); },
               "NaN fp8 value in request 0");
  in.batch = 1;  // a single group: the error comes from a nested task
  expect_error([&] { test::run_decode(*cpu, in, small_config(Method::Flat)); },
               "NaN fp8 value in request 0");

  in = data.inputs();
  in.next_n = 5;
  expect_error(run(in), "next_n must be in 1..4");

  const int32_t old_lens[] = {700, 300}, new_lens[] = {700, 200};
  expect_error(
      [&] {
        update_pooled_keys(data.inputs(), old_lens, new_lens, 64, Pooling::Mean, data.pooled.data(),
                           data.pooled_max_blocks);
      },
      "request 1 has old_lens = 300 > new_lens = 200");
}

// ---- Empty batches and inputs too large for fp32 sums ----

TEST(CpuBackend, EmptyBatchGivesEmptyOutputs) {
  PrefillSpec spec;
  spec.seq_keys = {300};
  spec.seq_queries = {4};
  auto data = test::make_prefill(spec);
  for (const char* device : {"reference", "cpu"}) {
    auto backend = make_indexer(device);
    for (Method m : kMethods) {
      SCOPED_TRACE(std::string(device) + " " + method_name(m));
      PrefillInputs in = data.inputs();
      in.num_q = 0;  // T = 0 rows: the outputs have no rows, so no pointers are needed
      std::vector<int32_t> cu_q = {0, 0}, cu_k = {0, 300};
      in.cu_seqlens_q = cu_q.data();
      in.cu_seqlens_k = cu_k.data();
      EXPECT_NO_THROW(backend->select_prefill(in, small_config(m), {}));
      in = data.inputs(true);  // ks/ke form
      in.num_q = 0;
      EXPECT_NO_THROW(backend->select_prefill(in, small_config(m), {}));
    }
  }
}

// Scales every value of an F32 case by 2^e: exact, so the sets stay those of the original case.
void scale_f32(std::vector<uint8_t>& bytes, float factor) {
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    float v;
    std::memcpy(&v, &bytes[i], 4);
    v *= factor;
    std::memcpy(&bytes[i], &v, 4);
  }
}

TEST(CpuBackend, InputsWhoseScoresOverflowFp32AreRefusedByEveryBackend) {
  PrefillSpec spec;
  spec.exact = true;
  spec.seq_keys = {700};
  spec.seq_queries = {12};
  spec.seed = 811;
  auto data = test::make_prefill(spec);
  // Large but representable: q and k times 2^40 keep every sum exact (bound about 1e29).
  scale_f32(data.q, 0x1p40f);
  scale_f32(data.k, 0x1p40f);
  for (Method m : kMethods) {
    const SelectConfig cfg = small_config(m);
    const auto sel = test::run_prefill(*cpu_indexer(), data.inputs(), cfg);
    EXPECT_EQ(test::judge_prefill(data.inputs(), cfg, sel, true), "") << method_name(m);
  }
  // One q value near FLT_MAX: fp32 dot products would overflow.
  const float huge = 3e38f;
  std::memcpy(&data.q[4 * 77], &huge, 4);
  for (const char* device : {"reference", "cpu"})
    for (Method m : kMethods)
      expect_error(
          [&] { test::run_prefill(*make_indexer(device), data.inputs(), small_config(m)); },
          "prefill: scores could overflow fp32: max|q| = 3e+38");
}

TEST(CpuBackend, DecodeScoresThatOverflowFp32AreRefused) {
  // The cache's scales are read where the keys are, not scanned up front: a scale near FLT_MAX
  // passes the input checks, and the cpu backend refuses the scores it makes.
  DecodeSpec spec;
  spec.seq_lens = {900, 500};
  spec.seed = 812;
  auto data = test::make_decode(spec);
  const int32_t page = data.block_table[2];  // request 0, tokens 128..191
  for (int i = 0; i < spec.page_size; ++i) {
    const float huge = 3e38f;
    std::memcpy(&data.kv_cache[size_t(page * page_bytes(spec.page_size, spec.head_dim) +
                                      spec.page_size * spec.head_dim + 4 * i)],
                &huge, 4);
  }
  data.pool(64);
  for (Method m : {Method::Flat, Method::Hisa})
    expect_error([&] { test::run_decode(*cpu_indexer(), data.inputs(), small_config(m)); },
                 "overflowed fp32");
}

// ---- Threads ----

TEST(CpuBackend, SmallCallsRunOnTheCallingThread) {
  // A thread team costs a time slice wherever another process holds a core: small calls run on
  // one thread, large ones on all.
  DecodeInputs in;
  in.num_heads = 64;
  in.head_dim = 128;
  in.batch = 1;
  const int32_t short_len[] = {1024}, long_lens[] = {131072, 131072, 131072, 131072};
  in.seq_lens = short_len;
  const SelectConfig flat = make_config(Method::Flat, 128, 64, 2048);
  const SelectConfig hisa = make_config(Method::Hisa, 128, 64, 2048);
  EXPECT_EQ(cpu::threads_for_work(cpu::decode_work(in, flat)), 1);
  EXPECT_EQ(cpu::threads_for_work(cpu::decode_work(in, hisa)), 1);
  // Rows with at most k candidates keep them all and score nothing, however many requests.
  const std::vector<int32_t> many_short(64, 2048);
  in.batch = 64;
  in.seq_lens = many_short.data();
  EXPECT_EQ(cpu::decode_work(in, flat), 0.0);
  EXPECT_EQ(cpu::threads_for_work(cpu::decode_work(in, flat)), 1);
  in.batch = 4;
  in.seq_lens = long_lens;
  EXPECT_EQ(cpu::threads_for_work(cpu::decode_work(in, flat)), omp_get_max_threads());
  EXPECT_EQ(cpu::threads_for_work(cpu::decode_work(in, hisa)), omp_get_max_threads());

  PrefillSpec spec;  // 8 heads
  spec.seq_keys = {1000};
  spec.seq_queries = {8};
  const auto data = test::make_prefill(spec);
  const PrefillInputs pin = data.inputs();
  EXPECT_EQ(cpu::threads_for_work(cpu::prefill_work(pin, flat, prefill_row_spans(pin))), 1);
  // The last 256 queries of a 16K-token prefill are large.
  PrefillInputs big = pin;
  const int32_t cu_q[] = {0, 256}, cu_k[] = {0, 16384};
  big.num_q = 256;
  big.num_k = 16384;
  big.cu_seqlens_q = cu_q;
  big.cu_seqlens_k = cu_k;
  EXPECT_EQ(cpu::threads_for_work(cpu::prefill_work(big, hisa, prefill_row_spans(big))),
            omp_get_max_threads());
}

// ---- Determinism ----

// Lowers the work threshold to 0 for a test's lifetime, so that small cases run the threaded paths.
struct ForceThreads {
  double saved = cpu::parallel_work();
  ForceThreads() { cpu::parallel_work() = 0; }
  ~ForceThreads() { cpu::parallel_work() = saved; }
};

TEST(CpuBackend, DeterministicAcrossRunsAndThreadCounts) {
  PrefillSpec spec;
  spec.dtype = DType::F8E4M3;
  spec.num_heads = 16;
  spec.seq_keys = {1500, 900};
  spec.seq_queries = {30};
  spec.seed = 801;
  const auto pre = test::make_prefill(spec);
  DecodeSpec dspec;
  dspec.seq_lens = {1500, 900, 1100};
  dspec.next_n = 2;
  dspec.seed = 802;
  auto dec = test::make_decode(dspec);
  dec.pool(64);
  auto cpu = cpu_indexer();
  const int threads = omp_get_max_threads();
  ForceThreads force;
  for (Method m : kMethods) {
    const SelectConfig cfg = small_config(m);
    omp_set_num_threads(2);
    const auto p2 = test::run_prefill(*cpu, pre.inputs(), cfg);
    const auto d2 = test::run_decode(*cpu, dec.inputs(), cfg);
    for (int rep = 0; rep < 3; ++rep) {
      EXPECT_EQ(test::run_prefill(*cpu, pre.inputs(), cfg).indices, p2.indices);
      EXPECT_EQ(test::run_decode(*cpu, dec.inputs(), cfg).indices, d2.indices);
    }
    omp_set_num_threads(1);
    const auto p1 = test::run_prefill(*cpu, pre.inputs(), cfg);
    const auto d1 = test::run_decode(*cpu, dec.inputs(), cfg);
    EXPECT_EQ(p1.indices, p2.indices) << method_name(m);
    EXPECT_EQ(p1.blocks, p2.blocks) << method_name(m);
    EXPECT_EQ(d1.indices, d2.indices) << method_name(m);
    EXPECT_EQ(d1.blocks, d2.blocks) << method_name(m);
  }
  omp_set_num_threads(threads);
}

TEST(CpuBackend, SingleGroupCallsSplitTheirScoringOverThreads) {
  // One decode request, or a prefill of at most 4 rows, is one group: its scoring is split into
  // tasks over the threads. Same output with 1 and 2 threads, and right.
  PrefillSpec spec;
  spec.dtype = DType::F8E4M3;
  spec.seq_keys = {5000};
  spec.seq_queries = {3};
  spec.seed = 803;
  const auto pre = test::make_prefill(spec);
  DecodeSpec dspec;
  dspec.seq_lens = {5000};
  dspec.seed = 804;
  auto dec = test::make_decode(dspec);
  dec.pool(64);
  auto cpu = cpu_indexer();
  const int threads = omp_get_max_threads();
  ForceThreads force;
  for (Method m : kMethods) {
    const SelectConfig cfg = small_config(m);
    omp_set_num_threads(2);
    const auto p2 = test::run_prefill(*cpu, pre.inputs(), cfg);
    const auto d2 = test::run_decode(*cpu, dec.inputs(), cfg);
    omp_set_num_threads(1);
    EXPECT_EQ(test::run_prefill(*cpu, pre.inputs(), cfg).indices, p2.indices) << method_name(m);
    EXPECT_EQ(test::run_decode(*cpu, dec.inputs(), cfg).indices, d2.indices) << method_name(m);
    EXPECT_EQ(test::judge_prefill(pre.inputs(), cfg, p2, false), "") << method_name(m);
    EXPECT_EQ(test::judge_decode(dec.inputs(), cfg, d2, false), "") << method_name(m);
  }
  omp_set_num_threads(threads);
}

// ---- Kernels ----

// The default kernel runs every test above; here the other one (AVX2 where AVX-512 is the default)
// is judged too, on exact and random cases.
TEST(CpuKernels, EveryKernelMatchesReference) {
  const cpu::Kernel initial = cpu::active_kernel();
  for (cpu::Kernel k : {cpu::Kernel::Avx2, cpu::Kernel::Avx512}) {
    if (error_message([&] { cpu::set_kernel(k); }) != "(no error)") continue;  // CPU lacks it
    SCOPED_TRACE(k == cpu::Kernel::Avx2 ? "avx2" : "avx512");
    for (bool exact : {true, false}) {
      PrefillSpec spec;
      spec.dtype = DType::BF16;
      spec.num_heads = 40;  // 2.5 chunks of 16 heads: the odd-chunk tail
      spec.exact = exact;
      spec.density = 0.1;
      spec.tie_rate = 0.3;
      spec.block_tie_rate = exact ? 0.3 : 0.0;
      spec.seq_keys = {1000, 611};
      spec.seq_queries = {13};
      spec.seed = 901;
      for (Method m : kMethods) expect_prefill_matches(spec, small_config(m));
      DecodeSpec dec;
      dec.exact = exact;
      dec.density = 0.1;
      dec.tie_rate = 0.3;
      dec.next_n = 3;
      dec.seq_lens = {900, 500};
      dec.seed = 902;
      expect_decode_matches(dec, small_config(Method::Hisa));
    }
  }
  cpu::set_kernel(initial);
}

TEST(CpuKernels, Fp8DequantisationIsExactForEveryCode) {
  std::vector<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[size_t(i)] = uint8_t(i);
  std::vector<float> out(256);
  EXPECT_TRUE(cpu::dequantize(DType::F8E4M3, codes.data(), out.data(), 256));  // holds 0x7f, 0xff
  for (int i = 0; i < 256; ++i) {
    if ((i & 0x7f) == 0x7f) continue;
    const float want = fp8e4m3_to_float(uint8_t(i));
    EXPECT_EQ(std::memcmp(&out[size_t(i)], &want, 4), 0)
        << "code " << i << ": " << out[size_t(i)] << " vs " << want;
  }
  codes.erase(codes.begin() + 0x7f);
  codes.pop_back();
  EXPECT_FALSE(cpu::dequantize(DType::F8E4M3, codes.data(), out.data(), 254));
}

TEST(CpuKernels, RankKeyOrdersScoreDescThenPositionAsc) {
  std::vector<uint64_t> keys = {cpu::rank_key(1.0f, 5),  cpu::rank_key(-0.0f, 0),
                                cpu::rank_key(0.0f, 1),  cpu::rank_key(1.0f, 2),
                                cpu::rank_key(-3.0f, 3), cpu::rank_key(2.0f, 9)};
  std::sort(keys.begin(), keys.end(),  // top_positions takes ranks in position order
            [](uint64_t a, uint64_t b) { return cpu::rank_pos(a) < cpu::rank_pos(b); });
  std::vector<uint64_t> scratch;
  std::vector<int32_t> out;
  cpu::top_positions(keys, 3, scratch, out);
  EXPECT_EQ(out, (std::vector<int32_t>{2, 5, 9}));
  cpu::top_positions(keys, 4, scratch, out);  // -0 and +0 tie: the lower position wins
  EXPECT_EQ(out, (std::vector<int32_t>{0, 2, 5, 9}));
  cpu::top_positions(keys, 10, scratch, out);
  EXPECT_EQ(out, (std::vector<int32_t>{0, 1, 2, 3, 5, 9}));
}

}  // namespace
}  // namespace hisa
