// Launches of the stand-alone top-k (score rows) and of the split-K merge (smxx_topk.cuh).
#include "cuda/backend.hpp"
#include "cuda/kernels/smxx_topk.cuh"

namespace hisa::cuda {
namespace {

constexpr int kTopkThreads = 1024;  // stand-alone top-k and the staged merge: one CTA per row
constexpr int kMergeThreads = 512;  // the merge from global memory (lists too long to stage)
constexpr int kMaxMergeSplits = 64;  // the staged merge's count array
constexpr size_t kMaxStagedBytes = size_t(160) << 10;  // the staged merge's lists in shared memory

}  // namespace

void launch_topk_rows(const ScoreRowsArgs& a, int64_t rows, int k, int32_t* out,
                      int64_t row_offset, cudaStream_t st) {
  if (rows <= 0) return;
  ScoreRows src;
  src.scores = a.scores;
  src.ld = a.ld;
  src.lens = a.lens;
  src.len = a.len;
  src.lens_begin = a.lens_begin;
  smxx_topk_rows_kernel<ScoreRows, kTopkThreads>
      <<<dim3(unsigned(rows)), kTopkThreads, 0, st>>>(src, rows, k, out, row_offset);
  HISA_CUDA_CHECK(cudaGetLastError());
}

void launch_merge(const uint32_t* part_u, const int32_t* part_pos, const int32_t* part_cnt,
                  int splits, int64_t rows, int k, int32_t* out, cudaStream_t st, bool pdl) {
  const PartialLists src{part_u, part_pos, part_cnt, splits, k};
  const size_t staged = size_t(splits) * size_t(k) * 4;
  if (staged <= kMaxStagedBytes && splits <= kMaxMergeSplits) {
    static std::atomic<unsigned long long> opted_in{0};
    HISA_CUDA_CHECK(opt_in_dynamic_smem(smxx_merge_smem_kernel<kTopkThreads>,
                                        int(kMaxStagedBytes), opted_in));
    // As a programmatic dependent: the fused kernel lets it start at once, its CTAs take the SMs
    // the fused kernel leaves free and wait in griddepcontrol.wait for the fused kernel to
    // finish, instead of a launch after it.
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(rows));
    cfg.blockDim = dim3(kTopkThreads);
    cfg.dynamicSmemBytes = staged;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    HISA_CUDA_CHECK(
        cudaLaunchKernelEx(&cfg, smxx_merge_smem_kernel<kTopkThreads>, src, rows, k, out));
  } else {
    smxx_topk_rows_kernel<PartialLists, kMergeThreads>
        <<<dim3(unsigned(rows)), kMergeThreads, 0, st>>>(src, rows, k, out, 0);
  }
  HISA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace hisa::cuda
