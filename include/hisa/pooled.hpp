// hisa: pooled keys for the paged decode cache, kept up to date incrementally.
#pragma once

#include <cstdint>

#include "hisa/config.hpp"
#include "hisa/params.hpp"

namespace hisa {

// After tokens [old_lens[b], new_lens[b]) of each request were written to the paged cache, compute
// the pooled key (mean, or max for Pooling::Max, of the B dequantised keys, fp32) of every block that
// just became complete: blocks j with old_lens[b] / B <= j < new_lens[b] / B. Cost O(B * D) per such
// block; earlier blocks are not read. `cache` supplies the cache, block table, batch and page size
// (its q, w and seq_lens are not used). pooled is [batch, max_blocks, D] fp32.
// Pass old_lens == nullptr to pool every complete block from scratch.
void update_pooled_keys(const DecodeInputs& cache, const int32_t* old_lens, const int32_t* new_lens,
                        int block_size, Pooling pooling, float* pooled, int max_blocks);

}  // namespace hisa
