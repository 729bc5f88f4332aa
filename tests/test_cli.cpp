// The `hisa` command, run as a user would: exit codes, messages, files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "hisa/indexer.hpp"
#include "hisa/io.hpp"
#include "hisa/workloads.hpp"

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
  for (const char* sub : {"select", "eval", "bench", "demo"}) {
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
      const CliRun r = hisa_cli("select -i " + (dir / "case.safetensors").string() + " -o " + out.string() +
                             " --method " + method + " --device " + dev +
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
  r = hisa_cli("select -i " + (dir / "c.safetensors").string() + " -o " + (dir / "o.safetensors").string() +
               " --top-blocks 8");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("must be at least topk"));
  r = hisa_cli("select -i " + (dir / "c.safetensors").string() + " -o " + (dir / "o.safetensors").string() +
               " --method dense");
  EXPECT_NE(r.code, 0);
  // A case whose w has the wrong shape.
  Case bad = exact_case(300, 10, 2, 1);
  bad.w = Tensor(DType::F32, {10, 3});
  // save_case refuses such a case, so write the tensors directly.
  write_safetensors((dir / "bad.safetensors").string(), {{"q", bad.q}, {"k", bad.k}, {"w", bad.w}});
  r = hisa_cli("select -i " + (dir / "bad.safetensors").string() + " -o " + (dir / "o.safetensors").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, ::testing::HasSubstr("w"));
}

TEST(Cli, EvalWritesJson) {
  const fs::path dir = temp_dir();
  const CliRun r = hisa_cli("eval --workload topical --context 3000 --queries 24 --heads 32 --topk 256 "
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
  const CliRun g = hisa_cli("eval --workload topical --context 3000 --queries 24 --heads 32 --topk 256 "
                         "--top-blocks 4 --score-rows 4 -q --fail-below-iou 1.01");
  EXPECT_EQ(g.code, 1);
  EXPECT_THAT(g.out, ::testing::HasSubstr("fidelity check failed"));
}

TEST(Cli, BenchRunsAndReportsRatios) {
  const fs::path dir = temp_dir();
  const CliRun r = hisa_cli("bench --context 2048 --queries 16 --heads 32 --topk 256 --top-blocks 8 "
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
      if (std::string(method) != "flat")
        EXPECT_EQ(t.at("blocks").shape, (std::vector<int64_t>{0, 4}));
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

}  // namespace
}  // namespace hisa
