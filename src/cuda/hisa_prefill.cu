// HISA and block-sparse prefill on the device (SEMANTICS.md 4-5), in four steps on one stream:
//   1. pooled keys of the blocks any row scores (kernels/smxx_pool.cuh), stored as keys the fused
//      kernel reads: fp8 with a per-block scale, or bf16 (hisa::cuda::pooled_rounding);
//   2. the block stage: the fused kernel over the pooled keys (dense keys, each row's span of
//      non-forced blocks), exact top m - sink - local, ties toward the lower block; then the
//      chosen block list with the forced blocks (kernels/smxx_hisa_blocks.cuh);
//   3. hisa: the token stage, the fused kernel over gathered keys: each tile of two rows streams
//      the 64-key chunks of the union of its rows' blocks once, each row keeping only the chunks
//      it chose, with the exact top-k fused (no candidate matrix, no index translation);
//      block: the chosen blocks' positions;
// with given blocks (PrefillInputs::given_blocks, cross-layer reuse) steps 1 and 2 are skipped;
// rows in chunks of a bounded size, so that the workspace does not grow with T.
#include <algorithm>

#include "cuda/backend.hpp"
#include "cuda/fused_launch.cuh"
#include "cuda/kernels/smxx_hisa_blocks.cuh"
#include "cuda/kernels/smxx_pool.cuh"
#include "cuda/tensor_maps.hpp"
#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

template <int E>
cudaError_t launch_gathered_heads(int heads, const FusedLaunch& l) {
  if (heads == 64) return launch_fused<E, 64, 2, sm90::kGatheredKeys, false>(l);
  return launch_fused<E, 32, 2, sm90::kGatheredKeys, false>(l);
}

// Rows per chunk: the chunk's blocks ([R, m] int32), its block stage's top blocks and its chunk
// lists (R / 2 tiles of up to 2 m B / 64 entries) stay near 24 MB at m = 64, B = 128.
int64_t rows_per_chunk(const SelectConfig& cfg) {
  const int64_t per_row = int64_t(cfg.top_blocks) * (2 + cfg.block_size / 64) * 4;
  return std::max<int64_t>(4096, std::min<int64_t>(65536, (int64_t(24) << 20) / per_row)) & ~1;
}

}  // namespace

cudaError_t launch_gathered(DType t, int heads, const FusedLaunch& l) {
  return t == DType::F8E4M3 ? launch_gathered_heads<kFp8>(heads, l)
                            : launch_gathered_heads<kBf16>(heads, l);
}
// Chunks per key stage of the gathered instance (3 in the slim fp8 H = 64 kernel, else 4).
int gathered_per_stage(DType t, int heads) {
  if (t == DType::F8E4M3)
    return heads == 64 ? FusedConfigOf<kFp8, 64, 2, sm90::kGatheredKeys, false>::kPagesPerStage
                       : FusedConfigOf<kFp8, 32, 2, sm90::kGatheredKeys, false>::kPagesPerStage;
  return heads == 64 ? FusedConfigOf<kBf16, 64, 2, sm90::kGatheredKeys, false>::kPagesPerStage
                     : FusedConfigOf<kBf16, 32, 2, sm90::kGatheredKeys, false>::kPagesPerStage;
}

void hisa_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                  const int32_t* row_ks, const int32_t* row_ke, Workspace& ws, cudaStream_t st) {
  const int B = cfg.block_size, m = cfg.top_blocks;
  const int kp = m - cfg.sink_blocks - cfg.local_blocks;  // blocks the block stage picks
  const bool fp8 = in.dtype == DType::F8E4M3;
  const int64_t T = in.num_q;

  // Given blocks (cross-layer reuse): no pooled keys and no block stage; out.blocks repeats them.
  const bool given = in.given_blocks != nullptr;
  if (given && out.blocks && out.blocks != in.given_blocks)
    HISA_CUDA_CHECK(cudaMemcpyAsync(out.blocks, in.given_blocks, size_t(T) * m * 4,
                                    cudaMemcpyDeviceToDevice, st));

  // ---- 1. pooled keys
  const int64_t slots = in.num_k / B + 1;
  uint8_t* pooled = nullptr;
  float* pooled_scale = nullptr;
  if (!given) {
    auto* need = static_cast<int32_t*>(ws.get(kSlotPoolSeqs, size_t(slots) * 12));
    int32_t* start = need + slots;
    int32_t* owner = start + slots;
    HISA_CUDA_CHECK(cudaMemsetAsync(need, 0, size_t(slots) * 4, st));
    smxx_pool_need_kernel<<<unsigned(ceil_div(T, 256)), 256, 0, st>>>(
        T, row_ks, row_ke, B, m, cfg.local_blocks, need, start);
    HISA_CUDA_CHECK(cudaGetLastError());
    smxx_pool_owner_kernel<<<1, 1024, 0, st>>>(slots, need, owner);
    HISA_CUDA_CHECK(cudaGetLastError());
    pooled = static_cast<uint8_t*>(ws.get(kSlotPooled, size_t(slots) * 128 * (fp8 ? 1 : 2)));
    pooled_scale = fp8 ? static_cast<float*>(ws.get(kSlotPooledScale, size_t(slots) * 4)) : nullptr;
    smxx_pool_blocks_kernel<<<unsigned(std::min<int64_t>(slots, 65535)), 128, 0, st>>>(
        in.dtype, in.k, in.k_scale, B, slots, owner, need, start, fp8 ? 1 : 0, pooled,
        pooled_scale);
    HISA_CUDA_CHECK(cudaGetLastError());
  }

  // ---- per row chunk: 2. block stage, 3. token stage or positions
  const int64_t R = std::min<int64_t>(rows_per_chunk(cfg), T + (T & 1));
  const int per_stage = gathered_per_stage(in.dtype, in.num_heads);
  const int stride = int(ceil_div(2 * int64_t(m) * (B / 64), per_stage) * per_stage);
  int32_t* spans = nullptr;
  int32_t* top = nullptr;
  int32_t* chunk_blocks = nullptr;
  if (!given) {
    spans = static_cast<int32_t*>(ws.get(kSlotBlockSpans, size_t(R) * 8));
    top = static_cast<int32_t*>(ws.get(kSlotBlockTop, size_t(R) * std::max(kp, 1) * 4));
    if (!out.blocks) chunk_blocks = static_cast<int32_t*>(ws.get(kSlotBlocks, size_t(R) * m * 4));
  }
  int32_t* chunks = nullptr;
  int32_t* counts = nullptr;
  if (cfg.method == Method::Hisa) {
    chunks = static_cast<int32_t*>(ws.get(kSlotChunks, size_t(R / 2 + 1) * stride * 4));
    counts = static_cast<int32_t*>(ws.get(kSlotChunkCount, size_t(R / 2 + 1) * 4));
  }
  const int sms = current_device().sm_count;
  const size_t q_row = size_t(in.num_heads) * in.head_dim * dtype_size(in.dtype);
  for (int64_t r0 = 0; r0 < T; r0 += R) {
    const int64_t rows = std::min(R, T - r0);
    const int32_t* blocks = given ? in.given_blocks + r0 * m : nullptr;
    if (!given) {
      int32_t* chosen = out.blocks ? out.blocks + r0 * m : chunk_blocks;
      blocks = chosen;
      smxx_block_spans_kernel<<<unsigned(ceil_div(rows, 256)), 256, 0, st>>>(
          r0, rows, row_ks, row_ke, B, m, cfg.sink_blocks, cfg.local_blocks, spans, spans + R);
      HISA_CUDA_CHECK(cudaGetLastError());
      if (kp > 0) {
        // The block stage: these rows' queries against the pooled keys, each row's span of
        // non-forced blocks (empty where J <= m).
        PrefillInputs bin = in;
        bin.num_q = rows;
        bin.num_k = slots;
        bin.q = static_cast<const uint8_t*>(in.q) + size_t(r0) * q_row;
        bin.w = in.w + r0 * in.num_heads;
        bin.k = pooled;
        bin.k_scale = pooled_scale;
        bin.given_blocks = nullptr;
        fused_dense_topk(bin, kp, top, spans, spans + R, 1, ws, st);
      }
      smxx_assemble_blocks_kernel<<<unsigned(ceil_div(rows * 32, 256)), 256, 0, st>>>(
          r0, rows, row_ks, row_ke, B, m, cfg.sink_blocks, cfg.local_blocks, top, chosen);
      HISA_CUDA_CHECK(cudaGetLastError());
    }
    if (cfg.method == Method::Block) {
      smxx_block_positions_kernel<<<unsigned(rows), 256, 0, st>>>(r0, rows, row_ks, row_ke, B, m,
                                                                  blocks, out.indices);
      HISA_CUDA_CHECK(cudaGetLastError());
      continue;
    }
    const int64_t tiles = ceil_div(rows, 2);
    smxx_chunk_lists_kernel<<<unsigned(ceil_div(tiles, 128)), 128, 0, st>>>(
        r0, rows, row_ks, row_ke, B, m, blocks, stride, per_stage, chunks, counts);
    HISA_CUDA_CHECK(cudaGetLastError());
    // The token stage over the chunks the rows chose.
    FusedLaunch l;
    l.q = map_rows(in.q, in.dtype, uint64_t(T) * in.num_heads, 2 * in.num_heads, "q");
    l.k = map_rows(in.k, in.dtype, uint64_t(in.num_k), 64, "k");
    l.scale = l.k;  // (the scales are copied by the producer's lanes: FusedParams::k_scale)
    sm90::FusedParams& p = l.p;
    p.row_begin = r0;
    p.row_end = r0 + rows;
    p.num_tiles = int(tiles);
    p.splits = 1;
    p.topk = cfg.topk;
    p.has_scale = in.k_scale != nullptr;
    p.k_scale = in.k_scale;
    p.num_keys = in.num_k;
    p.row_ks = row_ks;
    p.row_ke = row_ke;
    p.chunks = chunks;
    p.chunk_count = counts;
    p.chunk_stride = stride;
    p.w = in.w;
    p.out = out.indices;
    p.part_stride = cfg.topk;
    l.grid = int(std::min<int64_t>(tiles, sms));
    l.stream = st;
    HISA_CUDA_CHECK(launch_gathered(in.dtype, in.num_heads, l));
  }
}

}  // namespace hisa::cuda
