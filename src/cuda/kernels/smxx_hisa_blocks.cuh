// HISA's block bookkeeping around the fused kernels: each row's span of scored blocks for the
// block stage, the chosen block list (forced blocks counted inside m), the token stage's chunk
// lists, and the block-sparse baseline's positions. Rows are [r0, r0 + rows) of the call; row_ks,
// row_ke are the call's row spans (first key row of the row's sequence, end of what it sees).
#pragma once
// (The kernels are static: hisa_prefill.cu and hisa_decode.cu each launch their own copy.)

#include <cstdint>

namespace hisa::cuda {

// Row i (row r0 + i): the block stage scores its blocks [sink, J - local) as pooled rows
// [ks / B + sink, ks / B + J - local) (empty where J <= m: every block is chosen).
static __global__ void smxx_block_spans_kernel(int64_t r0, int64_t rows, const int32_t* row_ks,
                                               const int32_t* row_ke, int block_size,
                                               int top_blocks, int sink_blocks, int local_blocks,
                                               int32_t* bks, int32_t* bke) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows) return;
  const int32_t ks = row_ks[r0 + i], e = row_ke[r0 + i] - ks;
  const int32_t J = (e + block_size - 1) / block_size;
  const int32_t base = ks / block_size + sink_blocks;
  bks[i] = base;
  bke[i] = J > top_blocks ? ks / block_size + J - local_blocks : base;
}

// Decode rows (row r = b * next_n + j sees e = seq_lens[b] - next_n + j + 1 positions) in the
// forms the prefill steps take. Token stage: positions of request b live at the virtual key rows
// b * max_pages * 64 + position, so that the flattened block table's entry of a 64-key chunk is
// its row / 64 (tks, tke = that base and base + e). Block stage: the pooled rows of request b are
// b * max_blocks + j, and the row scores its blocks [sink, J - local) (empty where J <= m): bks,
// bke, as smxx_block_spans_kernel gives them for prefill.
static __global__ void smxx_decode_spans_kernel(int64_t rows, int next_n, const int32_t* seq_lens,
                                                int max_pages, int max_blocks, int block_size,
                                                int top_blocks, int sink_blocks, int local_blocks,
                                                int32_t* tks, int32_t* tke, int32_t* bks,
                                                int32_t* bke) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  const int64_t b = r / next_n;
  const int32_t e = seq_lens[b] - next_n + int32_t(r % next_n) + 1;
  const int32_t J = (e + block_size - 1) / block_size;
  tks[r] = int32_t(b * max_pages * 64);
  tke[r] = int32_t(b * max_pages * 64 + e);
  const int32_t base = int32_t(b * max_blocks) + sink_blocks;
  bks[r] = base;
  bke[r] = J > top_blocks ? int32_t(b * max_blocks) + J - local_blocks : base;
}

// One thread per tile of two rows: the block stage's chunk lists over pooled rows, for the
// gathered source (FusedParams::chunks): each row's span [bks, bke) in 64-row chunks, positions
// relative to bks. Rows with one base (one request) share every chunk of the longer span; else
// row 0's chunks, then row 1's. Padded with 0 to a multiple of per_stage.
static __global__ void smxx_span_chunk_lists_kernel(int64_t rows, const int32_t* bks,
                                                    const int32_t* bke, int stride, int per_stage,
                                                    int32_t* chunks, int32_t* counts) {
  const int64_t tile = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (2 * tile >= rows) return;
  const int64_t i0 = 2 * tile, i1 = i0 + 1;
  const bool two = i1 < rows;
  const int32_t n0 = bke[i0] - bks[i0], n1 = two ? bke[i1] - bks[i1] : 0;
  constexpr int32_t kRow0 = 1 << 30, kRow1 = int32_t(1u << 31);
  int32_t* out = chunks + tile * stride;
  int n = 0;
  if (two && bks[i0] == bks[i1]) {
    for (int32_t p = 0; p < max(n0, n1); p += 64)
      out[n++] = p | (p < n0 ? kRow0 : 0) | (p < n1 ? kRow1 : 0);
  } else {
    for (int32_t p = 0; p < n0; p += 64) out[n++] = p | kRow0;
    for (int32_t p = 0; p < n1; p += 64) out[n++] = p | kRow1;
  }
  counts[tile] = n;
  for (int pad = n; pad % per_stage != 0; ++pad) out[pad] = 0;
}

// A warp per row: the chosen blocks, ascending, -1 padded to m. J <= m: blocks 0 .. J - 1.
// Otherwise the sink blocks, the block stage's top m - sink - local (its positions, relative to
// the first scored block, ascending), the local blocks.
static __global__ void smxx_assemble_blocks_kernel(int64_t r0, int64_t rows, const int32_t* row_ks,
                                                   const int32_t* row_ke, int block_size,
                                                   int top_blocks, int sink_blocks,
                                                   int local_blocks, const int32_t* top,
                                                   int32_t* blocks) {
  const int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (i >= rows) return;
  const int32_t e = row_ke[r0 + i] - row_ks[r0 + i];
  const int32_t J = (e + block_size - 1) / block_size;
  const int kp = top_blocks - sink_blocks - local_blocks;
  int32_t* out = blocks + i * top_blocks;
  for (int c = lane; c < top_blocks; c += 32) {
    int32_t b;
    if (J <= top_blocks)
      b = c < J ? c : -1;
    else if (c < sink_blocks)
      b = c;
    else if (c < sink_blocks + kp)
      b = top[i * kp + (c - sink_blocks)] + sink_blocks;
    else
      b = J - local_blocks + (c - sink_blocks - kp);
    out[c] = b;
  }
}

// One thread per tile of two rows: the 64-key chunks of the blocks the rows chose, as
// FusedParams::chunks entries (position | bit 30 + q per row q that chose it), in position order:
// the union of both rows' chunks where the rows share a sequence, else row 0's then row 1's.
// Padded with 0 to a multiple of `per_stage`; counts[tile] = the real entries.
static __global__ void smxx_chunk_lists_kernel(int64_t r0, int64_t rows, const int32_t* row_ks,
                                               const int32_t* row_ke, int block_size,
                                               int top_blocks, const int32_t* blocks, int stride,
                                               int per_stage, int32_t* chunks, int32_t* counts) {
  const int64_t tile = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (2 * tile >= rows) return;
  const int64_t i0 = 2 * tile, i1 = i0 + 1;
  const bool two = i1 < rows;
  const int32_t ks0 = row_ks[r0 + i0], ks1 = two ? row_ks[r0 + i1] : ks0;
  const int32_t e0 = row_ke[r0 + i0] - ks0, e1 = two ? row_ke[r0 + i1] - ks1 : 0;
  const int sub = block_size / 64;  // chunks per block
  // Chunk cursor of one row: its chosen blocks' chunks below e, in order.
  struct Cursor {
    const int32_t* b;
    int m, e, sub, bs;
    int j, c;  // block index in the list, chunk within the block
    __device__ int32_t pos() const { return b[j] * bs + 64 * c; }
    __device__ bool done() const { return j >= m || b[j] < 0 || pos() >= e; }
    __device__ void next() {
      if (++c == sub || b[j] * bs + 64 * c >= e) c = 0, ++j;
    }
  };
  Cursor a{blocks + i0 * top_blocks, top_blocks, e0, sub, block_size, 0, 0};
  Cursor b{blocks + (two ? i1 : i0) * top_blocks, two ? top_blocks : 0, e1, sub, block_size, 0, 0};
  int32_t* out = chunks + tile * stride;
  int n = 0;
  constexpr int32_t kRow0 = 1 << 30, kRow1 = int32_t(1u << 31);
  if (ks0 == ks1) {
    while (!a.done() || !b.done()) {
      const int32_t pa = a.done() ? INT32_MAX : a.pos(), pb = b.done() ? INT32_MAX : b.pos();
      const int32_t p = pa < pb ? pa : pb;
      out[n++] = p | (pa == p ? kRow0 : 0) | (pb == p ? kRow1 : 0);
      if (pa == p) a.next();
      if (pb == p) b.next();
    }
  } else {
    for (; !a.done(); a.next()) out[n++] = a.pos() | kRow0;
    for (; !b.done(); b.next()) out[n++] = b.pos() | kRow1;
  }
  counts[tile] = n;
  for (int pad = n; pad % per_stage != 0; ++pad) out[pad] = 0;
}

// Block-sparse baseline: a CTA per row writes the visible positions of its chosen blocks,
// ascending, then -1 up to the width m * B.
static __global__ void smxx_block_positions_kernel(int64_t r0, int64_t rows, const int32_t* row_ks,
                                                   const int32_t* row_ke, int block_size,
                                                   int top_blocks, const int32_t* blocks,
                                                   int32_t* indices) {
  const int64_t i = blockIdx.x;
  if (i >= rows) return;
  const int32_t e = row_ke[r0 + i] - row_ks[r0 + i];
  const int32_t* b = blocks + i * top_blocks;
  const int64_t width = int64_t(top_blocks) * block_size;
  int32_t* out = indices + (r0 + i) * width;
  // Blocks are ascending and only the last one may be partial: slot c * B + o of the output holds
  // block c's position o while the block lists visible positions, and the tail is -1.
  __shared__ int32_t n_full, last_len;
  if (threadIdx.x == 0) {
    int32_t n = 0;
    while (n < top_blocks && b[n] >= 0) ++n;
    n_full = n;
    last_len = n > 0 ? min(block_size, e - b[n - 1] * block_size) : 0;
  }
  __syncthreads();
  const int64_t valid = n_full > 0 ? int64_t(n_full - 1) * block_size + last_len : 0;
  for (int64_t s = threadIdx.x; s < width; s += blockDim.x)
    out[s] = s < valid ? b[s / block_size] * block_size + int32_t(s % block_size) : -1;
}

}  // namespace hisa::cuda
