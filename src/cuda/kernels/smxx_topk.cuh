// Stand-alone exact top-k over rows (any sm_70+ GPU): one CTA per row, slots read from global
// memory, selection by radix_select + ordered_compact (smxx_select.cuh). Two sources:
//   - ScoreRows: rows of fp32 scores (slot i = position i), e.g. scores of a row chunk, or any
//     stage of the HISA kernels that has scores in memory;
//   - PartialLists: the split-K partial top-k lists of the fused kernel (slot = split * k + i,
//     splits in key order, so slot order is position order).
// Output: [rows, k] int32 positions, ascending, -1 padded. Ties toward the lower position.
#pragma once

#include <cstdint>

#include "cuda/kernels/smxx_select.cuh"

namespace hisa::cuda {

struct ScoreRows {
  const float* scores = nullptr;  // [rows, ld] fp32
  int64_t ld = 0;
  const int32_t* lens = nullptr;  // [rows] int32 valid length of each row, or nullptr: `len`
  int64_t len = 0;
  const int32_t* lens_begin = nullptr;  // optional second array: length = lens[r] - lens_begin[r]

  __device__ __forceinline__ int64_t slots(int64_t r) const {
    if (!lens) return len;
    return lens_begin ? int64_t(lens[r]) - lens_begin[r] : int64_t(lens[r]);
  }
  __device__ __forceinline__ bool get(int64_t r, int64_t i, uint32_t* u, int32_t* pos) const {
    *u = order_key(scores[r * ld + i]);
    *pos = int32_t(i);
    return true;
  }
};

struct PartialLists {
  const uint32_t* u = nullptr;   // [rows, splits, k] uint32 order keys
  const int32_t* pos = nullptr;  // [rows, splits, k] int32 positions
  const int32_t* cnt = nullptr;  // [rows, splits] int32 valid entries of each list
  int splits = 1;
  int k = 0;

  __device__ __forceinline__ int64_t slots(int64_t) const { return int64_t(splits) * k; }
  __device__ __forceinline__ bool get(int64_t r, int64_t i, uint32_t* uu, int32_t* pp) const {
    const uint32_t s = uint32_t(i) / uint32_t(k), off = uint32_t(i) - s * uint32_t(k);  // < 2^31
    if (off >= cnt[r * splits + s]) return false;
    const int64_t at = (r * splits + s) * k + off;
    *uu = u[at];
    *pp = pos[at];
    return true;
  }
};

// Grid: one block per row (blockIdx.x + gridDim.x * blockIdx.y < rows). out row r at
// out + (row_offset + r) * k.
template <class Source, int kThreads>
__global__ void __launch_bounds__(kThreads)
    smxx_topk_rows_kernel(Source src, int64_t rows, int k, int32_t* out, int64_t row_offset) {
  __shared__ int hist[256];
  __shared__ int bcast[4];
  __shared__ int scan[2 * (kThreads / 32)];
  const int64_t r = blockIdx.x + int64_t(gridDim.x) * blockIdx.y;
  if (r >= rows) return;
  auto sync = [] { __syncthreads(); };
  const int64_t n = src.slots(r);
  const RadixCut cut = radix_select<kThreads>(
      n, k,
      [&](int64_t i, uint32_t* u) {
        int32_t unused;
        return src.get(r, i, u, &unused);
      },
      hist, bcast, sync);
  int32_t* row_out = out + (row_offset + r) * k;
  const int kept = ordered_compact<kThreads, 4>(
      n, cut, [&](int64_t i, uint32_t* u, int32_t* pos) { return src.get(r, i, u, pos); },
      [&](int dst, uint32_t, int32_t pos) { row_out[dst] = pos; }, scan, sync);
  for (int i = kept + threadIdx.x; i < k; i += kThreads) row_out[i] = -1;
}

// Merge of split-K partial lists with the keys staged in shared memory first (one coalesced read
// of every list instead of one per radix pass: the global-memory merge of 32K entries took ~80 us
// for one row). Dynamic shared memory: splits * k * 4 bytes. Empty slots hold key 0, below
// every real key (order keys of finite floats are >= 0x00800000).
// A full list (k entries) is its split's exact top-k, so its smallest key is its split's k-th
// largest, and the row's k-th largest key is at least the largest of those (`floor`): smaller keys
// cannot be selected. The radix passes count only keys >= floor, with digits anchored at the
// highest bit where floor and the row's largest key differ, and plain atomics (the anchored cut of
// smxx_select.cuh; the merge of 16 splits of 2048, b1 at 128K, took ~60 us with four unanchored
// passes over every slot and __match_any_sync counts).
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    smxx_merge_smem_kernel(PartialLists src, int64_t rows, int k, int32_t* out) {
  extern __shared__ uint32_t staged[];
  __shared__ int hist[256];
  __shared__ int bcast[4];
  __shared__ int scan[2 * (kThreads / 32)];
  __shared__ unsigned bounds[2];  // [0]: floor (max of the full lists' minima), [1]: row maximum
  __shared__ int counts[64];      // valid entries of each list (splits <= 64, the host's bound)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the fused kernel: wait until it has finished and its
  // partial lists are visible (a no-op when launched normally).
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const int64_t r = blockIdx.x;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) bounds[0] = 0u, bounds[1] = 0u;
  if (threadIdx.x < src.splits) counts[threadIdx.x] = src.cnt[r * src.splits + threadIdx.x];
  __syncthreads();
  const int64_t n = src.slots(r);
  uint32_t mx = 0;
  // Keys only, eight independent loads in flight per thread (the loop of dependent count,
  // key and position loads took most of the b1 merge).
#pragma unroll 8
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const uint32_t s = uint32_t(i) / uint32_t(k), off = uint32_t(i) - s * uint32_t(k);
    const uint32_t v = int(off) < counts[s] ? src.u[(r * src.splits + s) * k + off] : 0u;
    staged[i] = v;
    mx = max(mx, v);
  }
  mx = __reduce_max_sync(0xFFFFFFFFu, mx);
  __syncthreads();
  if (lane == 0) atomicMax(&bounds[1], mx);
  // Warp w takes splits w, w + warps, ...: the minimum of each full list.
  for (int s = warp; s < src.splits; s += kThreads / 32) {
    if (counts[s] < k) continue;  // uniform per warp
    uint32_t mn = 0xFFFFFFFFu;
    for (int i = lane; i < k; i += 32) mn = min(mn, staged[int64_t(s) * k + i]);
    mn = __reduce_min_sync(0xFFFFFFFFu, mn);
    if (lane == 0) atomicMax(&bounds[0], mn);
  }
  __syncthreads();
  const uint32_t floor = bounds[0];
  mx = bounds[1];
  const auto sync = [] { __syncthreads(); };
  const RadixCut cut = anchored_select<kThreads>(
      n, k,
      [&](int64_t i, uint32_t* u) {
        *u = staged[i];
        return *u != 0u && *u >= floor;
      },
      floor, mx, hist, bcast, sync);
  int32_t* row_out = out + r * k;
  const int kept = ordered_compact<kThreads, 4>(
      n, cut,
      [&](int64_t i, uint32_t* u, int32_t* pos) {
        *u = staged[i];
        if (*u == 0u || *u < floor) return false;
        const uint32_t s = uint32_t(i) / uint32_t(src.k), off = uint32_t(i) - s * uint32_t(src.k);
        *pos = src.pos[(r * src.splits + s) * src.k + off];
        return true;
      },
      [&](int dst, uint32_t, int32_t pos) { row_out[dst] = pos; }, scan, sync);
  for (int i = kept + threadIdx.x; i < k; i += kThreads) row_out[i] = -1;
}

}  // namespace hisa::cuda
