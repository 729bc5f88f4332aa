// HISA and block-sparse decode from the paged fp8 cache (SEMANTICS.md 4-5), on the kernels of
// HISA prefill, in five steps on one stream with no host synchronisation:
//   1. each row's spans (kernels/smxx_hisa_blocks.cuh, smxx_decode_spans_kernel): its pooled
//      rows for the block stage, and its positions as virtual key rows b * max_pages * 64 + p, so
//      that the token stage finds a chunk's page at the flattened block table's entry row / 64;
//   2. the block stage: the fused kernel over gathered chunks of the pooled cache (PooledCache,
//      kept by update_pooled_cache), each row's non-forced blocks [sink, J - local), exact top
//      m - sink - local, ties toward the lower block; then the chosen blocks with the forced ones;
//   3. hisa: the token stage, the fused kernel over the pages of the chosen blocks (gathered
//      chunks of the paged cache), exact top-k fused; block: the chosen blocks' positions.
// Rows of one request (next_n > 1) share a tile and stream the union of their chunks once. With
// given blocks (DecodeInputs::given_blocks, cross-layer reuse) step 2 is skipped and no pooled
// cache is read.
#include <algorithm>

#include "cuda/backend.hpp"
#include "cuda/fused_launch.cuh"
#include "cuda/kernels/smxx_hisa_blocks.cuh"
#include "cuda/kernels/smxx_pool.cuh"
#include "cuda/tensor_maps.hpp"
#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

int stride_for(int64_t entries, int per_stage) {
  return int(ceil_div(std::max<int64_t>(entries, 1), per_stage) * per_stage);
}
// Splits of each tile's chunk list: enough CTAs for the SMs where the batch has few tiles (one
// tile per two rows), each split at least 3 key stages, at most 16 (the merge kernel's lists).
int splits_for(int64_t tiles, int stride, int per_stage, int sms) {
  const int64_t stages = stride / per_stage;
  return int(
      std::clamp<int64_t>(std::min<int64_t>(sms / std::max<int64_t>(tiles, 1), stages / 3), 1, 16));
}

}  // namespace

size_t pooled_cache_bytes(int batch, int max_blocks) {
  return size_t(std::max(batch, 0)) * size_t(std::max(max_blocks, 0)) * 132;
}

void update_pooled_cache(const DecodeInputs& cache, const int32_t* old_lens,
                         const int32_t* new_lens, const PooledCache& pooled, void* stream) {
  HISA_CHECK(cache.page_size == 64 && cache.head_dim == 128, "update_pooled_cache: the device ",
             "pooled cache takes page_size 64 and D = 128 (got ", cache.page_size, ", ",
             cache.head_dim, ")");
  HISA_CHECK(cache.batch >= 0 && cache.batch <= pooled.batch, "update_pooled_cache: batch ",
             cache.batch, " exceeds the pooled cache's ", pooled.batch);
  const int B = pooled.block_size;
  HISA_CHECK(B >= 64 && B <= 256 && (B & (B - 1)) == 0,
             "update_pooled_cache: block_size must be a power of two in [64, 256], got ", B);
  HISA_CHECK(int64_t(pooled.max_blocks) * B >= int64_t(cache.max_pages) * 64,
             "update_pooled_cache: max_blocks ", pooled.max_blocks, " x B ", B,
             " does not cover the block table's ", cache.max_pages, " pages of 64");
  if (cache.batch == 0) return;
  HISA_CHECK(cache.kv_cache && cache.block_table && new_lens && pooled.keys && pooled.scales,
             "update_pooled_cache: kv_cache, block_table, new_lens and the pooled cache must be "
             "given");
  const int sms = current_device().sm_count;
  // CTAs per request: a prefill chunk completes many blocks, and the lengths stay on the device,
  // so 8 CTAs per SM in all (at least 4 per request, at most 64); those without a block exit.
  const int gy = int(std::clamp<int64_t>(ceil_div(8 * int64_t(sms), cache.batch), 4, 64));
  smxx_pool_paged_kernel<<<dim3(unsigned(cache.batch), unsigned(gy)), 128, 0,
                           static_cast<cudaStream_t>(stream)>>>(
      cache.kv_cache, cache.block_table, cache.max_pages, old_lens, new_lens, B, pooled.max_blocks,
      pooled.keys, pooled.scales);
  HISA_CUDA_CHECK(cudaGetLastError());
}

void hisa_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                 const PooledCache* pc, Workspace& ws, cudaStream_t st) {
  const int B = cfg.block_size, m = cfg.top_blocks;
  const int kp = m - cfg.sink_blocks - cfg.local_blocks;  // blocks the block stage picks
  const int64_t rows = int64_t(in.batch) * in.next_n;
  const int per_stage = gathered_per_stage(DType::F8E4M3, in.num_heads);
  const int sms = current_device().sm_count;

  // Given blocks (cross-layer reuse): no block stage; out.blocks repeats them.
  const bool given = in.given_blocks != nullptr;
  const int max_blocks = given ? 0 : pc->max_blocks;  // (the block spans go unused when given)

  // ---- 1. spans
  auto* spans = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(rows) * 16));
  int32_t *tks = spans, *tke = spans + rows, *bks = spans + 2 * rows, *bke = spans + 3 * rows;
  smxx_decode_spans_kernel<<<unsigned(ceil_div(rows, 256)), 256, 0, st>>>(
      rows, in.next_n, in.seq_lens, in.max_pages, max_blocks, B, m, cfg.sink_blocks,
      cfg.local_blocks, tks, tke, bks, bke);
  HISA_CUDA_CHECK(cudaGetLastError());

  const int64_t tiles = ceil_div(rows, 2);
  FusedLaunch l;
  l.q = map_rows(in.q, DType::F8E4M3, uint64_t(rows) * in.num_heads, 2 * in.num_heads, "q");
  l.stream = st;
  sm90::FusedParams& p = l.p;
  p.row_begin = 0;
  p.row_end = rows;
  p.num_tiles = int(tiles);
  p.has_scale = 1;
  p.w = in.w;

  // Split-K partial lists of both stages: reserved first for the larger, so that the second
  // stage does not grow (free and reallocate) what the first still reads.
  const int bstride = given ? 0 : stride_for(2 * ceil_div(pc->max_blocks, 64), per_stage);
  const int tstride = stride_for(2 * int64_t(m) * (B / 64), per_stage);
  const int bsplits = given ? 1 : splits_for(tiles, bstride, per_stage, sms);
  const int tsplits = cfg.method == Method::Hisa ? splits_for(tiles, tstride, per_stage, sms) : 1;
  if (std::max(bsplits, tsplits) > 1) {
    const size_t n =
        size_t(rows) * std::max(int64_t(bsplits) * std::max(kp, 1), int64_t(tsplits) * cfg.topk);
    ws.get(kSlotPartU, n * 4);
    ws.get(kSlotPartPos, n * 4);
    ws.get(kSlotPartCnt, size_t(rows) * std::max(bsplits, tsplits) * 4);
  }
  const auto partials = [&](int splits, int k) {
    p.splits = splits;
    p.part_stride = k;
    if (splits > 1) use_partial_lists(p, rows, ws);
  };
  const auto launch = [&](int32_t* out, int k) {
    l.grid = int(std::min<int64_t>(tiles * p.splits, sms));
    HISA_CUDA_CHECK(launch_gathered(DType::F8E4M3, in.num_heads, l));
    if (p.splits > 1)
      launch_merge(p.part_u, p.part_pos, p.part_cnt, p.splits, rows, k, out, st, false);
  };

  // ---- 2. block stage over the pooled cache (given blocks: none)
  const int32_t* blocks = in.given_blocks;
  if (given) {
    if (out.blocks && out.blocks != in.given_blocks)
      HISA_CUDA_CHECK(cudaMemcpyAsync(out.blocks, in.given_blocks, size_t(rows) * m * 4,
                                      cudaMemcpyDeviceToDevice, st));
  } else {
    auto* top = static_cast<int32_t*>(ws.get(kSlotBlockTop, size_t(rows) * std::max(kp, 1) * 4));
    if (kp > 0) {
      const int stride = bstride;
      auto* chunks = static_cast<int32_t*>(ws.get(kSlotBlockChunks, size_t(tiles) * stride * 4));
      auto* counts = static_cast<int32_t*>(ws.get(kSlotBlockChunkCount, size_t(tiles) * 4));
      smxx_span_chunk_lists_kernel<<<unsigned(ceil_div(tiles, 128)), 128, 0, st>>>(
          rows, bks, bke, stride, per_stage, chunks, counts);
      HISA_CUDA_CHECK(cudaGetLastError());
      const uint64_t pooled_rows = uint64_t(pc->batch) * pc->max_blocks;
      l.k = map_rows(pc->keys, DType::F8E4M3, pooled_rows, 64, "pooled keys");
      l.scale = l.k;
      p.topk = kp;
      partials(bsplits, kp);
      p.k_scale = pc->scales;
      p.num_keys = int64_t(pooled_rows);
      p.row_ks = bks;
      p.row_ke = bke;
      p.chunks = chunks;
      p.chunk_count = counts;
      p.chunk_stride = stride;
      p.block_table = nullptr;
      p.out = top;
      launch(top, kp);
    }
    int32_t* chosen =
        out.blocks ? out.blocks : static_cast<int32_t*>(ws.get(kSlotBlocks, size_t(rows) * m * 4));
    smxx_assemble_blocks_kernel<<<unsigned(ceil_div(rows * 32, 256)), 256, 0, st>>>(
        0, rows, tks, tke, B, m, cfg.sink_blocks, cfg.local_blocks, top, chosen);
    HISA_CUDA_CHECK(cudaGetLastError());
    blocks = chosen;
  }
  if (cfg.method == Method::Block) {
    smxx_block_positions_kernel<<<unsigned(rows), 256, 0, st>>>(0, rows, tks, tke, B, m, blocks,
                                                                out.indices);
    HISA_CUDA_CHECK(cudaGetLastError());
    return;
  }

  // ---- 3. token stage over the chosen blocks' pages
  const int stride = tstride;
  auto* chunks = static_cast<int32_t*>(ws.get(kSlotChunks, size_t(tiles) * stride * 4));
  auto* counts = static_cast<int32_t*>(ws.get(kSlotChunkCount, size_t(tiles) * 4));
  smxx_chunk_lists_kernel<<<unsigned(ceil_div(tiles, 128)), 128, 0, st>>>(
      0, rows, tks, tke, B, m, blocks, stride, per_stage, chunks, counts);
  HISA_CUDA_CHECK(cudaGetLastError());
  l.k = map_cache(in.kv_cache, uint64_t(in.num_pages));
  l.scale = l.k;
  p.topk = cfg.topk;
  partials(tsplits, cfg.topk);
  p.k_scale = nullptr;
  p.num_keys = 0;
  p.row_ks = tks;
  p.row_ke = tke;
  p.chunks = chunks;
  p.chunk_count = counts;
  p.chunk_stride = stride;
  p.block_table = in.block_table;
  p.max_pages = in.max_pages;
  p.kv_cache = in.kv_cache;
  p.out = out.indices;
  launch(out.indices, cfg.topk);
}

}  // namespace hisa::cuda
