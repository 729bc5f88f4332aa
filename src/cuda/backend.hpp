// Internals shared by the CUDA backend's host files: workspace slots, the paths' host functions
// and the launches they share. Included by src/cuda only (and the GPU tests).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.hpp"
#include "cuda/simt_params.hpp"
#include "hisa/cuda.hpp"

namespace hisa::cuda {

// Workspace slots (Workspace::get): one buffer each, kept between calls.
enum Slot : int {
  kSlotSpans = 0,      // row_ks, row_ke [2, T] int32
  kSlotPartU,          // split-K partial lists
  kSlotPartPos,
  kSlotPartCnt,
  kSlotScores,         // score chunks (Scores and Simt paths)
  kSlotErr,            // device check flags
  kSlotMergeCount,     // decode: arrivals per request (in-kernel merge)
  kSlotHelperScores,   // decode: the helpers' raw scores
  kSlotHelperFlags,
  kSlotPooled,         // hisa: pooled keys [S / B + 1, D] and their scales
  kSlotPooledScale,
  kSlotPoolSeqs,       // hisa: the sequences whose blocks are pooled
  kSlotBlockSpans,     // hisa: each row's span of non-forced blocks in pooled rows
  kSlotBlockTop,       // hisa: the block stage's top blocks of a row chunk
  kSlotBlocks,         // hisa: the chosen blocks of a row chunk (when out.blocks is not given)
  kSlotChunks,         // hisa: the token stage's chunk lists of a row chunk
  kSlotChunkCount,
  kSlotBlockChunks,    // hisa decode: the block stage's chunk lists over the pooled cache
  kSlotBlockChunkCount,
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

constexpr int kFusedMaxK = 2048;  // the fused kernel's candidate lists hold k plus one step

// ---- checks.cu ----
// Host checks of a call (validate_*_shapes: the config, scalars, which pointers are given), then
// what the CUDA paths add (the output pointers).
void host_checks(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out);
void host_checks(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out);
// The index inputs on the device (values too when `values`); throws hisa::Error naming the first
// bad entry. Synchronises the stream.
void device_checks(const PrefillInputs& in, Workspace& ws, cudaStream_t st, bool values);
void device_checks(const DecodeInputs& in, Workspace& ws, cudaStream_t st, bool values);
// given_blocks [rows, cfg.top_blocks] on the device (check_given_blocks_row's rules), each row
// seeing row_ke - row_ks positions (prefill) or its decode length (row_ks nullptr: seq_lens and
// next_n); throws naming the first bad entry, with check_given_blocks_row's message. Synchronises
// the stream.
void check_given_blocks(const char* what, const int32_t* given, int64_t rows,
                        const SelectConfig& cfg, const int32_t* row_ks, const int32_t* row_ke,
                        const int32_t* seq_lens, int next_n, Workspace& ws, cudaStream_t st);

// ---- topk.cu ----
// Stand-alone top-k of score rows [row_offset, row_offset + rows) into out (k per row).
struct ScoreRowsArgs {
  const float* scores;
  int64_t ld;
  const int32_t* lens;        // [rows] valid length of each row, or nullptr: `len`
  int64_t len;
  const int32_t* lens_begin;  // optional: length = lens[r] - lens_begin[r]
};
void launch_topk_rows(const ScoreRowsArgs& src, int64_t rows, int k, int32_t* out,
                      int64_t row_offset, cudaStream_t st);
// The merge of split-K partial lists [rows, splits, k] into out. pdl: as a programmatic dependent
// of the kernel before it.
void launch_merge(const uint32_t* part_u, const int32_t* part_pos, const int32_t* part_cnt,
                  int splits, int64_t rows, int k, int32_t* out, cudaStream_t st, bool pdl);

// ---- flat_prefill.cu ----
// Whether the fused kernel takes these inputs (dtype, D, H, alignment, an sm_90 device).
bool fused_applies(const PrefillInputs& in);
// The fused kernel over dense keys for rows [0, in.num_q) with the given spans: top-k of each
// row's keys [row_ks, row_ke) of in.k, positions relative to row_ks (flat prefill; HISA's block
// stage over pooled keys). splits 0: chosen from the problem size.
void fused_dense_topk(const PrefillInputs& in, int k, int32_t* out, const int32_t* row_ks,
                      const int32_t* row_ke, int splits, Workspace& ws, cudaStream_t st);
// Scores of rows [r0, r0 + rows) into scores (ld per row), then the stand-alone top-k: for any k
// and the inputs the fused kernel does not take.
void flat_prefill_chunks(const PrefillInputs& in, int k, int32_t* out, const int32_t* row_ks,
                         const int32_t* row_ke, Workspace& ws, cudaStream_t st, Path path,
                         size_t budget);
void flat_prefill_scores(const PrefillInputs& in, const int32_t* row_ks, const int32_t* row_ke,
                         int64_t r0, int64_t rows, float* scores, int64_t ld, Path path,
                         cudaStream_t st);

// ---- simt.cu, spans.cu ----
// CUDA-core scores of a row chunk (smxx_simt_scores.cuh).
void simt_scores(const SimtParams& sp, cudaStream_t st);
// Row spans of every query row into row_ks, row_ke [T] (device).
void launch_row_spans(const PrefillInputs& in, int32_t* row_ks, int32_t* row_ke,
                      cudaStream_t st);
// Decode row lengths: row b * next_n + j sees seq_lens[b] - next_n + j + 1 positions.
void launch_decode_lens(const int32_t* seq_lens, int next_n, int64_t rows, int32_t* lens,
                        cudaStream_t st);

// ---- flat_decode.cu ----
bool fused_applies(const DecodeInputs& in);
// How the fused decode runs a batch; plan_flat_decode chooses it from the shape (a forced
// Options::splits aside), tests override single fields to reach every way of ending a split.
struct DecodePlan {
  int splits = 1;                // key splits per request
  bool pair_tail = false;        // two splits cut together by a 2-CTA cluster
  bool merge_in_kernel = false;  // else (splits > 1) the merge kernel
  int helpers = 0;               // helper CTAs (pair tail only)
  int helper_shift = 0;          // pages moved from split 1 to split 0
  int helper_weight = 16;        // a helper's share of pages in sixteenths of a pair CTA's
};
DecodePlan plan_flat_decode(const DecodeInputs& in, int k, int forced_splits);
// Overrides of a plan for tests (-1: the plan's choice). helpers: at most this many, also on
// segments shorter than the default's floor.
struct DecodeOverrides {
  int pair_tail = -1, merge_in_kernel = -1, helpers = -1, helper_shift = -1, helper_weight = -1;
};
void flat_decode(const DecodeInputs& in, int k, int32_t* out, Path path, Workspace& ws,
                 cudaStream_t st, const Options& opt, const DecodeOverrides& over = {});
// select_decode with overrides (tests).
void select_decode_with(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                        Workspace& ws, void* stream, const Options& opt,
                        const DecodeOverrides& over, const PooledCache* pooled = nullptr);

// ---- hisa_prefill.cu ----
// HISA and block-sparse prefill (cfg.method hisa or block) on the fused kernels; with
// in.given_blocks the tokens are chosen inside the given blocks (no pooling, no block stage).
void hisa_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                  const int32_t* row_ks, const int32_t* row_ke, Workspace& ws, cudaStream_t st);

// ---- hisa_decode.cu ----
// HISA and block-sparse decode (cfg.method hisa or block) on the fused kernels, from the pooled
// cache `pooled` (checked by the caller; unused, and may be null, with in.given_blocks).
void hisa_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                 const PooledCache* pooled, Workspace& ws, cudaStream_t st);

}  // namespace hisa::cuda
