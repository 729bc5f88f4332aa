// The device-side input checks (the device API cannot read its index inputs on the host): each
// check records the first failing index, read back by checks.cu.
#pragma once

#include <cstdint>

#include "hisa/dtype.hpp"

namespace hisa::cuda {

// First failing index per check, ULLONG_MAX when the check passed.
enum CheckCode : int {
  kCheckCuStart = 0,  // cu_seqlens_q[0] or cu_seqlens_k[0] != 0
  kCheckCuEnd,        // cu_seqlens_q[N] != T or cu_seqlens_k[N] != S
  kCheckCuOrder,      // a sequence with negative length
  kCheckCausal,       // T_b > S_b
  kCheckKsKe,         // ks/ke out of [0, S] or ks > ke
  kCheckSeqLen,       // seq_lens out of [next_n, max_pages * page_size]
  kCheckBlockTable,   // page id out of [0, num_pages) (index b * max_pages + j)
  kCheckQ,            // non-finite q
  kCheckK,            // non-finite k (or cache value)
  kCheckW,            // non-finite w
  kCheckScale,        // k_scale (or cache scale) not finite and > 0
  kCheckGiven,        // a row of given_blocks breaks its rules (index: row * top_blocks + entry)
  kNumChecks
};

__device__ __forceinline__ void report(unsigned long long* err, int code, int64_t index) {
  atomicMin(err + code, static_cast<unsigned long long>(index));
}

// One thread per sequence (cu form) or per row (ks/ke form).
__global__ void smxx_check_spans_kernel(int num_seqs, const int32_t* cu_q, const int32_t* cu_k,
                                        const int32_t* ks, const int32_t* ke, int64_t T, int64_t S,
                                        unsigned long long* err) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (cu_q) {
    if (i == 0) {
      if (cu_q[0] != 0 || cu_k[0] != 0) report(err, kCheckCuStart, 0);
      if (cu_q[num_seqs] != T || cu_k[num_seqs] != S) report(err, kCheckCuEnd, num_seqs);
    }
    if (i < num_seqs) {
      const int64_t tb = int64_t(cu_q[i + 1]) - cu_q[i], sb = int64_t(cu_k[i + 1]) - cu_k[i];
      if (tb < 0 || sb < 0)
        report(err, kCheckCuOrder, i);
      else if (tb > sb)
        report(err, kCheckCausal, i);
    }
  } else if (i < T) {
    if (ks[i] < 0 || ks[i] > ke[i] || ke[i] > S) report(err, kCheckKsKe, i);
  }
}

__global__ void smxx_check_decode_kernel(int batch, int next_n, int max_pages, int page_size,
                                         int num_pages, const int32_t* seq_lens,
                                         const int32_t* block_table, unsigned long long* err) {
  const int b = blockIdx.x;
  if (b >= batch) return;
  const int64_t len = seq_lens[b];
  if (len < next_n || len > int64_t(max_pages) * page_size) {
    if (threadIdx.x == 0) report(err, kCheckSeqLen, b);
    return;
  }
  const int64_t used = (len + page_size - 1) / page_size;
  for (int64_t j = threadIdx.x; j < used; j += blockDim.x) {
    const int32_t page = block_table[int64_t(b) * max_pages + j];
    if (page < 0 || page >= num_pages) report(err, kCheckBlockTable, int64_t(b) * max_pages + j);
  }
}

// Non-finite values of n elements of dtype t (fp8: 0x7f / 0xff are NaN; bf16/fp32: exponent all
// ones). stride/width: check only elements (i % stride) < width (the cache's value part).
__global__ void smxx_check_values_kernel(DType t, const void* data, int64_t n, int64_t stride,
                                         int64_t width, int code, unsigned long long* err) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (stride && (i % stride) >= width) continue;
    bool bad;
    switch (t) {
      case DType::F8E4M3:
        bad = (static_cast<const uint8_t*>(data)[i] & 0x7F) == 0x7F;
        break;
      case DType::BF16:
        bad = (static_cast<const uint16_t*>(data)[i] & 0x7F80) == 0x7F80;
        break;
      default:
        bad = !isfinite(static_cast<const float*>(data)[i]);
        break;
    }
    if (bad) report(err, code, i);
  }
}

// Scales: finite and > 0. Cache form: stride = page bytes, scales at [offset, offset + 4 * count).
__global__ void smxx_check_scales_kernel(const float* scales, int64_t n, unsigned long long* err) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float s = scales[i];
    if (!(isfinite(s) && s > 0.0f)) report(err, kCheckScale, i);
  }
}

// The tokens a decode batch uses: fp8 values not NaN, scales finite and > 0 (index: b, token).
__global__ void smxx_check_cache_kernel(int batch, int max_pages, int page_size, int dim,
                                        const int32_t* seq_lens, const int32_t* block_table,
                                        const uint8_t* cache, unsigned long long* err) {
  const int b = blockIdx.x;
  if (b >= batch) return;
  const int len = seq_lens[b];
  for (int p = threadIdx.x; p < len; p += blockDim.x) {
    const int32_t page = block_table[int64_t(b) * max_pages + p / page_size];
    const uint8_t* base = cache + int64_t(page) * page_size * (dim + 4);
    const int off = p % page_size;
    const float s = *reinterpret_cast<const float*>(base + int64_t(page_size) * dim + off * 4);
    const int64_t where = int64_t(b) * max_pages * page_size + p;
    if (!(isfinite(s) && s > 0.0f)) report(err, kCheckScale, where);
    for (int d = 0; d < dim; ++d)
      if ((base[int64_t(off) * dim + d] & 0x7F) == 0x7F) report(err, kCheckK, where);
  }
}

// One thread per row: its given blocks ascending and distinct in [0, ceil(e / B)), then -1
// only, where the row sees e positions: row_ke[r] - row_ks[r] (prefill), else
// seq_lens[r / next_n] - next_n + r % next_n + 1 (decode).
__global__ void smxx_check_given_kernel(int64_t rows, int top_blocks, int block_size,
                                        const int32_t* given, const int32_t* row_ks,
                                        const int32_t* row_ke, const int32_t* seq_lens, int next_n,
                                        unsigned long long* err) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  const int64_t e = row_ks ? int64_t(row_ke[r]) - row_ks[r]
                           : int64_t(seq_lens[r / next_n]) - next_n + r % next_n + 1;
  const int64_t nb = (e + block_size - 1) / block_size;
  int32_t prev = -1;
  bool ended = false;
  for (int c = 0; c < top_blocks; ++c) {
    const int32_t b = given[r * top_blocks + c];
    const bool bad = b < 0 ? b != -1 : ended || b >= nb || b <= prev;
    if (bad) {
      report(err, kCheckGiven, r * top_blocks + c);
      return;
    }
    if (b < 0) ended = true;
    else prev = b;
  }
}

}  // namespace hisa::cuda
