// The `hisa` command, run as a user would: exit codes, messages, files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "hisa/indexer.hpp"
#include "hisa/io.hpp"
#include "hisa/reference.hpp"
#include "hisa/workloads.hpp"
#include "testing.hpp"

namespace hisa {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int code;
  std::string out;  // stdout and stderr together
};

// env: variable assignments for env(1), e.g. "OMP_WAIT_POLICY=active".
CliRun hisa_cli(const std::string& args, const std::string& env = "") {
  const std::string cmd = "env " + env + " " + std::string(HISA_CLI_PATH) + " " + args + " 2>&1";
  CliRun r{0, ""};
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("hisa_cli_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// An exact case: small-integer q, k and w in F32, so every backend must return identical sets.
Case exact_case(int64_t S, int64_t T, int H, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> small(-2, 2), weight(-1, 3);
  Case c;
  c.q = Tensor(DType::F32, {T, H, 64});
  c.k = Tensor(DType::F32, {S, 64});
  c.w = Tensor(DType::F32, {T, H});
  for (int64_t i = 0; i < c.q.numel(); ++i) c.q.data<float>()[i] = float(small(rng));
  for (int64_t i = 0; i < c.k.numel(); ++i) c.k.data<float>()[i] = float(small(rng));
  for (int64_t i = 0; i < c.w.numel(); ++i) c.w.data<float>()[i] = float(weight(rng));
  return c;
}

TEST(Cli, HelpOnEverySubcommand) {
  EXPECT_EQ(hisa_cli("--help").code, 0);
  for (const char* sub : {"select", "make-case", "eval", "bench", "demo"}) {
    const CliRun r = hisa_cli(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_THAT(r.out, ::testing::HasSubstr("--")) << sub;
  }
  EXPECT_NE(hisa_cli("").code, 0);  // a subcommand is required
}

TEST(Cli, SelectExactCaseIsIdenticalAcrossBackends) {
  const fs::path dir = temp_dir();
  const uint64_t seed = 7;
  std::cout << "seed " << seed << "\n";
  save_case((dir / "case.safetensors").string(), exact_case(1000, 40, 4, seed));
  for (const char* method : {"flat", "hisa", "block"}) {
    std::string outs[2];
    int i = 0;
    for (const char* dev : {"reference", "cpu"}) {
      const fs::path out = dir / (std::string(method) + "_" + dev + ".safetensors");
      const CliRun r = hisa_cli("select -i " + (dir / "case.safetensors").string() + " -o " +
                                out.string() + " --method " + method + " --device " + dev +
                                " --block-size 64 --top-blocks 4 --topk 100");
      ASSERT_EQ(r.code, 0) << r.out;
      auto t = read_safetensors(out.string());
      ASSERT_TRUE(t.count("indices"));
      const Tensor& idx = t.at("indices");
      EXPECT_EQ(idx.shape, (std::vector<int64_t>{40, std::string(method) == "block" ? 256 : 100}));
      EXPECT_EQ(t.count("blocks"), std::string(method) == "flat" ? 0u : 1u);
      // Rows sorted ascending, then -1 padding.
      for (int64_t row = 0; row < idx.shape[0]; ++row) {
        const int32_t* v = idx.data<int32_t>() + row * idx.shape[1];
        for (int64_t j = 1; j < idx.shape[1]; ++j)
          if (v[j] != -1) {
            EXPECT_LT(v[j - 1], v[j]);
          }
      }
      outs[i++] = std::string(idx.bytes.begin(), idx.bytes.end());
    }
    EXPECT_TRUE(outs[0] == outs[1]) << method << ": cpu and reference differ on an exact case";
  }
}

TEST(Cli, ClearErrors) {
  const fs::path dir = temp_dir();
  CliRun r = hisa_cli("select -i /nonexistent.safetensors -o /tmp/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, ::testing::HasSubstr("nonexistent"));
  save_case((dir / "c.safetensors").string(), exact_case(300, 10, 2, 1));
  r = hisa_cli("select -i " + (dir / "c.safetensors").string() + " -o " +
               (dir / "o.safetensors").string() + " --top-blocks 8");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("must be at least topk"));
  r = hisa_cli("select -i " + (dir / "c.safetensors").string() + " -o " +
               (dir / "o.safetensors").string() + " --method dense");
  EXPECT_NE(r.code, 0);
  // A case whose w has the wrong shape.
  Case bad = exact_case(300, 10, 2, 1);
  bad.w = Tensor(DType::F32, {10, 3});
  // save_case refuses such a case, so write the tensors directly.
  write_safetensors((dir / "bad.safetensors").string(), {{"q", bad.q}, {"k", bad.k}, {"w", bad.w}});
  r = hisa_cli("select -i " + (dir / "bad.safetensors").string() + " -o " +
               (dir / "o.safetensors").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("w"));
}

TEST(Cli, EvalWritesJson) {
  const fs::path dir = temp_dir();
  const CliRun r = hisa_cli(
      "eval --workload topical --context 3000 --queries 24 --heads 32 --topk 256 "
      "--block-sizes 64,128 --budgets 512 --score-rows 8 -q --json " +
      (dir / "eval.json").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, ::testing::HasSubstr("hisa"));
  nlohmann::json j;
  std::ifstream(dir / "eval.json") >> j;
  // hisa B=64 and B=128; block at DSA's budget only for B=64 (m = 256/128 = 2 < sink + local + 1).
  ASSERT_EQ(j["configs"].size(), 3u);
  for (const auto& c : j["configs"]) {
    const double iou = c["differ"]["iou_mean"];
    EXPECT_GE(iou, 0.0);
    EXPECT_LE(iou, 1.0);
  }
  // Fidelity gate: an impossible bound fails with exit 1 and says why.
  const CliRun g = hisa_cli(
      "eval --workload topical --context 3000 --queries 24 --heads 32 --topk 256 "
      "--top-blocks 4 --score-rows 4 -q --fail-below-iou 1.01");
  EXPECT_EQ(g.code, 1);
  EXPECT_THAT(g.out, ::testing::HasSubstr("fidelity check failed"));
}

TEST(Cli, BenchRunsAndReportsRatios) {
  const fs::path dir = temp_dir();
  const CliRun r = hisa_cli(
      "bench --context 2048 --queries 16 --heads 32 --topk 256 --top-blocks 8 "
      "--decode-context 4096 --batch 2 --repeats 1 --devices reference,cpu --json " +
      (dir / "bench.json").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, ::testing::HasSubstr("vs flat"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("min .. max"));
  nlohmann::json j;
  std::ifstream(dir / "bench.json") >> j;
  EXPECT_GE(j["results"].size(), 8u);
  for (const auto& cell : j["results"]) {
    if (!cell["note"].get<std::string>().empty()) continue;
    EXPECT_LE(cell["min_s"].get<double>(), cell["median_s"].get<double>());
    EXPECT_LE(cell["median_s"].get<double>(), cell["max_s"].get<double>());
    EXPECT_TRUE(cell.contains("p10_s") && cell.contains("p90_s"));
  }
}

TEST(Cli, OpenMpWorkersWaitPassivelyUnlessTheUserChose) {
  // Spinning workers wait for a busy core's time slice on every call; libgomp prints its
  // settings (verbose: the spin count) when OMP_DISPLAY_ENV asks.
  std::string out =
      hisa_cli("--help", "-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose").out;
  const size_t last = out.rfind("GOMP_SPINCOUNT = '");
  ASSERT_NE(last, std::string::npos) << out;
  EXPECT_EQ(out.substr(last, 21), "GOMP_SPINCOUNT = '0'\n") << out;
  out = hisa_cli("--help", "OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=verbose").out;
  EXPECT_THAT(out, ::testing::Not(::testing::HasSubstr("GOMP_SPINCOUNT = '0'"))) << out;
}

TEST(Cli, JsonThatCannotBeWrittenFailsBeforeTheWork) {
  const fs::path dir = temp_dir();
  const std::string small = " --context 2048 --queries 16 --heads 32 --topk 256 --top-blocks 8";
  const std::string runs[] = {
      "eval -q" + small, "bench --repeats 1 --devices cpu --decode-context 4096 --batch 1" + small,
      "demo --device cpu --context 4096 --queries 16 --batch 1"};
  for (const std::string& run : runs) {
    SCOPED_TRACE(run);
    // A folder that does not exist, and a file in place of the folder.
    CliRun r = hisa_cli(run + " --json " + (dir / "missing" / "out.json").string());
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, ::testing::HasSubstr("--json: cannot write"));
    EXPECT_THAT(r.out, ::testing::HasSubstr("does not exist"));
    EXPECT_THAT(r.out, ::testing::Not(::testing::HasSubstr("[1/")));  // refused before any step
    std::ofstream(dir / "file") << "x";
    r = hisa_cli(run + " --json " + (dir / "file" / "out.json").string());
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, ::testing::HasSubstr("is not a folder"));
    // A write that fails after the work (a full device).
    r = hisa_cli(run + " --json /dev/full");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, ::testing::HasSubstr("--json: error writing '/dev/full'"));
  }
}

TEST(Cli, DemoOnCudaWithoutAGpuIsRefusedAtOnce) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  const auto t0 = std::chrono::steady_clock::now();
  const CliRun r = hisa_cli("demo --device cuda");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, ::testing::HasSubstr("cuda"));
  EXPECT_THAT(r.out, ::testing::Not(::testing::HasSubstr("prefill")));
  EXPECT_LT(seconds, 5.0) << r.out;
}

TEST(Cli, SelectOnAnEmptyBatchWritesEmptyOutputs) {
  const fs::path dir = temp_dir();
  Case c = exact_case(300, 0, 2, 3);  // T = 0 query rows
  save_case((dir / "empty.safetensors").string(), c);
  for (const char* dev : {"reference", "cpu"}) {
    for (const char* method : {"flat", "hisa", "block"}) {
      SCOPED_TRACE(std::string(dev) + " " + method);
      const fs::path out = dir / "empty_out.safetensors";
      const CliRun r = hisa_cli("select -i " + (dir / "empty.safetensors").string() + " -o " +
                                out.string() + " --device " + dev + " --method " + method +
                                " --block-size 64 --top-blocks 4 --topk 100");
      ASSERT_EQ(r.code, 0) << r.out;
      const auto t = read_safetensors(out.string());
      ASSERT_TRUE(t.count("indices"));
      EXPECT_EQ(t.at("indices").shape,
                (std::vector<int64_t>{0, std::string(method) == "block" ? 256 : 100}));
      if (std::string(method) != "flat") {
        EXPECT_EQ(t.at("blocks").shape, (std::vector<int64_t>{0, 4}));
      }
    }
  }
}

TEST(Cli, SelectWarnsBeforeALargeOutput) {
  const fs::path dir = temp_dir();
  save_case((dir / "c11.safetensors").string(), exact_case(300, 11, 2, 5));
  const std::string in = " -i " + (dir / "c11.safetensors").string() + " -o /dev/null --device cpu";
  // 11 rows of m * B = 6.4M indices, plus 11 x 100000 blocks: 286 MB.
  CliRun r = hisa_cli("select" + in + " --method block --block-size 64 --top-blocks 100000");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out,
              ::testing::HasSubstr("warning: the output will be 286 MB (indices [11, 6400000] and "
                                   "blocks [11, 100000] int32)"));
  r = hisa_cli("select" + in + " --method block --block-size 64 --top-blocks 4");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, ::testing::Not(::testing::HasSubstr("warning")));
  // An output folder that does not exist is refused before the case is read.
  r = hisa_cli("select -i " + (dir / "c11.safetensors").string() + " -o " +
               (dir / "no" / "o.safetensors").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("--output: cannot write"));
}

// ---- Decode case files ----

Tensor tensor_of(DType dtype, std::vector<int64_t> shape, const void* data) {
  Tensor t(dtype, std::move(shape));
  std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

// The decode case of the test helpers (exact: small integers, power-of-two key scales, pages
// shuffled, spare pages poisoned with NaN) as a case file's tensors.
DecodeCase decode_case_of(const test::DecodeData& d) {
  const DecodeInputs in = d.inputs();
  const int64_t rows = int64_t(in.batch) * in.next_n;
  DecodeCase c;
  c.q = tensor_of(in.q_dtype, {rows, in.num_heads, in.head_dim}, in.q);
  c.w = tensor_of(DType::F32, {rows, in.num_heads}, in.w);
  c.kv_cache = tensor_of(DType::U8, {in.num_pages, in.page_size, in.head_dim + 4}, in.kv_cache);
  c.block_table = tensor_of(DType::I32, {in.batch, in.max_pages}, in.block_table);
  c.seq_lens = tensor_of(DType::I32, {in.batch}, in.seq_lens);
  return c;
}

test::DecodeData exact_decode(uint64_t seed, int heads = 4, int dim = 64) {
  test::DecodeSpec spec;
  spec.exact = true;
  spec.tie_rate = 0.1;  // tied token scores: ties go to the lower position on every backend
  spec.num_heads = heads;
  spec.head_dim = dim;
  spec.next_n = 3;
  spec.seq_lens = {700, 300, 65};
  spec.seed = seed;
  return test::make_decode(spec);
}

std::vector<int32_t> ints(const Tensor& t) {
  EXPECT_EQ(t.dtype, DType::I32);
  std::vector<int32_t> v(size_t(t.numel()));
  std::memcpy(v.data(), t.bytes.data(), v.size() * 4);
  return v;
}

struct SelectFile {
  std::vector<int64_t> shape;  // of indices
  test::Selection sel;         // indices and (hisa/block) blocks
  std::map<std::string, std::string> metadata;
};

SelectFile read_selection(const fs::path& path) {
  SelectFile f;
  const auto t = read_safetensors(path.string(), &f.metadata);
  EXPECT_TRUE(t.count("indices")) << path;
  if (!t.count("indices")) return f;
  f.shape = t.at("indices").shape;
  f.sel.indices = ints(t.at("indices"));
  if (t.count("blocks")) f.sel.blocks = ints(t.at("blocks"));
  return f;
}

const char* kDecodeConfig = " --block-size 64 --top-blocks 4 --topk 100";

SelectConfig decode_config(Method m) { return test::make_config(m, 64, 4, 100); }

// The case format round-trips, and `hisa select` on a decode case gives, on the reference and on
// the fast CPU backend, exactly the float64 reference's selection computed here in-process, row
// by row in request-major order, ties included.
TEST(Cli, SelectDecodeCaseEqualsTheReferenceOnCpuBackends) {
  const fs::path dir = temp_dir();
  const uint64_t seed = 21;
  std::cout << "seed " << seed << "\n";
  const test::DecodeData data = exact_decode(seed);
  const fs::path input = dir / "decode_exact.safetensors";
  save_decode_case(input.string(), decode_case_of(data));
  const DecodeCase back = load_decode_case(input.string());
  const DecodeInputs in = back.inputs();
  EXPECT_EQ(in.batch, 3);
  EXPECT_EQ(in.next_n, 3);
  EXPECT_EQ(in.max_pages, data.max_pages);
  EXPECT_EQ(ints(back.block_table), data.block_table);
  EXPECT_EQ(back.kv_cache.bytes, data.kv_cache);

  const std::vector<reference::Row> rows = reference::decode_rows(data.inputs());
  ASSERT_EQ(rows.size(), 9u);
  for (Method m : {Method::Flat, Method::Hisa, Method::Block}) {
    const SelectConfig cfg = decode_config(m);
    // The reference's rows, written as the command writes them (ascending, -1 padded).
    test::Selection want;
    want.indices.assign(rows.size() * cfg.out_width(), -1);
    if (cfg.has_blocks()) want.blocks.assign(rows.size() * cfg.top_blocks, -1);
    for (size_t r = 0; r < rows.size(); ++r)
      reference::select_row(rows[r], cfg, want.indices.data() + r * cfg.out_width(),
                            cfg.has_blocks() ? want.blocks.data() + r * cfg.top_blocks : nullptr);
    for (const char* dev : {"reference", "cpu"}) {
      SCOPED_TRACE(method_name(m) + " on " + dev);
      const fs::path out = dir / ("decode_" + method_name(m) + "_" + dev + ".safetensors");
      const CliRun r = hisa_cli("select -i " + input.string() + " -o " + out.string() +
                                " --method " + method_name(m) + " --device " + dev + kDecodeConfig);
      ASSERT_EQ(r.code, 0) << r.out;
      EXPECT_THAT(r.out, ::testing::HasSubstr("decode N=3 next_n=3"));
      const SelectFile got = read_selection(out);
      EXPECT_EQ(got.shape, (std::vector<int64_t>{9, cfg.out_width()}));
      EXPECT_EQ(got.metadata.at("case"), "decode");
      EXPECT_EQ(got.metadata.at("device"), dev);
      EXPECT_EQ(got.metadata.at("config"), cfg.describe());
      EXPECT_TRUE(got.sel.indices == want.indices) << "indices differ from the reference";
      EXPECT_TRUE(got.sel.blocks == want.blocks) << "blocks differ from the reference";
      EXPECT_EQ(test::judge_decode(data.inputs(), cfg, got.sel, true), "");
    }
  }
}

// A generated case (make-case --decode): pages shuffled, requests of different lengths, next_n 2;
// the fast CPU backend is judged against the float64 reference (SEMANTICS.md section 7), with the
// pooled keys `select` computes itself and with those written into the case.
TEST(Cli, MakeCaseWritesDecodeCasesThatSelectRuns) {
  const fs::path dir = temp_dir();
  const fs::path plain = dir / "gen_decode.safetensors",
                 pooled = dir / "gen_decode_pooled.safetensors";
  const std::string gen =
      "make-case --decode --workload needles --seq-lens 2000,700,130 --next-n 2 "
      "--heads 8 --seed 4 -o ";
  CliRun r = hisa_cli(gen + plain.string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = hisa_cli(gen + pooled.string() + " --pooled-block-size 64");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, ::testing::HasSubstr("pooled keys B=64 mean"));

  const DecodeCase c = load_decode_case(plain.string());
  const DecodeInputs in = c.inputs();
  EXPECT_EQ(in.batch, 3);
  EXPECT_EQ(in.next_n, 2);
  EXPECT_EQ(in.num_heads, 8);
  EXPECT_EQ(in.q_dtype, DType::F8E4M3);
  EXPECT_EQ(c.metadata.at("workload"), "needles");
  EXPECT_TRUE(c.pooled.empty());
  int in_order = 0, steps = 0;  // consecutive logical pages that are consecutive physical pages
  for (int64_t j = 1; j < (2000 + 63) / 64; ++j, ++steps)
    in_order += in.block_table[j] == in.block_table[j - 1] + 1;
  EXPECT_LT(in_order, steps / 2) << "pages are not shuffled";
  const DecodeCase p = load_decode_case(pooled.string());
  EXPECT_EQ(p.pooled_block_size, 64);
  EXPECT_EQ(p.pooled.shape, (std::vector<int64_t>{3, 2000 / 64, 128}));

  for (Method m : {Method::Flat, Method::Hisa, Method::Block}) {
    const SelectConfig cfg = decode_config(m);
    std::vector<int32_t> cpu_indices;
    for (const fs::path& input : {plain, pooled}) {
      SCOPED_TRACE(method_name(m) + " " + input.filename().string());
      const fs::path out = dir / "gen_out.safetensors";
      r = hisa_cli("select -i " + input.string() + " -o " + out.string() +
                   " --device cpu --method " + method_name(m) + kDecodeConfig);
      ASSERT_EQ(r.code, 0) << r.out;
      const SelectFile got = read_selection(out);
      EXPECT_EQ(test::judge_decode(in, cfg, got.sel, false), "");
      // The pooled keys in the file are the ones select computes: the same selection.
      if (cpu_indices.empty())
        cpu_indices = got.sel.indices;
      else
        EXPECT_TRUE(cpu_indices == got.sel.indices);
    }
  }
  // Pooled keys of another block size are refused, not used.
  r = hisa_cli("select -i " + pooled.string() + " -o " + (dir / "x.safetensors").string() +
               " --device cpu --method hisa --block-size 128 --top-blocks 4 --topk 100");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out,
              ::testing::HasSubstr("pooled with B = 64 (mean) but hisa selects with B = 128"));
  // Decode options need --decode, and --queries does not go with it.
  EXPECT_NE(hisa_cli("make-case --next-n 2 -o " + (dir / "y.safetensors").string()).code, 0);
  EXPECT_NE(hisa_cli("make-case --decode --queries 4 -o " + (dir / "y.safetensors").string()).code,
            0);
  r = hisa_cli("make-case --decode --seq-lens 100 --pooled-block-size 100 -o " +
               (dir / "y.safetensors").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("--pooled-block-size must be 0 (none) or"));
}

TEST(Cli, MakeCaseWritesPrefillCases) {
  const fs::path dir = temp_dir();
  const fs::path input = dir / "gen_prefill.safetensors";
  CliRun r = hisa_cli(
      "make-case --workload topical --context 1500 --queries 12 --heads 8 --dtype bf16 "
      "--seed 2 -o " +
      input.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const Case c = load_case(input.string());
  const PrefillInputs in = c.inputs();
  EXPECT_EQ(in.num_q, 12);
  EXPECT_EQ(in.num_k, 1500);
  EXPECT_EQ(in.dtype, DType::BF16);
  EXPECT_EQ(c.metadata.at("seed"), "2");
  const fs::path out = dir / "gen_prefill_out.safetensors";
  r = hisa_cli("select -i " + input.string() + " -o " + out.string() +
               " --device cpu --method hisa" + kDecodeConfig);
  ASSERT_EQ(r.code, 0) << r.out;
  const SelectFile got = read_selection(out);
  EXPECT_EQ(got.metadata.at("case"), "prefill");
  EXPECT_EQ(test::judge_prefill(in, decode_config(Method::Hisa), got.sel, false), "");
  // eval takes prefill cases and says so for a decode case.
  r = hisa_cli("make-case --decode --seq-lens 300 -o " + (dir / "d.safetensors").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = hisa_cli("eval -q -i " + (dir / "d.safetensors").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("this is a decode case file"));
}

// Each bad decode input is refused with exit 1 and a message naming the field and the index; no
// output is written.
TEST(Cli, SelectDecodeBadInputsGiveClearErrors) {
  const fs::path dir = temp_dir();
  const test::DecodeData data = exact_decode(22);
  const DecodeCase good = decode_case_of(data);
  const int max_pages = data.max_pages, num_pages = data.num_pages;
  struct Bad {
    std::string what;
    std::function<void(std::map<std::string, Tensor>&)> spoil;
    std::vector<std::string> message;
  };
  const std::vector<Bad> cases = {
      {"block table entry out of range",
       [&](auto& t) {
         t["block_table"].template data<int32_t>()[2 * max_pages + 1] = num_pages + 3;
       },
       {"block_table[2, 1] = " + std::to_string(num_pages + 3) + " is out of range [0, " +
        std::to_string(num_pages) + ")"}},
      {"negative block table entry",
       [&](auto& t) { t["block_table"].template data<int32_t>()[0] = -1; },
       {"block_table[0, 0] = -1 is out of range"}},
      {"seq_lens past the table",
       [&](auto& t) { t["seq_lens"].template data<int32_t>()[1] = max_pages * 64 + 1; },
       {"seq_lens[1] = " + std::to_string(max_pages * 64 + 1) + " runs past the block table",
        "max_pages * page_size = " + std::to_string(max_pages) + " * 64"}},
      {"next_n > seq_len",
       [&](auto& t) { t["seq_lens"].template data<int32_t>()[2] = 2; },
       {"seq_lens[2] = 2 is shorter than next_n = 3"}},
      {"NaN in q",
       [&](auto& t) { t["q"].template data<uint8_t>()[(4 * 4 + 3) * 64 + 10] = 0xff; },
       {"q has a non-finite value at row 4, head 3, dim 10"}},
      {"NaN in w",
       [&](auto& t) { t["w"].template data<float>()[7 * 4 + 2] = std::nanf(""); },
       {"w has a non-finite value at row 7, head 2"}},
      {"block_table of the wrong dtype",
       [&](auto& t) { t["block_table"].dtype = DType::F32; },
       {"block_table must be [N, max_pages] I32", "F32"}},
      {"seq_lens of the wrong shape",
       [&](auto& t) { t["seq_lens"] = Tensor(DType::I32, {2}); },
       {"q has 9 rows, not a positive multiple of the batch N = 2 (seq_lens [2])"}},
      {"q rows not a multiple of the batch",
       [&](auto& t) {
         t["q"] = Tensor(DType::F8E4M3, {8, 4, 64});
       },
       {"q has 8 rows, not a positive multiple of the batch N = 3"}},
      {"kv_cache of the wrong width",
       [&](auto& t) {
         t["kv_cache"] = Tensor(DType::U8, {num_pages, 64, 128});
       },
       {"kv_cache must be [num_pages, page_size, D + 4] with D + 4 = 68"}},
      {"NaN in the cache",
       [&](auto& t) {
         const int64_t page = data.block_table[0];
         t["kv_cache"].template data<uint8_t>()[page * page_bytes(64, 64) + 5 * 64 + 7] = 0xff;
       },
       {"NaN", "request 0"}},
      {"a misspelt tensor",
       [&](auto& t) {
         t["pooled_keys"] = Tensor(DType::F32, {3, 1, 64});
       },
       {"unknown tensor 'pooled_keys' in a decode case file"}},
  };
  for (const Bad& bad : cases) {
    SCOPED_TRACE(bad.what);
    std::map<std::string, Tensor> t = {{"q", good.q},
                                       {"w", good.w},
                                       {"kv_cache", good.kv_cache},
                                       {"block_table", good.block_table},
                                       {"seq_lens", good.seq_lens}};
    bad.spoil(t);
    const fs::path input = dir / "decode_bad.safetensors", out = dir / "decode_bad_out.safetensors";
    write_safetensors(input.string(), t);
    fs::remove(out);
    for (const char* dev : {"reference", "cpu"}) {
      for (const char* method : {"flat", "hisa"}) {
        const CliRun r = hisa_cli("select -i " + input.string() + " -o " + out.string() +
                                  " --device " + dev + " --method " + method + kDecodeConfig);
        EXPECT_EQ(r.code, 1) << dev << " " << method << ": " << r.out;
        for (const std::string& part : bad.message)
          EXPECT_THAT(r.out, ::testing::HasSubstr(part)) << dev << " " << method;
        EXPECT_FALSE(fs::exists(out)) << dev << " " << method;
      }
    }
  }
}

// cuda runs flat, hisa and block decode on the device; without a device or a CUDA build it
// refuses at once instead of running elsewhere.
TEST(Cli, SelectDecodeOnCudaRunsEveryMethod) {
  const fs::path dir = temp_dir();
  const test::DecodeData data = exact_decode(23, 32, 128);  // a shape the fused kernels take
  const fs::path input = dir / "decode_cuda.safetensors";
  save_decode_case(input.string(), decode_case_of(data));
  for (Method m : {Method::Flat, Method::Hisa, Method::Block}) {
    SCOPED_TRACE(method_name(m));
    const fs::path out = dir / ("decode_cuda_" + method_name(m) + ".safetensors");
    fs::remove(out);
    const CliRun r = hisa_cli("select -i " + input.string() + " -o " + out.string() +
                              " --device cuda --method " + method_name(m) + kDecodeConfig);
    if (!cuda_available()) {
      EXPECT_EQ(r.code, 1) << r.out;
      EXPECT_THAT(r.out, ::testing::HasSubstr("device 'cuda'"));
      EXPECT_FALSE(fs::exists(out));
      continue;
    }
    ASSERT_EQ(r.code, 0) << r.out;
    const SelectFile got = read_selection(out);
    EXPECT_EQ(got.metadata.at("device"), "cuda");
    // hisa, block: the device stores pooled keys as fp8 with a per-block scale, and scores them
    // in fp32 on the tensor cores (judged within tolerance on that rounding).
    if (m == Method::Flat)
      EXPECT_EQ(test::judge_decode(data.inputs(), decode_config(m), got.sel, true), "");
    else
      EXPECT_EQ(test::judge_decode(data.inputs(), decode_config(m), got.sel, false,
                                   PooledRounding::Fp8Block),
                "");
  }
}

}  // namespace
}  // namespace hisa
