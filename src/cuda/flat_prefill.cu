// Flat (DSA) prefill on the device: the fused kernel over dense keys, and the paths that write
// scores (k above the fused limit; inputs the fused kernel does not take) before the stand-alone
// top-k.
#include <algorithm>
#include <climits>

#include "cuda/backend.hpp"
#include "cuda/fused_launch.cuh"
#include "cuda/tensor_maps.hpp"
#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

template <int E, bool kScores>
cudaError_t launch_dense_heads(int heads, const FusedLaunch& l) {
  if (heads == 64) return launch_fused<E, 64, 2, sm90::kDenseKeys, kScores>(l);
  return launch_fused<E, 32, 2, sm90::kDenseKeys, kScores>(l);
}
cudaError_t launch_dense(DType t, int heads, bool scores, const FusedLaunch& l) {
  if (t == DType::F8E4M3)
    return scores ? launch_dense_heads<kFp8, true>(heads, l)
                  : launch_dense_heads<kFp8, false>(heads, l);
  return scores ? launch_dense_heads<kBf16, true>(heads, l)
                : launch_dense_heads<kBf16, false>(heads, l);
}
// Keys per stage (the key and scale TMA boxes) of the top-k instance: 192 in the slim fp8 H = 64
// kernel (three math warpgroups), 256 in the others.
uint32_t dense_block_kv(DType t, int heads) {
  if (t == DType::F8E4M3)
    return heads == 64 ? FusedConfigOf<kFp8, 64, 2, sm90::kDenseKeys, false>::kBlockKV
                       : FusedConfigOf<kFp8, 32, 2, sm90::kDenseKeys, false>::kBlockKV;
  return heads == 64 ? FusedConfigOf<kBf16, 64, 2, sm90::kDenseKeys, false>::kBlockKV
                     : FusedConfigOf<kBf16, 32, 2, sm90::kDenseKeys, false>::kBlockKV;
}

// The merge as a programmatic dependent only when the fused grid leaves at least half the SMs
// free for its CTAs to wait on (b1 -2 us, b8 -3 us, but b64 with 128 of 132 SMs busy +10 us).
bool merge_pdl(int grid, int sms) { return 2 * grid <= sms; }

// Rows per score chunk: the chunk is rows x ld fp32 within the budget.
int64_t chunk_rows(int64_t rows, int64_t ld, size_t budget) {
  const int64_t by_budget = int64_t(budget / (4 * size_t(std::max<int64_t>(ld, 1))));
  return std::max<int64_t>(1, std::min<int64_t>({rows, by_budget, 65535}));
}

}  // namespace

bool fused_applies(const PrefillInputs& in) {
  return (in.dtype == DType::F8E4M3 || in.dtype == DType::BF16) && in.head_dim == 128 &&
         (in.num_heads == 32 || in.num_heads == 64) && aligned16(in.q) && aligned16(in.k) &&
         (!in.k_scale || aligned16(in.k_scale)) && current_device().major == 9;
}

void fused_dense_topk(const PrefillInputs& in, int k, int32_t* out, const int32_t* row_ks,
                      const int32_t* row_ke, int splits, Workspace& ws, cudaStream_t st) {
  const int sms = current_device().sm_count;
  const int64_t tiles = ceil_div(in.num_q, 2);
  if (splits <= 0) {
    // Enough items for two per SM when the rows are few (chunked prefill, short T); a split keeps
    // at least 4096 keys so that it cuts its candidates down.
    splits = tiles >= sms ? 1 : int(std::min<int64_t>(ceil_div(2 * sms, tiles), 64));
    splits = int(std::max<int64_t>(1, std::min<int64_t>(splits, in.num_k / 4096)));
  }
  HISA_CHECK(tiles * splits < INT_MAX, "prefill: too many work items");
  FusedLaunch l;
  l.q = map_rows(in.q, in.dtype, uint64_t(in.num_q) * in.num_heads, 2 * in.num_heads, "q");
  const uint32_t block_kv = dense_block_kv(in.dtype, in.num_heads);
  l.k = map_rows(in.k, in.dtype, uint64_t(in.num_k), block_kv, "k");
  l.scale = in.k_scale ? map_scales(in.k_scale, uint64_t(in.num_k), block_kv) : l.k;
  sm90::FusedParams& p = l.p;
  p.row_begin = 0;
  p.row_end = in.num_q;
  p.num_tiles = int(tiles);
  p.splits = splits;
  p.topk = k;
  p.has_scale = in.k_scale != nullptr;
  p.row_ks = row_ks;
  p.row_ke = row_ke;
  p.w = in.w;
  p.out = out;
  p.part_stride = k;
  if (splits > 1) use_partial_lists(p, in.num_q, ws);
  l.grid = int(std::min<int64_t>(tiles * splits, sms));
  l.stream = st;
  HISA_CUDA_CHECK(launch_dense(in.dtype, in.num_heads, false, l));
  if (splits > 1)
    launch_merge(p.part_u, p.part_pos, p.part_cnt, splits, in.num_q, k, out, st,
                 merge_pdl(l.grid, sms));
}

void flat_prefill_scores(const PrefillInputs& in, const int32_t* row_ks, const int32_t* row_ke,
                         int64_t r0, int64_t rows, float* scores, int64_t ld, Path path,
                         cudaStream_t st) {
  if (path == Path::Scores) {
    FusedLaunch l;
    l.q = map_rows(in.q, in.dtype, uint64_t(in.num_q) * in.num_heads, 2 * in.num_heads, "q");
    l.k = map_rows(in.k, in.dtype, uint64_t(in.num_k), 256, "k");
    l.scale = in.k_scale ? map_scales(in.k_scale, uint64_t(in.num_k), 256) : l.k;
    sm90::FusedParams& p = l.p;
    p.row_begin = r0;
    p.row_end = r0 + rows;
    p.num_tiles = int(ceil_div(rows, 2));
    p.splits = 1;
    p.has_scale = in.k_scale != nullptr;
    p.row_ks = row_ks;
    p.row_ke = row_ke;
    p.w = in.w;
    p.scores = scores;
    p.scores_ld = ld;
    l.grid = int(std::min<int64_t>(p.num_tiles, current_device().sm_count));
    l.stream = st;
    HISA_CUDA_CHECK(launch_dense(in.dtype, in.num_heads, true, l));
  } else {
    SimtParams sp;
    sp.row_begin = r0;
    sp.rows = rows;
    sp.heads = in.num_heads;
    sp.dim = in.head_dim;
    sp.q_dtype = sp.k_dtype = in.dtype;
    sp.q = in.q;
    sp.w = in.w;
    sp.k = in.k;
    sp.k_scale = in.k_scale;
    sp.row_ks = row_ks;
    sp.row_ke = row_ke;
    sp.scores = scores;
    sp.ld = ld;
    simt_scores(sp, st);
  }
}

void flat_prefill_chunks(const PrefillInputs& in, int k, int32_t* out, const int32_t* row_ks,
                         const int32_t* row_ke, Workspace& ws, cudaStream_t st, Path path,
                         size_t budget) {
  const int64_t ld = std::max<int64_t>(in.num_k, 1);
  const int64_t R = chunk_rows(in.num_q, ld, budget);
  float* scores = static_cast<float*>(ws.get(kSlotScores, size_t(R) * ld * 4));
  for (int64_t r0 = 0; r0 < in.num_q; r0 += R) {
    const int64_t rows = std::min(R, in.num_q - r0);
    flat_prefill_scores(in, row_ks, row_ke, r0, rows, scores, ld, path, st);
    launch_topk_rows({scores, ld, row_ke + r0, 0, row_ks + r0}, rows, k, out, r0, st);
  }
}

}  // namespace hisa::cuda
