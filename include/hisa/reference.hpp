// hisa: the float64 reference, exposed row by row so that tests can judge any backend's output
// (SEMANTICS.md section 7).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/params.hpp"

namespace hisa::reference {

// One query row with everything dequantised to float64.
struct Row {
  int num_heads = 0, head_dim = 0;
  std::vector<double> q;  // [H, D]
  std::vector<double> w;  // [H]
  // The row's sequence keys, dequantised and scaled (k_scale folded in): [seq_keys, D].
  std::shared_ptr<const std::vector<double>> keys;
  int64_t seq_keys = 0;  // rows in *keys
  int64_t visible = 0;   // e
  // The row's given blocks (PrefillInputs::given_blocks, valid entries only): choose_blocks
  // returns them instead of choosing.
  bool has_given = false;
  std::vector<int32_t> given;
};

// Validate first. Inputs with given_blocks need the width of its rows, the config's top_blocks.
std::vector<Row> prefill_rows(const PrefillInputs& in, int given_width = 0);
std::vector<Row> decode_rows(const DecodeInputs& in, int given_width = 0);

// I(t, p) for p in [0, e).
std::vector<double> token_scores(const Row& row);
// Pooled key of block j (complete in the sequence), float64, rounded as a backend stores it
// (PooledRounding, hisa/config.hpp; Exact: the float64 mean).
std::vector<double> pooled_key(const Row& row, int64_t block, int block_size, Pooling pooling,
                               PooledRounding rounding = PooledRounding::Exact);
// Rounds a float64 pooled key as `rounding` stores it (in place).
void round_pooled(std::vector<double>& key, PooledRounding rounding);
// J(t, j) for every complete eligible block j < min(ceil(e / B), floor(seq_keys / B)); entries for
// blocks without a pooled key (the partial one) are NaN.
std::vector<double> block_scores(const Row& row, int block_size, Pooling pooling,
                                 PooledRounding rounding = PooledRounding::Exact);

// The reference choice of blocks (ascending) and the candidate positions (ascending) for a row.
std::vector<int32_t> choose_blocks(const Row& row, const SelectConfig& cfg,
                                   PooledRounding rounding = PooledRounding::Exact);
// Candidates given a block set (hisa/block); every visible position for flat.
std::vector<int32_t> candidates(const Row& row, const SelectConfig& cfg,
                                const std::vector<int32_t>& blocks);
// Top-min(k, |C|) of scores over C, ties toward the lower position; returned ascending.
std::vector<int32_t> select_topk(const std::vector<double>& scores, const std::vector<int32_t>& cand,
                                 int k);

// The whole reference selection of one row, written like a backend output: indices
// [cfg.out_width()] and blocks [cfg.top_blocks] (may be nullptr), ascending then -1 padded.
void select_row(const Row& row, const SelectConfig& cfg, int32_t* indices, int32_t* blocks,
                PooledRounding rounding = PooledRounding::Exact);

}  // namespace hisa::reference
