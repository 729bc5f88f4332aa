// hisa: plain parameter structs for one indexer call (SEMANTICS.md section 1).
//
// Pointers are host pointers for the CPU backends and for Indexer::select_* on every backend (the
// CUDA backend stages them); hisa/cuda.hpp takes the same structs with device pointers.
#pragma once

#include <cstdint>

#include "hisa/dtype.hpp"

namespace hisa {

// Ragged batched prefill. Give either cu_seqlens_q/cu_seqlens_k (num_seqs >= 1) or ks/ke.
struct PrefillInputs {
  int64_t num_q = 0;     // T: query tokens, all sequences together
  int64_t num_k = 0;     // S: key tokens, all sequences together
  int num_heads = 64;    // H: 32 or 64
  int head_dim = 128;    // D: 128 (64 allowed)
  DType dtype = DType::F8E4M3;  // dtype of q and k: F8E4M3, BF16 or F32

  const void* q = nullptr;         // [T, H, D] dtype
  const void* k = nullptr;         // [S, D] dtype
  const float* k_scale = nullptr;  // [S] fp32 > 0, or nullptr meaning 1
  const float* w = nullptr;        // [T, H] fp32, every other scale folded in

  int num_seqs = 0;                       // N; 0 when ks/ke are given instead
  const int32_t* cu_seqlens_q = nullptr;  // [N + 1] int32, starts at 0, ends at T
  const int32_t* cu_seqlens_k = nullptr;  // [N + 1] int32, starts at 0, ends at S
  const int32_t* ks = nullptr;            // [T] int32: first key row of the query's sequence
  const int32_t* ke = nullptr;            // [T] int32: the query sees key rows [ks, ke)

  // Cross-layer block reuse (hisa, block): the chosen blocks of every row given by the caller,
  // typically another layer's out.blocks for the same rows. [T, top_blocks] int32, each row's
  // blocks ascending and distinct in [0, ceil(e / B)), then -1. The block stage is skipped (no
  // pooled keys are read) and the tokens are chosen inside these blocks; out.blocks, when given,
  // receives them. nullptr: the call chooses its blocks.
  const int32_t* given_blocks = nullptr;
};

// Decode from the paged fp8 indexer cache (DeepGEMM / vLLM layout).
struct DecodeInputs {
  int batch = 0;       // N requests
  int next_n = 1;      // query tokens per request, 1..4 (speculative decoding)
  int num_heads = 64;  // H
  int head_dim = 128;  // D
  DType q_dtype = DType::F8E4M3;  // dtype of q: F8E4M3, BF16 or F32

  const void* q = nullptr;   // [N * next_n, H, D] q_dtype; row b * next_n + j is query j of request b
  const float* w = nullptr;  // [N * next_n, H] fp32

  int num_pages = 0;                   // pages in the cache
  int page_size = 64;                  // tokens per page
  const uint8_t* kv_cache = nullptr;   // [num_pages, page_size, D + 4] uint8: per page, page_size * D
                                       // fp8 e4m3 values (token-major), then page_size fp32 scales
  int max_pages = 0;                   // columns of block_table
  const int32_t* block_table = nullptr;  // [N, max_pages] int32 physical page of each logical page
  const int32_t* seq_lens = nullptr;     // [N] int32 tokens in each request's cache (>= next_n)

  // Pooled keys kept by update_pooled_keys (hisa/pooled.hpp); needed by the fast backends for
  // hisa and block. The reference ignores them and pools from the cache itself.
  const float* pooled = nullptr;  // [N, pooled_max_blocks, D] fp32, block j of request b at [b, j]
  int pooled_max_blocks = 0;

  // Cross-layer block reuse (hisa, block), as PrefillInputs::given_blocks: [N * next_n,
  // top_blocks] int32 chosen blocks per query row. The pooled keys are not needed then.
  const int32_t* given_blocks = nullptr;
};

// Outputs of one call. Valid entries first (any order), then -1 padding.
struct SelectOutputs {
  int32_t* indices = nullptr;  // [rows, cfg.out_width()] int32 positions relative to the sequence
  int32_t* blocks = nullptr;   // [rows, cfg.top_blocks] int32 chosen blocks, ascending, -1 padded;
                               // optional (nullptr) and only for hisa/block
};

// Bytes of one page of the paged cache: page_size * (D + 4).
inline int64_t page_bytes(int page_size, int head_dim) {
  return int64_t(page_size) * (head_dim + 4);
}

}  // namespace hisa
