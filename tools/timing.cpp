#include "timing.hpp"

#include <algorithm>
#include <cstdio>

#include "hisa/validate.hpp"

namespace hisa::cli {
namespace {

Timing summarize(std::vector<double> t, const std::string& device, const std::string& mode, Method m) {
  Timing r = summarize_times(std::move(t));
  r.device = device;
  r.mode = mode;
  r.method = method_name(m);
  return r;
}

// GFLOP of scoring one row that sees e keys of a sequence with seq_keys keys.
double row_gflop(int64_t e, int64_t seq_keys, int H, int D, const SelectConfig& cfg) {
  const double per_key = 2.0 * H * D * 1e-9;
  if (cfg.method == Method::Flat) return per_key * double(e);
  const int64_t B = cfg.block_size;
  const int64_t blocks = std::min((e + B - 1) / B, seq_keys / B);
  const double block_stage = per_key * double(blocks);
  if (cfg.method == Method::Block) return block_stage;
  return block_stage + per_key * double(std::min<int64_t>(e, int64_t(cfg.top_blocks) * B));
}

}  // namespace

Timing summarize_times(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  Timing r;
  const size_t n = t.size();
  r.repeats = int(n);
  r.min_s = t.front();
  r.max_s = t.back();
  r.median_s = t[n / 2];
  r.p10_s = t[(n - 1) / 10];          // floor(0.1 (n - 1))
  r.p90_s = t[n - 1 - (n - 1) / 10];  // ceil(0.9 (n - 1))
  return r;
}

std::string spread_warning(const Timing& t) {
  if (t.repeats < 2 || t.p90_s <= kMaxSpread * t.p10_s) return "";
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "warning: %s %s %s: its %d repeats range from %s to %s (p10 %s, p90 %s: %.1fx > %.1fx), "
      "too spread to trust the median; is another process using a core? (bench on an idle "
      "machine, or with more --repeats)",
      t.device.c_str(), t.mode.c_str(), t.method.c_str(), t.repeats, fmt_seconds(t.min_s).c_str(),
      fmt_seconds(t.max_s).c_str(), fmt_seconds(t.p10_s).c_str(), fmt_seconds(t.p90_s).c_str(),
      t.p90_s / t.p10_s, kMaxSpread);
  return buf;
}

Timing time_prefill(Indexer& backend, const PrefillInputs& in, const SelectConfig& cfg, int repeats, bool warmup) {
  std::vector<double> t;
  if (warmup) run_prefill(backend, in, cfg);
  for (int i = 0; i < std::max(1, repeats); ++i) t.push_back(run_prefill(backend, in, cfg).seconds);
  Timing r = summarize(t, backend.name(), "prefill", cfg.method);
  r.gflop = prefill_gflop(in, cfg);
  return r;
}

Timing time_decode(Indexer& backend, const DecodeInputs& in, const SelectConfig& cfg, int repeats, bool warmup) {
  std::vector<double> t;
  if (warmup) run_decode(backend, in, cfg);
  for (int i = 0; i < std::max(1, repeats); ++i) t.push_back(run_decode(backend, in, cfg).seconds);
  Timing r = summarize(t, backend.name(), "decode", cfg.method);
  r.gflop = decode_gflop(in, cfg);
  return r;
}

double prefill_gflop(const PrefillInputs& in, const SelectConfig& cfg) {
  double g = 0;
  for (const RowSpan& s : prefill_row_spans(in)) g += row_gflop(s.visible, s.seq_keys, in.num_heads, in.head_dim, cfg);
  return g;
}

double decode_gflop(const DecodeInputs& in, const SelectConfig& cfg) {
  double g = 0;
  for (int b = 0; b < in.batch; ++b)
    for (int j = 0; j < in.next_n; ++j) {
      const int64_t len = in.seq_lens[b];
      g += row_gflop(len - in.next_n + j + 1, len, in.num_heads, in.head_dim, cfg);
    }
  return g;
}

}  // namespace hisa::cli
