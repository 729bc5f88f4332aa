// Host launcher of the fused scoring + top-k kernel (kernels/sm90_fused_topk.cuh). Each production
// instance is defined by one file in instances/ (HISA_FUSED_INSTANCE), so that they compile in
// parallel; host code includes this header for the declarations and the instances' constants.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <atomic>
#include <type_traits>

#include "cuda/backend.hpp"
#include "cuda/kernels/sm90_fused_topk.cuh"

namespace hisa::cuda {

enum FusedElem : int { kFp8 = 0, kBf16 = 1 };

template <int kElem, int kHeads, int kNQ, int kSource, bool kScores>
using FusedConfigOf =
    sm90::FusedConfig<std::conditional_t<kElem == kFp8, sm90::Fp8, sm90::Bf16>, kHeads, kNQ,
                      kSource, kScores>;

struct FusedLaunch {
  CUtensorMap q;      // [rows * H, D] q tile map (128-byte swizzle)
  CUtensorMap k;      // dense / gathered: [S, D] keys; paged: [pages, 64, D] cache values
  CUtensorMap scale;  // dense / gathered: [S] fp32 key scales (unused when !has_scale; paged: k)
  sm90::FusedParams p;
  int grid = 0;
  cudaStream_t stream = nullptr;
  int cluster = 1;  // 2: 2-CTA clusters (the decode's pair tail, p.pair_tail)
};

template <int kElem, int kHeads, int kNQ, int kSource, bool kScores>
cudaError_t launch_fused(const FusedLaunch& l);

// The gathered-keys instance (tiles of two rows) for dtype t and H heads, and its chunks per key
// stage (3 in the slim fp8 H = 64 kernel, else 4); in hisa_prefill.cu, shared with HISA decode.
cudaError_t launch_gathered(DType t, int heads, const FusedLaunch& l);
int gathered_per_stage(DType t, int heads);

// The split-K partial lists of `rows` rows ([rows, p.splits, p.part_stride]) from the workspace.
inline void use_partial_lists(sm90::FusedParams& p, int64_t rows, Workspace& ws) {
  const size_t n = size_t(rows) * p.splits * p.part_stride;
  p.part_u = static_cast<uint32_t*>(ws.get(kSlotPartU, n * 4));
  p.part_pos = static_cast<int32_t*>(ws.get(kSlotPartPos, n * 4));
  p.part_cnt = static_cast<int32_t*>(ws.get(kSlotPartCnt, size_t(rows) * p.splits * 4));
}

#ifdef HISA_FUSED_DEFINE_LAUNCH
template <int kElem, int kHeads, int kNQ, int kSource, bool kScores>
cudaError_t launch_fused(const FusedLaunch& l) {
  using Cfg = FusedConfigOf<kElem, kHeads, kNQ, kSource, kScores>;
  auto kernel = sm90::sm90_fused_topk_kernel<Cfg>;
  static std::atomic<unsigned long long> opted_in{0};
  cudaError_t e = opt_in_dynamic_smem(kernel, Cfg::kSmemBytes, opted_in);
  if (e != cudaSuccess) return e;
  if (l.cluster != 1 && !(Cfg::kPairTail && l.cluster == 2 && l.p.pair_tail))
    return cudaErrorInvalidConfiguration;  // no other cluster shape is implemented
  if (l.cluster == 2) {
    // A request's two splits as one 2-CTA cluster (CTAs 2t and 2t + 1: item = CTA).
    cudaLaunchConfig_t c = {};
    c.gridDim = dim3(l.grid);
    c.blockDim = dim3(Cfg::kThreads);
    c.dynamicSmemBytes = Cfg::kSmemBytes;
    c.stream = l.stream;
    cudaLaunchAttribute a[1];
    a[0].id = cudaLaunchAttributeClusterDimension;
    a[0].val.clusterDim.x = 2, a[0].val.clusterDim.y = 1, a[0].val.clusterDim.z = 1;
    c.attrs = a;
    c.numAttrs = 1;
    sm90::FusedParams p = l.p;
    if (p.helpers > 0) {
      // The pairs wait for their helpers: every CTA of the grid must be resident at once. Where
      // fewer clusters fit the device together (cudaOccupancyMaxActiveClusters, once per device)
      // than the grid needs, the launch goes without helpers (plain pairs).
      static std::atomic<int> fit[64] = {};
      int dev = 0;
      e = cudaGetDevice(&dev);
      if (e != cudaSuccess) return e;
      const bool tracked = dev < 64;  // (devices 0-63 remembered)
      int clusters = tracked ? fit[dev].load(std::memory_order_acquire) : 0;
      if (clusters <= 0) {
        e = cudaOccupancyMaxActiveClusters(&clusters, kernel, &c);
        if (e != cudaSuccess) return e;
        if (tracked) fit[dev].store(clusters, std::memory_order_release);
      }
      if (2 * clusters < 2 * p.num_tiles + p.helpers) {
        p.helpers = 0;
        c.gridDim = dim3(2 * p.num_tiles);
      }
    }
    return cudaLaunchKernelEx(&c, kernel, l.q, l.k, l.scale, p);
  }
  kernel<<<l.grid, Cfg::kThreads, Cfg::kSmemBytes, l.stream>>>(l.q, l.k, l.scale, l.p);
  return cudaGetLastError();
}
#define HISA_FUSED_INSTANCE(E, H, NQ, SOURCE, SCORES) \
  template cudaError_t launch_fused<E, H, NQ, SOURCE, SCORES>(const FusedLaunch&);
#endif

}  // namespace hisa::cuda
