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
// Only method 'flat' (DSA) is implemented on CUDA; 'hisa' and 'block' throw hisa::Error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "hisa/config.hpp"
#include "hisa/params.hpp"

namespace hisa::cuda {

// Device memory the calls need besides inputs and outputs (row spans, split-K partial lists,
// score chunks, check flags). Grows on demand and is reused; bounded independently of T x S:
// at most a few MB plus the score-chunk budget of Options::max_chunk_bytes (only for k > 2048 and
// the fallback path). Not thread-safe; use one per stream.
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
  Scores = 2,  // wgmma scoring writing score chunks, then the stand-alone top-k (any k)
  Simt = 3,    // CUDA-core scoring (any dtype, D, H, page size), then the stand-alone top-k
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
  // Key splits per tile (prefill) or request (decode); 0 chooses from the problem size.
  int splits = 0;
  // Budget of one score chunk (Scores and Simt paths): rows are processed in chunks of
  // max_chunk_bytes / (4 * S) rows.
  size_t max_chunk_bytes = size_t(1) << 30;
  // Measurement hooks (benchmarks only; fp8 H = 64 prefill and next_n = 1 decode on the fused
  // path): `profile` is a device array of 16 u64 that accumulates the select and producer
  // warpgroups' cycle counters (slots in src/cuda/kernels/sm90_flat_topk.cuh, ProfSlot);
  // debug_mode 1 makes the select warpgroup consume the scores without selecting (the indices are
  // then meaningless): the bound set by scoring and the pipeline alone. Decode only, debug_mode 2:
  // only the split-K merge kernel runs, over the partial lists the previous call left.
  unsigned long long* profile = nullptr;
  int debug_mode = 0;
  // Measurement (with `profile`): a device array of kTimelineEvents u64 per CTA (one CTA per SM)
  // that receives %globaltimer stamps of the CTA's last item (TimelineEvent in
  // src/cuda/kernels/flat_timeline.hpp).
  unsigned long long* timeline = nullptr;
  // Kernel variant for A/B timing (0 = default): 1 runs an earlier configuration. Fused fp8
  // prefill with H = 64: device run 27's kernel (768 threads, four math warpgroups with two N = 64
  // wgmma banks) instead of the slim one (640 threads, three math warpgroups with one N = 128
  // bank, seven select warps); fused decode with H = 64, next_n = 1: run 22's kernel (768
  // threads, a 16-stage epilogue ring) instead of the slim one (640 threads, seven select warps).
  // Decode only, 2: the key stream alone (no scoring, no selection; the indices are meaningless).
  // Prefill only, 3: the slim kernel with two N = 64 wgmma banks instead of one N = 128 bank
  // (device run 54); 4: the slim kernel as in runs 35-55, w read from shared memory every stage
  // and no setmaxnreg register split (runs 56-57: 1-7% slower than the default); 7: the default
  // with the key scales loaded at the top of the stage (device run 56's default: one spilled
  // register per stage in the math warps; 1-2% slower at 128K, 2% faster at 8K and 32K).
  // Prefill, 9: the cuts count digits with __match_any_sync (the default before device run 59;
  // in run 59 5-23% slower). Decode: 14: four key stages instead of five; 15: two N = 32 wgmma
  // banks instead of one N = 64 bank; 16: the decode of device runs 61-63 (w read from shared
  // memory every key stage, two N = 32 banks, four key stages, the select warps' tail); 17: the
  // CTA's last item finished (the final cut and the merge) by the seven select warps instead of
  // all 640 threads; 18: the select warps poll for scores with 200 ns sleeps instead of suspended
  // try-waits; 19: 18, and the producer (200 ns) and math warps (50 ns) too; 20: a split the
  // kernel merges cuts its list exactly some 28 key stages before its end and publishes it uncut
  // (the merge's one cut covers the union); 21: the merging split keeps its own list in shared
  // memory (only the other splits' lists are loaded) and one thread fences after the arrival
  // (20 and 21 act where the lists are merged in the kernel: with pair_tail = false); 22: the
  // decode without the early prefetch of the first item's length, page ids and w (device run 77's
  // default); 24: six key stages (one q stage, a 16-stage epilogue ring, 6912-entry lists).
  int variant = 0;
  // Launch the split-K merge kernel as a programmatic dependent of the fused kernel when the
  // fused grid leaves at least half the SMs free (its CTAs wait there instead of being launched
  // after it). false: always after it (for A/B timing).
  bool merge_pdl = true;
  // Decode: merge the split-K partial lists in the fused kernel, by the last split of each
  // request to finish (no merge kernel), where splits * k fits its candidate list (batch 64 at
  // 128K: two splits of k = 2048). false: the merge kernel (device run 63: ~20 us more at b64).
  bool merge_in_kernel = true;
  // Decode with H = 64, next_n = 1, two splits and batch <= SMs / 2 (batch 64 at 128K): run a
  // request's two splits as one 2-CTA cluster that cuts the union of their candidate lists
  // together through distributed shared memory (no partial lists, no merge; device run 73: the
  // end of the decode ~6 us instead of ~14). false: the lists merged as merge_in_kernel says.
  bool pair_tail = true;
  // Decode with the pair tail: helper CTAs on the SMs the pairs leave idle (b64: 4 of 132) score
  // the last pages of every request (a pair CTA's share), and the request's split 1 appends
  // their scores to its list. -1: as many as fit (even, at most one per request) where the
  // segments have 40 to 128 pages (the measured neighbourhood: b64 from ~88K tokens, 58 pages at
  // 128K); 0: none; n: at most n, wherever a segment has a key stage (tests). helper_shift:
  // pages moved from split 1 to split 0 (-1: the default); helper_weight: a helper's share of
  // the pages in sixteenths of a pair CTA's (-1: the default).
  int helpers = -1;
  int helper_shift = -1;
  int helper_weight = -1;
};

// Ragged prefill. in: device pointers (q, k, k_scale, w, cu_seqlens or ks/ke). out.indices:
// device [T, cfg.topk] int32, rows ascending then -1 padded.
void select_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                    Workspace& ws, void* stream = nullptr, const Options& opt = {});

// Paged decode. in: device pointers (q, w, kv_cache, block_table, seq_lens). out.indices: device
// [batch * next_n, cfg.topk] int32.
void select_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                   Workspace& ws, void* stream = nullptr, const Options& opt = {});

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
