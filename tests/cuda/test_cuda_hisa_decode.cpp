// GPU tests of HISA and block-sparse decode from the paged cache against the float64 reference
// (SEMANTICS.md 4-7): the device pooled cache (update_pooled_cache) against the reference's
// rounding, random batches with next_n 1 to 4 and shuffled pages (seed printed), exact
// small-integer sets with ties, rows with J <= m equal to flat, bitwise reruns, a multi-step loop
// (keys appended, pooled cache updated, selection judged every step), a captured CUDA graph
// replayed as the cache changes, and clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda_test_util.hpp"
#include "hisa/error.hpp"
#include "hisa/indexer.hpp"

namespace hisa::testing {
namespace {

// The device pooled cache of a decode case.
struct PooledDev {
  Dev<uint8_t> keys;
  Dev<float> scales;
  cuda::PooledCache pc;
  PooledDev(const DecodeCase& c, int B)
      : keys(c.seq_lens.size() * size_t((c.max_pages * 64 + B - 1) / B) * 128),
        scales(c.seq_lens.size() * size_t((c.max_pages * 64 + B - 1) / B)) {
    keys.fill_bytes(0x5A);
    scales.fill_bytes(0x5A);
    pc.keys = keys.data(), pc.scales = scales.data();
    pc.batch = int(c.seq_lens.size());
    pc.max_blocks = (c.max_pages * 64 + B - 1) / B;
    pc.block_size = B;
  }
};

struct DecodeOut {
  std::vector<int32_t> indices, blocks;
};

DecodeOut run(const DecodeDev& d, const PooledDev& pd, const SelectConfig& cfg,
              cuda::Workspace& ws) {
  const size_t rows = size_t(d.in.batch) * d.in.next_n;
  Dev<int32_t> out(rows * cfg.out_width()), blocks(rows * cfg.top_blocks);
  poison(out);
  poison(blocks);
  cuda::Options opt;
  opt.check_values = true;
  cuda::select_decode(d.in, cfg, {out.data(), blocks.data()}, ws, nullptr, opt, &pd.pc);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return {out.to_host(), blocks.to_host()};
}

// Pools the case from scratch and selects.
DecodeOut run_case(const DecodeCase& c, const SelectConfig& cfg) {
  DecodeDev d(c);
  PooledDev pd(c, cfg.block_size);
  cuda::update_pooled_cache(d.in, nullptr, d.in.seq_lens, pd.pc);
  cuda::Workspace ws;
  return run(d, pd, cfg, ws);
}

void check_case(const DecodeCase& c, const SelectConfig& cfg, bool exact,
                int64_t max_rows = 1 << 30) {
  const DecodeOut got = run_case(c, cfg);
  EXPECT_EQ(judge_rows(reference::decode_rows(c.host()), cfg, got.indices, c.q_dtype, exact,
                       max_rows, &got.blocks, PooledRounding::Fp8Block),
            0);
}

// Exact-integer keys: every token of a block holds the block's key (values in {0, +-1, +-2,
// +-4}, one +-4), scale 1, so each pooled key is exact in fp8 up to the scale all blocks share.
void make_blocky(DecodeCase& c, int B, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x9e3779b9u);
  static const float kValues[] = {0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 4.0f, -4.0f};
  std::vector<uint8_t> key(128);
  const float one = 1.0f;
  for (size_t b = 0; b < c.seq_lens.size(); ++b) {
    for (int p = 0; p < c.seq_lens[b]; ++p) {
      if (p % B == 0) {
        for (auto& x : key) x = float_to_fp8e4m3(kValues[rng() % 7]);
        key[rng() % 128] = float_to_fp8e4m3(rng() % 2 ? 4.0f : -4.0f);
      }
      const int page = c.block_table[b * size_t(c.max_pages) + size_t(p / 64)];
      uint8_t* base = c.cache.data() + size_t(page) * page_bytes(64, 128);
      std::memcpy(base + size_t(p % 64) * 128, key.data(), 128);
      std::memcpy(base + 64 * 128 + size_t(p % 64) * 4, &one, 4);
    }
  }
}

void check_random(const std::vector<int>& lens, int next_n, int H, const SelectConfig& cfg,
                  const std::string& name, int64_t max_rows = 1 << 30) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  check_case(make_decode(lens, next_n, H, seed, false), cfg, false, max_rows);
}

// Requests shorter than one block, with J <= m, far past m * B, odd lengths.
const std::vector<int> kLens = {40, 3000, 130, 9000, 1200, 257, 5000};

TEST(CudaHisaDecode, RandomNextN1To4) {
  SKIP_WITHOUT_GPU();
  for (int nn = 1; nn <= 4; ++nn)
    check_random(kLens, nn, 64, hisa_cfg(128, 8, 512), "hisa_dec_n" + std::to_string(nn));
  check_random(kLens, 2, 32, hisa_cfg(128, 8, 512), "hisa_dec_h32");
}

TEST(CudaHisaDecode, BlockSizes64And256) {
  SKIP_WITHOUT_GPU();
  check_random(kLens, 1, 64, hisa_cfg(64, 12, 400), "hisa_dec_B64");
  check_random(kLens, 3, 64, hisa_cfg(256, 6, 700), "hisa_dec_B256");
}

TEST(CudaHisaDecode, DefaultsOnLongRequests) {
  SKIP_WITHOUT_GPU();
  check_random({20000, 9000, 33000}, 1, 64, hisa_cfg(128, 64, 2048), "hisa_dec_defaults");
  check_random({44800, 700}, 2, 64, hisa_cfg(64, 512, 2048), "hisa_dec_mB_32768");
}

TEST(CudaHisaDecode, ExactIntegerSetsWithTies) {
  SKIP_WITHOUT_GPU();
  for (int B : {64, 128}) {
    const std::string name = "hisa_dec_exact_B" + std::to_string(B);
    const uint64_t seed = seed_for(name);
    SCOPED_TRACE(name + " seed " + std::to_string(seed));
    std::cout << "[ seed ] " << name << " " << seed << "\n";
    DecodeCase c = make_decode({2000, 33, 3500, 700}, 2, 32, seed, true);
    make_blocky(c, B, seed);
    check_case(c, hisa_cfg(B, 6, 256), true);
  }
}

TEST(CudaHisaDecode, BlockSparse) {
  SKIP_WITHOUT_GPU();
  check_random(kLens, 1, 64, hisa_cfg(128, 8, 1024, Method::Block), "block_dec");
  check_random(kLens, 4, 64, hisa_cfg(64, 10, 640, Method::Block), "block_dec_n4");
}

TEST(CudaHisaDecode, RowsWithinMBlocksEqualFlat) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("hisa_dec_equals_flat");
  std::cout << "[ seed ] hisa_dec_equals_flat " << seed << "\n";
  const DecodeCase c = make_decode({2000, 41, 1500, 64, 65}, 2, 64, seed, false);
  const DecodeOut got = run_case(c, hisa_cfg(128, 16, 512));
  DecodeDev d(c);
  Dev<int32_t> out(c.seq_lens.size() * 2 * 512);
  cuda::Workspace ws;
  SelectOutputs o;
  o.indices = out.data();
  cuda::select_decode(d.in, flat(512), o, ws);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(got.indices == out.to_host()) << "hisa decode with J <= m differs from flat";
}

TEST(CudaHisaDecode, BitwiseIdenticalReruns) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("hisa_dec_reruns");
  std::cout << "[ seed ] hisa_dec_reruns " << seed << "\n";
  const DecodeCase c = make_decode(kLens, 2, 64, seed, false);
  DecodeDev d(c);
  PooledDev pd(c, 128);
  cuda::update_pooled_cache(d.in, nullptr, d.in.seq_lens, pd.pc);
  cuda::Workspace ws;
  const DecodeOut first = run(d, pd, hisa_cfg(128, 8, 1024), ws);
  for (int r = 1; r < 10; ++r) {
    const DecodeOut again = run(d, pd, hisa_cfg(128, 8, 1024), ws);
    ASSERT_TRUE(again.indices == first.indices && again.blocks == first.blocks)
        << "call " << r << " differs from the first call";
  }
}

// Keys appended step by step (the cache holds them already; seq_lens grows), the pooled cache
// updated for the blocks each step completes only, the pooled keys and every step's selection
// judged against the reference.
TEST(CudaHisaDecode, MultiStepAppendUpdateSelect) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("hisa_dec_steps");
  std::cout << "[ seed ] hisa_dec_steps " << seed << "\n";
  const int B = 64, steps = 6, grow = 23;  // steps cross block boundaries
  DecodeCase c = make_decode({1000 + steps * grow, 250 + steps * grow, 4000 + steps * grow}, 1, 64,
                             seed, false);
  std::vector<int32_t> lens = {1000, 250, 4000};
  c.seq_lens = lens;
  DecodeDev d(c);
  PooledDev pd(c, B);
  Dev<int32_t> old_lens(lens), new_lens(lens);
  cuda::update_pooled_cache(d.in, nullptr, new_lens.data(), pd.pc);
  cuda::Workspace ws;
  const SelectConfig cfg = hisa_cfg(B, 8, 300);
  for (int s = 0; s <= steps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    if (s > 0) {
      old_lens.assign(lens);
      for (auto& n : lens) n += grow;
      new_lens.assign(lens);
      cuda::update_pooled_cache(d.in, old_lens.data(), new_lens.data(), pd.pc);
      c.seq_lens = lens;
      d.seq_lens.assign(lens);
    }
    const DecodeOut got = run(d, pd, cfg, ws);
    const auto rows = reference::decode_rows(c.host());
    EXPECT_EQ(judge_rows(rows, cfg, got.indices, c.q_dtype, false, 1 << 30, &got.blocks,
                         PooledRounding::Fp8Block),
              0);
    // The pooled cache holds exactly the reference's rounding of every complete block.
    const auto keys = pd.keys.to_host();
    const auto scales = pd.scales.to_host();
    for (size_t b = 0; b < lens.size(); ++b) {
      for (int j = 0; j < lens[b] / B; ++j) {
        const auto want =
            reference::pooled_key(rows[b], j, B, Pooling::Mean, PooledRounding::Fp8Block);
        const size_t slot = b * size_t(pd.pc.max_blocks) + size_t(j);
        for (int dd = 0; dd < 128; ++dd) {
          const double have =
              double(fp8e4m3_to_float(keys[slot * 128 + size_t(dd)])) * double(scales[slot]);
          ASSERT_EQ(have, want[size_t(dd)]) << "request " << b << " block " << j << " dim " << dd;
        }
      }
    }
  }
}

// CUDA-graph capture (SEMANTICS.md: a decode step that an engine captures once): one graph of
// the pooled update, HISA decode and flat decode on a stream, captured after one eager call has
// sized the workspaces (validate off: the device checks synchronise), then replayed while the
// cache grows, new keys land in it, seq_lens change and q / w are new every step. Every replay
// is judged against the reference, and the workspaces do not grow during capture or replay.
TEST(CudaHisaDecode, CapturedGraphReplaysAsTheCacheChanges) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("hisa_dec_graph");
  std::cout << "[ seed ] hisa_dec_graph " << seed << "\n";
  std::mt19937_64 rng(seed);
  const int B = 64, steps = 5, grow = 37, next_n = 2;
  std::vector<int32_t> lens = {900, 200, 3000, 64};
  std::vector<int> last;
  for (int n : lens) last.push_back(n + steps * grow);
  DecodeCase c = make_decode(last, next_n, 64, seed, false);
  c.seq_lens = lens;
  DecodeDev d(c);
  PooledDev pd(c, B);
  Dev<int32_t> old_lens(lens), new_lens(lens);
  cuda::update_pooled_cache(d.in, nullptr, new_lens.data(), pd.pc);
  const SelectConfig hcfg = hisa_cfg(B, 8, 300), fcfg = flat(300);
  const size_t rows = lens.size() * size_t(next_n);
  Dev<int32_t> out_h(rows * size_t(hcfg.out_width())), blocks(rows * size_t(hcfg.top_blocks)),
      out_f(rows * size_t(fcfg.out_width()));
  cuda::Workspace ws_h, ws_f;
  ws_h.set_keep_grown(true);
  ws_f.set_keep_grown(true);
  cuda::Options opt;
  opt.validate = false;
  cudaStream_t st = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), cudaSuccess);
  const auto step = [&] {
    cuda::update_pooled_cache(d.in, old_lens.data(), new_lens.data(), pd.pc, st);
    cuda::select_decode(d.in, hcfg, {out_h.data(), blocks.data()}, ws_h, st, opt, &pd.pc);
    cuda::select_decode(d.in, fcfg, {out_f.data(), nullptr}, ws_f, st, opt);
  };
  step();  // eager: sizes the workspaces (old == new lengths: nothing new to pool)
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  const size_t bytes_h = ws_h.bytes(), bytes_f = ws_f.bytes();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal), cudaSuccess);
  step();
  ASSERT_EQ(cudaStreamEndCapture(st, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  std::vector<float> row(128);
  for (int s = 0; s <= steps; ++s) {
    SCOPED_TRACE("replay " + std::to_string(s));
    old_lens.assign(lens);
    if (s > 0) {
      // New keys at the positions the step appends, new queries and weights.
      for (size_t b = 0; b < lens.size(); ++b) {
        for (int p = lens[b]; p < lens[b] + grow; ++p) {
          const int page = c.block_table[b * size_t(c.max_pages) + size_t(p / 64)];
          uint8_t* base = c.cache.data() + size_t(page) * page_bytes(64, 128);
          for (auto& x : row) x = draw(rng, false) * 3.0f;
          float scale = 1.0f;
          quantize_fp8_rows(row.data(), 1, 128, ScaleRule::UE8M0, base + size_t(p % 64) * 128,
                            &scale);
          std::memcpy(base + 64 * 128 + size_t(p % 64) * 4, &scale, 4);
        }
        lens[b] += grow;
      }
      const DecodeCase fresh = make_decode(last, next_n, 64, seed + uint64_t(s), false);
      c.q = fresh.q, c.w = fresh.w, c.seq_lens = lens;
      d.cache.assign(c.cache), d.q.assign(c.q), d.w.assign(c.w), d.seq_lens.assign(lens);
    }
    new_lens.assign(lens);
    poison(out_h), poison(blocks), poison(out_f);
    ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    const auto ref = reference::decode_rows(c.host());
    const std::vector<int32_t> chosen = blocks.to_host();
    EXPECT_EQ(judge_rows(ref, hcfg, out_h.to_host(), c.q_dtype, false, 1 << 30, &chosen,
                         PooledRounding::Fp8Block),
              0)
        << "hisa";
    EXPECT_EQ(judge_rows(ref, fcfg, out_f.to_host(), c.q_dtype, false), 0) << "flat";
  }
  EXPECT_EQ(ws_h.bytes(), bytes_h);
  EXPECT_EQ(ws_f.bytes(), bytes_f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(st);
}

TEST(CudaHisaDecode, HostInterfaceMatchesReference) {
  SKIP_WITHOUT_GPU();
  auto idx = make_indexer("cuda");
  const DecodeCase c = make_decode({500, 70, 3000}, 2, 64, 23, false);
  for (Method m : {Method::Hisa, Method::Block}) {
    const SelectConfig cfg = hisa_cfg(128, 6, 256, m);
    const size_t rows = c.seq_lens.size() * 2;
    std::vector<int32_t> out(rows * cfg.out_width()), blocks(rows * cfg.top_blocks);
    idx->select_decode(c.host(), cfg, {out.data(), blocks.data()});
    EXPECT_EQ(judge_rows(reference::decode_rows(c.host()), cfg, out, c.q_dtype, false, 1 << 30,
                         &blocks, PooledRounding::Fp8Block),
              0)
        << method_name(m);
  }
}

TEST(CudaHisaDecode, GivenBlocksReuseAnotherLayersChoice) {
  SKIP_WITHOUT_GPU();
  // Layer 1 chooses blocks from its pooled cache; layer 2 (its own cache and queries) takes them
  // without a pooled cache: its tokens are judged against the reference given the same blocks,
  // and out.blocks repeats them.
  for (int next_n : {1, 2}) {
    for (Method method : {Method::Hisa, Method::Block}) {
      const std::string name =
          std::string("given_decode_") + method_name(method) + "_n" + std::to_string(next_n);
      const uint64_t seed = seed_for(name);
      SCOPED_TRACE(name + " seed " + std::to_string(seed));
      std::cout << "[ seed ] " << name << " " << seed << "\n";
      const SelectConfig cfg = hisa_cfg(128, 8, 512, method);
      const DecodeCase l1 = make_decode(kLens, next_n, 64, seed, false);
      const DecodeCase l2 = make_decode(kLens, next_n, 64, seed + 1, false);
      const DecodeOut first = run_case(l1, cfg);
      Dev<int32_t> given(first.blocks);
      DecodeDev d(l2);
      d.in.given_blocks = given.data();
      const size_t rows = kLens.size() * size_t(next_n);
      Dev<int32_t> out(rows * cfg.out_width()), blocks(rows * cfg.top_blocks);
      poison(out);
      poison(blocks);
      cuda::Workspace ws;
      cuda::select_decode(d.in, cfg, {out.data(), blocks.data()}, ws, nullptr, {}, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto got = out.to_host(), got_blocks = blocks.to_host();
      EXPECT_TRUE(got_blocks == first.blocks) << "out.blocks does not repeat the given blocks";
      DecodeInputs h = l2.host();
      h.given_blocks = first.blocks.data();
      EXPECT_EQ(judge_rows(reference::decode_rows(h, cfg.top_blocks), cfg, got, l2.q_dtype, false,
                           1 << 30, &got_blocks),
                0);
      // A bad list is named, with the message of the host checks (row next_n: the first row of
      // request 1, 3000 positions, all 8 entries blocks).
      std::vector<int32_t> bad = first.blocks;
      bad[size_t(next_n) * cfg.top_blocks + 1] = 1 << 20;
      given.assign(bad);
      const std::string e = error_of([&] {
        cuda::select_decode(d.in, cfg, {out.data(), nullptr}, ws, nullptr, {}, nullptr);
      });
      EXPECT_NE(e.find("given_blocks[" + std::to_string(next_n) + ", 1] = 1048576 is past the row's"),
                std::string::npos)
          << e;
    }
  }
}

TEST(CudaHisaDecode, ClearErrors) {
  SKIP_WITHOUT_GPU();
  const DecodeCase c = make_decode({500, 3000}, 1, 64, 5, false);
  DecodeDev d(c);
  PooledDev pd(c, 128);
  cuda::Workspace ws;
  Dev<int32_t> out(2 * 2048);
  SelectOutputs o;
  o.indices = out.data();
  const SelectConfig cfg = hisa_cfg(128, 8, 256);
  EXPECT_NE(error_of([&] { cuda::select_decode(d.in, cfg, o, ws); }).find("pooled cache"),
            std::string::npos);
  cuda::PooledCache wrong_b = pd.pc;
  wrong_b.block_size = 64;
  EXPECT_NE(error_of([&] {
              cuda::select_decode(d.in, cfg, o, ws, nullptr, {}, &wrong_b);
            }).find("blocks of 64 tokens"),
            std::string::npos);
  cuda::PooledCache small = pd.pc;
  small.max_blocks = 2;
  EXPECT_NE(error_of([&] {
              cuda::select_decode(d.in, cfg, o, ws, nullptr, {}, &small);
            }).find("does not cover the block table"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              cuda::update_pooled_cache(d.in, nullptr, d.in.seq_lens, small);
            }).find("does not cover the block table"),
            std::string::npos);
  cuda::Options simt;
  simt.path = cuda::Path::Simt;
  EXPECT_NE(error_of([&] {
              cuda::select_decode(d.in, cfg, o, ws, nullptr, simt, &pd.pc);
            }).find("runs on the fused path only"),
            std::string::npos);
  // A block-table entry out of range is named by the device checks.
  DecodeCase bad = c;
  bad.block_table[1] = bad.num_pages + 4;
  DecodeDev db(bad);
  EXPECT_NE(error_of([&] {
              cuda::select_decode(db.in, cfg, o, ws, nullptr, {}, &pd.pc);
            }).find("block_table[0, 1]"),
            std::string::npos);
}

}  // namespace
}  // namespace hisa::testing
