// Shared pieces of the `hisa` subcommands: configuration options, running a backend, timing.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/indexer.hpp"
#include "hisa/io.hpp"
#include "hisa/workloads.hpp"

namespace hisa::cli {

struct ConfigArgs {
  std::string method = "hisa";
  int block_size = 128, top_blocks = 64, topk = 2048, sink_blocks = 1, local_blocks = 1;
  std::string pooling = "mean";
};
void add_config_options(CLI::App& app, ConfigArgs& args, bool with_method);
SelectConfig to_config(const ConfigArgs& args, Method method);

// Workload options shared by eval, bench and demo.
struct WorkloadArgs {
  std::string kind = "topical";
  int64_t context = 32768;
  int64_t queries = 256;
  int heads = 64;
  std::string dtype = "fp8";
  std::string scale_rule = "ue8m0";
  uint64_t seed = 0;
};
void add_workload_options(CLI::App& app, WorkloadArgs& args);
WorkloadSpec to_spec(const WorkloadArgs& args);
DType parse_qk_dtype(const std::string& name);  // fp8 | bf16 | f32 (also F8_E4M3, BF16, F32)

// One selection's output, rows sorted ascending (valid entries first, -1 padding).
struct Selection {
  int64_t rows = 0;
  int width = 0, num_blocks = 0;
  std::vector<int32_t> indices;  // [rows, width]
  std::vector<int32_t> blocks;   // [rows, num_blocks] (hisa/block only)
  double seconds = 0;
};
Selection run_prefill(Indexer& backend, const PrefillInputs& in, const SelectConfig& cfg);
Selection run_decode(Indexer& backend, const DecodeInputs& in, const SelectConfig& cfg);

// "auto" -> "cuda" if available, else "cpu".
std::string resolve_device(const std::string& device);

// Output files of an option (--json, --output): check_writable fails before the long work when
// `path` cannot be written (missing folder, a folder in its place, no permission); write_text
// writes and checks the write. Both throw hisa::Error naming the option and the path.
void check_writable(const std::string& path, const std::string& option);
void write_text(const std::string& path, const std::string& text, const std::string& option);

double now_seconds();
// Progress on stderr: "[3/12] label".
void progress(int step, int total, const std::string& label);
std::string fmt_seconds(double s);  // "812 us", "12.3 ms", "4.56 s"

// Subcommands.
void add_select_command(CLI::App& app);
void add_make_case_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_demo_command(CLI::App& app);

}  // namespace hisa::cli
