// hisa demo: the main job in one command. A long-context workload, flat DSA vs HISA time and
// speedup, how closely HISA follows DSA, and paged decode at 128K.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "hisa/error.hpp"
#include "hisa/evaluate.hpp"
#include "timing.hpp"

namespace hisa::cli {
namespace {

struct DemoArgs {
  std::string device = "auto", json;
  int64_t context = 0, queries = 0;
  int batch = 4;
  uint64_t seed = 0;
};

void run_demo(const DemoArgs& a) {
  if (!a.json.empty()) check_writable(a.json, "--json");
  const std::string device = resolve_device(a.device);
  const bool gpu = device == "cuda";
  // Made first: --device cuda without a GPU (or without the CUDA backend) is refused at once, not
  // after a GPU-sized prefill has run on the CPU.
  auto backend = make_indexer(device);
  WorkloadArgs w;
  w.kind = "topical";
  // 128K context on both; on 2 CPU cores the last 2048 queries keep the whole demo near half a minute.
  w.context = a.context ? a.context : 131072;
  w.queries = a.queries ? a.queries : (gpu ? 8192 : 2048);
  w.seed = a.seed;
  ConfigArgs ca;  // defaults: B=128, m=64, k=2048, sink 1, local 1
  const SelectConfig hisa_cfg = to_config(ca, Method::Hisa);
  ConfigArgs cb = ca;
  cb.top_blocks = ca.topk / ca.block_size;  // block-sparse at DSA's token budget
  const SelectConfig block_cfg = to_config(cb, Method::Block);

  std::printf("hisa demo on %s\n", device.c_str());
  std::printf("workload: %s (keys from a drifting topic mixture), S = %lld keys, the last %lld queries,\n"
              "          H = %d heads, D = 128, fp8 e4m3 q/k with per-token ue8m0 key scales (DeepSeek-V3.2)\n",
              w.kind.c_str(), (long long)w.context, (long long)w.queries, w.heads);
  std::printf("methods:  flat DSA top-%d | HISA %s | block-sparse %s\n\n", hisa_cfg.topk,
              hisa_cfg.describe().c_str(), block_cfg.describe().c_str());
  std::fflush(stdout);
  progress(1, 3, "generating the workload");
  const Case c = make_workload(to_spec(w));
  const PrefillInputs in = c.inputs();

  progress(2, 3, "prefill: flat, hisa and block selections, then fidelity against flat");
  EvalOptions opt;
  opt.device = device;
  opt.score_rows = 32;
  opt.show_progress = true;
  const EvalReport r = evaluate(in, {hisa_cfg, block_cfg}, opt);
  const ConfigFidelity& h = r.configs[0];
  const ConfigFidelity& b = r.configs[1];
  std::printf("\nprefill on %s (%lld query rows; %lld of them see more than m*B = %d keys)\n", r.device.c_str(),
              (long long)r.rows, (long long)r.differ_rows, hisa_cfg.top_blocks * hisa_cfg.block_size);
  std::printf("  %-13s %10s %9s | %-26s\n", "method", "time", "speedup", "vs DSA: IoU / recall / mass");
  std::printf("  %-13s %10s %9s |\n", "flat (DSA)", fmt_seconds(r.flat_seconds).c_str(), "1.00x");
  std::printf("  %-13s %10s %8.2fx | %.4f / %.4f / %.5f\n", "hisa", fmt_seconds(h.seconds).c_str(),
              r.flat_seconds / h.seconds, h.differ.iou_mean, h.differ.recall_mean, h.differ.mass_mean);
  std::printf("  %-13s %10s %8.2fx | %.4f / %.4f / %.5f\n", "block-sparse", fmt_seconds(b.seconds).c_str(),
              r.flat_seconds / b.seconds, b.differ.iou_mean, b.differ.recall_mean, b.differ.mass_mean);
  std::printf("  (IoU min %.4f, 1st percentile %.4f; score-mass recall over %lld rows: the share of the\n"
              "   indexer's own softmax mass that HISA's choice keeps, relative to DSA's)\n",
              h.differ.iou_min, h.differ.iou_p1, (long long)r.scored_rows);

  progress(3, 3, "decode: paged fp8 cache at 128K");
  const std::vector<int64_t> lens(size_t(a.batch), 131072);
  DecodeCase dc =
      make_decode_workload(WorkloadKind::Topical, lens, 1, 64, 128, DType::F8E4M3, a.seed);
  dc.pool(hisa_cfg.block_size, hisa_cfg.pooling);
  const DecodeInputs din = dc.inputs();
  SelectConfig flat_cfg = hisa_cfg;
  flat_cfg.method = Method::Flat;
  Timing tf = time_decode(*backend, din, flat_cfg, 5, true);
  Timing th;
  std::string decode_dev = device;
  try {
    th = time_decode(*backend, din, hisa_cfg, 5, true);
  } catch (const Error& e) {
    if (!gpu) throw;
    std::printf("note: %s\n      timing hisa decode on the cpu backend against cpu flat instead\n", e.what());
    auto cpu = make_indexer("cpu");
    decode_dev = "cpu";
    tf = time_decode(*cpu, din, flat_cfg, 5, true);
    th = time_decode(*cpu, din, hisa_cfg, 5, true);
  }
  std::printf("\ndecode on %s: batch %d, next_n 1, 128K tokens each, pages shuffled\n", decode_dev.c_str(), a.batch);
  std::printf("  flat (DSA) %10s\n  hisa       %10s   %.2fx faster\n", fmt_seconds(tf.median_s).c_str(),
              fmt_seconds(th.median_s).c_str(), tf.median_s / th.median_s);

  if (!a.json.empty()) {
    nlohmann::json j = nlohmann::json::parse(report_json(r));
    j["decode"] = {{"device", decode_dev}, {"flat_s", tf.median_s}, {"hisa_s", th.median_s}, {"batch", a.batch}};
    write_text(a.json, j.dump(2) + "\n", "--json");
  }
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "The main job: flat DSA vs HISA on a long-context workload (time, speedup, fidelity) and paged decode "
      "at 128K. Runs on the GPU when one is present, else on the CPU (the last 2048 queries of a 128K-token "
      "prefill: about half a minute on 2 cores).");
  cmd->add_option("--device", args->device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--context", args->context, "keys in the prefill sequence (default 131072)");
  cmd->add_option("--queries", args->queries, "query rows, the last tokens (default 2048 on CPU, 8192 on GPU)");
  cmd->add_option("--batch", args->batch, "decode requests")->capture_default_str();
  cmd->add_option("--seed", args->seed, "workload seed")->capture_default_str();
  cmd->add_option("--json", args->json, "also write the numbers as JSON to this file");
  cmd->callback([args] { run_demo(*args); });
}

}  // namespace hisa::cli
