// Portable scoring kernel (CUDA cores, fp32): the path for what the tensor-core kernel does not
// take (fp32 inputs, D = 64, head counts other than 32 / 64, bf16 queries against the fp8 cache,
// unaligned pointers) and an independent cross-check of it. Writes the scores of a chunk of rows;
// the stand-alone top-k selects afterwards.
//
// Block: 128 threads = 128 consecutive keys of one row; the row's q (dequantised, fp32) and w sit
// in shared memory and are read as broadcasts; each thread accumulates 16 heads at a time.
#pragma once

#include <cstdint>

#include "cuda/kernels/smxx_values.cuh"
#include "cuda/simt_params.hpp"

namespace hisa::cuda {

// Grid: x = key tiles of 128, y = rows of the chunk. Dynamic shared memory: (H * D + H) floats.
__global__ void __launch_bounds__(128) smxx_simt_scores_kernel(const SimtParams p) {
  extern __shared__ float simt_smem[];
  const int64_t i = blockIdx.y;
  const int64_t r = p.row_begin + i;
  const int H = p.heads, D = p.dim;
  int64_t visible, key_row0 = 0;
  int len = 0;
  if (!p.paged) {
    key_row0 = p.row_ks[r];
    visible = int64_t(p.row_ke[r]) - key_row0;
  } else {
    len = p.seq_lens[r / p.next_n];
    visible = len - p.next_n + (r % p.next_n) + 1;
  }
  const int64_t first = int64_t(blockIdx.x) * 128;
  if (first >= visible) return;
  float* qs = simt_smem;   // [H, D]
  float* ws = qs + H * D;  // [H]
  for (int j = threadIdx.x; j < H * D; j += 128) qs[j] = load_value(p.q_dtype, p.q, r * H * D + j);
  for (int j = threadIdx.x; j < H; j += 128) ws[j] = p.w[r * H + j];
  __syncthreads();
  const int64_t pos = first + threadIdx.x;
  if (pos >= visible) return;
  const void* kbase;
  int64_t kofs;
  float scale = 1.0f;
  DType kt = p.k_dtype;
  if (!p.paged) {
    kbase = p.k;
    kofs = (key_row0 + pos) * D;
    if (p.k_scale) scale = p.k_scale[key_row0 + pos];
  } else {
    const int b = int(r / p.next_n);
    const int32_t page = p.block_table[int64_t(b) * p.max_pages + pos / p.page_size];
    const int64_t off = pos % p.page_size;
    const uint8_t* pb = p.kv_cache + int64_t(page) * p.page_size * (D + 4);
    kbase = pb;
    kofs = off * D;
    kt = DType::F8E4M3;
    scale = *reinterpret_cast<const float*>(pb + int64_t(p.page_size) * D + off * 4);
  }
  float total = 0.0f;
  for (int h0 = 0; h0 < H; h0 += 16) {
    float acc[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j] = 0.0f;
    for (int d = 0; d < D; ++d) {
      const float kv = load_value(kt, kbase, kofs + d);
#pragma unroll
      for (int j = 0; j < 16; ++j)
        if (h0 + j < H) acc[j] += qs[(h0 + j) * D + d] * kv;
    }
#pragma unroll
    for (int j = 0; j < 16; ++j)
      if (h0 + j < H) total += ws[h0 + j] * fmaxf(acc[j], 0.0f);
  }
  p.scores[i * p.ld + pos] = total * scale;
}

}  // namespace hisa::cuda
