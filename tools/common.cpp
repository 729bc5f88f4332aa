#include "common.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "hisa/error.hpp"

namespace hisa::cli {

void add_config_options(CLI::App& app, ConfigArgs& a, bool with_method) {
  if (with_method)
    app.add_option("--method", a.method, "flat (DSA), hisa (hierarchical) or block (block-sparse)")
        ->check(CLI::IsMember({"flat", "hisa", "block"}))
        ->capture_default_str();
  app.add_option("--block-size", a.block_size, "B: keys per block (power of two, 64..256)")->capture_default_str();
  app.add_option("--top-blocks", a.top_blocks, "m: blocks kept per query, forced ones included")
      ->capture_default_str();
  app.add_option("--topk", a.topk, "k: tokens kept per query")->capture_default_str();
  app.add_option("--sink-blocks", a.sink_blocks, "first blocks always kept")->capture_default_str();
  app.add_option("--local-blocks", a.local_blocks, "last blocks always kept (>= 1)")->capture_default_str();
  app.add_option("--pooling", a.pooling, "block key pooling: mean (the contract) or max (experimental)")
      ->check(CLI::IsMember({"mean", "max"}))
      ->capture_default_str();
}

SelectConfig to_config(const ConfigArgs& a, Method method) {
  SelectConfig c;
  c.method = method;
  c.block_size = a.block_size;
  c.top_blocks = a.top_blocks;
  c.topk = a.topk;
  c.sink_blocks = a.sink_blocks;
  c.local_blocks = a.local_blocks;
  c.pooling = pooling_from_name(a.pooling);
  c.validate();
  return c;
}

void add_workload_options(CLI::App& app, WorkloadArgs& a) {
  app.add_option("--workload", a.kind, "generated workload: gaussian, topical, needles or sink-recency")
      ->check(CLI::IsMember({"gaussian", "topical", "needles", "sink-recency"}))
      ->capture_default_str();
  app.add_option("--context", a.context, "keys in the sequence (S)")->capture_default_str();
  app.add_option("--queries", a.queries, "query rows: the last tokens of the sequence (T)")->capture_default_str();
  app.add_option("--heads", a.heads, "indexer heads H (32 or 64)")->capture_default_str();
  app.add_option("--dtype", a.dtype, "q/k dtype: fp8, bf16 or f32")
      ->check(CLI::IsMember({"fp8", "bf16", "f32"}))
      ->capture_default_str();
  app.add_option("--scale-rule", a.scale_rule, "fp8 key scale: ue8m0 (DeepSeek, power of two) or amax")
      ->check(CLI::IsMember({"ue8m0", "amax"}))
      ->capture_default_str();
  app.add_option("--seed", a.seed, "workload seed")->capture_default_str();
}

DType parse_qk_dtype(const std::string& n) {
  if (n == "fp8" || n == "F8_E4M3") return DType::F8E4M3;
  if (n == "bf16" || n == "BF16") return DType::BF16;
  if (n == "f32" || n == "F32") return DType::F32;
  throw Error("unknown q/k dtype '" + n + "' (expected fp8, bf16 or f32)");
}

WorkloadSpec to_spec(const WorkloadArgs& a) {
  HISA_CHECK(a.context >= 1, "--context must be >= 1, got ", a.context);
  HISA_CHECK(a.queries >= 1 && a.queries <= a.context, "--queries must be in [1, context = ", a.context,
             "], got ", a.queries);
  WorkloadSpec s;
  s.kind = workload_from_name(a.kind);
  s.seq_keys = {a.context};
  s.seq_queries = {a.queries};
  s.num_heads = a.heads;
  s.dtype = parse_qk_dtype(a.dtype);
  s.scale_rule = a.scale_rule == "amax" ? ScaleRule::Amax : ScaleRule::UE8M0;
  s.seed = a.seed;
  return s;
}

static void sort_rows(Selection& s) {
  for (int64_t r = 0; r < s.rows; ++r) {
    int32_t* row = s.indices.data() + r * s.width;
    int32_t* end = std::partition(row, row + s.width, [](int32_t v) { return v >= 0; });
    std::sort(row, end);
  }
}

static Selection make_selection(int64_t rows, const SelectConfig& cfg) {
  Selection s;
  s.rows = rows;
  s.width = cfg.out_width();
  s.num_blocks = cfg.has_blocks() ? cfg.top_blocks : 0;
  s.indices.assign(size_t(rows * s.width), -1);
  s.blocks.assign(size_t(rows * s.num_blocks), -1);
  return s;
}

Selection run_prefill(Indexer& backend, const PrefillInputs& in, const SelectConfig& cfg) {
  Selection s = make_selection(in.num_q, cfg);
  SelectOutputs out{s.indices.data(), s.num_blocks ? s.blocks.data() : nullptr};
  const double t0 = now_seconds();
  backend.select_prefill(in, cfg, out);
  s.seconds = now_seconds() - t0;
  sort_rows(s);
  return s;
}

Selection run_decode(Indexer& backend, const DecodeInputs& in, const SelectConfig& cfg) {
  Selection s = make_selection(int64_t(in.batch) * in.next_n, cfg);
  SelectOutputs out{s.indices.data(), s.num_blocks ? s.blocks.data() : nullptr};
  const double t0 = now_seconds();
  backend.select_decode(in, cfg, out);
  s.seconds = now_seconds() - t0;
  sort_rows(s);
  return s;
}

std::string resolve_device(const std::string& device) {
  if (device == "auto") return cuda_available() ? "cuda" : "cpu";
  return device;
}

void check_writable(const std::string& path, const std::string& option) {
  namespace fs = std::filesystem;
  HISA_CHECK(!path.empty(), option, ": the file name is empty");
  const fs::path file(path);
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  std::error_code ec;
  HISA_CHECK(fs::is_directory(dir, ec), option, ": cannot write '", path, "': folder '",
             dir.string(), fs::exists(dir, ec) ? "' is not a folder" : "' does not exist");
  HISA_CHECK(!fs::is_directory(file, ec), option, ": cannot write '", path, "': it is a folder");
  const bool exists = fs::exists(file, ec);
  HISA_CHECK(::access(exists ? path.c_str() : dir.c_str(), W_OK) == 0, option, ": cannot write '",
             path, "': ", std::strerror(errno));
}

void write_text(const std::string& path, const std::string& text, const std::string& option) {
  std::ofstream f(path, std::ios::trunc);
  HISA_CHECK(f, option, ": cannot create '", path, "': ", std::strerror(errno));
  f << text;
  f.close();
  HISA_CHECK(f, option, ": error writing '", path, "': ", std::strerror(errno));
}

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

void progress(int step, int total, const std::string& label) {
  std::fprintf(stderr, "[%d/%d] %s\n", step, total, label.c_str());
  std::fflush(stderr);
}

std::string fmt_seconds(double s) {
  char buf[32];
  if (s < 1e-3)
    std::snprintf(buf, sizeof buf, "%.0f us", s * 1e6);
  else if (s < 1.0)
    std::snprintf(buf, sizeof buf, "%.2f ms", s * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

}  // namespace hisa::cli
