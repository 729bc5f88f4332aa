// hisa: the fidelity study of one case: flat DSA once, then each hisa / block configuration against it.
#pragma once

#include <string>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/fidelity.hpp"
#include "hisa/params.hpp"

namespace hisa {

struct EvalOptions {
  std::string device = "cpu";  // backend making the selections
  int64_t score_rows = 256;    // rows (evenly spaced) whose score-mass recall is computed; 0 = all rows
  bool show_progress = false;  // progress lines on stderr
};

struct ConfigFidelity {
  SelectConfig config;
  FidelitySummary all;     // every row (IoU / recall); mass over the scored rows
  FidelitySummary differ;  // rows with e > m * B only
  double seconds = 0;      // selection time on opt.device
};

struct EvalReport {
  std::string device;
  int64_t rows = 0, scored_rows = 0, differ_rows = 0;  // differ_rows for the first config's budget
  int topk = 0;
  double flat_seconds = 0;
  std::vector<ConfigFidelity> configs;
};

// Flat selection with cfg.topk of the first config, then every config. IoU and recall over all rows;
// score-mass recall over opt.score_rows rows whose scores come from the float64 reference.
EvalReport evaluate(const PrefillInputs& in, const std::vector<SelectConfig>& configs, const EvalOptions& opt);
// A human table, one line per configuration.
std::string format_report(const EvalReport& r, const std::string& source);
// The same as JSON text.
std::string report_json(const EvalReport& r);

}  // namespace hisa
