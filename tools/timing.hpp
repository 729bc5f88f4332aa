// Timing helpers shared by `hisa bench` and `hisa demo`.
#pragma once

#include <string>
#include <vector>

#include "common.hpp"

namespace hisa::cli {

struct Timing {
  std::string device, mode, method;  // mode: prefill | decode
  // Over the repeats: p10 and p90 are the values ranked 10% and 90% of the way from the fastest
  // to the slowest (min and max with fewer than 11 repeats).
  double median_s = 0, min_s = 0, max_s = 0, p10_s = 0, p90_s = 0;
  int repeats = 0;
  double gflop = 0;  // multiply-adds x 2 of the scoring this method does (counted, not measured)
};

// Median, min, max, p10 and p90 of the timed calls (seconds, any order; at least one).
Timing summarize_times(std::vector<double> seconds);

// p90 / p10 above which a cell's repeats are too spread to trust its median.
constexpr double kMaxSpread = 1.5;
// "" when the repeats agree, else a warning line naming the cell, its spread and a likely cause.
std::string spread_warning(const Timing& t);

// Median of `repeats` timed calls (one untimed warm-up call when warmup is true).
Timing time_prefill(Indexer& backend, const PrefillInputs& in, const SelectConfig& cfg, int repeats,
                    bool warmup);
Timing time_decode(Indexer& backend, const DecodeInputs& in, const SelectConfig& cfg, int repeats, bool warmup);

// Scoring work in GFLOP: flat scores every visible key; hisa scores the complete blocks' pooled keys and
// then at most m*B candidate keys; block scores the pooled keys only.
double prefill_gflop(const PrefillInputs& in, const SelectConfig& cfg);
double decode_gflop(const DecodeInputs& in, const SelectConfig& cfg);

}  // namespace hisa::cli
