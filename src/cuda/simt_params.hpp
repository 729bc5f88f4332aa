// Parameters of the CUDA-core scoring kernel (kernels/smxx_simt_scores.cuh), shared with the host
// code that fills them.
#pragma once

#include <cstdint>

#include "hisa/dtype.hpp"

namespace hisa::cuda {

struct SimtParams {
  int64_t row_begin = 0, rows = 0;  // rows [row_begin, row_begin + rows) of the call
  int heads = 0, dim = 0;
  DType q_dtype = DType::F32, k_dtype = DType::F32;
  const void* q = nullptr;   // [rows total, H, D] q_dtype
  const float* w = nullptr;  // [rows total, H] fp32

  // prefill keys (paged == 0)
  const void* k = nullptr;          // [S, D] k_dtype
  const float* k_scale = nullptr;   // [S] fp32 or nullptr (1)
  const int32_t* row_ks = nullptr;  // [T] int32
  const int32_t* row_ke = nullptr;  // [T] int32
  // decode keys (paged == 1): fp8 cache
  int paged = 0;
  int next_n = 1, page_size = 64, max_pages = 0;
  const uint8_t* kv_cache = nullptr;     // [pages, page_size, D + 4] uint8
  const int32_t* block_table = nullptr;  // [N, max_pages] int32
  const int32_t* seq_lens = nullptr;     // [N] int32

  float* scores = nullptr;  // [rows, ld] fp32: position p of chunk row i at i * ld + p
  int64_t ld = 0;
};

}  // namespace hisa::cuda
