// hisa select: one indexer call on a case file, indices (and chosen blocks) to a safetensors file.
#include <cstdio>
#include <cstring>

#include "common.hpp"
#include "hisa/error.hpp"

namespace hisa::cli {
namespace {

struct SelectArgs {
  std::string input, output, device = "auto";
  ConfigArgs config;
};

Tensor int_tensor(const std::vector<int32_t>& v, int64_t rows, int64_t cols) {
  Tensor t(DType::I32, {rows, cols});
  std::memcpy(t.bytes.data(), v.data(), v.size() * 4);
  return t;
}

// Outputs above this size get a warning line before they are computed (--method block with a
// large --top-blocks writes T * m * B indices).
constexpr double kWarnOutputBytes = 256e6;

void run_select(const SelectArgs& a) {
  const SelectConfig cfg = to_config(a.config, method_from_name(a.config.method));
  check_writable(a.output, "--output");
  const Case c = load_case(a.input);
  const PrefillInputs in = c.inputs();
  const int num_blocks = cfg.has_blocks() ? cfg.top_blocks : 0;
  const double bytes = double(in.num_q) * (cfg.out_width() + num_blocks) * 4;
  if (bytes > kWarnOutputBytes) {
    std::string what =
        "indices [" + std::to_string(in.num_q) + ", " + std::to_string(cfg.out_width()) + "]";
    if (num_blocks)
      what += " and blocks [" + std::to_string(in.num_q) + ", " + std::to_string(num_blocks) + "]";
    std::fprintf(stderr,
                 "hisa select: warning: the output will be %.0f MB (%s int32), held in memory "
                 "while it is written\n",
                 bytes / 1e6, what.c_str());
  }
  const std::string device = resolve_device(a.device);
  auto backend = make_indexer(device);
  const Selection s = run_prefill(*backend, in, cfg);
  std::map<std::string, Tensor> out;
  out["indices"] = int_tensor(s.indices, s.rows, s.width);
  if (s.num_blocks) out["blocks"] = int_tensor(s.blocks, s.rows, s.num_blocks);
  write_safetensors(a.output, out, {{"config", cfg.describe()}, {"device", device}, {"input", a.input}});
  std::fprintf(stderr, "hisa select: %s on %s: T=%lld S=%lld H=%d %s -> %s [%lld, %d] in %s\n",
               cfg.describe().c_str(), device.c_str(), (long long)in.num_q, (long long)in.num_k, in.num_heads,
               dtype_name(in.dtype).c_str(), a.output.c_str(), (long long)s.rows, s.width,
               fmt_seconds(s.seconds).c_str());
}

}  // namespace

void add_select_command(CLI::App& app) {
  auto args = std::make_shared<SelectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "select",
      "Run one indexer call on a case file (q [T,H,D], k [S,D], optional k_scale [S], w [T,H], optional "
      "cu_seqlens_q/cu_seqlens_k or ks/ke) and write `indices` [T, topk] (block: [T, m*B]), each row sorted "
      "ascending and -1 padded, plus `blocks` [T, m] for hisa and block.");
  cmd->add_option("--input,-i", args->input, "case file (.safetensors)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--output,-o", args->output, "output file (.safetensors)")->required();
  cmd->add_option("--device", args->device, "reference (float64 oracle), cpu, cuda or auto")
      ->check(CLI::IsMember({"reference", "cpu", "cuda", "auto"}))
      ->capture_default_str();
  add_config_options(*cmd, args->config, true);
  cmd->callback([args] { run_select(*args); });
}

}  // namespace hisa::cli
