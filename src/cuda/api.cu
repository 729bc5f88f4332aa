// The CUDA backend's device-pointer API (hisa/cuda.hpp): input checks, path choice, the entry
// points. The paths live in flat_prefill.cu, flat_decode.cu and hisa_prefill.cu.
#include <algorithm>

#include "cuda/backend.hpp"
#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

Path resolve(Path want, bool fused_ok, int k, bool decode, const char* who) {
  if (want == Path::Auto) {
    if (fused_ok && k <= kFusedMaxK) return Path::Fused;
    if (fused_ok && !decode) return Path::Scores;
    return Path::Simt;
  }
  if (want == Path::Fused) {
    HISA_CHECK(
        fused_ok, who, ": the fused path needs fp8/bf16 q and k (fp8 q and cache for decode), ",
        "D = 128, H in {32, 64}, page_size 64, 16-byte aligned pointers and an sm_90 device");
    HISA_CHECK(k <= kFusedMaxK, who, ": the fused path takes k <= ", kFusedMaxK, ", got ", k);
  }
  if (want == Path::Scores) {
    HISA_CHECK(!decode, who, ": decode has no Scores path (use Auto, Fused or Simt)");
    HISA_CHECK(fused_ok, who, ": the Scores path has the fused path's input requirements");
  }
  return want;
}

// HISA and block prefill run on the fused kernels only: the shapes they take, or a clear error.
void check_hisa_path(const PrefillInputs& in, const SelectConfig& cfg, Path want) {
  const char* m = cfg.method == Method::Hisa ? "hisa" : "block";
  HISA_CHECK(want == Path::Auto || want == Path::Fused, "prefill: method ", m,
             " runs on the fused path only (path ", path_name(want), " was asked for)");
  HISA_CHECK(fused_applies(in), "prefill: method ", m,
             " on the cuda backend needs fp8 or bf16 q and k, D = 128, H in {32, 64}, 16-byte "
             "aligned pointers and an sm_90 device (got ",
             dtype_name(in.dtype), ", D = ", in.head_dim, ", H = ", in.num_heads,
             "); use the cpu backend for other inputs");
  HISA_CHECK(cfg.method == Method::Block || cfg.topk <= kFusedMaxK, "prefill: method hisa on ",
             "the cuda backend takes k <= ", kFusedMaxK, " (got ", cfg.topk,
             "); use the cpu backend for larger k");
  HISA_CHECK(cfg.top_blocks - cfg.sink_blocks - cfg.local_blocks <= kFusedMaxK, "prefill: the ",
             "cuda backend's block stage picks at most ", kFusedMaxK, " blocks (top_blocks - ",
             "sink_blocks - local_blocks = ", cfg.top_blocks - cfg.sink_blocks - cfg.local_blocks,
             ")");
  HISA_CHECK(cfg.pooling == Pooling::Mean, "prefill: the cuda backend pools blocks by their mean ",
             "only (pooling max is an experiment of the cpu backends)");
}

// HISA and block decode: the fused path's shapes and a pooled cache that covers the call (none
// needed with given blocks).
void check_hisa_decode(const DecodeInputs& in, const SelectConfig& cfg, Path want,
                       const PooledCache* pc) {
  const char* m = cfg.method == Method::Hisa ? "hisa" : "block";
  HISA_CHECK(want == Path::Auto || want == Path::Fused, "decode: method ", m,
             " runs on the fused path only (path ", path_name(want), " was asked for)");
  HISA_CHECK(fused_applies(in), "decode: method ", m, " on the cuda backend needs fp8 q, ",
             "D = 128, H in {32, 64}, page_size 64, 16-byte aligned pointers and an sm_90 device",
             " (got ", dtype_name(in.q_dtype), ", D = ", in.head_dim, ", H = ", in.num_heads,
             ", page_size ", in.page_size, "); use the cpu backend for other inputs");
  HISA_CHECK(cfg.method == Method::Block || cfg.topk <= kFusedMaxK, "decode: method hisa on the ",
             "cuda backend takes k <= ", kFusedMaxK, " (got ", cfg.topk, ")");
  HISA_CHECK(cfg.top_blocks - cfg.sink_blocks - cfg.local_blocks <= kFusedMaxK, "decode: the ",
             "cuda backend's block stage picks at most ", kFusedMaxK, " blocks");
  HISA_CHECK(cfg.pooling == Pooling::Mean, "decode: the cuda backend pools blocks by their mean ",
             "only");
  HISA_CHECK(int64_t(in.batch) * in.max_pages * 64 < (int64_t(1) << 31), "decode: method ", m,
             " on the cuda backend takes batch x max_pages x 64 < 2^31 (got ", in.batch, " x ",
             in.max_pages, ")");
  if (in.given_blocks) return;
  HISA_CHECK(pc && pc->keys && pc->scales, "decode: method ", m, " on the cuda backend needs ",
             "the device pooled cache (hisa::cuda::PooledCache, kept by update_pooled_cache)");
  HISA_CHECK(pc->block_size == cfg.block_size, "decode: the pooled cache holds blocks of ",
             pc->block_size, " tokens, the config asks for block_size ", cfg.block_size);
  HISA_CHECK(pc->batch >= in.batch, "decode: the pooled cache has ", pc->batch,
             " request rows, the batch is ", in.batch);
  HISA_CHECK(int64_t(pc->max_blocks) * pc->block_size >= int64_t(in.max_pages) * in.page_size,
             "decode: the pooled cache's max_blocks ", pc->max_blocks, " x ", pc->block_size,
             " does not cover the block table's ", in.max_pages, " pages of ", in.page_size);
}

}  // namespace

std::string path_name(Path p) {
  switch (p) {
    case Path::Auto:
      return "auto";
    case Path::Fused:
      return "fused";
    case Path::Scores:
      return "scores";
    case Path::Simt:
      return "simt";
  }
  return "?";
}

PooledRounding pooled_rounding(DType input_dtype) {
  return input_dtype == DType::BF16 ? PooledRounding::Bf16 : PooledRounding::Fp8Block;
}

Path chosen_path(const PrefillInputs& in, const SelectConfig& cfg) {
  if (cfg.method != Method::Flat) return fused_applies(in) ? Path::Fused : Path::Auto;
  return resolve(Path::Auto, fused_applies(in), cfg.topk, false, "prefill");
}
Path chosen_path(const DecodeInputs& in, const SelectConfig& cfg) {
  return resolve(Path::Auto, fused_applies(in), cfg.topk, true, "decode");
}

void score_prefill(const PrefillInputs& in, int64_t row_begin, int64_t rows, float* scores,
                   int64_t ld, Path path, Workspace& ws, void* stream) {
  SelectConfig cfg;
  cfg.method = Method::Flat;
  cfg.topk = 1;
  SelectOutputs fake;
  fake.indices = reinterpret_cast<int32_t*>(scores);
  host_checks(in, cfg, fake);
  HISA_CHECK(
      row_begin >= 0 && rows >= 0 && row_begin + rows <= in.num_q && scores && ld >= in.num_k,
      "score_prefill: bad row range or ld");
  HISA_CHECK(path == Path::Scores || path == Path::Simt,
             "score_prefill: path must be Scores or Simt");
  HISA_CHECK(path == Path::Simt || fused_applies(in),
             "score_prefill: the Scores path needs fp8/bf16, ",
             "D = 128, H in {32, 64}, aligned pointers and an sm_90 device");
  if (rows == 0 || in.num_k == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int32_t* spans = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(in.num_q) * 8));
  launch_row_spans(in, spans, spans + in.num_q, st);
  flat_prefill_scores(in, spans, spans + in.num_q, row_begin, rows, scores, ld, path, st);
}

void select_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                    Workspace& ws, void* stream, const Options& opt) {
  host_checks(in, cfg, out);
  if (in.num_q == 0) return;
  if (cfg.has_blocks()) check_hisa_path(in, cfg, opt.path);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int width = cfg.out_width();
  if (opt.validate || opt.check_values) device_checks(in, ws, st, opt.check_values);
  if (in.num_k == 0) {  // every row sees nothing
    HISA_CUDA_CHECK(cudaMemsetAsync(out.indices, 0xFF, size_t(in.num_q) * width * 4, st));
    if (out.blocks && cfg.has_blocks())
      HISA_CUDA_CHECK(cudaMemsetAsync(out.blocks, 0xFF, size_t(in.num_q) * cfg.top_blocks * 4, st));
    return;
  }
  int32_t* spans = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(in.num_q) * 8));
  int32_t* row_ks = spans;
  int32_t* row_ke = spans + in.num_q;
  launch_row_spans(in, row_ks, row_ke, st);
  if (cfg.has_blocks()) {
    if (in.given_blocks && opt.validate)
      check_given_blocks("prefill", in.given_blocks, in.num_q, cfg, row_ks, row_ke, nullptr, 0, ws,
                         st);
    hisa_prefill(in, cfg, out, row_ks, row_ke, ws, st);
    return;
  }
  const Path path = resolve(opt.path, fused_applies(in), cfg.topk, false, "prefill");
  if (path == Path::Fused)
    fused_dense_topk(in, cfg.topk, out.indices, row_ks, row_ke, opt.splits, ws, st);
  else
    flat_prefill_chunks(in, cfg.topk, out.indices, row_ks, row_ke, ws, st, path,
                        opt.max_chunk_bytes);
}

void select_decode_with(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                        Workspace& ws, void* stream, const Options& opt,
                        const DecodeOverrides& over, const PooledCache* pooled) {
  host_checks(in, cfg, out);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (cfg.has_blocks()) {
    check_hisa_decode(in, cfg, opt.path, pooled);
    if (opt.validate || opt.check_values) device_checks(in, ws, st, opt.check_values);
    if (in.given_blocks && opt.validate)
      check_given_blocks("decode", in.given_blocks, int64_t(in.batch) * in.next_n, cfg, nullptr,
                         nullptr, in.seq_lens, in.next_n, ws, st);
    hisa_decode(in, cfg, out, pooled, ws, st);
    return;
  }
  if (opt.validate || opt.check_values) device_checks(in, ws, st, opt.check_values);
  const Path path = resolve(opt.path, fused_applies(in), cfg.topk, true, "decode");
  flat_decode(in, cfg.topk, out.indices, path, ws, st, opt, over);
}

void select_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                   Workspace& ws, void* stream, const Options& opt, const PooledCache* pooled) {
  select_decode_with(in, cfg, out, ws, stream, opt, DecodeOverrides{}, pooled);
}

void topk_rows(const float* scores, int64_t rows, int64_t ld, const int32_t* row_len, int64_t len,
               int k, int32_t* out, void* stream) {
  HISA_CHECK(k >= 1 && k <= 65536, "topk_rows: k must be in [1, 65536], got ", k);
  HISA_CHECK(rows >= 0 && ld >= 0 && len >= 0 && (row_len || len <= ld),
             "topk_rows: bad shape (rows ", rows, ", ld ", ld, ", len ", len, ")");
  HISA_CHECK(rows == 0 || (scores && out), "topk_rows: scores and out must be given");
  launch_topk_rows({scores, ld, row_len, len, nullptr}, rows, k, out, 0,
                   static_cast<cudaStream_t>(stream));
}

}  // namespace hisa::cuda
