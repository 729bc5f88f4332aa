// GPU tests of the CUDA flat indexer against the float64 reference (SEMANTICS.md section 7):
// random inputs (judged with the row tolerance), exact small-integer inputs (identical sets, ties
// included), 20 bitwise-identical reruns, edge cases, decode, the stand-alone top-k, bad inputs.
// Every random test prints its seed. Skips itself where no GPU is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <tuple>
#include <vector>

#include "cuda_test_util.hpp"
#include "hisa/error.hpp"
#include "cuda/backend.hpp"
#include "hisa/indexer.hpp"

namespace hisa::testing {
namespace {

using cuda::Path;

// Overrides of the decode plan (cuda/backend.hpp), set by the tests of each way a split request
// ends: merge kernel, merge in the kernel, pair tail, helpers.
cuda::DecodeOverrides g_over;

// Options of the test calls: the path and split count under test, device-side value checks on.
cuda::Options test_options(Path path, int splits) {
  cuda::Options opt;
  opt.path = path;
  opt.splits = splits;
  opt.check_values = true;
  return opt;
}

std::vector<int32_t> run_prefill(const PrefillCase& c, int k, Path path, int splits = 0) {
  PrefillDev d(c);
  Dev<int32_t> out(size_t(c.T) * k);
  poison(out);
  cuda::Workspace ws;
  const cuda::Options opt = test_options(path, splits);
  SelectOutputs o;
  o.indices = out.data();
  cuda::select_prefill(d.in, flat(k), o, ws, nullptr, opt);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return out.to_host();
}

std::vector<int32_t> run_decode(const DecodeCase& c, int k, Path path, int splits = 0) {
  DecodeDev d(c);
  Dev<int32_t> out(c.seq_lens.size() * size_t(c.next_n) * k);
  poison(out);
  cuda::Workspace ws;
  const cuda::Options opt = test_options(path, splits);
  SelectOutputs o;
  o.indices = out.data();
  cuda::select_decode_with(d.in, flat(k), o, ws, nullptr, opt, g_over);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return out.to_host();
}

// Prefill: run `path`, judge every row (or a sample) against the reference.
void check_prefill(const std::vector<std::pair<int64_t, int64_t>>& seqs, int H, DType dt, int k,
                   Path path, bool exact, const std::string& name, int splits = 0,
                   bool kske = false, int64_t max_rows = 1 << 30) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  PrefillCase c = make_prefill(seqs, H, dt, seed, exact);
  c.use_kske = kske;
  const auto idx = run_prefill(c, k, path, splits);
  const auto rows = reference::prefill_rows(c.host());
  EXPECT_EQ(judge_rows(rows, flat(k), idx, dt, exact, max_rows), 0);
}

void check_decode(const std::vector<int>& lens, int next_n, int H, int k, Path path, bool exact,
                  const std::string& name, int splits = 0) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  const DecodeCase c = make_decode(lens, next_n, H, seed, exact);
  const auto idx = run_decode(c, k, path, splits);
  const auto rows = reference::decode_rows(c.host());
  EXPECT_EQ(judge_rows(rows, flat(k), idx, DType::F8E4M3, exact), 0);
}

// ------------------------------------------------------------------------ raw scores
// The first thing to look at when a selection test fails: the tensor-core scores (path Scores)
// and the CUDA-core ones (path Simt) against the float64 scores, element by element.
void check_scores(const std::vector<std::pair<int64_t, int64_t>>& seqs, int H, DType dt,
                  const std::string& name) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  const PrefillCase c = make_prefill(seqs, H, dt, seed, false);
  PrefillDev d(c);
  const auto rows = reference::prefill_rows(c.host());
  cuda::Workspace ws;
  for (Path path : {Path::Scores, Path::Simt}) {
    Dev<float> sc(size_t(c.T) * c.S);
    poison(sc);
    cuda::score_prefill(d.in, 0, c.T, sc.data(), c.S, path, ws);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = sc.to_host();
    double worst = 0;
    int shown = 0;
    int64_t bad = 0;
    for (int64_t t = 0; t < c.T; ++t) {
      const auto ref = reference::token_scores(rows[size_t(t)]);
      double mx = 1e-30;
      for (double v : ref) mx = std::max(mx, std::fabs(v));
      for (size_t p = 0; p < ref.size(); ++p) {
        const double err = std::fabs(double(got[size_t(t * c.S) + p]) - ref[p]) / mx;
        worst = std::max(worst, err);
        if (!(err <= 1e-3)) {
          ++bad;
          if (shown++ < 8)
            std::cout << "  " << cuda::path_name(path) << " mismatch row " << t << " pos " << p
                      << " (p%64 " << p % 64 << ", p%256 " << p % 256 << "): ref " << ref[p]
                      << " got " << got[size_t(t * c.S) + p] << "\n";
        }
      }
    }
    std::cout << "  " << name << " " << cuda::path_name(path)
              << ": max |err| / max|ref| = " << worst << ", " << bad << " bad entries\n";
    EXPECT_EQ(bad, 0) << cuda::path_name(path);
  }
}

TEST(CudaScores, TensorCoreAndSimtAgainstReference) {
  SKIP_WITHOUT_GPU();
  check_scores({{70, 300}}, 64, DType::F8E4M3, "scores_fp8_h64");
  check_scores({{33, 200}, {9, 9}}, 32, DType::F8E4M3, "scores_fp8_h32");
  check_scores({{40, 260}}, 64, DType::BF16, "scores_bf16_h64");
  check_scores({{21, 130}}, 32, DType::BF16, "scores_bf16_h32");
}

// ------------------------------------------------------------------------ prefill, random inputs

TEST(CudaPrefill, RandomFp8H64Fused) {
  SKIP_WITHOUT_GPU();
  check_prefill({{300, 300}}, 64, DType::F8E4M3, 64, Path::Fused, false, "fp8_h64_fused");
}
TEST(CudaPrefill, RandomFp8H32Fused) {
  SKIP_WITHOUT_GPU();
  check_prefill({{257, 700}}, 32, DType::F8E4M3, 100, Path::Fused, false, "fp8_h32_fused");
}
TEST(CudaPrefill, RandomBf16H64Fused) {
  SKIP_WITHOUT_GPU();
  check_prefill({{200, 600}}, 64, DType::BF16, 128, Path::Fused, false, "bf16_h64_fused");
}
TEST(CudaPrefill, RandomBf16H32Fused) {
  SKIP_WITHOUT_GPU();
  check_prefill({{131, 131}}, 32, DType::BF16, 50, Path::Fused, false, "bf16_h32_fused");
}
TEST(CudaPrefill, RandomSimtAndScoresPaths) {
  SKIP_WITHOUT_GPU();
  check_prefill({{150, 400}}, 64, DType::F8E4M3, 64, Path::Simt, false, "fp8_h64_simt");
  check_prefill({{150, 400}}, 64, DType::F8E4M3, 64, Path::Scores, false, "fp8_h64_scores");
  check_prefill({{90, 300}}, 32, DType::BF16, 70, Path::Scores, false, "bf16_h32_scores");
}
TEST(CudaPrefill, F32AndOddShapesTakeSimt) {
  SKIP_WITHOUT_GPU();
  check_prefill({{60, 200}}, 64, DType::F32, 32, Path::Auto, false, "f32_h64_auto");
  PrefillCase c = make_prefill({{10, 20}}, 16, DType::BF16, 7, false);
  EXPECT_EQ(cuda::chosen_path(c.host(), flat(8)), Path::Simt);
  check_prefill({{40, 90}}, 16, DType::BF16, 8, Path::Auto, false, "bf16_h16_auto");
}
TEST(CudaPrefill, RaggedSequencesWithPrefix) {
  SKIP_WITHOUT_GPU();
  // T_b < S_b (cached prefix), an empty sequence, a sequence shorter than k, odd lengths (key
  // starts that are not multiples of 4: the scales' TMA box needs an aligned start).
  const std::vector<std::pair<int64_t, int64_t>> seqs = {
      {37, 500}, {0, 21}, {64, 64}, {5, 40}, {101, 1030}};
  check_prefill(seqs, 64, DType::F8E4M3, 96, Path::Fused, false, "ragged_fp8_fused");
  check_prefill(seqs, 32, DType::BF16, 96, Path::Fused, false, "ragged_bf16_fused");
  check_prefill(seqs, 64, DType::F8E4M3, 96, Path::Fused, false, "ragged_fp8_kske", 0, true);
  check_prefill(seqs, 64, DType::F8E4M3, 96, Path::Simt, false, "ragged_fp8_simt");
}
TEST(CudaPrefill, LongRowsK2048Compaction) {
  SKIP_WITHOUT_GPU();
  // 9000 keys per row: the candidate lists fill and get cut several times.
  check_prefill({{64, 9000}}, 64, DType::F8E4M3, 2048, Path::Fused, false, "long_fp8_k2048", 0,
                false, 24);
  check_prefill({{32, 6000}}, 32, DType::BF16, 2048, Path::Fused, false, "long_bf16_k2048", 0,
                false, 16);
}
TEST(CudaPrefill, ManyCutsSmallK) {
  SKIP_WITHOUT_GPU();
  // k = 100 over 20000 keys: the lists are cut dozens of times per row.
  check_prefill({{10, 20000}}, 64, DType::F8E4M3, 100, Path::Fused, false, "many_cuts", 0, false,
                10);
  check_prefill({{10, 20000}}, 64, DType::F8E4M3, 100, Path::Fused, true, "many_cuts_exact", 0,
                false, 10);
}
TEST(CudaPrefill, SplitKeysAndMerge) {
  SKIP_WITHOUT_GPU();
  check_prefill({{6, 9000}}, 64, DType::F8E4M3, 512, Path::Fused, false, "split_auto");
  check_prefill({{6, 9000}}, 64, DType::F8E4M3, 512, Path::Fused, false, "split_5", 5);
  check_prefill({{3, 5000}}, 64, DType::F8E4M3, 2048, Path::Fused, false, "split_3_k2048", 3);
}
TEST(CudaPrefill, LargeKUsesScoresPath) {
  SKIP_WITHOUT_GPU();
  PrefillCase c = make_prefill({{4, 10}}, 64, DType::F8E4M3, 1, false);
  EXPECT_EQ(cuda::chosen_path(c.host(), flat(4096)), Path::Scores);
  check_prefill({{20, 9000}}, 64, DType::F8E4M3, 8192, Path::Auto, false, "k8192_auto", 0, false,
                6);
  check_prefill({{20, 5000}}, 64, DType::F8E4M3, 3000, Path::Simt, false, "k3000_simt", 0, false,
                6);
}

// ------------------------------------------------------------------------ prefill, exact inputs

TEST(CudaPrefill, ExactIntegerSetsFp8AndBf16) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::pair<int64_t, int64_t>> seqs = {{70, 400}, {33, 33}};
  for (DType dt : {DType::F8E4M3, DType::BF16}) {
    for (int H : {32, 64}) {
      for (Path path : {Path::Fused, Path::Scores, Path::Simt}) {
        const std::string name = std::string("exact_") + dtype_name(dt) + "_h" + std::to_string(H) +
                                 "_" + cuda::path_name(path);
        check_prefill(seqs, H, dt, 77, path, true, name);
      }
    }
  }
  // Exact with compaction (ties at the cut inside the candidate lists).
  check_prefill({{16, 5000}}, 64, DType::F8E4M3, 2048, Path::Fused, true, "exact_long_k2048", 0,
                false, 8);
  check_prefill({{4, 5000}}, 64, DType::F8E4M3, 1000, Path::Fused, true, "exact_split4", 4, false,
                4);
}

// ------------------------------------------------------------------------ determinism

TEST(CudaPrefill, TwentyBitwiseIdenticalReruns) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("reruns");
  std::cout << "[ seed ] reruns " << seed << "\n";
  const PrefillCase c = make_prefill({{256, 4096}, {128, 128}}, 64, DType::F8E4M3, seed, false);
  PrefillDev d(c);
  const int k = 1024;
  Dev<int32_t> out(size_t(c.T) * k);
  cuda::Workspace ws;
  SelectOutputs o;
  o.indices = out.data();
  std::vector<int32_t> first;
  for (int run = 0; run < 20; ++run) {
    poison(out);
    cuda::select_prefill(d.in, flat(k), o, ws);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = out.to_host();
    if (run == 0) first = got;
    ASSERT_TRUE(got == first) << "run " << run << " differs from run 0";
  }
  const DecodeCase dc = make_decode({5000, 3000, 70}, 2, 64, seed, false);
  DecodeDev dd(dc);
  Dev<int32_t> dout(6 * size_t(k));
  o.indices = dout.data();
  for (int run = 0; run < 20; ++run) {
    poison(dout);
    cuda::Options opt;
    opt.splits = 3;  // the merge must be deterministic too
    cuda::select_decode(dd.in, flat(k), o, ws, nullptr, opt);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = dout.to_host();
    if (run == 0) first = got;
    ASSERT_TRUE(got == first) << "decode run " << run << " differs from run 0";
  }
}

// ------------------------------------------------------------------------ edge cases

TEST(CudaPrefill, EdgeCases) {
  SKIP_WITHOUT_GPU();
  // S < k: every visible position, then -1.
  check_prefill({{10, 50}}, 64, DType::F8E4M3, 128, Path::Fused, false, "s_below_k");
  // e just above k for the last rows.
  check_prefill({{8, 260}}, 64, DType::F8E4M3, 256, Path::Fused, false, "e_just_above_k");
  check_prefill({{8, 2049 + 7}}, 64, DType::F8E4M3, 2048, Path::Fused, false, "e_k_plus_1");
  // k = 1 and one-row sequences.
  check_prefill({{1, 1}, {1, 7}, {3, 3}}, 64, DType::F8E4M3, 1, Path::Fused, false, "k1");
  // ks == ke (a row that sees nothing) via ks/ke.
  PrefillCase c = make_prefill({{4, 40}}, 64, DType::F8E4M3, 11, false);
  c.use_kske = true;
  c.ke[0] = c.ks[0];
  const auto idx = run_prefill(c, 16, Path::Fused);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(idx[size_t(i)], -1);
  EXPECT_EQ(judge_rows(reference::prefill_rows(c.host()), flat(16), idx, c.dtype, false), 0);
  // Keys without scales (k_scale nullptr means 1).
  PrefillCase u = make_prefill({{30, 100}}, 64, DType::BF16, 12, false);
  u.use_scale = false;
  EXPECT_EQ(judge_rows(reference::prefill_rows(u.host()), flat(20), run_prefill(u, 20, Path::Fused),
                       u.dtype, false),
            0);
}

// ------------------------------------------------------------------------ decode

TEST(CudaDecode, NextN1To4H32H64) {
  SKIP_WITHOUT_GPU();
  for (int H : {32, 64}) {
    for (int n = 1; n <= 4; ++n) {
      const std::string name = "decode_h" + std::to_string(H) + "_n" + std::to_string(n);
      check_decode({700, 64, 3000, 129}, n, H, 256, Path::Fused, false, name);
    }
  }
}
TEST(CudaDecode, SplitsAndK2048) {
  SKIP_WITHOUT_GPU();
  check_decode({9000, 4000}, 1, 64, 2048, Path::Fused, false, "decode_k2048_auto");
  check_decode({9000, 4000}, 2, 64, 2048, Path::Fused, false, "decode_k2048_split4", 4);
  check_decode({9000, 4000}, 1, 64, 2048, Path::Fused, false, "decode_k2048_split1", 1);
  check_decode({5000, 100, 2500}, 3, 64, 500, Path::Fused, false, "decode_split7", 7);
}
// More items than SMs: CTAs take several requests (the q stages are reused).
TEST(CudaDecode, ManyRequestsPerCta) {
  SKIP_WITHOUT_GPU();
  std::vector<int> many(300);
  for (size_t i = 0; i < many.size(); ++i) many[i] = 64 + int(i * 37 % 3000);
  check_decode(many, 1, 64, 512, Path::Fused, false, "decode_300_requests");
  check_decode(many, 1, 64, 256, Path::Fused, true, "decode_300_requests_exact", 2);
}
// 20 decode calls with `opt` on one workspace (k = 2048, three long requests): the first judged
// against the reference, every one bitwise equal to the first (per-launch state such as the
// arrival counters must return to zero).
void check_decode_reruns(const std::string& name, const cuda::Options& opt,
                         const cuda::DecodeOverrides& over) {
  const uint64_t seed = seed_for(name);
  SCOPED_TRACE(name + " seed " + std::to_string(seed));
  std::cout << "[ seed ] " << name << " " << seed << "\n";
  const DecodeCase dc = make_decode({30000, 12000, 4000}, 1, 64, seed, false);
  DecodeDev d(dc);
  Dev<int32_t> out(3 * size_t(2048));
  cuda::Workspace ws;
  SelectOutputs o;
  o.indices = out.data();
  std::vector<int32_t> first;
  for (int run = 0; run < 20; ++run) {
    poison(out);
    cuda::select_decode_with(d.in, flat(2048), o, ws, nullptr, opt, over);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = out.to_host();
    if (run == 0) {
      first = got;
      EXPECT_EQ(judge_rows(reference::decode_rows(dc.host()), flat(2048), got, DType::F8E4M3,
                           false),
                0);
    }
    ASSERT_TRUE(got == first) << "run " << run << " differs from run 0";
  }
}
// The split-K merge done by each request's last split in the fused kernel (the plan's
// merge_in_kernel): against the reference, bitwise equal to the merge kernel's output (the same
// cut over the same slots in the same order), 20 reruns on one workspace bitwise identical (the
// arrival counters return to zero), more items than SMs, and the shapes it does not take (the
// union over the candidate list) going to the merge kernel.
TEST(CudaDecode, MergeInKernel) {
  SKIP_WITHOUT_GPU();
  struct Case {
    std::vector<int> lens;
    int next_n, H, k, splits;
    bool exact;
    const char* name;
  };
  std::vector<int> many(300);
  for (size_t i = 0; i < many.size(); ++i) many[i] = 700 + int(i * 37 % 5000);
  const std::vector<Case> cases = {
      {{9000, 4000, 300}, 1, 64, 2048, 2, false, "mik_k2048_split2"},
      {{30000, 9000, 2500}, 1, 64, 2048, 3, false, "mik_k2048_split3"},
      {{20000, 3000}, 1, 64, 100, 8, true, "mik_exact_k100_split8"},
      {{12000, 5000}, 1, 32, 2048, 2, false, "mik_h32_k2048_split2"},
      {{6000, 2500, 900}, 2, 64, 256, 4, false, "mik_n2_k256_split4"},
      {{9000, 4000}, 1, 64, 2048, 4, false, "mik_too_long_for_the_list"},  // merge kernel
      {many, 1, 64, 512, 2, true, "mik_300_requests_exact"},
  };
  g_over = {};
  g_over.pair_tail = 0;  // the lists merged, not cut together by 2-CTA clusters
  for (const Case& c : cases) {
    const std::string name = c.name;
    const uint64_t seed = seed_for(name);
    SCOPED_TRACE(name + " seed " + std::to_string(seed));
    std::cout << "[ seed ] " << name << " " << seed << "\n";
    const DecodeCase dc = make_decode(c.lens, c.next_n, c.H, seed, c.exact);
    g_over.merge_in_kernel = 0;
    const auto by_kernel = run_decode(dc, c.k, Path::Fused, c.splits);
    g_over.merge_in_kernel = 1;
    const auto in_kernel = run_decode(dc, c.k, Path::Fused, c.splits);
    EXPECT_EQ(judge_rows(reference::decode_rows(dc.host()), flat(c.k), in_kernel, DType::F8E4M3,
                         c.exact),
              0);
    EXPECT_TRUE(in_kernel == by_kernel) << "differs from the merge kernel's output";
  }
  const cuda::DecodeOverrides mik = g_over;
  g_over = {};
  // Reruns on one workspace: the counters must be zero again after every launch.
  cuda::Options opt;
  opt.splits = 2;
  check_decode_reruns("mik_reruns", opt, mik);
}
// The pair tail (the plan's default for two splits): a request's two splits as one 2-CTA cluster
// that cuts the union of their lists together (digit counts exchanged through distributed shared
// memory, ties across the pair in position order). Against the reference, bitwise equal to the
// merge kernel's output, exact integer inputs with many ties, an empty second split, unions
// shorter than k, the helpers, 20 reruns bitwise identical; shapes it does not
// take (not two splits, more requests than SM pairs) go to the merge and stay correct.
TEST(CudaDecode, PairTail) {
  SKIP_WITHOUT_GPU();
  struct Case {
    std::vector<int> lens;
    int k, splits;
    bool exact;
    const char* name;
  };
  std::vector<int> many(60), too_many(100);
  for (size_t i = 0; i < many.size(); ++i) many[i] = 40 + int(i * 977 % 20000);
  for (size_t i = 0; i < too_many.size(); ++i) too_many[i] = 700 + int(i * 389 % 9000);
  const std::vector<Case> cases = {
      {{9000, 4000, 300}, 2048, 2, false, "pair_k2048"},
      {{30000, 9000, 2500}, 2048, 2, false, "pair_long_k2048"},
      {{20000, 3000}, 100, 2, true, "pair_exact_k100"},
      {{12000, 5000, 64}, 300, 2, true, "pair_exact_k300"},
      {{9000, 50, 1500}, 2048, 2, false, "pair_short_requests"},  // split 1 empty; unions < k
      {many, 512, 2, true, "pair_60_requests_exact"},
      {too_many, 256, 2, true, "pair_100_requests_merged"},  // > SMs / 2: the merge
      {{30000, 9000}, 2048, 3, false, "pair_three_splits_merged"},
  };
  for (const Case& c : cases) {
    const std::string name = c.name;
    const uint64_t seed = seed_for(name);
    SCOPED_TRACE(name + " seed " + std::to_string(seed));
    std::cout << "[ seed ] " << name << " " << seed << "\n";
    const DecodeCase dc = make_decode(c.lens, 1, 64, seed, c.exact);
    g_over = {};
    g_over.pair_tail = 0;
    g_over.merge_in_kernel = 0;
    const auto by_kernel = run_decode(dc, c.k, Path::Fused, c.splits);
    g_over = {};
    g_over.pair_tail = 1;
    const auto pair = run_decode(dc, c.k, Path::Fused, c.splits);
    EXPECT_EQ(judge_rows(reference::decode_rows(dc.host()), flat(c.k), pair, DType::F8E4M3,
                         c.exact),
              0);
    EXPECT_TRUE(pair == by_kernel) << "differs from the merge kernel's output";
    // The helpers (on by default where the pairs leave SMs idle): off, and with split 1's own
    // pages moved to split 0 (none left: only the helper's segment) or none moved. A weight of
    // 16 / 16, and 4 / 16 (short segments). (helpers 1000: as many as fit, also where the plan
    // finds the segments too short)
    for (const auto& [helpers, shift, weight] : std::vector<std::tuple<int, int, int>>{
             {0, -1, -1}, {1000, -1, -1}, {1000, 0, -1}, {1000, 100000, -1}, {2, -1, 16},
             {1000, -1, 4}}) {
      g_over.helpers = helpers, g_over.helper_shift = shift, g_over.helper_weight = weight;
      const auto h = run_decode(dc, c.k, Path::Fused, c.splits);
      EXPECT_TRUE(h == by_kernel) << "helpers " << helpers << ", shift " << shift << ", weight "
                                  << weight << ": differs from the merge kernel's output";
    }
  }
  g_over = {};
  cuda::Options opt;
  opt.splits = 2;
  cuda::DecodeOverrides pair;
  pair.pair_tail = 1;
  check_decode_reruns("pair_reruns", opt, pair);
  pair.helpers = 1000;
  check_decode_reruns("pair_helpers_reruns", opt, pair);
  // Two inputs in turn on one workspace: a helper flag left set by one call would let the next
  // call's split 1 read the segment before its helper wrote it (the other input's scores).
  const DecodeCase ca = make_decode({30000, 12000, 4000}, 1, 64, seed_for("helpers_a"), false);
  const DecodeCase cb = make_decode({30000, 12000, 4000}, 1, 64, seed_for("helpers_b"), false);
  DecodeDev da(ca), db(cb);
  Dev<int32_t> out(3 * size_t(2048));
  cuda::Workspace ws;
  SelectOutputs o;
  o.indices = out.data();
  std::vector<int32_t> first[2];
  for (int run = 0; run < 10; ++run) {
    poison(out);
    cuda::select_decode_with(run % 2 ? db.in : da.in, flat(2048), o, ws, nullptr, opt, pair);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = out.to_host();
    if (run < 2) {
      first[run] = got;
      EXPECT_EQ(judge_rows(reference::decode_rows((run ? cb : ca).host()), flat(2048), got,
                           DType::F8E4M3, false),
                0);
    }
    ASSERT_TRUE(got == first[run % 2]) << "alternating run " << run << " differs";
  }
}

// Long splits (several cuts per split), both decode CTAs, split and unsplit, random and exact
// integer inputs, reruns bitwise identical.
TEST(CudaDecode, LongSplitsAndReruns) {
  SKIP_WITHOUT_GPU();
  check_decode({30000, 9000, 2500}, 1, 64, 2048, Path::Fused, false, "decode_long_k2048", 1);
  check_decode({30000, 9000, 2500}, 1, 64, 2048, Path::Fused, false, "decode_long_split2", 2);
  check_decode({20000, 3000}, 1, 64, 100, Path::Fused, true, "decode_long_exact_k100", 1);
  check_decode({12000, 5000}, 2, 32, 256, Path::Fused, false, "decode_long_h32_n2", 1);
  check_decode({12000, 5000}, 1, 64, 300, Path::Fused, true, "decode_long_exact_k300", 2);
  const DecodeCase c = make_decode({30000, 12000}, 1, 64, seed_for("long_reruns"), false);
  const auto first = run_decode(c, 2048, Path::Fused, 1);
  for (int run = 1; run < 20; ++run)
    ASSERT_TRUE(run_decode(c, 2048, Path::Fused, 1) == first) << "run " << run << " differs";
}
TEST(CudaDecode, ExactAndSimt) {
  SKIP_WITHOUT_GPU();
  check_decode({900, 130, 64}, 2, 64, 200, Path::Fused, true, "decode_exact_fused");
  check_decode({900, 130, 64}, 2, 64, 200, Path::Fused, true, "decode_exact_split3", 3);
  check_decode({900, 130, 64}, 3, 32, 200, Path::Simt, true, "decode_exact_simt");
  check_decode({3000, 500}, 1, 64, 2500, Path::Auto, false, "decode_k2500_simt");
  // bf16 q against the fp8 cache: Simt.
  const DecodeCase c = make_decode({300, 200}, 2, 64, 5, false, DType::BF16);
  EXPECT_EQ(cuda::chosen_path(c.host(), flat(64)), Path::Simt);
  EXPECT_EQ(judge_rows(reference::decode_rows(c.host()), flat(64), run_decode(c, 64, Path::Auto),
                       DType::BF16, false),
            0);
}

// ------------------------------------------------------------------------ Indexer interface

TEST(CudaIndexer, HostInterfaceMatchesReference) {
  SKIP_WITHOUT_GPU();
  auto idx = make_indexer("cuda");
  EXPECT_EQ(idx->name(), "cuda");
  const PrefillCase c = make_prefill({{50, 300}, {20, 20}}, 64, DType::F8E4M3, 21, false);
  std::vector<int32_t> out(size_t(c.T) * 64);
  SelectOutputs o;
  o.indices = out.data();
  idx->select_prefill(c.host(), flat(64), o);
  EXPECT_EQ(judge_rows(reference::prefill_rows(c.host()), flat(64), out, c.dtype, false), 0);
  const DecodeCase dc = make_decode({500, 70}, 2, 32, 22, false);
  std::vector<int32_t> dout(4 * 64);
  o.indices = dout.data();
  idx->select_decode(dc.host(), flat(64), o);
  EXPECT_EQ(judge_rows(reference::decode_rows(dc.host()), flat(64), dout, DType::F8E4M3, false), 0);
}

// ------------------------------------------------------------------------ bad inputs

TEST(CudaBadInputs, DeviceChecksNameTheEntry) {
  SKIP_WITHOUT_GPU();
  cuda::Workspace ws;
  Dev<int32_t> out(64 * 64);
  SelectOutputs o;
  o.indices = out.data();
  {
    PrefillCase c = make_prefill({{10, 40}, {10, 40}}, 64, DType::F8E4M3, 3, false);
    c.cu_q[1] = 30;  // sequence 1 would have -10 queries
    PrefillDev d(c);
    const std::string e = error_of([&] { cuda::select_prefill(d.in, flat(8), o, ws); });
    EXPECT_NE(e.find("non-decreasing"), std::string::npos) << e;
  }
  {
    PrefillCase c = make_prefill({{10, 40}}, 64, DType::F8E4M3, 3, false);
    c.cu_q = {0, 50}, c.T = 50;  // more queries than keys
    c.q.resize(size_t(50) * 64 * 128), c.w.resize(size_t(50) * 64);
    PrefillDev d(c);
    const std::string e = error_of([&] { cuda::select_prefill(d.in, flat(8), o, ws); });
    EXPECT_NE(e.find("causality"), std::string::npos) << e;
  }
  {
    PrefillCase c = make_prefill({{10, 40}}, 64, DType::F8E4M3, 3, false);
    c.use_kske = true;
    c.ks[3] = 20, c.ke[3] = 10;
    PrefillDev d(c);
    const std::string e = error_of([&] { cuda::select_prefill(d.in, flat(8), o, ws); });
    EXPECT_NE(e.find("row 3 has ks/ke out of range"), std::string::npos) << e;
  }
  {
    PrefillCase c = make_prefill({{10, 40}}, 64, DType::BF16, 3, false);
    c.k_scale[5] = -1.0f;
    PrefillDev d(c);
    cuda::Options opt;
    opt.check_values = true;
    const std::string e =
        error_of([&] { cuda::select_prefill(d.in, flat(8), o, ws, nullptr, opt); });
    EXPECT_NE(e.find("scale"), std::string::npos) << e;
  }
  {
    DecodeCase c = make_decode({300, 100}, 1, 64, 4, false);
    c.block_table[size_t(c.max_pages) + 1] = c.num_pages + 5;
    DecodeDev d(c);
    const std::string e = error_of([&] { cuda::select_decode(d.in, flat(8), o, ws); });
    EXPECT_NE(e.find("block_table[1, 1] is out of range"), std::string::npos) << e;
  }
  {
    DecodeCase c = make_decode({300, 100}, 2, 64, 4, false);
    c.seq_lens[1] = 1;  // < next_n
    DecodeDev d(c);
    const std::string e = error_of([&] { cuda::select_decode(d.in, flat(8), o, ws); });
    EXPECT_NE(e.find("seq_lens[1]"), std::string::npos) << e;
  }
  {
    PrefillCase c = make_prefill({{10, 40}}, 64, DType::F32, 3, false);
    PrefillDev d(c);
    cuda::Options opt;
    opt.path = Path::Fused;
    const std::string e =
        error_of([&] { cuda::select_prefill(d.in, flat(8), o, ws, nullptr, opt); });
    EXPECT_NE(e.find("fused path needs"), std::string::npos) << e;
  }
  {
    PrefillCase c = make_prefill({{10, 40}}, 64, DType::F8E4M3, 3, false);
    PrefillDev d(c);
    SelectConfig cfg = flat(8);
    cfg.method = Method::Hisa;  // f32: the fused kernels do not take it, and hisa runs on them
    PrefillCase f = make_prefill({{10, 40}}, 64, DType::F32, 3, false);
    PrefillDev df(f);
    const std::string e = error_of([&] { cuda::select_prefill(df.in, cfg, o, ws); });
    EXPECT_NE(e.find("method hisa on the cuda backend needs fp8 or bf16"), std::string::npos)
        << e;
  }
}

// ------------------------------------------------------------------------ stand-alone top-k

TEST(CudaTopk, RowsWithTiesAndShortRows) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = seed_for("topk_rows");
  std::cout << "[ seed ] topk_rows " << seed << "\n";
  std::mt19937_64 rng(seed);
  for (int k : {1, 7, 256, 2048, 8192}) {
    const int64_t rows = 9, ld = 20000;
    std::vector<float> s(size_t(rows * ld));
    std::vector<int32_t> len(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      len[size_t(r)] = int32_t(r == 0 ? 3 : (r == 1 ? k : (r == 2 ? k + 1 : 1 + rng() % ld)));
      len[size_t(r)] = std::min<int32_t>(len[size_t(r)], int32_t(ld));
      for (int64_t i = 0; i < ld; ++i) {
        // Half the rows integer-valued (many exact ties, -0 and +0 among them), half Gaussian.
        s[size_t(r * ld + i)] = r % 2
                                    ? float(int(rng() % 21) - 10) * (rng() % 7 == 0 ? -0.0f : 1.0f)
                                    : float(std::normal_distribution<double>(0, 1)(rng));
      }
    }
    Dev<float> ds(s);
    Dev<int32_t> dl(len), out(size_t(rows) * k);
    poison(out);
    cuda::topk_rows(ds.data(), rows, ld, dl.data(), 0, k, out.data());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = out.to_host();
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int32_t> order(static_cast<size_t>(len[size_t(r)]));
      std::iota(order.begin(), order.end(), 0);
      const float* row = s.data() + r * ld;
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      order.resize(std::min<size_t>(order.size(), size_t(k)));
      std::sort(order.begin(), order.end());
      order.resize(size_t(k), -1);
      const std::vector<int32_t> g(got.begin() + r * k, got.begin() + (r + 1) * k);
      ASSERT_TRUE(g == order) << "k " << k << " row " << r << " (len " << len[size_t(r)] << ")";
    }
  }
}

}  // namespace
}  // namespace hisa::testing
