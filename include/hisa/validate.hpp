// hisa: input checks shared by every backend. Each throws hisa::Error with a message that names the
// input, the expected and the actual value.
#pragma once

#include <cstdint>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/params.hpp"

namespace hisa {

// One query row of a prefill call, resolved from cu_seqlens or ks/ke.
struct RowSpan {
  int64_t key_start;  // first key row of the row's sequence (blocks align here)
  int64_t visible;    // e: the row sees positions [0, e) relative to key_start
  int64_t seq_keys;   // keys of the sequence present in k (>= visible), for pooled keys
};

// Checks that read no array: the config, scalars (T, S, H, D, dtype) and which pointers are given.
// The CUDA backend's device-pointer API runs these on the host and checks the arrays on the device.
void validate_prefill_shapes(const PrefillInputs& in, const SelectConfig& cfg);
void validate_decode_shapes(const DecodeInputs& in, const SelectConfig& cfg);

// Shapes, dtypes, cu_seqlens / ks-ke consistency (the first decreasing entry is named),
// causality (T_b <= S_b); with check_values also NaN/inf in w, q, k, k_scale <= 0, and inputs
// whose scores could overflow fp32 sums: every backend refuses (the float64 reference too, so
// that all backends accept the same inputs) when max(D, B) * max(1, max|q|) * max(1, max|k|) *
// max(1, max k_scale) * max(1, max_t sum_h |w[t, h]|) exceeds FLT_MAX / 16 (one pass over the
// inputs). T = 0 is a valid, empty call. Host pointers only.
void validate_prefill(const PrefillInputs& in, const SelectConfig& cfg, bool check_values = true);
// Row spans of every query row (host pointers).
std::vector<RowSpan> prefill_row_spans(const PrefillInputs& in);

// Shapes, next_n in 1..4, seq_lens in [next_n, max_pages * page_size], block_table entries in
// [0, num_pages) for every page a request uses, B a multiple of page_size for hisa/block; with
// check_values NaN/inf in q and w, and the fp32 bound of validate_prefill with the cache's keys
// at the fp8 maximum 448 and scale 1. The cache's scales are not scanned (that would read every
// page): the fast CPU backend refuses a call whose scores overflow fp32; the reference computes
// such calls in float64.
void validate_decode(const DecodeInputs& in, const SelectConfig& cfg, bool check_values = true);

// One row of given_blocks (PrefillInputs / DecodeInputs::given_blocks): its top_blocks entries
// ascending and distinct in [0, ceil(visible / block_size)), then -1 only. The error names
// `what`, the row and the entry. (validate_prefill / validate_decode check every row with it; the
// CUDA backend's device check finds the first bad row and reads that row back for it.)
void check_given_blocks_row(const char* what, int64_t row, const int32_t* blocks, int top_blocks,
                            int64_t visible, int block_size);

}  // namespace hisa
