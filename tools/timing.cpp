#include "timing.hpp"

#include <algorithm>

#include "hisa/pooled.hpp"
#include "hisa/validate.hpp"

namespace hisa::cli {
namespace {

Timing summarize(std::vector<double> t, const std::string& device, const std::string& mode, Method m) {
  std::sort(t.begin(), t.end());
  Timing r;
  r.device = device;
  r.mode = mode;
  r.method = method_name(m);
  r.repeats = int(t.size());
  r.min_s = t.front();
  r.median_s = t[t.size() / 2];
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

PooledStore build_pooled(const DecodeInputs& in, const SelectConfig& cfg) {
  PooledStore p;
  int64_t longest = 0;
  for (int b = 0; b < in.batch; ++b) longest = std::max<int64_t>(longest, in.seq_lens[b]);
  p.max_blocks = int(std::max<int64_t>(1, longest / cfg.block_size));
  p.data.assign(size_t(in.batch) * p.max_blocks * in.head_dim, 0.0f);
  update_pooled_keys(in, nullptr, in.seq_lens, cfg.block_size, cfg.pooling, p.data.data(), p.max_blocks);
  return p;
}

}  // namespace hisa::cli
