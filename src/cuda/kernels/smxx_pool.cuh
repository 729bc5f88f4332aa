// Pooled keys of HISA prefill (the device twin of hisa::update_pooled_keys): for every complete
// block some row scores, the mean of its B dequantised keys, stored as the fused kernel reads
// keys (fp8 e4m3 with one fp32 scale per block, or bf16).
//
// Pooled slots: block j of a sequence whose keys start at row ks is slot ks / B + j. Slots are
// distinct across sequences (two blocks start at least B rows apart, so their starts divided by B
// differ), so no sequence table is needed: every row names its own blocks from its ks. Which
// slots to pool, in three steps:
//   1. need: each row whose blocks are scored (J > m) asks for its sequence's blocks [0, J - local)
//      at slot ks / B (atomicMax; the rows of one sequence agree on ks);
//   2. owner: for every slot, the nearest slot at or below it where a sequence asks (a max-scan);
//   3. pool: slot p pools block p - owner of that sequence when the block was asked for.
#pragma once
// (The kernels are static: hisa_prefill.cu and hisa_decode.cu each launch their own copy.)

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/kernels/smxx_values.cuh"
#include "hisa/dtype.hpp"

namespace hisa::cuda {

// Stores one block's fp32 mean (thread d: dimension d of 128) as fp8 e4m3 with scale amax / 448
// (1 for a zero block), RNE with saturation: key[d], and *scale from thread 0. amax_w: 4 floats of
// shared memory; every thread of the CTA calls it (two barriers).
static __device__ __forceinline__ void store_pooled_fp8(float mean, int d, float* amax_w, uint8_t* key,
                                                 float* scale_out) {
  float a = fabsf(mean);
  for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xFFFFFFFFu, a, o));
  if (d % 32 == 0) amax_w[d / 32] = a;
  __syncthreads();
  const float amax = fmaxf(fmaxf(amax_w[0], amax_w[1]), fmaxf(amax_w[2], amax_w[3]));
  const float scale = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
  key[d] = uint8_t(__nv_cvt_float_to_fp8(__fdiv_rn(mean, scale), __NV_SATFINITE, __NV_E4M3));
  if (d == 0) *scale_out = scale;
  __syncthreads();  // amax_w is rewritten by the next block
}

// Step 1: need[slot] = blocks asked for, start[slot] = the sequence's first key row.
static __global__ void smxx_pool_need_kernel(int64_t rows, const int32_t* row_ks,
                                             const int32_t* row_ke, int block_size, int top_blocks,
                                             int local_blocks, int32_t* need, int32_t* start) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= rows) return;
  const int32_t ks = row_ks[t], e = row_ke[t] - ks;
  const int32_t J = (e + block_size - 1) / block_size;
  if (J <= top_blocks) return;
  const int32_t slot = ks / block_size;
  atomicMax(need + slot, J - local_blocks);
  start[slot] = ks;
}

// Step 2, one CTA of 1024 threads: owner[i] = the largest j <= i with need[j] > 0, else -1.
// Thread r scans a contiguous run of the slots; the runs' maxima are scanned in shared memory.
static __global__ void __launch_bounds__(1024)
    smxx_pool_owner_kernel(int64_t slots, const int32_t* need, int32_t* owner) {
  __shared__ int32_t run_max[1024];
  const int64_t per = (slots + 1023) / 1024;
  const int64_t a = threadIdx.x * per, b = a + per < slots ? a + per : slots;
  int32_t m = -1;
  for (int64_t i = a; i < b; ++i)
    if (need[i] > 0) m = int32_t(i);
  run_max[threadIdx.x] = m;
  __syncthreads();
  for (int o = 1; o < 1024; o <<= 1) {  // inclusive max-scan over the runs (Hillis-Steele)
    const int32_t x = threadIdx.x >= o ? run_max[threadIdx.x - o] : -1;
    __syncthreads();
    run_max[threadIdx.x] = max(run_max[threadIdx.x], x);
    __syncthreads();
  }
  m = threadIdx.x > 0 ? run_max[threadIdx.x - 1] : -1;
  for (int64_t i = a; i < b; ++i) {
    if (need[i] > 0) m = int32_t(i);
    owner[i] = m;
  }
}

// Step 3: one CTA of 128 threads (thread d: dimension d) per slot. The mean in float64 from the
// dequantised keys (every product of an fp8 or bf16 value and an fp32 scale is exact in float64,
// so the sum is the same whichever order the compiler fuses), rounded to fp32, then stored:
// fp8 (store_fp8): e4m3 of mean / scale with scale = amax / 448 (1 for a zero block), RNE with
// saturation; else bf16 (RNE). hisa::reference::round_pooled rounds the same way.
static __global__ void __launch_bounds__(128)
    smxx_pool_blocks_kernel(DType dtype, const void* k, const float* k_scale, int block_size,
                            int64_t slots, const int32_t* owner, const int32_t* need,
                            const int32_t* start, int store_fp8, uint8_t* pooled,
                            float* pooled_scale) {
  __shared__ float amax_w[4];
  const int d = threadIdx.x;
  for (int64_t p = blockIdx.x; p < slots; p += gridDim.x) {
    const int32_t o = owner[p];
    if (o < 0 || p - o >= need[o]) continue;  // uniform over the CTA
    const int64_t row0 = int64_t(start[o]) + (p - o) * block_size;
    double acc = 0.0;
    for (int i = 0; i < block_size; ++i) {
      const double v = double(load_value(dtype, k, (row0 + i) * 128 + d));
      acc += k_scale ? v * double(k_scale[row0 + i]) : v;
    }
    const float mean = float(acc * (1.0 / double(block_size)));  // B: a power of two
    if (store_fp8) {
      store_pooled_fp8(mean, d, amax_w, pooled + p * 128, pooled_scale + p);
    } else {
      reinterpret_cast<__nv_bfloat16*>(pooled)[p * 128 + d] = __float2bfloat16_rn(mean);
    }
  }
}

// HISA decode's pooled-key cache (hisa::cuda::PooledCache): after tokens [old_lens[b],
// new_lens[b]) of request b were written to the paged cache, pools every block that became
// complete, blocks j in [old_lens[b] / B, new_lens[b] / B) (old_lens nullptr: from 0), into
// keys[(b * max_blocks + j) * 128] and scales[b * max_blocks + j]: the float64 mean of the B
// dequantised keys, rounded as the prefill's pooled keys (store_pooled_fp8; its closing barrier
// also guards vals and row_scale, which the next block rewrites).
// Grid (batch, gy): CTA (b, y) of 128 threads pools blocks j = first + y, first + y + gy, ...; a
// decode step completes at most one block per request. The block's B x 128 values and B scales
// come into shared memory with independent 16-byte loads (8 per thread at B = 128: one round
// trip instead of B dependent ones), then thread d sums dimension d in position order.
static __global__ void __launch_bounds__(128)
    smxx_pool_paged_kernel(const uint8_t* kv_cache, const int32_t* block_table, int max_pages,
                           const int32_t* old_lens, const int32_t* new_lens, int block_size,
                           int max_blocks, uint8_t* keys, float* scales) {
  __shared__ __align__(16) uint8_t vals[256 * 128];
  __shared__ float row_scale[256];
  __shared__ float amax_w[4];
  const int d = threadIdx.x;
  const int b = blockIdx.x;
  const int32_t first = old_lens ? old_lens[b] / block_size : 0;
  const int32_t end = min(new_lens[b] / block_size, max_blocks);
  const int32_t* table = block_table + int64_t(b) * max_pages;
  for (int32_t j = first + int32_t(blockIdx.y); j < end; j += int32_t(gridDim.y)) {
    const int32_t pos0 = j * block_size;
    for (int c = d; c < block_size * 8; c += 128) {  // 16-byte piece c % 8 of row c / 8
      const int32_t pos = pos0 + c / 8;
      const uint8_t* page = kv_cache + int64_t(table[pos / 64]) * (64 * 132);
      reinterpret_cast<int4*>(vals)[c] =
          __ldg(reinterpret_cast<const int4*>(page + (pos % 64) * 128) + c % 8);
    }
    for (int i = d; i < block_size; i += 128) {
      const int32_t pos = pos0 + i;
      const uint8_t* page = kv_cache + int64_t(table[pos / 64]) * (64 * 132);
      row_scale[i] = __ldg(reinterpret_cast<const float*>(page + 64 * 128) + pos % 64);
    }
    __syncthreads();
    double acc = 0.0;
    for (int i = 0; i < block_size; ++i)
      acc += double(fp8e4m3_value(vals[i * 128 + d])) * double(row_scale[i]);
    const float mean = float(acc * (1.0 / double(block_size)));  // B: a power of two
    const int64_t slot = int64_t(b) * max_blocks + j;
    store_pooled_fp8(mean, d, amax_w, keys + slot * 128, scales + slot);
  }
}

}  // namespace hisa::cuda
