#include "hisa/evaluate.hpp"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "hisa/error.hpp"
#include "hisa/indexer.hpp"
#include "hisa/reference.hpp"
#include "hisa/validate.hpp"

namespace hisa {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Out {
  std::vector<int32_t> indices;
  double seconds = 0;
};

Out select(Indexer& backend, const PrefillInputs& in, const SelectConfig& cfg) {
  Out o;
  o.indices.assign(size_t(in.num_q * cfg.out_width()), -1);
  SelectOutputs out{o.indices.data(), nullptr};
  const double t0 = now();
  backend.select_prefill(in, cfg, out);
  o.seconds = now() - t0;
  return o;
}

nlohmann::json summary_json(const FidelitySummary& s) {
  return {{"rows", s.rows},           {"iou_mean", s.iou_mean},       {"iou_p1", s.iou_p1},
          {"iou_min", s.iou_min},     {"recall_mean", s.recall_mean}, {"recall_min", s.recall_min},
          {"mass_mean", s.mass_mean}, {"mass_p1", s.mass_p1},         {"mass_min", s.mass_min}};
}

}  // namespace

EvalReport evaluate(const PrefillInputs& in, const std::vector<SelectConfig>& configs, const EvalOptions& opt) {
  HISA_CHECK(!configs.empty(), "evaluate: no configuration given");
  auto backend = make_indexer(opt.device);
  EvalReport report;
  report.device = backend->name();
  report.rows = in.num_q;
  report.topk = configs.front().topk;

  SelectConfig flat = configs.front();
  flat.method = Method::Flat;
  if (opt.show_progress) std::fprintf(stderr, "[eval] flat k=%d on %s, %lld rows\n", flat.topk,
                                      report.device.c_str(), (long long)in.num_q);
  const Out dsa = select(*backend, in, flat);
  report.flat_seconds = dsa.seconds;

  // Rows whose float64 scores feed the score-mass recall, evenly spaced.
  const int64_t T = in.num_q;
  const int64_t want = opt.score_rows <= 0 ? T : std::min(opt.score_rows, T);
  std::vector<char> scored(static_cast<size_t>(T), 0);
  for (int64_t i = 0; i < want; ++i) scored[size_t(want == T ? i : (i * T) / want + (T / want) / 2)] = 1;
  report.scored_rows = want;
  if (opt.show_progress) std::fprintf(stderr, "[eval] float64 scores of %lld rows\n", (long long)want);
  const std::vector<reference::Row> rows = reference::prefill_rows(in);
  std::vector<std::vector<double>> scores(static_cast<size_t>(T));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < T; ++t)
    if (scored[size_t(t)]) scores[size_t(t)] = reference::token_scores(rows[size_t(t)]);

  const int wd = flat.out_width();
  for (size_t ci = 0; ci < configs.size(); ++ci) {
    const SelectConfig& cfg = configs[ci];
    if (opt.show_progress)
      std::fprintf(stderr, "[eval] (%zu/%zu) %s\n", ci + 1, configs.size(), cfg.describe().c_str());
    const Out sel = select(*backend, in, cfg);
    const int w = cfg.out_width();
    const int64_t budget = int64_t(cfg.top_blocks) * cfg.block_size;
    std::vector<RowFidelity> overlap, overlap_differ, mass, mass_differ;
    for (int64_t t = 0; t < T; ++t) {
      const reference::Row& row = rows[size_t(t)];
      // The block baseline keeps m*B tokens; compare its set with DSA's k as the contract does.
      std::vector<int32_t> a(sel.indices.begin() + t * w, sel.indices.begin() + (t + 1) * w);
      std::vector<int32_t> b(dsa.indices.begin() + t * wd, dsa.indices.begin() + (t + 1) * wd);
      b.resize(size_t(w), -1);
      const std::vector<double>* sc = scored[size_t(t)] ? &scores[size_t(t)] : nullptr;
      std::vector<double> zeros;
      if (!sc) zeros.assign(size_t(row.visible), 0.0);
      const RowFidelity f =
          row_fidelity(a.data(), b.data(), w, sc ? sc->data() : zeros.data(), row.visible, budget);
      overlap.push_back(f);
      if (f.can_differ) overlap_differ.push_back(f);
      if (sc) {
        mass.push_back(f);
        if (f.can_differ) mass_differ.push_back(f);
      }
    }
    auto combine = [](const std::vector<RowFidelity>& ov, const std::vector<RowFidelity>& ms) {
      FidelitySummary s = summarize(ov);
      const FidelitySummary m = summarize(ms);
      s.mass_mean = m.mass_mean;
      s.mass_p1 = m.mass_p1;
      s.mass_min = m.mass_min;
      return s;
    };
    ConfigFidelity cf;
    cf.config = cfg;
    cf.seconds = sel.seconds;
    cf.all = combine(overlap, mass);
    cf.differ = combine(overlap_differ, mass_differ);
    if (ci == 0) report.differ_rows = int64_t(overlap_differ.size());
    report.configs.push_back(cf);
  }
  return report;
}

std::string format_report(const EvalReport& r, const std::string& source) {
  std::ostringstream os;
  char line[512];
  os << "hisa eval: " << source << "\n";
  std::snprintf(line, sizeof line,
                "rows %lld (score-mass over %lld), device %s, flat DSA k=%d took %.3f s\n"
                "metrics over rows with e > m*B (where the methods can differ); all rows in --json\n",
                (long long)r.rows, (long long)r.scored_rows, r.device.c_str(), r.topk, r.flat_seconds);
  os << line;
  std::snprintf(line, sizeof line, "%-6s %5s %5s %6s %7s | %8s %8s %8s | %8s | %9s %9s %9s | %9s\n", "method",
                "B", "m", "k", "rows", "IoU", "IoU p1", "IoU min", "recall", "mass", "mass p1", "mass min",
                "time");
  os << line;
  for (const ConfigFidelity& c : r.configs) {
    const FidelitySummary& s = c.differ;
    std::snprintf(line, sizeof line,
                  "%-6s %5d %5d %6s %7lld | %8.4f %8.4f %8.4f | %8.4f | %9.5f %9.5f %9.5f | %8.3fs\n",
                  method_name(c.config.method).c_str(), c.config.block_size, c.config.top_blocks,
                  c.config.method == Method::Hisa ? std::to_string(c.config.topk).c_str() : "-",
                  (long long)s.rows, s.iou_mean, s.iou_p1, s.iou_min, s.recall_mean, s.mass_mean, s.mass_p1,
                  s.mass_min, c.seconds);
    os << line;
  }
  return os.str();
}

std::string report_json(const EvalReport& r) {
  nlohmann::json j;
  j["device"] = r.device;
  j["rows"] = r.rows;
  j["scored_rows"] = r.scored_rows;
  j["topk"] = r.topk;
  j["flat_seconds"] = r.flat_seconds;
  for (const ConfigFidelity& c : r.configs) {
    j["configs"].push_back({{"method", method_name(c.config.method)},
                            {"block_size", c.config.block_size},
                            {"top_blocks", c.config.top_blocks},
                            {"topk", c.config.topk},
                            {"pooling", c.config.pooling == Pooling::Max ? "max" : "mean"},
                            {"seconds", c.seconds},
                            {"all", summary_json(c.all)},
                            {"differ", summary_json(c.differ)}});
  }
  return j.dump(2);
}

}  // namespace hisa
