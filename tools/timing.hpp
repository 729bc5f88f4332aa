// Timing helpers shared by `hisa bench` and `hisa demo`.
#pragma once

#include <string>
#include <vector>

#include "common.hpp"

namespace hisa::cli {

struct Timing {
  std::string device, mode, method;  // mode: prefill | decode
  double median_s = 0, min_s = 0;
  int repeats = 0;
  double gflop = 0;  // multiply-adds x 2 of the scoring this method does (counted, not measured)
};

// Median of `repeats` timed calls (one untimed warm-up call when warmup is true).
Timing time_prefill(Indexer& backend, const PrefillInputs& in, const SelectConfig& cfg, int repeats,
                    bool warmup);
Timing time_decode(Indexer& backend, const DecodeInputs& in, const SelectConfig& cfg, int repeats, bool warmup);

// Scoring work in GFLOP: flat scores every visible key; hisa scores the complete blocks' pooled keys and
// then at most m*B candidate keys; block scores the pooled keys only.
double prefill_gflop(const PrefillInputs& in, const SelectConfig& cfg);
double decode_gflop(const DecodeInputs& in, const SelectConfig& cfg);

// Pooled keys for a decode case built from scratch (fp32 [batch, max_blocks, D]).
struct PooledStore {
  std::vector<float> data;
  int max_blocks = 0;
};
PooledStore build_pooled(const DecodeInputs& in, const SelectConfig& cfg);

}  // namespace hisa::cli
