// Portable scoring kernel (CUDA cores, fp32): the path for what the tensor-core kernel does not
// take (fp32 inputs, D = 64, head counts other than 32 / 64, bf16 queries against the fp8 cache,
// unaligned pointers) and an independent cross-check of it. Writes the scores of a chunk of rows;
// the stand-alone top-k selects afterwards.
//
// Block: 128 threads = 128 consecutive keys of one row; the row's q (dequantised, fp32) and w sit
// in shared memory and are read as broadcasts; each thread accumulates 16 heads at a time.
#pragma once

#include <cstdint>

#include "hisa/dtype.hpp"

namespace hisa::cuda {

__device__ __forceinline__ float fp8e4m3_value(uint8_t v) {
  const uint32_t s = v >> 7, e = (v >> 3) & 0xF, m = v & 7;
  const float mag = e ? __uint_as_float(((e + 120u) << 23) | (m << 20)) : float(m) * 0.001953125f;
  return s ? -mag : mag;
}

__device__ __forceinline__ float load_value(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::F8E4M3:
      return fp8e4m3_value(static_cast<const uint8_t*>(base)[i]);
    case DType::BF16:
      return __uint_as_float(uint32_t(static_cast<const uint16_t*>(base)[i]) << 16);
    default:
      return static_cast<const float*>(base)[i];
  }
}

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
