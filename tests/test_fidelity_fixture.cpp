// Fidelity on real indexer tensors: `hisa eval` on the committed fixture (tests/data/, made by the
// model/ study: layer 0 of a trained lightning indexer, one 32K held-out window, 256 query rows) must
// reproduce the values that the study's independent float64 implementation recorded next to it
// (tests/data/fixture_fidelity.json), within a small margin for fp32 near-ties.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace hisa {
namespace {

namespace fs = std::filesystem;

const fs::path kData = fs::path(HISA_SOURCE_DIR) / "tests" / "data";
constexpr double kIouMargin = 0.005;   // mean IoU over 224 rows: a few near-tie swaps move it ~1e-4
constexpr double kMassMargin = 0.002;  // mean score-mass recall

int run(const std::string& args, std::string* out) {
  const std::string cmd = std::string(HISA_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out->append(buf.data(), n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(FidelityFixture, HisaEvalReproducesRecordedValues) {
  const fs::path fixture = kData / "fidelity_fixture.safetensors";
  const fs::path recorded_path = kData / "fixture_fidelity.json";
  ASSERT_TRUE(fs::exists(fixture)) << fixture;
  ASSERT_TRUE(fs::exists(recorded_path)) << recorded_path;
  const nlohmann::json rec = nlohmann::json::parse(std::ifstream(recorded_path));
  const nlohmann::json& hisa_rec = rec.at("configs").at("hisa B=128 m=64 k=2048");
  const nlohmann::json& block_rec = rec.at("configs").at("block B=128 m=16 k=2048");

  const double iou_floor = hisa_rec["rows_e_gt_mB"]["iou_mean"].get<double>() - kIouMargin;
  const double mass_floor = hisa_rec["rows_e_gt_mB"]["mass_mean"].get<double>() - kMassMargin;
  const fs::path out_json =
      fs::temp_directory_path() / ("hisa_fixture_eval_" + std::to_string(::getpid()) + ".json");
  std::string out;
  // Defaults are B = 128, m = 64, k = 2048; the baseline block-sparse row uses m = k / B = 16.
  const int code = run("eval -i " + fixture.string() + " --device cpu --score-rows 0 -q --json " +
                           out_json.string() + " --fail-below-iou " + std::to_string(iou_floor) +
                           " --fail-below-mass " + std::to_string(mass_floor),
                       &out);
  ASSERT_EQ(code, 0) << out;
  const nlohmann::json got = nlohmann::json::parse(std::ifstream(out_json));
  fs::remove(out_json);

  ASSERT_EQ(got.at("rows").get<int>(), rec.at("rows").get<int>());
  ASSERT_EQ(got.at("configs").size(), 2u) << got.dump(1);
  const nlohmann::json* by_method[2] = {&hisa_rec, &block_rec};
  const char* names[2] = {"hisa", "block"};
  for (int i = 0; i < 2; ++i) {
    const nlohmann::json& c = got["configs"][i];
    ASSERT_EQ(c.at("method").get<std::string>(), names[i]);
    ASSERT_EQ(c.at("block_size").get<int>(), 128);
    for (const auto& [ours, theirs] : {std::pair<const char*, const char*>{"all", "all_rows"},
                                       std::pair<const char*, const char*>{"differ", "rows_e_gt_mB"}}) {
      const nlohmann::json& g = c.at(ours);
      const nlohmann::json& r = by_method[i]->at(theirs);
      SCOPED_TRACE(std::string(names[i]) + " " + ours);
      EXPECT_EQ(g.at("rows").get<int>(), r.at("rows").get<int>());
      EXPECT_NEAR(g.at("iou_mean").get<double>(), r.at("iou_mean").get<double>(), kIouMargin);
      EXPECT_NEAR(g.at("recall_mean").get<double>(), r.at("recall_mean").get<double>(), kIouMargin);
      EXPECT_NEAR(g.at("mass_mean").get<double>(), r.at("mass_mean").get<double>(), kMassMargin);
      EXPECT_NEAR(g.at("iou_min").get<double>(), r.at("iou_min").get<double>(), 0.05);
    }
  }
}

}  // namespace
}  // namespace hisa
