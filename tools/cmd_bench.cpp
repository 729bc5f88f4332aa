// hisa bench: timings of each method and backend, as ratios against flat measured in the same run.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "hisa/error.hpp"
#include "hisa/pooled.hpp"
#include "timing.hpp"

namespace hisa::cli {
namespace {

struct BenchArgs {
  WorkloadArgs workload;
  ConfigArgs config;
  std::vector<std::string> devices, methods = {"flat", "hisa", "block"};
  int repeats = 3;
  int64_t decode_context = 131072;
  int batch = 4, next_n = 1;
  bool no_prefill = false, no_decode = false;
  std::string json;
};

struct Row {
  Timing t;
  std::string note;  // why a cell is empty
};

void print_table(const std::vector<Row>& rows, const std::string& mode) {
  std::map<std::string, double> flat;  // device -> flat median
  for (const Row& r : rows)
    if (r.t.mode == mode && r.t.method == "flat" && r.note.empty()) flat[r.t.device] = r.t.median_s;
  const double ref = flat.count("reference") ? flat["reference"] : 0.0;
  std::printf("%-9s %-7s %-6s %11s %21s %11s %12s %10s\n", "device", "mode", "method", "median",
              "min .. max", "vs flat", "vs ref flat", "GFLOP/s");
  for (const Row& r : rows) {
    if (r.t.mode != mode) continue;
    if (!r.note.empty()) {
      std::printf("%-9s %-7s %-6s %s\n", r.t.device.c_str(), mode.c_str(), r.t.method.c_str(), r.note.c_str());
      continue;
    }
    const double f = flat.count(r.t.device) ? flat[r.t.device] : 0.0;
    char vs_flat[32] = "-", vs_ref[32] = "-";
    if (f > 0) std::snprintf(vs_flat, sizeof vs_flat, "%.2fx", f / r.t.median_s);
    if (ref > 0 && r.t.device != "reference") std::snprintf(vs_ref, sizeof vs_ref, "%.1fx", ref / r.t.median_s);
    const std::string range = fmt_seconds(r.t.min_s) + " .. " + fmt_seconds(r.t.max_s);
    std::printf("%-9s %-7s %-6s %11s %21s %11s %12s %10.1f\n", r.t.device.c_str(), mode.c_str(),
                r.t.method.c_str(), fmt_seconds(r.t.median_s).c_str(), range.c_str(), vs_flat,
                vs_ref, r.t.gflop / r.t.median_s);
  }
  for (const Row& r : rows) {
    const std::string warning = r.t.mode == mode && r.note.empty() ? spread_warning(r.t) : "";
    if (!warning.empty()) std::printf("%s\n", warning.c_str());
  }
  if (ref > 0) std::printf("(the float64 reference is the oracle, timed on one call; the others: median of the repeats)\n");
  if (flat.count("cuda"))
    std::printf("(cuda: the host-memory Indexer, so each call includes copying the inputs to the GPU and the indices\n"
                " back; the kernels alone on device memory: hisa_cuda_bench, see docs/kernels.md)\n");
}

void run_bench(BenchArgs a) {
  if (!a.json.empty()) check_writable(a.json, "--json");
  if (a.devices.empty()) {
    a.devices = {"reference", "cpu"};
    if (cuda_available()) a.devices.push_back("cuda");
  }
  std::vector<SelectConfig> configs;
  for (const std::string& m : a.methods) configs.push_back(to_config(a.config, method_from_name(m)));
  std::vector<Row> rows;
  nlohmann::json j;
  const int total = int(a.devices.size() * configs.size()) * ((a.no_prefill ? 0 : 1) + (a.no_decode ? 0 : 1));
  int step = 0;

  if (!a.no_prefill) {
    const WorkloadSpec spec = to_spec(a.workload);
    const Case c = make_workload(spec);
    const PrefillInputs in = c.inputs();
    std::printf("prefill: %s workload, S=%lld keys, T=%lld query rows (the last ones), H=%d, D=%d, %s\n",
                a.workload.kind.c_str(), (long long)in.num_k, (long long)in.num_q, in.num_heads, in.head_dim,
                dtype_name(in.dtype).c_str());
    j["prefill"] = {{"workload", a.workload.kind}, {"S", in.num_k}, {"T", in.num_q}, {"H", in.num_heads},
                    {"dtype", dtype_name(in.dtype)}};
    for (const std::string& dev : a.devices) {
      auto backend = make_indexer(dev);
      for (const SelectConfig& cfg : configs) {
        progress(++step, total, dev + " prefill " + cfg.describe());
        Row r;
        r.t.device = dev;
        r.t.mode = "prefill";
        r.t.method = method_name(cfg.method);
        if (dev == "reference" && cfg.method != Method::Flat) {
          r.note = "(skipped: the reference is timed on flat only)";
        } else {
          try {
            // The reference is slow and deterministic in cost: one call, no warm-up.
            const bool ref = dev == "reference";
            r.t = time_prefill(*backend, in, cfg, ref ? 1 : a.repeats, !ref);
          } catch (const Error& e) {
            r.note = std::string("(not run: ") + e.what() + ")";
          }
        }
        rows.push_back(r);
      }
    }
    print_table(rows, "prefill");
  }

  if (!a.no_decode) {
    WorkloadSpec spec = to_spec(a.workload);
    const std::vector<int64_t> lens(size_t(a.batch), a.decode_context);
    DecodeCase dc =
        make_decode_workload(spec.kind, lens, a.next_n, spec.num_heads, 128, spec.dtype, spec.seed);
    const SelectConfig& any_blocks = configs.back();
    const double t0 = now_seconds();
    dc.pool(any_blocks.block_size, any_blocks.pooling);
    const double pool_s = now_seconds() - t0;
    const DecodeInputs in = dc.inputs();
    // Incremental upkeep: every request completes exactly one block (old length one token short).
    std::vector<int32_t> old_lens(in.seq_lens, in.seq_lens + in.batch);
    int completed = 0;
    for (int32_t& l : old_lens)
      if (l % any_blocks.block_size == 0) --l, ++completed;
    const double t1 = now_seconds();
    update_pooled_keys(in, old_lens.data(), in.seq_lens, any_blocks.block_size, any_blocks.pooling,
                       dc.pooled.data<float>(), in.pooled_max_blocks);
    const double upd_s = now_seconds() - t1;
    std::printf("\ndecode: %s workload, batch %d x next_n %d at %lld tokens, H=%d, page 64 (shuffled pages)\n",
                a.workload.kind.c_str(), a.batch, a.next_n, (long long)a.decode_context, in.num_heads);
    std::printf("pooled keys (B=%d): from scratch %s; incremental update of %d newly complete blocks %s\n",
                any_blocks.block_size, fmt_seconds(pool_s).c_str(), completed, fmt_seconds(upd_s).c_str());
    j["decode"] = {{"batch", a.batch}, {"next_n", a.next_n}, {"context", a.decode_context},
                   {"pooled_scratch_s", pool_s}, {"pooled_incremental_s", upd_s}, {"completed_blocks", completed}};
    for (const std::string& dev : a.devices) {
      auto backend = make_indexer(dev);
      for (const SelectConfig& cfg : configs) {
        progress(++step, total, dev + " decode " + cfg.describe());
        Row r;
        r.t.device = dev;
        r.t.mode = "decode";
        r.t.method = method_name(cfg.method);
        try {
          const bool ref = dev == "reference";
          r.t = time_decode(*backend, in, cfg, ref ? 1 : a.repeats, !ref);
        } catch (const Error& e) {
          r.note = std::string("(not run: ") + e.what() + ")";
        }
        rows.push_back(r);
      }
    }
    print_table(rows, "decode");
  }

  for (const Row& r : rows)
    j["results"].push_back({{"device", r.t.device},
                            {"mode", r.t.mode},
                            {"method", r.t.method},
                            {"median_s", r.t.median_s},
                            {"min_s", r.t.min_s},
                            {"max_s", r.t.max_s},
                            {"p10_s", r.t.p10_s},
                            {"p90_s", r.t.p90_s},
                            {"repeats", r.t.repeats},
                            {"gflop", r.t.gflop},
                            {"note", r.note}});
  j["config"] = to_config(a.config, Method::Hisa).describe();
  if (!a.json.empty()) write_text(a.json, j.dump(2) + "\n", "--json");
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  args->workload.context = 16384;
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Time each method on each backend (prefill on a generated workload, then paged decode), as ratios "
      "against flat on the same backend and against the float64 reference, measured in the same run.");
  add_workload_options(*cmd, args->workload);
  add_config_options(*cmd, args->config, false);
  cmd->add_option("--devices", args->devices, "backends (comma separated); default reference,cpu[,cuda]")
      ->delimiter(',');
  cmd->add_option("--methods", args->methods, "methods (comma separated)")->delimiter(',')->capture_default_str();
  cmd->add_option("--repeats", args->repeats, "timed calls per cell (median, min and max reported)")
      ->capture_default_str();
  cmd->add_option("--decode-context", args->decode_context, "decode: tokens in each request's cache")
      ->capture_default_str();
  cmd->add_option("--batch", args->batch, "decode: requests")->capture_default_str();
  cmd->add_option("--next-n", args->next_n, "decode: query tokens per request (1..4)")->capture_default_str();
  cmd->add_flag("--no-prefill", args->no_prefill, "skip the prefill part");
  cmd->add_flag("--no-decode", args->no_decode, "skip the decode part");
  cmd->add_option("--json", args->json, "also write all timings as JSON to this file");
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace hisa::cli
