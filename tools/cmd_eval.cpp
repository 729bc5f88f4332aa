// hisa eval: how closely hisa and the block-sparse baseline follow flat DSA (SEMANTICS.md section 8).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "hisa/error.hpp"
#include "hisa/evaluate.hpp"

namespace hisa::cli {
namespace {

struct EvalArgs {
  std::string input, device = "cpu", json;
  WorkloadArgs workload;
  ConfigArgs config;
  std::vector<int> block_sizes, budgets;
  int64_t score_rows = 256;
  double fail_below_iou = -1, fail_below_mass = -1;
  bool quiet = false;
};

void run_eval(const EvalArgs& a) {
  if (!a.json.empty()) check_writable(a.json, "--json");
  Case c;
  std::string source;
  if (!a.input.empty()) {
    c = load_case(a.input);
    source = a.input;
  } else {
    c = make_workload(to_spec(a.workload));
    source = "workload " + a.workload.kind + " S=" + std::to_string(a.workload.context) +
             " T=" + std::to_string(a.workload.queries) + " seed=" + std::to_string(a.workload.seed);
  }
  std::vector<SelectConfig> configs;
  const std::vector<int> sizes = a.block_sizes.empty() ? std::vector<int>{a.config.block_size} : a.block_sizes;
  for (int B : sizes) {
    std::vector<int> ms;
    if (a.budgets.empty()) {
      ms.push_back(a.config.top_blocks);
    } else {
      for (int budget : a.budgets) {
        HISA_CHECK(budget % B == 0, "--budget ", budget, " is not a multiple of block size ", B);
        ms.push_back(budget / B);
      }
    }
    for (int m : ms) {
      ConfigArgs ca = a.config;
      ca.block_size = B;
      ca.top_blocks = m;
      configs.push_back(to_config(ca, Method::Hisa));
    }
  }
  // The block-sparse baseline at DSA's token budget: m = k / B blocks, every token of them kept.
  for (int B : sizes) {
    ConfigArgs ca = a.config;
    ca.block_size = B;
    ca.top_blocks = a.config.topk / B;
    if (a.config.topk % B == 0 && ca.top_blocks >= ca.sink_blocks + ca.local_blocks + 1)
      configs.push_back(to_config(ca, Method::Block));
  }
  EvalOptions opt;
  opt.device = resolve_device(a.device);
  opt.score_rows = a.score_rows;
  opt.show_progress = !a.quiet;
  const EvalReport report = evaluate(c.inputs(), configs, opt);
  std::printf("%s", format_report(report, source).c_str());
  if (!a.json.empty()) {
    nlohmann::json j = nlohmann::json::parse(report_json(report));
    j["source"] = source;
    write_text(a.json, j.dump(2) + "\n", "--json");
  }
  const ConfigFidelity& first = report.configs.front();  // hisa at the first block size / budget
  if (a.fail_below_iou >= 0 && first.differ.iou_mean < a.fail_below_iou)
    throw Error("fidelity check failed: " + first.config.describe() + " mean IoU " +
                std::to_string(first.differ.iou_mean) + " < " + std::to_string(a.fail_below_iou));
  if (a.fail_below_mass >= 0 && first.differ.mass_mean < a.fail_below_mass)
    throw Error("fidelity check failed: " + first.config.describe() + " mean score-mass recall " +
                std::to_string(first.differ.mass_mean) + " < " + std::to_string(a.fail_below_mass));
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Fidelity of hisa and the block-sparse baseline against flat DSA on a case file or a generated "
      "workload: IoU, recall and score-mass recall per row, over all rows and over the rows that can "
      "differ (e > m*B).");
  cmd->add_option("--input,-i", args->input, "case file (.safetensors); default: a generated workload")
      ->check(CLI::ExistingFile);
  add_workload_options(*cmd, args->workload);
  add_config_options(*cmd, args->config, false);
  cmd->add_option("--block-sizes", args->block_sizes, "sweep: block sizes (comma separated)")->delimiter(',');
  cmd->add_option("--budgets", args->budgets, "sweep: candidate budgets m*B in tokens (comma separated)")
      ->delimiter(',');
  cmd->add_option("--device", args->device, "backend that makes the selections: cpu, cuda, reference, auto")
      ->check(CLI::IsMember({"reference", "cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--score-rows", args->score_rows,
                  "rows (evenly spaced) whose score-mass recall is computed from float64 scores; 0 = all")
      ->capture_default_str();
  cmd->add_option("--json", args->json, "also write the report as JSON to this file");
  cmd->add_option("--fail-below-iou", args->fail_below_iou,
                  "exit 1 if the first hisa config's mean IoU (rows with e > m*B) is below this");
  cmd->add_option("--fail-below-mass", args->fail_below_mass,
                  "exit 1 if the first hisa config's mean score-mass recall (rows with e > m*B) is below this");
  cmd->add_flag("--quiet,-q", args->quiet, "no progress lines");
  cmd->callback([args] { run_eval(*args); });
}

}  // namespace hisa::cli
