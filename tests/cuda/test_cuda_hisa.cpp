// GPU tests of HISA and block-sparse prefill against the float64 reference (SEMANTICS.md 4-7):
// the chosen blocks judged on block scores of the pooled keys rounded as the backend stores them
// (cuda::pooled_rounding), the tokens against the candidates of those blocks; random inputs (seed
// printed), exact small-integer inputs (identical sets, ties included), bitwise reruns, rows with
// J <= m equal to flat, both input forms, B in {64, 128, 256}, m * B up to 32768, H in {32, 64},
// fp8 and bf16, a 1M-token context on sampled rows. Skips itself where no GPU is visible.
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.hpp"
#include "hisa/error.hpp"
#include "hisa/indexer.hpp"

namespace hisa::testing {
namespace {

struct HisaOut {
  std::vector<int32_t> indices, blocks;
};

HisaOut run_hisa(const PrefillCase& c, const SelectConfig& cfg) {
  PrefillDev d(c);
  Dev<int32_t> out(size_t(c.T) * cfg.out_width()), blocks(size_t(c.T) * cfg.top_blocks);
  poison(out);
  poison(blocks);
  cuda::Workspace ws;
  cuda::Options opt;
  opt.check_values = true;
  SelectOutputs o{out.data(), blocks.data()};
  cuda::select_prefill(d.in, cfg, o, ws, nullptr, opt);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return {out.to_host(), blocks.to_host()};
}

// Exact-integer keys for HISA: every key of a block (aligned to its sequence's start) is the
// block's first key, with values in {0, +-1, +-2, +-4} and a +-4 in every key, unit scales. Then
// each pooled key is its block's key, its fp8 form (scale 4 / 448) is exact up to that one scale
// shared by every block, and the fp32 block scores order the blocks as the float64 ones do.
void make_blocky(PrefillCase& c, int B, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x5bd1e995u);
  const int D = c.D;
  static const float kValues[] = {0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 4.0f, -4.0f};
  std::vector<float> key(static_cast<size_t>(D));
  std::vector<float> kv(size_t(c.S) * D);
  for (size_t b = 0; b + 1 < c.cu_k.size(); ++b) {
    for (int64_t p = c.cu_k[b]; p < c.cu_k[b + 1]; ++p) {
      if ((p - c.cu_k[b]) % B == 0) {
        for (auto& x : key) x = kValues[rng() % 7];
        key[rng() % D] = rng() % 2 ? 4.0f : -4.0f;
      }
      std::copy(key.begin(), key.end(), kv.begin() + p * D);
    }
  }
  c.k = encode(c.dtype, kv);
  std::fill(c.k_scale.begin(), c.k_scale.end(), 1.0f);
}

// Runs cfg on the case and judges every row (or a sample of max_rows).
void check_hisa(const PrefillCase& c, const SelectConfig& cfg, bool exact,
                int64_t max_rows = 1 << 30) {
  const HisaOut got = run_hisa(c, cfg);
  const auto rows = reference::prefill_rows(c.host());
  EXPECT_EQ(judge_rows(rows, cfg, got.indices, c.dtype, exact, max_rows, &got.blocks,
                       cuda::pooled_rounding(c.dtype)),
            0);
}

void check_random(const std::vector<std::pair<int64_t, int64_t>>& seqs, int H, DType dt,
                  const SelectConfig& cfg, const std::string& name, bool kske = false,
                  int64_t max_rows = 1 << 30) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  PrefillCase c = make_prefill(seqs, H, dt, seed, false);
  c.use_kske = kske;
  check_hisa(c, cfg, false, max_rows);
}

void check_exact(const std::vector<std::pair<int64_t, int64_t>>& seqs, int H, DType dt,
                 const SelectConfig& cfg, const std::string& name, int64_t max_rows = 1 << 30) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  PrefillCase c = make_prefill(seqs, H, dt, seed, true);
  make_blocky(c, cfg.block_size, seed);
  check_hisa(c, cfg, true, max_rows);
}

// Ragged batches: a sequence shorter than one block, one with J <= m throughout, long ones with
// J > m, a cached prefix (T_b < S_b), odd lengths (a tile's two rows in different sequences).
const std::vector<std::pair<int64_t, int64_t>> kRagged = {
    {40, 40}, {301, 3000}, {0, 100}, {77, 9000}, {129, 1200}, {5, 7}};

TEST(CudaHisa, PooledKeysMatchTheReferenceRounding) {
  SKIP_WITHOUT_GPU();
  // One row that sees every block: with m = J every block is chosen and judged; with a small m
  // the chosen set is judged on the rounded block scores (a wrong rounding shows as wrong sets).
  for (DType dt : {DType::F8E4M3, DType::BF16})
    check_random({{1, 8192}, {1, 8192}}, 64, dt, hisa_cfg(64, 8, 256),
                 std::string("pooled_round_") + dtype_name(dt));
}

TEST(CudaHisa, RandomRaggedFp8H64) {
  SKIP_WITHOUT_GPU();
  for (int B : {64, 128, 256})
    check_random(kRagged, 64, DType::F8E4M3, hisa_cfg(B, 8, 512),
                 "hisa_fp8_h64_B" + std::to_string(B), false, 160);
}

TEST(CudaHisa, RandomRaggedBf16AndH32) {
  SKIP_WITHOUT_GPU();
  check_random(kRagged, 32, DType::F8E4M3, hisa_cfg(128, 8, 300), "hisa_fp8_h32", false, 120);
  check_random(kRagged, 64, DType::BF16, hisa_cfg(128, 8, 300), "hisa_bf16_h64", false, 120);
  check_random(kRagged, 32, DType::BF16, hisa_cfg(64, 12, 200), "hisa_bf16_h32", false, 120);
}

TEST(CudaHisa, BothKeyScaleConventions) {
  SKIP_WITHOUT_GPU();
  // fp8 keys with amax / 448 scales (the other tests) and with UE8M0 (power-of-two) scales.
  const std::string name = "hisa_ue8m0";
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  const PrefillCase c = make_prefill(kRagged, 64, DType::F8E4M3, seed, false, ScaleRule::UE8M0);
  check_hisa(c, hisa_cfg(128, 8, 512), false, 120);
}

TEST(CudaHisa, KsKeInputForm) {
  SKIP_WITHOUT_GPU();
  check_random(kRagged, 64, DType::F8E4M3, hisa_cfg(128, 8, 512), "hisa_kske", true, 120);
}

TEST(CudaHisa, DefaultsK2048AndLargeBudgets) {
  SKIP_WITHOUT_GPU();
  // The defaults (B = 128, m = 64, k = 2048) on rows past m * B, and m * B = 32768 (B = 64,
  // m = 512: the block stage picks 510 of up to 700 blocks).
  check_random({{48, 20000}}, 64, DType::F8E4M3, hisa_cfg(128, 64, 2048), "hisa_defaults", false,
               12);
  check_random({{8, 44800}}, 64, DType::F8E4M3, hisa_cfg(64, 512, 2048), "hisa_mB_32768", false,
               4);
  check_random({{16, 20000}}, 64, DType::F8E4M3, hisa_cfg(256, 32, 2048), "hisa_B256_m32", false,
               8);
}

TEST(CudaHisa, MillionTokenContextSampledRows) {
  SKIP_WITHOUT_GPU();
  // The last 64 queries of a 1M-token sequence (a cached prefix of 1M - 64 keys), the defaults:
  // 8192 blocks, 62 picked; 8 rows judged.
  check_random({{64, 1 << 20}}, 64, DType::F8E4M3, hisa_cfg(128, 64, 2048), "hisa_1M", false, 8);
}

TEST(CudaHisa, ExactIntegerSetsWithTies) {
  SKIP_WITHOUT_GPU();
  for (DType dt : {DType::F8E4M3, DType::BF16}) {
    for (int B : {64, 128}) {
      const std::string n = std::string("hisa_exact_") + dtype_name(dt) + "_B" + std::to_string(B);
      check_exact({{60, 2000}, {33, 33}, {17, 3500}}, 32, dt, hisa_cfg(B, 6, 256), n, 110);
    }
  }
  check_exact({{40, 6000}}, 64, DType::F8E4M3, hisa_cfg(64, 16, 700), "hisa_exact_h64", 40);
}

TEST(CudaHisa, RowsWithinMBlocksEqualFlat) {
  SKIP_WITHOUT_GPU();
  // Every row has J <= m: every visible block is chosen, and the token stage must return exactly
  // what the flat kernel returns (the same scores, bitwise, and the same cut).
  const uint64_t seed = seed_for("hisa_equals_flat");
  std::cout << "[ seed ] hisa_equals_flat " << seed << "\n";
  const PrefillCase c =
      make_prefill({{300, 2000}, {41, 41}, {7, 1500}}, 64, DType::F8E4M3, seed, false);
  const SelectConfig h = hisa_cfg(128, 16, 512);
  const HisaOut got = run_hisa(c, h);
  PrefillDev d(c);
  Dev<int32_t> out(size_t(c.T) * 512);
  cuda::Workspace ws;
  SelectOutputs o;
  o.indices = out.data();
  cuda::select_prefill(d.in, flat(512), o, ws);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(got.indices == out.to_host()) << "hisa with J <= m differs from flat";
}

TEST(CudaHisa, TwentyBitwiseIdenticalReruns) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("hisa_reruns");
  std::cout << "[ seed ] hisa_reruns " << seed << "\n";
  const PrefillCase c = make_prefill({{200, 6000}, {51, 900}}, 64, DType::F8E4M3, seed, false);
  PrefillDev d(c);
  const SelectConfig cfg = hisa_cfg(128, 12, 1024);
  Dev<int32_t> out(size_t(c.T) * cfg.topk), blocks(size_t(c.T) * cfg.top_blocks);
  cuda::Workspace ws;
  SelectOutputs o{out.data(), blocks.data()};
  std::vector<int32_t> first, first_blocks;
  for (int run = 0; run < 20; ++run) {
    poison(out);
    poison(blocks);
    cuda::select_prefill(d.in, cfg, o, ws);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = out.to_host(), gb = blocks.to_host();
    if (run == 0) first = got, first_blocks = gb;
    ASSERT_TRUE(got == first && gb == first_blocks) << "run " << run << " differs from run 0";
  }
}

TEST(CudaBlockSparse, RandomAndExact) {
  SKIP_WITHOUT_GPU();
  check_random(kRagged, 64, DType::F8E4M3, hisa_cfg(128, 8, 1024, Method::Block), "block_fp8",
               false, 160);
  check_random(kRagged, 32, DType::BF16, hisa_cfg(64, 10, 640, Method::Block), "block_bf16",
               false, 160);
  check_exact({{60, 2000}, {33, 33}}, 32, DType::F8E4M3, hisa_cfg(64, 6, 384, Method::Block),
              "block_exact", 93);
}

TEST(CudaHisa, HostInterfaceAndBlocksOutput) {
  SKIP_WITHOUT_GPU();
  auto idx = make_indexer("cuda");
  const PrefillCase c = make_prefill({{50, 3000}, {20, 20}}, 64, DType::F8E4M3, 31, false);
  const SelectConfig cfg = hisa_cfg(128, 6, 256);
  std::vector<int32_t> out(size_t(c.T) * cfg.topk), blocks(size_t(c.T) * cfg.top_blocks);
  idx->select_prefill(c.host(), cfg, {out.data(), blocks.data()});
  EXPECT_EQ(judge_rows(reference::prefill_rows(c.host()), cfg, out, c.dtype, false, 1 << 30,
                       &blocks, cuda::pooled_rounding(c.dtype)),
            0);
  // Without a blocks output (the backend keeps them in its workspace).
  std::vector<int32_t> out2(out.size());
  idx->select_prefill(c.host(), cfg, {out2.data(), nullptr});
  EXPECT_TRUE(out2 == out);
}

TEST(CudaHisa, GivenBlocksReuseAnotherLayersChoice) {
  SKIP_WITHOUT_GPU();
  // Layer 1 chooses blocks; layer 2 (same rows, its own q, k, w) takes them (cross-layer reuse):
  // its tokens are judged against the reference given the same blocks, out.blocks repeats them,
  // and a layer given its own choice returns its own selection bitwise.
  for (Method method : {Method::Hisa, Method::Block}) {
    const std::string name = std::string("given_") + method_name(method);
    const uint64_t seed = seed_for(name);
    SCOPED_TRACE(name + " seed " + std::to_string(seed));
    std::cout << "[ seed ] " << name << " " << seed << "\n";
    const SelectConfig cfg = hisa_cfg(128, 8, 512, method);
    const PrefillCase l1 = make_prefill(kRagged, 64, DType::F8E4M3, seed, false);
    const PrefillCase l2 = make_prefill(kRagged, 64, DType::F8E4M3, seed + 1, false);
    const HisaOut first = run_hisa(l1, cfg), own = run_hisa(l2, cfg);
    Dev<int32_t> given(first.blocks);
    PrefillDev d(l2);
    d.in.given_blocks = given.data();
    Dev<int32_t> out(size_t(l2.T) * cfg.out_width()), blocks(size_t(l2.T) * cfg.top_blocks);
    poison(out);
    poison(blocks);
    cuda::Workspace ws;
    cuda::select_prefill(d.in, cfg, {out.data(), blocks.data()}, ws);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = out.to_host(), got_blocks = blocks.to_host();
    EXPECT_TRUE(got_blocks == first.blocks) << "out.blocks does not repeat the given blocks";
    PrefillInputs h = l2.host();
    h.given_blocks = first.blocks.data();
    EXPECT_EQ(judge_rows(reference::prefill_rows(h, cfg.top_blocks), cfg, got, l2.dtype, false,
                         1 << 30, &got_blocks),
              0);
    // Given its own blocks, layer 2 selects what it selects on its own (no blocks output).
    Dev<int32_t> self(own.blocks), out2(size_t(l2.T) * cfg.out_width());
    d.in.given_blocks = self.data();
    SelectOutputs o2;
    o2.indices = out2.data();
    cuda::select_prefill(d.in, cfg, o2, ws);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(out2.to_host() == own.indices) << "given its own blocks, the layer differs";
  }
}

TEST(CudaHisa, GivenBlocksErrorsNameTheEntry) {
  SKIP_WITHOUT_GPU();
  const PrefillCase c = make_prefill({{4, 1000}}, 64, DType::F8E4M3, 5, false);
  const SelectConfig cfg = hisa_cfg(128, 4, 256);
  // Row 2 sees 999 positions (8 blocks): its list 0, 5, 3 does not ascend.
  std::vector<int32_t> bad = {0, 7, -1, -1, 0, 7, -1, -1, 0, 5, 3, -1, 0, 1, 2, 7};
  Dev<int32_t> given(bad), out(size_t(c.T) * cfg.topk);
  PrefillDev d(c);
  d.in.given_blocks = given.data();
  cuda::Workspace ws;
  SelectOutputs o;
  o.indices = out.data();
  const std::string e = error_of([&] { cuda::select_prefill(d.in, cfg, o, ws); });
  EXPECT_NE(e.find("given_blocks[2, 2] = 3 does not ascend"), std::string::npos) << e;
  // The host interface checks on the host, with the same message.
  auto idx = make_indexer("cuda");
  PrefillInputs h = c.host();
  h.given_blocks = bad.data();
  std::vector<int32_t> out_h(size_t(c.T) * cfg.topk);
  EXPECT_EQ(error_of([&] { idx->select_prefill(h, cfg, {out_h.data(), nullptr}); }), e);
  // Past the row's blocks: row 0 sees 997 positions, 8 blocks.
  bad[1] = 8;
  given.assign(bad);
  EXPECT_NE(error_of([&] { cuda::select_prefill(d.in, cfg, o, ws); })
                .find("given_blocks[0, 1] = 8 is past the row's 8 eligible blocks"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cuda::select_prefill(d.in, flat(256), o, ws); })
                .find("given_blocks is for methods hisa and block"),
            std::string::npos);
}

TEST(CudaHisa, ShapesOffTheFusedPathAreClearErrors) {
  SKIP_WITHOUT_GPU();
  cuda::Workspace ws;
  Dev<int32_t> out(64 * 4096);
  SelectOutputs o;
  o.indices = out.data();
  const PrefillCase c = make_prefill({{10, 400}}, 64, DType::F8E4M3, 3, false);
  PrefillDev d(c);
  SelectConfig big = hisa_cfg(128, 64, 4096);
  EXPECT_NE(error_of([&] { cuda::select_prefill(d.in, big, o, ws); }).find("takes k <= 2048"),
            std::string::npos);
  SelectConfig maxpool = hisa_cfg(128, 8, 256);
  maxpool.pooling = Pooling::Max;
  EXPECT_NE(error_of([&] { cuda::select_prefill(d.in, maxpool, o, ws); }).find("mean"),
            std::string::npos);
  cuda::Options simt;
  simt.path = cuda::Path::Simt;
  EXPECT_NE(error_of([&] { cuda::select_prefill(d.in, hisa_cfg(128, 8, 256), o, ws, nullptr,
                                                simt); })
                .find("runs on the fused path only"),
            std::string::npos);
}

}  // namespace
}  // namespace hisa::testing
