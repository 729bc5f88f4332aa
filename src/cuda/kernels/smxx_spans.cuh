// Per-row key spans of prefill from cu_seqlens or ks/ke, and the row lengths of decode.
#pragma once

#include <cstdint>

namespace hisa::cuda {

// Row spans: row_ks[t] = first key row of the row's sequence, row_ke[t] = end of what it sees.
__global__ void smxx_row_spans_kernel(int num_seqs, const int32_t* cu_q, const int32_t* cu_k,
                                      const int32_t* ks, const int32_t* ke, int64_t T,
                                      int32_t* row_ks, int32_t* row_ke) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= T) return;
  if (!cu_q) {
    row_ks[t] = ks[t];
    row_ke[t] = ke[t];
    return;
  }
  int lo = 0, hi = num_seqs;  // last b with cu_q[b] <= t (skips empty sequences)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu_q[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int b = lo;
  const int64_t tb = int64_t(cu_q[b + 1]) - cu_q[b], sb = int64_t(cu_k[b + 1]) - cu_k[b];
  row_ks[t] = cu_k[b];
  row_ke[t] = int32_t(cu_k[b] + sb - tb + (t - cu_q[b]) + 1);
}

// Decode row lengths: row b * next_n + j sees seq_lens[b] - next_n + j + 1 positions.
__global__ void smxx_decode_lens_kernel(const int32_t* seq_lens, int next_n, int64_t rows,
                                        int32_t* lens) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r < rows) lens[r] = seq_lens[r / next_n] - next_n + int32_t(r % next_n) + 1;
}

}  // namespace hisa::cuda
