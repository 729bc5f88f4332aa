// hisa select: one indexer call on a case file (prefill or decode), indices (and chosen blocks) to
// a safetensors file.
#include <cstdio>
#include <cstring>
#include <variant>

#include "common.hpp"
#include "hisa/error.hpp"
#include "hisa/validate.hpp"

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
// large --top-blocks writes rows * m * B indices).
constexpr double kWarnOutputBytes = 256e6;

void warn_if_large(int64_t rows, const SelectConfig& cfg) {
  const int num_blocks = cfg.has_blocks() ? cfg.top_blocks : 0;
  const double bytes = double(rows) * (cfg.out_width() + num_blocks) * 4;
  if (bytes <= kWarnOutputBytes) return;
  std::string what =
      "indices [" + std::to_string(rows) + ", " + std::to_string(cfg.out_width()) + "]";
  if (num_blocks)
    what += " and blocks [" + std::to_string(rows) + ", " + std::to_string(num_blocks) + "]";
  std::fprintf(stderr,
               "hisa select: warning: the output will be %.0f MB (%s int32), held in memory "
               "while it is written\n",
               bytes / 1e6, what.c_str());
}

// The fast CPU backend scores blocks with the pooled keys of DecodeInputs::pooled (the reference
// pools from the cache itself): a case without them gets them here, pooled from scratch with the
// selection's block size. The block table is checked first, so that a bad entry is reported by
// the validate layer as it is for every backend.
DecodeInputs decode_inputs(DecodeCase& c, const SelectConfig& cfg) {
  c.check_pooled(cfg);
  if (cfg.has_blocks() && c.pooled.empty()) {
    validate_decode(c.inputs(), cfg, false);
    c.pool(cfg.block_size, cfg.pooling);
  }
  return c.inputs();
}

void run_select(const SelectArgs& a) {
  const SelectConfig cfg = to_config(a.config, method_from_name(a.config.method));
  check_writable(a.output, "--output");
  const std::string device = resolve_device(a.device);
  auto backend = make_indexer(device);  // before the case is read: a missing device fails at once
  std::variant<Case, DecodeCase> loaded = load_any_case(a.input);

  Selection s;
  std::map<std::string, std::string> meta = {
      {"config", cfg.describe()}, {"device", device}, {"input", a.input}};
  std::string inputs;  // what ran, for the summary line
  if (DecodeCase* dc = std::get_if<DecodeCase>(&loaded)) {
    const DecodeInputs in = decode_inputs(*dc, cfg);
    warn_if_large(int64_t(in.batch) * in.next_n, cfg);
    s = run_decode(*backend, in, cfg);
    meta["case"] = "decode";
    meta["next_n"] = std::to_string(in.next_n);
    inputs = "decode N=" + std::to_string(in.batch) + " next_n=" + std::to_string(in.next_n) +
             " H=" + std::to_string(in.num_heads) + " q " + dtype_name(in.q_dtype) + ", " +
             std::to_string(in.num_pages) + " pages of " + std::to_string(in.page_size);
  } else {
    const PrefillInputs in = std::get<Case>(loaded).inputs();
    warn_if_large(in.num_q, cfg);
    s = run_prefill(*backend, in, cfg);
    meta["case"] = "prefill";
    inputs = "prefill T=" + std::to_string(in.num_q) + " S=" + std::to_string(in.num_k) +
             " H=" + std::to_string(in.num_heads) + " " + dtype_name(in.dtype);
  }
  std::map<std::string, Tensor> out;
  out["indices"] = int_tensor(s.indices, s.rows, s.width);
  if (s.num_blocks) out["blocks"] = int_tensor(s.blocks, s.rows, s.num_blocks);
  write_safetensors(a.output, out, meta);
  std::fprintf(stderr, "hisa select: %s on %s: %s -> %s [%lld, %d] in %s\n", cfg.describe().c_str(),
               device.c_str(), inputs.c_str(), a.output.c_str(), (long long)s.rows, s.width,
               fmt_seconds(s.seconds).c_str());
}

}  // namespace

void add_select_command(CLI::App& app) {
  auto args = std::make_shared<SelectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "select",
      "Run one indexer call on a case file and write `indices` [rows, topk] (block: "
      "[rows, m*B]), each row sorted ascending and -1 padded, plus `blocks` [rows, m] for hisa "
      "and block. A prefill case holds q [T,H,D], k [S,D], optional k_scale [S], w [T,H], "
      "optional cu_seqlens_q/cu_seqlens_k or ks/ke (rows = T); a decode case holds "
      "q [N*next_n,H,D], w [N*next_n,H], kv_cache [pages,page_size,D+4] U8, "
      "block_table [N,max_pages], seq_lens [N] and optional pooled keys (rows = N*next_n, "
      "request-major). docs/case-files.md describes both; `hisa make-case` writes them.");
  cmd->add_option("--input,-i", args->input, "case file (.safetensors)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--output,-o", args->output, "output file (.safetensors)")->required();
  cmd->add_option("--device", args->device, "reference (float64 oracle), cpu, cuda or auto")
      ->check(CLI::IsMember({"reference", "cpu", "cuda", "auto"}))
      ->capture_default_str();
  add_config_options(*cmd, args->config, true);
  cmd->callback([args] { run_select(*args); });
}

}  // namespace hisa::cli
