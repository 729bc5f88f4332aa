// hisa: the CUDA backend's device-pointer API (Hopper, sm_90a).
//
// The same parameter structs as the host API (hisa/params.hpp), with every pointer a device
// pointer. Calls are asynchronous on the given stream (cudaStream_t passed as void*; nullptr is
// the default stream) unless Options::validate asks for the device-side input checks, which read
// an error flag back and so synchronise the stream. No CUDA types in this header.
//
//   hisa::cuda::Workspace ws;
//   hisa::cuda::select_prefill(in_dev, cfg, out_dev, ws, stream);
//
// Methods: flat (DSA), hisa and block, for prefill and for decode (decode's hisa and block read
// a device pooled-key cache, PooledCache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "hisa/config.hpp"
#include "hisa/params.hpp"

namespace hisa::cuda {

// Device memory the calls need besides inputs and outputs (row spans, split-K partial lists,
// HISA's pooled keys and chosen blocks, score chunks, check flags). Grows on demand and is
// reused; bounded independently of T x S: a few MB per call plus, for hisa and block prefill,
// about (S / B) * 132 bytes of pooled keys and a row chunk's blocks, and the score-chunk budget of
// Options::max_chunk_bytes on the paths that write scores (k above 2048, the fallbacks). Not
// thread-safe; use one per stream.
class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  // Device bytes held now.
  size_t bytes() const;
  // Frees everything (synchronises the device).
  void release();
  // Keep buffers that grow instead of freeing them (until release() or destruction). For work
  // captured into a CUDA graph: the graph keeps pointing at every buffer a captured call used,
  // and freeing would also synchronise, which capture forbids.
  void set_keep_grown(bool keep);
  // Internal: a device buffer of at least `bytes` for `slot` (contents undefined, or zero when
  // zero_new and the buffer is newly allocated).
  void* get(int slot, size_t bytes, bool zero_new = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Which kernels compute a call.
enum class Path : int {
  Auto = 0,    // fused tensor-core top-k where it applies, else the fallbacks below
  Fused = 1,   // wgmma scoring with the exact top-k fused (fp8/bf16, D = 128, H in {32, 64},
               // k <= 2048, page_size 64, fp8 q for decode); throws where it does not apply
  Scores = 2,  // wgmma scoring writing score chunks, then the stand-alone top-k (any k; flat)
  Simt = 3,    // CUDA-core scoring (any dtype, D, H, page size), then the stand-alone top-k (flat)
};
std::string path_name(Path p);

struct Options {
  Path path = Path::Auto;
  // Check index inputs on the device (cu_seqlens / ks / ke; seq_lens, block_table) and throw
  // hisa::Error naming the first bad entry. Synchronises the stream.
  bool validate = true;
  // Also check q, k, w (and k_scale / cache scales) for non-finite values (one more read of the
  // inputs). Implies a synchronisation.
  bool check_values = false;
  // Key splits per tile (flat prefill) or request (decode); 0 chooses from the problem size.
  int splits = 0;
  // Budget of one score chunk (Scores and Simt paths): rows are processed in chunks of
  // max_chunk_bytes / (4 * S) rows.
  size_t max_chunk_bytes = size_t(1) << 30;
};

// Ragged prefill. in: device pointers (q, k, k_scale, w, cu_seqlens or ks/ke). out.indices:
// device [T, cfg.out_width()] int32, rows ascending then -1 padded; out.blocks (hisa, block;
// optional): device [T, cfg.top_blocks] int32 chosen blocks, ascending, -1 padded.
void select_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                    Workspace& ws, void* stream = nullptr, const Options& opt = {});

// HISA decode's pooled keys on the device, kept beside the paged cache by update_pooled_cache:
// for request b (the row b of block_table) and each complete block j (j < seq_len / B), the mean
// of the block's B dequantised keys as fp8 e4m3 with one fp32 scale (PooledRounding::Fp8Block):
// keys [batch, max_blocks, 128] uint8 at (b * max_blocks + j) * 128, scales [batch, max_blocks]
// fp32. 132 bytes per block, 1/B of the cache's 132 bytes per token (at B = 128: 135 KB per
// request per layer at 128K tokens, 1.1 MB at 1M). A request's rows move with its block-table
// row. max_blocks must cover the block table: max_blocks * B >= max_pages * page_size.
struct PooledCache {
  uint8_t* keys = nullptr;
  float* scales = nullptr;
  int batch = 0;
  int max_blocks = 0;
  int block_size = 128;  // B of the cache: the SelectConfig's block_size must equal it
};
// Bytes of keys plus scales.
size_t pooled_cache_bytes(int batch, int max_blocks);
// After tokens [old_lens[b], new_lens[b]) of each request were written to the paged cache
// (cache: kv_cache, block_table, max_pages, batch; device int32 lens), pools the blocks that just
// became complete; old_lens nullptr pools every complete block. One launch, no synchronisation.
void update_pooled_cache(const DecodeInputs& cache, const int32_t* old_lens,
                         const int32_t* new_lens, const PooledCache& pooled,
                         void* stream = nullptr);

// Paged decode. in: device pointers (q, w, kv_cache, block_table, seq_lens). out.indices:
// device [batch * next_n, cfg.out_width()] int32, positions; out.blocks (hisa, block; optional):
// [batch * next_n, cfg.top_blocks]. Methods hisa and block need `pooled`, up to date with
// seq_lens, and run on the fused path only (fp8 q, D = 128, H in {32, 64}, page_size 64).
void select_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                   Workspace& ws, void* stream = nullptr, const Options& opt = {},
                   const PooledCache* pooled = nullptr);

// How HISA prefill stores the pooled key of a block: fp8 inputs as PooledRounding::Fp8Block (e4m3
// with one fp32 scale per block), bf16 inputs as Bf16, both from the float64 mean of the
// dequantised keys (hisa/config.hpp). The block stage scores them on the tensor cores like keys.
PooledRounding pooled_rounding(DType input_dtype);

// Stand-alone exact top-k over rows of fp32 scores (device pointers): row r has row_len[r] valid
// scores at scores + r * ld (row_len nullptr: every row has `len`). out: [rows, k] int32
// positions, ascending, -1 padded; ties toward the lower position; deterministic. k <= 65536.
void topk_rows(const float* scores, int64_t rows, int64_t ld, const int32_t* row_len, int64_t len,
               int k, int32_t* out, void* stream = nullptr);

// Raw scores I(t, p) of prefill rows [row_begin, row_begin + rows): scores[(t - row_begin) * ld
// + p] for p < e_t (other entries untouched), by the tensor-core kernel (path Scores) or the
// CUDA-core one (path Simt). For building blocks and tests; ld >= the longest visible span.
void score_prefill(const PrefillInputs& in, int64_t row_begin, int64_t rows, float* scores,
                   int64_t ld, Path path, Workspace& ws, void* stream = nullptr);

// The path Auto picks for these inputs (for reports and tests).
Path chosen_path(const PrefillInputs& in, const SelectConfig& cfg);
Path chosen_path(const DecodeInputs& in, const SelectConfig& cfg);

bool device_present();
// "NVIDIA H200 (sm_90, 132 SMs)" or "" without a device.
std::string device_description();

}  // namespace hisa::cuda
