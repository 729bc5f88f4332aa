// hisa: how a test decides whether an output row is right (SEMANTICS.md section 7).
#pragma once

#include <cstdint>
#include <string>

#include "hisa/config.hpp"
#include "hisa/reference.hpp"

namespace hisa {

// Row tolerance: eps = rel * max |r(p)|. rel is 1e-5 for fp32 inputs, 1e-3 for bf16 and fp8.
double judge_rel_eps(DType dtype);

// Judges one output row against the float64 reference. Returns "" when the row is right, else a
// message saying what is wrong (which entry, which scores). For hisa and block, `blocks` (the
// backend's chosen blocks, [cfg.top_blocks]) is required: the block set is judged on the block
// scores and the tokens against the candidates of those blocks. With exact = true (small-integer
// inputs) the sets must equal the reference's, ties included. `rounding`: how the backend stored
// its pooled keys (the block scores are judged on the same rounded keys).
std::string judge_row(const reference::Row& row, const SelectConfig& cfg, const int32_t* indices,
                      const int32_t* blocks, double rel_eps, bool exact,
                      PooledRounding rounding = PooledRounding::Exact);

}  // namespace hisa
