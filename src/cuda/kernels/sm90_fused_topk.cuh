// sm90 scoring fused with the exact top-k: I(t, p) = k_scale[p] * sum_h w[t, h] *
// relu(q[t, h, :] . k[p, :]) on the tensor cores and the selection in shared memory, so no [T, S]
// score matrix reaches device memory. One kernel, three key sources:
//   - dense keys (flat prefill; HISA's block stage, over pooled keys): each query row sees a key
//     range [ks, ke) of k [S, D];
//   - the paged fp8 cache (flat decode), read page by page through the block table;
//   - gathered keys (HISA's token stage): the 64-key chunks of the blocks a tile's rows chose,
//     listed per tile in position order with a mask of the rows that chose each chunk.
//
// One persistent CTA per SM walks work items. An item is kNQ query rows that share a key stream
// (prefill: kNQ consecutive rows; decode: the next_n rows of one request) and one key range (a
// split of the rows' keys; one split unless the rows are too few to fill the GPU). Roles:
//   - producer warp: TMA copies of the q tile [kNQ * H, D] (once per item) and of the key stages
//     [64 * kMathWG, D] with their fp32 scales into a ring of kKVStages shared-memory stages
//     (chunked sources: one copy per 64-key page or chunk);
//   - kMathWG math warpgroups (3 in the slim 640-thread kernels: fp8 prefill and decode next_n 1
//     with H = 64; else 4): warpgroup g scores keys [64g, 64g + 64) of a stage against all q rows
//     with wgmma (M = 64 keys, N = q rows, both operands K-major, 128-byte swizzle). Epilogue in
//     registers: ReLU, times w[t, h], the head sum over the thread's columns, shuffles for the 4
//     lanes of a key, times k_scale[p]; one fp32 per (query, key) into the epilogue ring;
//   - select warps (7 in the slim kernels, else 4): per query a candidate list in shared memory,
//     in position order, with a rising threshold. Keys above the threshold are appended (ballots
//     and a scan over the select warps); when the list could overflow, an anchored radix cut
//     (smxx_select.cuh) trims it and raises the threshold. At the end of the item the list is cut
//     to exactly k and written out (ascending, -1 padded), or handed on when the item is a split.
// Decode ends a CTA's last item with all its threads (the wide tail); where a request has two
// splits and the batch leaves half the SMs free, the two CTAs of a 2-CTA cluster cut the union of
// their lists together through distributed shared memory (the pair tail), and helper CTAs on the
// SMs the pairs leave idle score the requests' last pages.
// kWriteScores = true writes the scores of a row chunk instead (k above kMaxK; the stand-alone
// top-k then selects).
#pragma once

#include <cuda.h>

#include <cstdint>
#include <type_traits>

#include "cuda/kernels/sm90_ptx.cuh"
#include "cuda/kernels/sm90_wgmma.cuh"
#include "cuda/kernels/smxx_select.cuh"

namespace hisa::cuda::sm90 {

enum KeySource : int {
  kDenseKeys = 0,     // each row's key range [ks, ke) of k [S, D]
  kPagedKeys = 1,     // the paged cache [pages, 64, D + 4] through the block table
  kGatheredKeys = 2,  // 64-key chunks of k [S, D] listed per tile (FusedParams::chunks)
};

// Plain parameters of one launch. Rows are global row numbers (prefill: query rows of the call;
// decode: b * next_n + j).
struct FusedParams {
  int64_t row_begin = 0, row_end = 0;  // rows handled by this launch
  int num_tiles = 0;                   // prefill: ceil((row_end - row_begin) / kNQ); decode: batch
  int splits = 1;                      // key ranges per tile (items = num_tiles * splits)
  int topk = 0;                        // k (<= kMaxK)
  int has_scale = 0;                   // keys carry fp32 scales (else 1)

  // prefill (dense and gathered keys)
  const int32_t* row_ks = nullptr;  // [T] int32: first key row of the row's sequence
  const int32_t* row_ke = nullptr;  // [T] int32: end of the row's visible key rows

  // gathered keys: tile i's chunks are chunks[i * chunk_stride + c], c < chunk_count[i], padded
  // with 0 to a multiple of the chunks per stage. An entry is the chunk's first position (a
  // multiple of 64, relative to its rows' sequence start) | bit 30 + q for each row q of the tile
  // that chose it; a chunk chosen by both rows needs both in one sequence. In position order for
  // each row.
  const int32_t* chunks = nullptr;       // [num_tiles, chunk_stride] int32
  const int32_t* chunk_count = nullptr;  // [num_tiles] int32
  int chunk_stride = 0;
  // The key scales ([num_keys] fp32, when has_scale) of the gathered chunks, copied by the
  // producer's lanes: a chunk starts at any key row, and the 1D TMA box needs a 16-byte aligned
  // start.
  const float* k_scale = nullptr;
  int64_t num_keys = 0;

  // decode (paged cache, page_size 64)
  int next_n = 1, max_pages = 0, pages_per_split = 0;
  const int32_t* block_table = nullptr;  // [batch, max_pages] int32
  const int32_t* seq_lens = nullptr;     // [batch] int32
  const uint8_t* kv_cache = nullptr;     // [pages, 64, D + 4] uint8 (for the scale rows)

  const float* w = nullptr;  // [rows, H] fp32

  // outputs (top-k mode)
  int32_t* out = nullptr;       // [rows, topk] int32 (splits == 1)
  uint32_t* part_u = nullptr;   // [rows, splits, part_stride] uint32 order keys (splits > 1)
  int32_t* part_pos = nullptr;  // [rows, splits, part_stride] int32 positions
  int32_t* part_cnt = nullptr;  // [rows, splits] int32 valid entries
  // Merge in the kernel (decode, splits > 1 and splits * topk <= the candidate list): arrivals per
  // tile, zero before the launch and left zero after it; the last split of a tile to finish merges
  // the tile's partial lists into `out` (no merge kernel). nullptr: the merge kernel does it.
  int* merge_count = nullptr;
  int part_stride = 0;  // entries per partial-list slot (= topk)
  // The launch is 2-CTA clusters (CTAs 2t, 2t + 1 = request t's splits 0 and 1, one item per
  // CTA) and the kernel has kPairTail: the pair cuts the union of its lists (no partial lists).
  int pair_tail = 0;
  // Helpers (pair_tail only): `helpers` more CTAs after the pairs' 2 * num_tiles, on SMs the
  // pairs leave idle (b64: 4 of 132). Request t's last helper_pages(t) pages are scored by
  // helper CTA t % helpers (its items are the requests t, t + helpers, ...), which writes the raw
  // scores to helper_scores[t * helper_stride + key - first key of the segment] and sets
  // helper_flags[t]; the pair's split 1, whose range ends where the segment starts, waits for the
  // flag at the end of its own keys, appends the segment to its list as further keys and zeroes
  // the flag again. The pair's own pages split at (own + 1) / 2 + helper_shift (split 1 appends
  // the segment after its stream, so it takes fewer pages).
  int helpers = 0, helper_shift = 0, helper_stride = 0;
  // The helpers' share of a request's pages as a 0.32 fixed-point fraction: weight * helpers /
  // (weight * helpers + 2 * num_tiles), weight = a helper's share relative to a pair CTA's (< 1:
  // the helpers' SMs ran ~4% slower per page than the pairs').
  uint32_t helper_frac = 0;
  float* helper_scores = nullptr;  // [num_tiles, helper_stride] fp32
  int* helper_flags = nullptr;     // [num_tiles], zero before the launch and left zero after it

  // Pages of a request of `pages` pages that its helper scores.
  __host__ __device__ __forceinline__ int helper_pages(int pages) const {
#ifdef __CUDA_ARCH__
    return int(__umulhi(uint32_t(pages), helper_frac));
#else
    return int((uint64_t(uint32_t(pages)) * helper_frac) >> 32);
#endif
  }
  // The pages of the same request that its pair scores (the first ones).
  __host__ __device__ __forceinline__ int pair_pages(int pages) const {
    return pages - helper_pages(pages);
  }
  // With helpers: the first page of split `split` (0 and 1: the pair's, 2: the helper's segment)
  // of a request of `pages` pages. The pair's pages split at their middle plus helper_shift.
  __host__ __device__ __forceinline__ int helper_split_page0(int split, int pages) const {
    const int own = pair_pages(pages), mid = (own + 1) / 2 + helper_shift;
    return split == 0 ? 0 : split == 2 ? own : mid < 0 ? 0 : mid > own ? own : mid;
  }
  // outputs (score mode)
  float* scores = nullptr;  // [row_end - row_begin, scores_ld] fp32, position p of row r at
  int64_t scores_ld = 0;    // (r - row_begin) * scores_ld + p
};

// The configuration of one kernel instance: its CTA shape, register split, rings and shared-memory
// layout, all derived from the element type, the heads, the rows per item and the key source.
template <class T, int kHeads_, int kNQ_, int kSource_, bool kWriteScores_>
struct FusedConfig {
  static constexpr int kHeads = kHeads_, kNQ = kNQ_, kSource = kSource_;
  static constexpr bool kWriteScores = kWriteScores_;
  static constexpr bool kPaged = kSource == kPagedKeys, kGathered = kSource == kGatheredKeys;
  // Keys that arrive as 64-key pages or chunks (one copy each) rather than one box per stage.
  static constexpr bool kChunked = kPaged || kGathered;
  static constexpr int kDim = 128;
  static constexpr int kElem = std::is_same<T, Fp8>::value ? 1 : 2;
  static constexpr int kRowBytes = kDim * kElem;  // 128 (fp8) or 256 (bf16) bytes per row
  static constexpr int kAtoms = kRowBytes / 128;  // 128-byte swizzle atoms along D
  static constexpr int kKSteps = kRowBytes / 32;  // each wgmma consumes 32 bytes of K
  static constexpr int kQRows = kNQ * kHeads;

  // ---- CTA shape ----
  // fp8 prefill (dense or gathered keys), two queries per item.
  static constexpr bool kFp8Prefill = kElem == 1 && !kPaged && kNQ == 2 && !kWriteScores;
  // Decode with one query per request.
  static constexpr bool kDecode1 = kPaged && kNQ == 1 && !kWriteScores;
  // The slim CTA (fp8 prefill and decode next_n 1, both with H = 64): 3 math warpgroups (192 keys
  // per stage), a producer warp and seven select warps: 640 threads, the most that keeps 96
  // registers at launch. The prefill's math takes one N = 128 wgmma per k-step (each key tile
  // read from shared memory once instead of once per 64-column bank: 25% less operand traffic;
  // the instruction needs 90 registers, which a 768-thread launch does not allow). Four math
  // warpgroups in 640 threads starved either the selection (three select warps) or the pipeline
  // (no producer warp: the math warps issuing the loads stalled). Everything else: 768 threads,
  // four math warpgroups, a select warpgroup and a producer warpgroup.
  static constexpr bool kSlimPrefill = kFp8Prefill && kHeads == 64;
  static constexpr bool kSlimDecode = kDecode1 && kHeads == 64;
  static constexpr bool kSlim = kSlimPrefill || kSlimDecode;
  static constexpr int kMathWG = kSlim ? 3 : 4;
  static constexpr int kPagesPerStage = kMathWG;  // chunked sources: 64-key chunks per key stage
  static constexpr int kBlockKV = 64 * kMathWG;   // keys per stage
  static constexpr int kSelThreads = kSlim ? 224 : 128;
  static constexpr int kThreads = kSlim ? kMathWG * 128 + 32 + kSelThreads : (kMathWG + 2) * 128;
  static constexpr int kLaunchRegs = kSlim ? 96 : 65536 / kThreads / 8 * 8;  // 640: 96; 768: 80
  static constexpr int kSelWarps = kSelThreads / 32;
  static constexpr int kWarpSlots = kSelWarps <= 4 ? 4 : 8;  // append count slots per word
  static constexpr int kProdBase = kSlim ? kMathWG * 128 : (kMathWG + 1) * 128;  // producer warp
  static constexpr int kSelBase = kSlim ? kMathWG * 128 + 32 : kMathWG * 128;    // select warps

  // ---- math ----
  // The slim prefill keeps each math thread's 32 weights in registers for the whole item: the 8
  // LDS.128 of w per stage (32 shared-memory wavefronts per warp) took the math loop from 938 to
  // 1083 cycles per stage (the wgmma alone: 768). 64 accumulators plus 32 weights do not fit the
  // launch's 96 registers, so the CTA's 640 x 96 are split with setmaxnreg (kSplitRegs): the math
  // warpgroups 104, the producer warp and the seven select warps (which share two warpgroups, so
  // they take one setmaxnreg.dec together) 80; 112 / 72 was 2-4% slower at every length.
  static constexpr bool kWRegs = kSlimPrefill;
  // The slim decode keeps w in registers (16 per thread: its columns 8j + 2 (lane % 4) + {0, 1})
  // and takes one N = 64 bank (the key tile read once): its math warps, not the key stream,
  // bounded the decode, their FFMA chain waiting on the 8 LDS.64 of w per stage (288 against 311
  // us at b64 x 128K).
  static constexpr bool kWRegsDec = kSlimDecode;
  static constexpr bool kSplitRegs = kSlimPrefill;
  // Banks of the N dimension: the epilogue of one bank overlaps the wgmma of the next (slim: one
  // bank; the other warpgroups' wgmma cover the epilogue).
  static constexpr int kBanks = kQRows > 128 ? 4 : kSlim ? 1 : 2;
  // The split kernel loads the key scales after the wgmma, which removes the math warps' one
  // spilled register per stage (2% faster at 128K).
  static constexpr bool kLateScales = kSplitRegs;
  static constexpr int kBankN = kQRows / kBanks;
  using Mma = Wgmma<T, kBankN>;
  static constexpr int kAccRegs = Mma::kRegs;
  // Registers per role (setmaxnreg): the math warpgroups need 96 (fewer serialises wgmma, C7512;
  // 104 with w in registers); the producer and select warps share the rest.
  static constexpr int kMathRegs = kSplitRegs ? 104 : 96;

  // ---- decode's end ----
  // The slim decode ends the CTA's last item with all 640 threads (283.2 against 288.0 us at b64
  // x 128K): its final cut and merge are the part of the decode no key stream overlaps. The pair
  // tail (FusedParams::pair_tail) cuts a two-split request's union in its 2-CTA cluster (the end
  // of the decode ~6 us instead of ~14 with partial lists and a merge).
  static constexpr bool kWideTail = kSlimDecode;
  static constexpr bool kPairTail = kWideTail;
  // Decode: before the barriers are set up, the producer warp asks for what its first item's
  // first key copy waits on (the request's length, its first page ids, the w of its rows, the
  // tensor maps): two to three dependent round trips to DRAM become about one (0.3-0.5%).
  static constexpr bool kEarlyPrefetch = kPaged;

  // ---- selection ----
  static constexpr int kMaxK = 2048;
  // Candidate list capacity per query: the slack above k sets how often the list is cut, but a
  // longer list means longer cuts and a threshold that lags longer (more appends). fp8 prefill
  // 6656 (7168 / 30 epilogue stages and 6144 / 40 were 0.5-2% slower); decode next_n 1: 7168 in
  // the slim decode, 6144 otherwise (11264 with three key stages was 13% slower).
  static constexpr int kCap = kWriteScores                         ? 0
                              : kFp8Prefill                        ? 6656
                              : kSlimDecode                        ? 7168
                              : (kElem == 1 && kPaged && kNQ == 1) ? 6144
                                                                   : 3072;
  // Key stages per select step (an append costs per step: dependent shared-memory round trips
  // and a barrier): seven 192-key stages (six slices of 224 keys) in the slim kernels.
  static constexpr int kSub = kSlim ? 7 : kFp8Prefill ? 4 : (kCap >= 4096 && kNQ <= 2 ? 2 : 1);
  // Slim kernels without kSplitRegs keep the launch's 96 in every warp. With kSplitRegs the
  // producer warp and the select warps take one setmaxnreg.dec together, to 80 (setmaxnreg.inc
  // only takes registers that a setmaxnreg.dec of the CTA released).
  static constexpr int kSelectRegs = kSplitRegs ? 80 : kSlim ? 96 : kNQ <= 2 && kSub < 4 ? 56 : 64;
  static constexpr int kProducerRegs = kSlim ? kSelectRegs : kNQ <= 2 && kSub < 4 ? 40 : 32;
  static_assert(kSlim ? kMathWG * 128 * kMathRegs + (kThreads - kMathWG * 128) * kSelectRegs <=
                                kThreads * kLaunchRegs &&
                            (kSplitRegs || kMathRegs == kLaunchRegs)
                      : kMathWG * kMathRegs + kProducerRegs + kSelectRegs ==
                            (kMathWG + 2) * kLaunchRegs,
                "register budget");
  static_assert(kCap == 0 || kCap >= kMaxK + kSub * kBlockKV, "the list must hold k plus one step");
  static_assert(kSub <= 8, "at most 8 key stages per select step");
  // A select step covers kSlices slices of kSelThreads keys (thread t: key t of each slice).
  static constexpr int kSlices = kSub * kBlockKV / kSelThreads;
  static_assert(kSub * kBlockKV % kSelThreads == 0, "whole slices per step");
  static constexpr int kCountWords = (kSlices + 3) / 4;  // append counts: a byte per slice
  static constexpr int kAppendBytes = 2 * kNQ * kCountWords * kWarpSlots * 4;  // [2][q][w][slot]

  // ---- rings and shared memory ----
  static constexpr int kQBytes = kQRows * kRowBytes;
  static constexpr int kKVBytes = kBlockKV * kRowBytes;
  // Epilogue ring: deep enough that the math warps (and behind them the key stream) keep going
  // while the select warps cut a list (a cut lasts 10-24 stages' worth of the key stream; with 4
  // stages the select warps sat idle 13-38% of their time after cuts).
  static constexpr int kEpiStages = kWriteScores  ? 4
                                    : kDecode1    ? (kSlimDecode    ? 32
                                                     : kHeads == 64 ? 27
                                                                    : 32)
                                    : kFp8Prefill ? (kSlim ? 32 : 16)
                                                  : 4;
  static constexpr int kQStages =
      kWriteScores || kQBytes < 16384 || (kQBytes == 16384 && kEpiStages <= 4) ? 2 : 1;
  // The slim prefill keeps w in shared memory in the order its math threads read it: thread class
  // r = lane % 4 reads columns 8j + 2r + {0, 1}, j = 0..15, i.e. 32 floats stored at r * 36 (the
  // 4-float pad puts the four classes' 16-byte loads in different banks).
  static constexpr bool kWPerm = kSlimPrefill;
  static constexpr int kWStride = kWPerm ? 4 * 36 : kQRows;  // floats of w per q stage
  // Scan space of the selection (ordered_compact: two ints per warp of the cutting threads).
  static constexpr int kScanInts = kWideTail ? 2 * kThreads / 32 : 16;
  // The last item's state handed to the wide tail ([kNQ] counts, [kNQ] thresholds, [kNQ][select
  // warps] maxima), then (kPairTail) 4 ints the partner writes.
  static constexpr int kPeerOff = (2 + kSelWarps) * kNQ;
  static constexpr int kTailBytes =
      kWideTail ? ((kPeerOff + (kPairTail ? 4 : 0)) * 4 + 15) / 16 * 16 : 0;
  // Everything but the key stages, then as many key stages as fit (at most 6; the slim decode: 5,
  // which beat 4 by 5-8 us at b64 x 128K with the math running).
  static constexpr int kFixed = kQStages * kQBytes + kQStages * kWStride * 4 +
                                kEpiStages * kNQ * kBlockKV * 4 + kNQ * kCap * 8 +
                                4 * (256 + kScanInts + 4) + kTailBytes + kAppendBytes +
                                1024 /* barriers */ + 1024 /* alignment */;
  static constexpr int kSmemLimit = 232448;  // 227 KB per block on sm_90
  static constexpr int kStageBytes = kKVBytes + kBlockKV * 4;
  static constexpr int kFitStages = (kSmemLimit - kFixed) / kStageBytes;
  static constexpr int kKVStages = kFitStages > 6 ? 6 : kFitStages;
  static_assert(kKVStages >= 2, "shared memory too small for two key stages");
  static_assert(!kSlimDecode || kKVStages == 5, "the slim decode's five key stages");

  // Shared memory layout (byte offsets from a 1024-aligned base).
  static constexpr int kOffQ = 0;
  static constexpr int kOffKV = kOffQ + kQStages * kQBytes;
  static constexpr int kOffScale = kOffKV + kKVStages * kKVBytes;
  static constexpr int kOffW = kOffScale + kKVStages * kBlockKV * 4;
  static constexpr int kOffEpi = kOffW + kQStages * kWStride * 4;
  static constexpr int kOffCandU = kOffEpi + kEpiStages * kNQ * kBlockKV * 4;
  static constexpr int kOffCandPos = kOffCandU + kNQ * kCap * 4;
  static constexpr int kOffHist = kOffCandPos + kNQ * kCap * 4;
  static constexpr int kOffScan = kOffHist + 256 * 4;
  static constexpr int kOffBcast = kOffScan + kScanInts * 4;
  static constexpr int kOffTail = kOffBcast + 4 * 4;
  static constexpr int kOffAppend = kOffTail + kTailBytes;
  static constexpr int kOffBar = (kOffAppend + kAppendBytes + 7) / 8 * 8;
  // (kPairTail: two more, the pair cut's count buffers, PairPeer)
  static constexpr int kNumBars = 2 * (kQStages + kKVStages + kEpiStages) + (kPairTail ? 2 : 0);
  static constexpr int kSmemBytes = kOffBar + kNumBars * 8 + 1024;
  static_assert(kSmemBytes <= kSmemLimit, "shared memory over the sm_90 limit");
  static_assert(kOffAppend % 16 == 0, "the append counts are read as int4");
  static_assert(kQBytes % 1024 == 0 && kKVBytes % 1024 == 0,
                "swizzled tiles must stay 1024-aligned");
  static_assert(kQRows <= 256, "one TMA box holds at most 256 rows");
  static_assert(!kGathered || (!kWriteScores && kNQ == 2), "gathered keys: top-k mode, two rows");
  // Arrivals that complete a key stage: the producer's expect_tx, and with gathered keys one more
  // per producer lane (its scale copies, cp.async).
  static constexpr int kKVArrivals = kGathered ? 33 : 1;
};

// The rows and keys of one work item, computed identically by every role.
template <class Cfg>
struct Item {
  int64_t row0;      // first row of the item
  int64_t key0;      // first key of the item's range (dense: key row; decode: position)
  int64_t key_hi;    // end of the item's key range
  int nblocks;       // key stages
  int tile, split;   // split 2 with p.helpers: a helper's item (the request's last pages)
  int page0, page1;  // chunked keys: the item's pages (decode) or chunks (gathered) [page0, page1)
  int seg0, seg1;    // decode with helpers: the request's helper segment, pages [seg0, seg1)

  __device__ __forceinline__ bool helper(const FusedParams& p) const {
    return Cfg::kPairTail && p.helpers > 0 && split == 2;
  }
  // Split 1 of a request with a helper segment: it appends the segment (append_segment).
  __device__ __forceinline__ bool appends_segment(const FusedParams& p) const {
    return Cfg::kPairTail && p.helpers > 0 && split == 1 && seg1 > seg0;
  }

  __device__ __forceinline__ Item(const FusedParams& p, int item) {
    const int pair_items = p.num_tiles * p.splits;
    const bool helper = Cfg::kPairTail && p.helpers > 0 && item >= pair_items;
    if (helper) {
      tile = item - pair_items;
      split = 2;
    } else {
      tile = item / p.splits;
      split = item - tile * p.splits;
    }
    page0 = page1 = seg0 = seg1 = 0;
    if constexpr (Cfg::kGathered) {
      tile = p.num_tiles - 1 - tile;  // causal prefill: later rows have more candidates
      row0 = p.row_begin + int64_t(tile) * Cfg::kNQ;
      // Split `split` of the tile's chunk list: a run of whole stages (decode's small batches).
      const int count = p.chunk_count[tile];
      const int stages = (count + Cfg::kPagesPerStage - 1) / Cfg::kPagesPerStage;
      const int per = (stages + p.splits - 1) / p.splits;
      const int s0 = min(stages, split * per), s1 = min(stages, s0 + per);
      page0 = s0 * Cfg::kPagesPerStage;
      page1 = min(count, s1 * Cfg::kPagesPerStage);
      nblocks = s1 - s0;
      key0 = key_hi = 0;
    } else if constexpr (!Cfg::kPaged) {
      tile = p.num_tiles - 1 - tile;  // causal prefill: later rows see more keys; start with them
      row0 = p.row_begin + int64_t(tile) * Cfg::kNQ;
      int64_t lo = INT64_MAX, hi = INT64_MIN;
#pragma unroll
      for (int q = 0; q < Cfg::kNQ; ++q) {
        if (row0 + q < p.row_end) {
          lo = min(lo, int64_t(p.row_ks[row0 + q]));
          hi = max(hi, int64_t(p.row_ke[row0 + q]));
        }
      }
      // The range starts at a multiple of 4 keys: the key scales' 1D TMA box needs a 16-byte
      // aligned start (an unaligned one is an illegal instruction); the keys below the rows'
      // own starts are masked like any other invisible key.
      lo &= ~int64_t(3);
      const int64_t total = hi > lo ? (hi - lo + Cfg::kBlockKV - 1) / Cfg::kBlockKV : 0;
      const int64_t per = (total + p.splits - 1) / p.splits;
      const int64_t b0 = min(total, int64_t(split) * per), b1 = min(total, b0 + per);
      nblocks = int(b1 - b0);
      key0 = lo + b0 * Cfg::kBlockKV;
      key_hi = min(hi, lo + b1 * Cfg::kBlockKV);
    } else {
      row0 = int64_t(tile) * p.next_n;
      const int len = p.seq_lens[tile];
      const int pages = (len + 63) / 64;
      if (Cfg::kPairTail && p.helpers > 0) {
        // The helpers' share of every request's pages (helper_pages).
        seg0 = p.pair_pages(pages), seg1 = pages;
        page0 = p.helper_split_page0(split, pages);
        page1 = split == 2 ? pages : p.helper_split_page0(split + 1, pages);
      } else {
        page0 = min(pages, split * p.pages_per_split);
        page1 = min(pages, page0 + p.pages_per_split);
      }
      nblocks = (page1 - page0 + Cfg::kPagesPerStage - 1) / Cfg::kPagesPerStage;
      key0 = int64_t(page0) * 64;
      key_hi = min(int64_t(len), int64_t(page1) * 64);
    }
  }
};

// The CTA's shared memory, carved as Cfg lays it out, and its barriers.
template <class Cfg>
struct Shared {
  uint8_t* q;         // [kQStages][atoms][kQRows][128 B]
  uint8_t* kv;        // [kKVStages][atoms][kBlockKV][128 B]
  float* scale;       // [kKVStages][kBlockKV]
  float* w;           // [kQStages][kWStride]
  float* epi;         // [kEpiStages][kNQ][kBlockKV]
  uint32_t* cand_u;   // [kNQ][kCap] order keys of the candidate lists
  int32_t* cand_pos;  // [kNQ][kCap] their positions
  int* hist;          // [256] radix counts
  int* scan;          // [kScanInts]
  int* bcast;         // [4]
  int* append;        // [2][kNQ][count words][warp slots]
  int* tail;          // kWideTail: the last item's state
  uint64_t* full_q;   // [kQStages] then empty_q, full_kv, empty_kv, full_epi, empty_epi
  uint64_t* empty_q;
  uint64_t* full_kv;
  uint64_t* empty_kv;
  uint64_t* full_epi;
  uint64_t* empty_epi;  // [kEpiStages] (+ kPairTail: the pair cut's two count barriers)

  __device__ __forceinline__ explicit Shared(uint8_t* smem) {
    q = smem + Cfg::kOffQ;
    kv = smem + Cfg::kOffKV;
    scale = reinterpret_cast<float*>(smem + Cfg::kOffScale);
    w = reinterpret_cast<float*>(smem + Cfg::kOffW);
    epi = reinterpret_cast<float*>(smem + Cfg::kOffEpi);
    cand_u = reinterpret_cast<uint32_t*>(smem + Cfg::kOffCandU);
    cand_pos = reinterpret_cast<int32_t*>(smem + Cfg::kOffCandPos);
    hist = reinterpret_cast<int*>(smem + Cfg::kOffHist);
    scan = reinterpret_cast<int*>(smem + Cfg::kOffScan);
    bcast = reinterpret_cast<int*>(smem + Cfg::kOffBcast);
    append = reinterpret_cast<int*>(smem + Cfg::kOffAppend);
    tail = reinterpret_cast<int*>(smem + Cfg::kOffTail);
    full_q = reinterpret_cast<uint64_t*>(smem + Cfg::kOffBar);
    empty_q = full_q + Cfg::kQStages;
    full_kv = empty_q + Cfg::kQStages;
    empty_kv = full_kv + Cfg::kKVStages;
    full_epi = empty_kv + Cfg::kKVStages;
    empty_epi = full_epi + Cfg::kEpiStages;
  }
};

// The items of this CTA: blockIdx.x, + step, ... below end.
struct ItemRange {
  int first, end, step;
  int last;  // the CTA's last item (valid when first < the pair items)
};

// The end of an item, with kT threads (tid: 0 .. kT - 1; `sync` is their barrier): each
// query's list cut to exactly k, then the sorted output (one split) or the partial lists; with
// p.merge_count (decode), the tile's last split to finish merges the tile's partial lists into
// the output. cnt, thr: uniform; umax: this thread's maxima of the lists (reduced here). scan:
// 2 * kT / 32 ints, and [kMx, kMx + kT / 32).
template <class Cfg, int kT, class Sync>
__device__ __forceinline__ void finish_item(const FusedParams& p, const Item<Cfg>& it,
                                            const int (&cnt_in)[Cfg::kNQ],
                                            const uint32_t (&umax)[Cfg::kNQ],
                                            const uint32_t (&thr)[Cfg::kNQ], uint32_t* cand_u,
                                            int32_t* cand_pos, int* hist, int* scan, int* bcast,
                                            Sync sync, int tid) {
  constexpr int kNQ = Cfg::kNQ, kWarps = kT / 32;
  // Maxima at scan[kMx, kMx + kWarps) (the select warps: [8, 15), as in their cuts), minima at
  // [0, kWarps): ordered_compact writes scan only after the passes' barriers.
  constexpr int kMx = kT == Cfg::kSelThreads ? 8 : kWarps;
  static_assert(kMx + kWarps <= Cfg::kScanInts && 2 * kWarps <= Cfg::kScanInts, "scan space");
  const int w = tid / 32, lane = threadIdx.x % 32;
  sync();
#pragma unroll
  for (int q = 0; q < kNQ; ++q) {
    const int64_t r = it.row0 + q;
    const bool valid = Cfg::kPaged ? q < p.next_n : r < p.row_end;
    if (!valid) continue;
    uint32_t* cu = cand_u + q * Cfg::kCap;
    int32_t* cp = cand_pos + q * Cfg::kCap;
    int cnt = cnt_in[q];
    if (cnt > p.topk) {
      const uint32_t mx = block_max<kT>(umax[q], w, scan + kMx, sync);
      cnt = cut_list_exact<kT>(cnt, p.topk, cu, cp, thr[q], mx, hist, bcast, scan, sync);
    }
    if (p.splits == 1) {
      int32_t* out = p.out + r * p.topk;
      for (int i = tid; i < p.topk; i += kT) out[i] = i < cnt ? cp[i] : -1;
    } else {
      const int64_t slot = r * p.splits + it.split;
      for (int i = tid; i < cnt; i += kT) {
        p.part_u[slot * p.part_stride + i] = cu[i];
        p.part_pos[slot * p.part_stride + i] = cp[i];
      }
      if (tid == 0) p.part_cnt[slot] = cnt;
    }
  }
  if constexpr (Cfg::kPaged) {
    if (p.splits > 1 && p.merge_count != nullptr) {
      // Publish this split's lists (every thread's stores, one fence, one arrival: CUDA's
      // threadFenceReduction pattern); the tile's last split to arrive merges.
      sync();
      if (tid == 0) {
        __threadfence();
        bcast[3] = atomicAdd(p.merge_count + it.tile, 1);  // radix_select uses [0, 3)
      }
      sync();
      if (bcast[3] == p.splits - 1) {  // uniform
        __threadfence();
#pragma unroll 1
        for (int q = 0; q < kNQ; ++q) {
          if (q >= p.next_n) continue;
          const int64_t r = it.row0 + q;
          // The union of the splits' lists in split order, which is position order (the host
          // checked splits * part_stride <= kCap); read past L1 (other SMs wrote them).
          uint32_t* cu = cand_u + q * Cfg::kCap;
          int32_t* cp = cand_pos + q * Cfg::kCap;
          uint32_t mx = 0, mn = 0xFFFFFFFFu;
          // Offsets of the splits' lists in the union (hist[0, splits], from the counts at
          // hist[128, 128 + splits); the host keeps splits <= 64, and the cut's passes clear hist
          // first), then the union with four independent loads in flight per thread.
          if (tid < p.splits) hist[128 + tid] = __ldcg(p.part_cnt + r * p.splits + tid);
          sync();
          if (tid == 0) {
            int off = 0;
            for (int sp = 0; sp < p.splits; ++sp) hist[sp] = off, off += hist[128 + sp];
            hist[p.splits] = off;
          }
          sync();
          const int n = hist[p.splits];
#pragma unroll 4
          for (int j = tid; j < n; j += kT) {
            int sp = 0;
            for (int t = 1; t < p.splits; ++t) sp += j >= hist[t];
            const int64_t at = (r * p.splits + sp) * p.part_stride + (j - hist[sp]);
            const uint32_t uu = __ldcg(p.part_u + at);
            cu[j] = uu;
            cp[j] = __ldcg(p.part_pos + at);
            mx = max(mx, uu), mn = min(mn, uu);
          }
          // The smallest key anchors the cut's digits (every key lies in [mn, mx]).
          mn = __reduce_min_sync(0xFFFFFFFFu, mn);
          if (lane == 0) scan[w] = int(mn);
          sync();
#pragma unroll
          for (int i = 0; i < kWarps; ++i) mn = min(mn, uint32_t(scan[i]));
          int kept = n;
          if (n > p.topk) {
            mx = block_max<kT>(mx, w, scan + kMx, sync);
            kept = cut_list_exact<kT>(n, p.topk, cu, cp, mn, mx, hist, bcast, scan, sync);
          }
          int32_t* out = p.out + r * p.topk;
          for (int i = tid; i < p.topk; i += kT) out[i] = i < kept ? cp[i] : -1;
          sync();
        }
        if (tid == 0) p.merge_count[it.tile] = 0;  // zero again for the next launch
      }
    }
  }
  sync();  // the next item's appends overwrite the lists
}

// kPairTail: the partner's digit counts of each radix pass, written into this CTA's shared
// memory (two buffers, by pass parity). Each count goes to the partner by st.async, which
// completes transaction bytes on the partner's barrier of that buffer, and each CTA waits on its
// own barrier (expect_tx 1024 bytes; the phase is the buffer's use count): one way, no cluster
// barrier per pass. A buffer is written again two passes later, after the partner has received
// this CTA's counts of the pass in between, which this CTA sends only after reading it.
struct PairPeer {
  const int* local;      // [2][256] in this CTA: the partner's counts
  uint32_t remote;       // the same buffers in the partner (shared::cluster address)
  uint64_t* bars;        // [2] this CTA's barriers of the buffers (count 1)
  uint32_t remote_bars;  // the partner's (shared::cluster address)
  int tid;
  __device__ __forceinline__ void exchange(const int* hist, int pass) const {
    const int b = pass & 1;
    if (tid < 256)
      st_async_u32(remote + uint32_t((b * 256 + tid) * 4), uint32_t(hist[tid]),
                   remote_bars + uint32_t(b * 8));
    if (tid == 0) mbar_arrive_expect_tx(&bars[b], 256 * 4);
    mbar_wait(&bars[b], uint32_t(pass >> 1) & 1u);
  }
  __device__ __forceinline__ int other(int bin, int pass) const {
    return local[(pass & 1) * 256 + bin];
  }
};

// kPairTail with helpers: split 1 of a request appends its helper's segment (the request's last
// pages, raw scores in p.helper_scores; its select warps waited for the flag) to its list, with
// all threads of the CTA once the roles are done (the select warps' three dependent append steps
// took ~5 us; this takes 1.8). Chunks of kT * kPer keys, kPer consecutive keys per thread (list
// order = position order); where the passing keys do not fit the list, the list is first cut
// exactly to k (its threshold rises, fewer keys pass). cnt, umax, thr: the list's state
// (uniform), updated.
template <class Cfg>
__device__ __forceinline__ void append_segment(const FusedParams& p, const Item<Cfg>& it, int& cnt,
                                               uint32_t& umax, uint32_t& thr, uint32_t* cu,
                                               int32_t* cp, int* hist, int* scan, int* bcast) {
  constexpr int kT = Cfg::kThreads, kWarps = kT / 32;
  constexpr int kPer = (Cfg::kCap - Cfg::kMaxK) / kT < 8 ? (Cfg::kCap - Cfg::kMaxK) / kT : 8;
  constexpr int kChunk = kT * kPer;
  static_assert(kPer >= 1, "a chunk fits a list cut to k");
  static_assert(2 * kWarps <= Cfg::kScanInts, "scan space");
  const int tid = threadIdx.x, lane = tid % 32, w = tid / 32;
  const auto sync = [] { __syncthreads(); };
  // (the select warps acquired the helper's flag before the wide tail's barrier and asked for the
  // segment's lines: plain loads, from L1)
  const int len = p.seq_lens[it.tile];
  const int32_t k0 = it.seg0 * 64;
  const int32_t n = min(len - p.next_n + 1, it.seg1 * 64) - k0;  // visible keys (next_n 1)
  const float* src = p.helper_scores + int64_t(it.tile) * p.helper_stride;
#pragma unroll 1
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    uint32_t u[kPer];
    const int32_t i0 = c0 + tid * kPer;
#pragma unroll
    for (int j = 0; j < kPer; ++j) u[j] = i0 + j < n ? order_key(src[i0 + j]) : 0u;
#pragma unroll 1
    for (;;) {
      int mine = 0;
      uint32_t mx = 0;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        if (u[j] > thr) ++mine, mx = max(mx, u[j]);
      }
      mx = __reduce_max_sync(0xFFFFFFFFu, mx);
      if (lane == 0) scan[kWarps + w] = int(mx);
      int total;
      const int before = block_exclusive_sum<kT>(mine, lane, w, scan, sync, total);
#pragma unroll 4
      for (int v = 0; v < kWarps; ++v) mx = max(mx, uint32_t(scan[kWarps + v]));
      if (cnt + total <= Cfg::kCap) {  // uniform
        int dst = cnt + before;
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
          if (u[j] > thr) cu[dst] = u[j], cp[dst] = k0 + i0 + j, ++dst;
        }
        cnt += total;
        umax = max(umax, mx);
        sync();  // (scan is rewritten by the next chunk)
        break;
      }
      // The list first: its exact top k (anchored at thr, as every key lies in (thr, umax]).
      sync();
      const RadixCut cut = select_list<kT>(cnt, p.topk, cu, thr, umax, hist, bcast, sync);
      cnt = compact_list<kT>(cnt, cut, cu, cp, scan, sync);
      thr = max(thr, cut_threshold(cut));
    }
  }
}

// kPairTail: the end of a split request's one item, by all threads of the CTA with its cluster
// partner (the request's other split): the exact top-k of the union of the two lists (split 0's
// positions first), each CTA compacting its own list and writing its part of the output. cnt,
// umax, thr: this CTA's list (uniform). peer_state: 4 ints the partner writes (its cnt, max,
// threshold); phist: [2][256] ints for the partner's digit counts (free shared memory: the
// epilogue ring, unused once the roles are done).
template <class Cfg>
__device__ __forceinline__ void pair_finish(const FusedParams& p, const Item<Cfg>& it, int cnt,
                                            uint32_t umax, uint32_t thr, uint32_t* cu, int32_t* cp,
                                            int* hist, int* scan, int* bcast, int* peer_state,
                                            int* phist, uint64_t* pair_bars) {
  static_assert(Cfg::kNQ == 1, "one query row per request (next_n 1)");
  constexpr int kT = Cfg::kThreads;
  const int tid = threadIdx.x;
  const auto sync = [] { __syncthreads(); };
  const uint32_t rank = cluster_ctarank(), other = rank ^ 1u;
  if (tid == 0) {
    const uint32_t at = map_to_cta(peer_state, other);
    st_cluster_u32(at, uint32_t(cnt));
    st_cluster_u32(at + 4, umax);
    st_cluster_u32(at + 8, thr);
  }
  cluster_sync();  // both CTAs are in their tails (their epilogue rings are free)
  const int n_other = peer_state[0];
  const int n_all = cnt + n_other;
  int32_t* out = p.out + it.row0 * p.topk;
  if (n_all <= p.topk) {  // every key of both lists is kept (uniform in both CTAs)
    const int base = rank == 0 ? 0 : n_other;
    for (int i = tid; i < cnt; i += kT) out[base + i] = cp[i];
    if (rank == 1)
      for (int i = n_all + tid; i < p.topk; i += kT) out[i] = -1;
    return;
  }
  // Every key of both lists lies in [min of the thresholds, max of the maxima]: the same anchor
  // in both CTAs, so both make the same passes.
  const uint32_t mx = max(umax, uint32_t(peer_state[1]));
  const uint32_t lo = min(thr, uint32_t(peer_state[2]));
  const PairPeer peer{phist, map_to_cta(phist, other), pair_bars, map_to_cta(pair_bars, other),
                      tid};
  RadixCut cut = select_list<kT>(cnt, p.topk, cu, lo, mx, hist, bcast, sync, 4, -1, peer);
  if (rank == 1 && cut.need != 0x7FFFFFFF) {
    // Keys equal to the cut's bucket: split 0's (lower positions) first. Its count of the bucket
    // in the last pass is in phist (the last pass's parity from the digits resolved).
    const uint32_t diff = mx ^ lo;
    const int top_bit = diff ? 31 - __clz(diff) : 0;
    const uint32_t start_mask = top_bit >= 31 ? 0u : ~0u << (top_bit + 1);
    const int last = (__popc(cut.mask ^ start_mask) + 7) / 8 - 1;
    const int b0 = phist[(last & 1) * 256 + bcast[0]];
    cut.need -= min(b0, cut.need);
  }
  const int kept = compact_list<kT>(cnt, cut, cu, cp, scan, sync);
  // The two parts fill the k slots exactly (an exact cut of more than k keys keeps k).
  const int base = rank == 0 ? 0 : p.topk - kept;
  for (int i = tid; i < kept; i += kT) out[base + i] = cp[i];
}

// ------------------------------------------------------------------ producer warp
// TMA copies of each item's q tile (and w into shared memory) and of its key stages.
template <class Cfg>
__device__ __forceinline__ void producer_warp(const CUtensorMap& map_q, const CUtensorMap& map_k,
                                              const CUtensorMap& map_scale, const FusedParams& p,
                                              const Shared<Cfg> sm, const ItemRange& items,
                                              bool helper_cta) {
  constexpr int kQS = Cfg::kQStages, kKS = Cfg::kKVStages, kBlockKV = Cfg::kBlockKV;
  constexpr int kQRows = Cfg::kQRows;
  const int lane = threadIdx.x % 32;
  if (lane == 0 && !Cfg::kEarlyPrefetch) {  // (kEarlyPrefetch: done at the start)
    tma_prefetch_desc(&map_q);
    tma_prefetch_desc(&map_k);
    if (!Cfg::kPaged && p.has_scale) tma_prefetch_desc(&map_scale);
  }
  uint32_t q_iter = 0, kv_iter = 0;
  for (int item = items.first; item < items.end; item += items.step, ++q_iter) {
    const Item<Cfg> it(p, item);
    if (Cfg::kPairTail && helper_cta && item + items.step < items.end) {
      // A helper's items are short (58 pages at b64 x 128K): the next one's w and first page
      // ids are asked for now, so that its start (length -> w -> q copy -> page ids -> first
      // key copy) finds them in L1 rather than in DRAM. (The page ids of a full-length
      // request's segment: the next length is not waited for here.)
      const int nt = it.tile + items.step;
      const int pg = p.pair_pages(p.max_pages) + 32 * (lane & 1);
      if (lane < 2) {
        if (pg < p.max_pages) prefetch_l1(p.block_table + int64_t(nt) * p.max_pages + pg);
        prefetch_l1(p.w + int64_t(nt) * p.next_n * Cfg::kHeads + 32 * lane);
      }
    }
    const int qs = q_iter % kQS;
    mbar_wait(&sm.empty_q[qs], ((q_iter / kQS) & 1) ^ 1);
    for (int i = lane; i < kQRows; i += 32) {
      const int64_t r = it.row0 + i / Cfg::kHeads;
      // (kWPerm: column i = 8j + 2r + e at r * 36 + 2j + e)
      const int at = Cfg::kWPerm ? (i % 8) / 2 * 36 + i / 8 * 2 + i % 2 : i;
      sm.w[qs * Cfg::kWStride + at] = r < p.row_end ? p.w[r * Cfg::kHeads + i % Cfg::kHeads] : 0.0f;
    }
    if (lane == 0) {
      mbar_arrive_expect_tx(&sm.full_q[qs], Cfg::kQBytes);
#pragma unroll
      for (int a = 0; a < Cfg::kAtoms; ++a) {
        tma_load_2d(sm.q + qs * Cfg::kQBytes + a * kQRows * 128, &map_q, &sm.full_q[qs], a * 64,
                    int32_t(it.row0 * Cfg::kHeads));
      }
    } else {
      mbar_arrive(&sm.full_q[qs]);
    }
    if (!Cfg::kChunked && lane != 0) continue;
    // Chunked keys: the ids (decode: page ids; gathered: first key rows) of 32 consecutive chunks
    // of the item and of the next 32, one per lane: one coalesced load per 32 chunks instead of
    // dependent loads per stage in front of the copies (the producer's serial block_table reads
    // capped each SM at ~20 GB/s); a stage's chunks may straddle two groups (three per stage).
    constexpr int kPPS = Cfg::kPagesPerStage;
    int32_t ids0 = 0, ids1 = 0;
    int chunk = -2;
    // (gathered: an entry's key row is its position plus the sequence start of a row that chose
    // it)
    int32_t seq0 = 0, seq1 = 0;
    if constexpr (Cfg::kGathered) {
      seq0 = p.row_ks[it.row0];
      seq1 = it.row0 + 1 < p.row_end ? p.row_ks[it.row0 + 1] : seq0;
    }
    const auto load_ids = [&](int c) {
      const int pg = it.page0 + c * 32 + lane;
      if constexpr (Cfg::kGathered) {
        const int32_t e = pg < it.page1 ? p.chunks[int64_t(it.tile) * p.chunk_stride + pg] : 0;
        const int32_t row = (e & 0x3FFFFFFF) + ((e >> 30) & 1 ? seq0 : seq1);
        // (paged chunks: the row is b * max_pages * 64 + position, so row / 64 is the entry of
        // the flattened block table)
        return p.block_table ? (pg < it.page1 ? p.block_table[row >> 6] : 0) : row;
      } else {
        return pg < it.page1 ? p.block_table[int64_t(it.tile) * p.max_pages + pg] : 0;
      }
    };
    for (int blk = 0; blk < it.nblocks; ++blk, ++kv_iter) {
      int page_id[kPPS];
      if constexpr (Cfg::kChunked) {
        const int first = blk * kPPS, c = first >> 5;
        if (c != chunk) {  // uniform
          ids0 = c == chunk + 1 ? ids1 : load_ids(c);
          ids1 = load_ids(c + 1);
          chunk = c;
        }
#pragma unroll
        for (int i = 0; i < kPPS; ++i) {
          const int rel = first + i;
          page_id[i] = __shfl_sync(0xFFFFFFFFu, (rel >> 5) == c ? ids0 : ids1, rel & 31);
        }
        // (gathered keys: every lane copies scales)
        if (!Cfg::kGathered && lane != 0) continue;
      }
      const int s = kv_iter % kKS;
      mbar_wait(&sm.empty_kv[s], ((kv_iter / kKS) & 1) ^ 1);
      uint8_t* dst = sm.kv + s * Cfg::kKVBytes;
      // `valid` pages of the paged cache into the stage: the values by a 3D TMA box, the 64
      // scales after them by a bulk copy (lane 0).
      const auto copy_pages = [&](int valid) {
        mbar_arrive_expect_tx(&sm.full_kv[s], valid * (64 * 128 + 64 * 4));
        for (int i = 0; i < valid; ++i) {
          const int page = page_id[i];
          tma_load_3d(dst + i * 64 * 128, &map_k, &sm.full_kv[s], 0, 0, page);
          bulk_load(sm.scale + s * kBlockKV + i * 64,
                    p.kv_cache + int64_t(page) * (64 * 132) + 64 * 128, 64 * 4, &sm.full_kv[s]);
        }
      };
      if (Cfg::kGathered && p.block_table) {
        // Gathered chunks of the paged cache (HISA decode): a chunk is a page; every lane
        // arrives (the barrier counts kKVArrivals).
        mbar_arrive(&sm.full_kv[s]);
        if (lane != 0) continue;
        copy_pages(min(kPPS, it.page1 - it.page0 - blk * kPPS));
      } else if constexpr (Cfg::kGathered) {
        const int valid = min(kPPS, it.page1 - it.page0 - blk * kPPS);
        // The scales: two of each chunk's 64 per lane (zero past the last key), then the lane's
        // arrival once its copies land.
        if (p.has_scale) {
          for (int i = 0; i < valid; ++i) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int64_t row = int64_t(page_id[i]) + lane + 32 * h;
              const bool in = row < p.num_keys;
              cp_async_4_zfill(sm.scale + s * kBlockKV + i * 64 + lane + 32 * h,
                               in ? p.k_scale + row : p.k_scale, in ? 4 : 0);
            }
          }
          cp_async_arrive_noinc(&sm.full_kv[s]);
        } else {
          mbar_arrive(&sm.full_kv[s]);
        }
        if (lane != 0) continue;
        mbar_arrive_expect_tx(&sm.full_kv[s], valid * 64 * Cfg::kRowBytes);
        for (int i = 0; i < valid; ++i) {
#pragma unroll
          for (int a = 0; a < Cfg::kAtoms; ++a)
            tma_load_2d(dst + a * kBlockKV * 128 + i * 64 * 128, &map_k, &sm.full_kv[s], a * 64,
                        page_id[i]);
        }
      } else if constexpr (!Cfg::kPaged) {
        const int32_t y = int32_t(it.key0 + int64_t(blk) * kBlockKV);
        mbar_arrive_expect_tx(&sm.full_kv[s], Cfg::kKVBytes + (p.has_scale ? kBlockKV * 4 : 0));
#pragma unroll
        for (int a = 0; a < Cfg::kAtoms; ++a)
          tma_load_2d(dst + a * kBlockKV * 128, &map_k, &sm.full_kv[s], a * 64, y);
        if (p.has_scale) tma_load_1d(sm.scale + s * kBlockKV, &map_scale, &sm.full_kv[s], y);
      } else {
        copy_pages(min(kPPS, it.page1 - (it.page0 + blk * kPPS)));
      }
    }
  }
}

// ------------------------------------------------------------------ select warps
// The candidate lists: the scores of each key stage from the epilogue ring, appended above the
// rising threshold, cut when full; the end of each item (or its hand-over to the wide tail).
template <class Cfg>
__device__ __forceinline__ void select_warps(const FusedParams& p, const Shared<Cfg> sm,
                                             const ItemRange& items) {
  constexpr int kNQ = Cfg::kNQ, kBlockKV = Cfg::kBlockKV, kES = Cfg::kEpiStages;
  constexpr int kST = Cfg::kSelThreads;
  const int lane = threadIdx.x % 32;
  const int t = threadIdx.x - Cfg::kSelBase, ew = t / 32;
  auto sync = [] { named_barrier(1, Cfg::kSelThreads); };
  uint32_t* const cand_u = sm.cand_u;
  int32_t* const cand_pos = sm.cand_pos;
  // A list's cut, the list's maximum first reduced over the select warps, and its compaction
  // (as lambdas: with block_max, select_list and compact_list called at each site ptxas spills
  // 52 bytes in the fp8 H = 64 prefill kernel instead of 36).
  const auto cut_list = [&](int n, const uint32_t* cu, uint32_t mx, uint32_t lo, int max_passes,
                            int stop_kept) {
    mx = block_max<kST>(mx, ew, sm.scan + 8, sync);
    return select_list<kST>(n, p.topk, cu, lo, mx, sm.hist, sm.bcast, sync, max_passes, stop_kept);
  };
  const auto compact = [&](int n, const RadixCut& cut, uint32_t* cu, int32_t* cp) {
    return compact_list<kST>(n, cut, cu, cp, sm.scan, sync);
  };
  uint32_t epi_iter = 0;
  int parity = 0;
  for (int item = items.first; item < items.end; item += items.step) {
    const Item<Cfg> it(p, item);
    // Per query: visible key range inside this item, and the position base.
    int32_t vis_lo[kNQ], vis_hi[kNQ], rel[kNQ];  // key rows < 2^31
    int cnt[kNQ];
    uint32_t thr[kNQ], umax[kNQ];
#pragma unroll
    for (int q = 0; q < kNQ; ++q) {
      cnt[q] = 0;
      umax[q] = 0;
      thr[q] = 0;  // every real score has a key above 0
      vis_lo[q] = 0, vis_hi[q] = 0, rel[q] = 0;
      const int64_t r = it.row0 + q;
      if constexpr (Cfg::kGathered) {
        if (r < p.row_end) vis_hi[q] = p.row_ke[r] - p.row_ks[r];  // keys are positions here
      } else if constexpr (!Cfg::kPaged) {
        if (r < p.row_end) {
          rel[q] = p.row_ks[r];
          vis_lo[q] = int32_t(max(int64_t(rel[q]), it.key0));
          vis_hi[q] = int32_t(min(int64_t(p.row_ke[r]), it.key_hi));
        }
      } else {
        if (q < p.next_n) {
          const int len = p.seq_lens[it.tile];
          vis_lo[q] = int32_t(it.key0);
          vis_hi[q] = int32_t(min(int64_t(len - p.next_n + q + 1), it.key_hi));
        }
      }
    }
    constexpr int kSub = Cfg::kSub, kH = Cfg::kSlices;  // slices of kST keys per step
    for (int blk = 0; blk < it.nblocks; blk += kSub) {
      float v[kNQ][kH];
      // Slice hh of this step: key hh * kST + t of the step's kSub stages, in stage
      // (hh * kST + t) / kBlockKV (with 192-key stages that differs within a slice).
      unsigned have = 0;  // bit hh: slice hh's stage exists
      if constexpr (kBlockKV % kST == 0) {
        // Slices within stages (256-key stages): wait, read and release one stage at a time.
        constexpr int kPer = kBlockKV / kST;
#pragma unroll
        for (int j = 0; j < kSub; ++j) {
          const bool h = blk + j < it.nblocks;  // uniform
          if (h) {
            const int es = epi_iter % kES;
            mbar_wait(&sm.full_epi[es], (epi_iter / kES) & 1);
            const float* ebuf = sm.epi + es * kNQ * kBlockKV + t;
#pragma unroll
            for (int q = 0; q < kNQ; ++q)
#pragma unroll
              for (int i = 0; i < kPer; ++i) v[q][kPer * j + i] = ebuf[q * kBlockKV + kST * i];
            mbar_arrive(&sm.empty_epi[es]);
            ++epi_iter;
          } else {
#pragma unroll
            for (int q = 0; q < kNQ; ++q)
#pragma unroll
              for (int i = 0; i < kPer; ++i) v[q][kPer * j + i] = 0.0f;
          }
          if (h) have |= ((1u << kPer) - 1) << (kPer * j);
        }
      } else {
        // Slices across stages (192-key stages): wait for the step's stages, read, release.
        int got = 0;
#pragma unroll
        for (int j = 0; j < kSub; ++j) {
          if (blk + j < it.nblocks) {  // uniform
            const uint32_t e = epi_iter + j;
            mbar_wait(&sm.full_epi[e % kES], (e / kES) & 1);
            ++got;
          }
        }
#pragma unroll
        for (int hh = 0; hh < kH; ++hh) {
          const int kk = hh * kST + t, j = kk / kBlockKV;
          const bool h = blk + j < it.nblocks;
          if (h) have |= 1u << hh;
          const float* ebuf = sm.epi + ((epi_iter + j) % kES) * kNQ * kBlockKV + kk % kBlockKV;
#pragma unroll
          for (int q = 0; q < kNQ; ++q) v[q][hh] = h ? ebuf[q * kBlockKV] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < kSub; ++j)
          if (j < got) mbar_arrive(&sm.empty_epi[(epi_iter + j) % kES]);
        epi_iter += got;
      }
      // Slice hh of this step covers keys base + kST * hh (gathered keys: the key row of its
      // chunk, and the rows that chose the chunk).
      const int32_t base = int32_t(it.key0) + blk * kBlockKV + t;
      int32_t chunk[Cfg::kGathered ? kH : 1];  // gathered: the chunk entry of each slice
      if constexpr (Cfg::kGathered) {
        const int32_t* list = p.chunks + int64_t(it.tile) * p.chunk_stride;
#pragma unroll
        for (int hh = 0; hh < kH; ++hh) {
          const int kk = hh * kST + t;
          const int c =
              it.page0 + (blk + kk / kBlockKV) * Cfg::kPagesPerStage + (kk % kBlockKV) / 64;
          chunk[hh] = (have >> hh) & 1 ? __ldg(list + c) : 0;
        }
      }
      const auto key_of = [&](int hh) {
        if constexpr (Cfg::kGathered)
          return (chunk[hh] & 0x3FFFFFFF) + (hh * kST + t) % 64;
        else
          return base + kST * hh;
      };
      const auto chosen = [&](int q, int hh) {
        if constexpr (Cfg::kGathered)
          return ((chunk[hh] >> (30 + q)) & 1) != 0;
        else
          return true;
      };
      if constexpr (Cfg::kWriteScores) {
#pragma unroll
        for (int q = 0; q < kNQ; ++q)
#pragma unroll
          for (int hh = 0; hh < kH; ++hh) {
            const int32_t key = key_of(hh);
            if (((have >> hh) & 1) && key >= vis_lo[q] && key < vis_hi[q])
              p.scores[(it.row0 + q - p.row_begin) * p.scores_ld + (key - rel[q])] = v[q][hh];
          }
      } else {
        if (Cfg::kPairTail && it.helper(p)) {
          // A helper's item: the raw scores of the request's segment, for its split 1.
          float* dst = p.helper_scores + int64_t(it.tile) * p.helper_stride;
#pragma unroll
          for (int hh = 0; hh < kH; ++hh) {
            const int32_t key = base + kST * hh;
            if (((have >> hh) & 1) && key < it.key_hi) dst[key - int32_t(it.key0)] = v[0][hh];
          }
          continue;
        }
        // Passing counts of each warp, one byte per slice (<= 32 each, so sums over up to 8
        // warps fit a byte): a word per 4 slices and (query, warp), read back as one int4 per
        // 4 warp slots.
        constexpr int kW = Cfg::kCountWords;
        constexpr int kWS = Cfg::kWarpSlots;
        int* ap = sm.append + parity * kNQ * kW * kWS;  // [q][word][warp slot]
        uint32_t u[kNQ][kH];
        bool pass[kNQ][kH];
        int rank[kNQ][kH];
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          int packed[kW];
#pragma unroll
          for (int w = 0; w < kW; ++w) packed[w] = 0;
#pragma unroll
          for (int hh = 0; hh < kH; ++hh) {
            const int32_t key = key_of(hh);
            u[q][hh] = order_key(v[q][hh]);
            pass[q][hh] = ((have >> hh) & 1) && chosen(q, hh) && key >= vis_lo[q] &&
                          key < vis_hi[q] && u[q][hh] > thr[q];
            const unsigned m = __ballot_sync(0xFFFFFFFFu, pass[q][hh]);
            rank[q][hh] = __popc(m & ((1u << lane) - 1));
            packed[hh / 4] |= __popc(m) << (8 * (hh % 4));
          }
#pragma unroll
          for (int w = 0; w < kW; ++w)
            if (lane == 0) ap[(q * kW + w) * kWS + ew] = packed[w];
        }
        sync();
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          int total[kW], mine[kW];
#pragma unroll
          for (int w = 0; w < kW; ++w) {
            const int4 c = *reinterpret_cast<const int4*>(ap + (q * kW + w) * kWS);
            total[w] = c.x + c.y + c.z + c.w;  // bytewise: no carries (<= 32 per warp, 8 warps)
            mine[w] =
                (ew > 0 ? c.x : 0) + (ew > 1 ? c.y : 0) + (ew > 2 ? c.z : 0) + (ew > 3 ? c.w : 0);
            if constexpr (kWS == 8) {  // slots of warps that do not exist stay 0
              const int4 d = *reinterpret_cast<const int4*>(ap + (q * kW + w) * kWS + 4);
              total[w] += d.x + d.y + d.z + d.w;
              mine[w] += (ew > 4 ? d.x : 0) + (ew > 5 ? d.y : 0) + (ew > 6 ? d.z : 0);
            }
          }
          int before = 0;  // passing keys of the earlier slices
#pragma unroll
          for (int hh = 0; hh < kH; ++hh) {
            if (pass[q][hh]) {
              umax[q] = max(umax[q], u[q][hh]);
              const int dst =
                  cnt[q] + before + ((mine[hh / 4] >> (8 * (hh % 4))) & 0xFF) + rank[q][hh];
              cand_u[q * Cfg::kCap + dst] = u[q][hh];
              cand_pos[q * Cfg::kCap + dst] = key_of(hh) - rel[q];
            }
            before += (total[hh / 4] >> (8 * (hh % 4))) & 0xFF;
          }
          cnt[q] += before;
        }
        parity ^= 1;
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          if (cnt[q] > Cfg::kCap - kSub * kBlockKV) {
            sync();
            uint32_t* cu = cand_u + q * Cfg::kCap;
            int32_t* cp = cand_pos + q * Cfg::kCap;
            // Anchored digit passes until the bucket of the k-th key is small (at most 1/8 of the
            // slack above k kept with it; one pass from an anchor at 0 resolves only sign and
            // exponent, and the lists refilled 5.3 times per item at 128K), then every bucket
            // below it is dropped and it is kept whole (a lower-bound cut of the list; the final
            // cut is exact). Cut whole only when it stays within half the list (else many equal
            // scores: an exact cut, ties by position).
            // (scan[8, 8 + warps): ordered_compact writes scan only after the passes' barriers)
            constexpr int kRoom = Cfg::kCap - kSub * kBlockKV;
            RadixCut cut = cut_list(cnt[q], cu, umax[q], thr[q], 4, p.topk + (kRoom - p.topk) / 8);
            if (cut.kept <= (p.topk + kRoom) / 2) cut.need = 0x7FFFFFFF;
            cnt[q] = compact(cnt[q], cut, cu, cp);
            thr[q] = max(thr[q], cut_threshold(cut));
          }
        }
      }
    }
    if constexpr (Cfg::kPairTail) {
      static_assert(kNQ == 1, "the pair tail has one query row per request");
      if (it.appends_segment(p)) {
        // Split 1: its helper's segment, appended in the wide tail (append_segment). Its flag
        // now, while the other roles finish, and its lines into L1 (the tail's loads hit).
        if (t == 0) {
          wait_flag_gpu(p.helper_flags + it.tile);
          p.helper_flags[it.tile] = 0;  // zero again for the next launch (only we read it)
        }
        sync();
        const float* src = p.helper_scores + int64_t(it.tile) * p.helper_stride;
        const int32_t nk = (it.seg1 - it.seg0) * 64;
        for (int32_t i = 32 * t; i < nk; i += 32 * kST) prefetch_l1(src + i);
      }
      if (it.helper(p)) {
        // A helper's item is done: its scores are published (every select thread's stores,
        // the barrier, one fence and the flag: the threadFenceReduction pattern).
        if (it.seg1 > it.seg0) {
          sync();
          if (t == 0) {
            __threadfence();
            st_release_gpu(p.helper_flags + it.tile, 1);
          }
        }
        continue;
      }
    }
    if constexpr (!Cfg::kWriteScores) {
      if constexpr (!Cfg::kPaged) {
        // Prefill: each query's list cut to exactly k, then the sorted output or the partial
        // lists for the merge kernel (finish_item without the merge; kept inline: through
        // finish_item ptxas spills 16 bytes more in the prefill's select code).
        sync();
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          const int64_t r = it.row0 + q;
          if (r >= p.row_end) continue;
          uint32_t* cu = cand_u + q * Cfg::kCap;
          int32_t* cp = cand_pos + q * Cfg::kCap;
          if (cnt[q] > p.topk) {
            cnt[q] = compact(cnt[q], cut_list(cnt[q], cu, umax[q], thr[q], 4, -1), cu, cp);
          }
          if (p.splits == 1) {
            int32_t* out = p.out + r * p.topk;
            for (int i = t; i < p.topk; i += kST) out[i] = i < cnt[q] ? cp[i] : -1;
          } else {
            const int64_t slot = r * p.splits + it.split;
            for (int i = t; i < cnt[q]; i += kST) {
              p.part_u[slot * p.topk + i] = cu[i];
              p.part_pos[slot * p.topk + i] = cp[i];
            }
            if (t == 0) p.part_cnt[slot] = cnt[q];
          }
        }
        sync();  // the next item's appends overwrite the lists
      } else if (Cfg::kWideTail && item == items.last) {
        // The CTA's last item ends after the roles, with every thread (wide_tail): hand over the
        // lists' state (the lists themselves stay in shared memory).
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          const uint32_t m = __reduce_max_sync(0xFFFFFFFFu, umax[q]);
          if (lane == 0) sm.tail[2 * kNQ + q * Cfg::kSelWarps + ew] = int(m);
          if (t == 0) sm.tail[q] = cnt[q], sm.tail[kNQ + q] = int(thr[q]);
        }
      } else {
        finish_item<Cfg, kST>(p, it, cnt, umax, thr, cand_u, cand_pos, sm.hist, sm.scan, sm.bcast,
                              sync, t);
      }
    }
  }
}

// ------------------------------------------------------------------ math warpgroups
// wgmma of each key stage against the item's q tile, the ReLU-weighted head sum, one score per
// (query, key) into the epilogue ring.
template <class Cfg>
__device__ __forceinline__ void math_warpgroups(const FusedParams& p, const Shared<Cfg> sm,
                                                const ItemRange& items) {
  constexpr int kNQ = Cfg::kNQ, kBlockKV = Cfg::kBlockKV, kQRows = Cfg::kQRows;
  constexpr int kQS = Cfg::kQStages, kKS = Cfg::kKVStages, kES = Cfg::kEpiStages;
  const int wg = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;
  // Warp-uniform through a shuffle, so that the descriptors below stay in uniform registers.
  const int g = __shfl_sync(0xFFFFFFFFu, wg, 0);  // keys [64g, 64g + 64) of each stage
  const int wi = (threadIdx.x / 32) % 4;  // rows [16 wi, 16 wi + 16) of the warpgroup's tile
  const int row_in_tile = 16 * wi + lane / 4;
  using Mma = typename Cfg::Mma;
  constexpr int kBankN = Cfg::kBankN, kR = Cfg::kAccRegs;
  float acc0[kR], acc1[kR];
  // kWRegs: w of the thread's 32 columns, wreg[2j + e]; kWRegsDec: its 16 columns, the same
  float wreg[Cfg::kWRegs ? 32 : Cfg::kWRegsDec ? 16 : 1];

  // Descriptors of the warpgroup's first key tile and of the first q tile; a tile elsewhere is
  // the same descriptor plus its byte offset / 16 (the address field is bits [0, 14) in 16-byte
  // units, and every tile lies inside the 227 KB of shared memory, so the sum never carries out).
  // Built once instead of per wgmma (~60 integer instructions per stage and warp).
  const uint64_t a_desc0 = desc_k_major_sw128(sm.kv + g * 64 * 128);
  const uint64_t b_desc0 = desc_k_major_sw128(sm.q);
  // Issues the wgmma of one bank of one stage into `acc`.
  auto issue = [&](float(&acc)[kR], int stage, int qs, int bank) {
#pragma unroll
    for (int i = 0; i < kR; ++i) fence_operand(acc[i]);
    wgmma_fence();
    const uint64_t da0 = a_desc0 + uint32_t(stage * Cfg::kKVBytes) / 16;
    const uint64_t db0 = b_desc0 + uint32_t(qs * Cfg::kQBytes + bank * kBankN * 128) / 16;
#pragma unroll
    for (int k = 0; k < Cfg::kKSteps; ++k) {
      const int atom = k / 4, off = (k % 4) * 32;
      const uint64_t da = da0 + uint32_t(atom * kBlockKV * 128 + off) / 16;
      const uint64_t db = db0 + uint32_t(atom * kQRows * 128 + off) / 16;
      Mma::mma(da, db, acc, k > 0 ? 1u : 0u);
    }
    wgmma_commit();
#pragma unroll
    for (int i = 0; i < kR; ++i) fence_operand(acc[i]);
  };
  // Adds the bank's ReLU-weighted columns into sums[query][row half] (even columns of each
  // 8-column group) and alt[query][row half] (odd columns): one FFMA per column, two chains.
  auto accumulate = [&](const float(&acc)[kR], const float* wq, int bank, float(&sums)[kNQ][2],
                        float(&alt)[kNQ][2]) {
    if constexpr (Cfg::kWPerm) {  // one bank of 128 columns; the same FFMA order as below
#pragma unroll
      for (int m = 0; m < kBankN / 16; ++m) {
        const float4 wv =
            make_float4(wreg[4 * m], wreg[4 * m + 1], wreg[4 * m + 2], wreg[4 * m + 3]);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int j = 2 * m + h, q = 8 * j / Cfg::kHeads;
          const float wx = h ? wv.z : wv.x, wy = h ? wv.w : wv.y;
          sums[q][0] = fmaf(wx, fmaxf(acc[4 * j + 0], 0.0f), sums[q][0]);
          alt[q][0] = fmaf(wy, fmaxf(acc[4 * j + 1], 0.0f), alt[q][0]);
          sums[q][1] = fmaf(wx, fmaxf(acc[4 * j + 2], 0.0f), sums[q][1]);
          alt[q][1] = fmaf(wy, fmaxf(acc[4 * j + 3], 0.0f), alt[q][1]);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < kBankN / 8; ++j) {
        const int col = bank * kBankN + 8 * j;  // first column of the 8-column group
        const int q = col / Cfg::kHeads;
        float2 wv;
        if constexpr (Cfg::kWRegsDec)
          wv = make_float2(wreg[2 * (col / 8)], wreg[2 * (col / 8) + 1]);
        else
          wv = *reinterpret_cast<const float2*>(wq + col + 2 * (lane % 4));
        sums[q][0] = fmaf(wv.x, fmaxf(acc[4 * j + 0], 0.0f), sums[q][0]);
        alt[q][0] = fmaf(wv.y, fmaxf(acc[4 * j + 1], 0.0f), alt[q][0]);
        sums[q][1] = fmaf(wv.x, fmaxf(acc[4 * j + 2], 0.0f), sums[q][1]);
        alt[q][1] = fmaf(wv.y, fmaxf(acc[4 * j + 3], 0.0f), alt[q][1]);
      }
    }
  };

  // The reduce-scatter's lane class (lane % 4), opaque so that it stays in a register: recomputed
  // from threadIdx.x, ptxas freed the S2R a register with an STL / LDL pair in every key stage,
  // 2% of the stall samples of the fp8 H = 64 flat prefill at 64K (Nsight Compute).
  int rsel = lane % 4;
  asm volatile("" : "+r"(rsel));
  uint32_t q_iter = 0, kv_iter = 0, epi_iter = 0;
  for (int item = items.first; item < items.end; item += items.step, ++q_iter) {
    const Item<Cfg> it(p, item);
    const int qs = q_iter % kQS;
    mbar_wait(&sm.full_q[qs], (q_iter / kQS) & 1);
    const float* wq = sm.w + qs * Cfg::kWStride;
    if constexpr (Cfg::kWRegs) {
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const float4 wv = *reinterpret_cast<const float4*>(wq + (lane % 4) * 36 + 4 * m);
        wreg[4 * m] = wv.x, wreg[4 * m + 1] = wv.y, wreg[4 * m + 2] = wv.z, wreg[4 * m + 3] = wv.w;
      }
    }
    if constexpr (Cfg::kWRegsDec) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float2 wv = *reinterpret_cast<const float2*>(wq + 8 * j + 2 * (lane % 4));
        wreg[2 * j] = wv.x, wreg[2 * j + 1] = wv.y;
      }
    }
    for (int blk = 0; blk < it.nblocks; ++blk, ++kv_iter, ++epi_iter) {
      // One key stage: bank b + 1 is issued before the epilogue of bank b. No wgmma stays in
      // flight across stages: ptxas serialises every wgmma of the kernel when groups from
      // different issue sites are pending at a control-flow merge (C7514); the other
      // warpgroups' wgmma cover this warpgroup's last epilogue instead.
      const int s = kv_iter % kKS;
      mbar_wait(&sm.full_kv[s], (kv_iter / kKS) & 1);
      float scale0 = 1.0f, scale1 = 1.0f;
      const auto load_scales = [&] {
        if (p.has_scale) {
          scale0 = sm.scale[s * kBlockKV + g * 64 + row_in_tile];
          scale1 = sm.scale[s * kBlockKV + g * 64 + row_in_tile + 8];
        }
      };
      // kLateScales: loaded once the wgmma is done (before the stage is released), so that they
      // do not hold two registers across it.
      if constexpr (!Cfg::kLateScales) load_scales();
      float sums[kNQ][2], alt[kNQ][2];
#pragma unroll
      for (int q = 0; q < kNQ; ++q) sums[q][0] = sums[q][1] = alt[q][0] = alt[q][1] = 0.0f;
      issue(acc0, s, qs, 0);
#pragma unroll
      for (int b = 0; b < Cfg::kBanks; ++b) {
        const bool last = b + 1 == Cfg::kBanks;
        if (!last) {
          if ((b & 1) == 0)
            issue(acc1, s, qs, b + 1);
          else
            issue(acc0, s, qs, b + 1);
          wgmma_wait<1>();
        } else {
          wgmma_wait<0>();
        }
        if ((b & 1) == 0) {
#pragma unroll
          for (int i = 0; i < kR; ++i) fence_operand(acc0[i]);
          if constexpr (Cfg::kLateScales) load_scales();
          if (last) mbar_arrive(&sm.empty_kv[s]);
          accumulate(acc0, wq, b, sums, alt);
        } else {
#pragma unroll
          for (int i = 0; i < kR; ++i) fence_operand(acc1[i]);
          if (last) mbar_arrive(&sm.empty_kv[s]);
          accumulate(acc1, wq, b, sums, alt);
        }
        // Pin this bank's epilogue before the next wgmma wait: without it ptxas sank the bank-0
        // FMNMX/FFMA below the final wait and nothing overlapped the last bank.
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          fence_operand(sums[q][0]), fence_operand(sums[q][1]);
          fence_operand(alt[q][0]), fence_operand(alt[q][1]);
        }
      }
#pragma unroll
      for (int q = 0; q < kNQ; ++q) sums[q][0] += alt[q][0], sums[q][1] += alt[q][1];
      // The 4 lanes that hold one key's columns finish the head sum.
      const int es = epi_iter % kES;
      mbar_wait(&sm.empty_epi[es], ((epi_iter / kES) & 1) ^ 1);
      float* ebuf = sm.epi + es * kNQ * kBlockKV + g * 64 + row_in_tile;
      if constexpr (kNQ == 2) {
        // Reduce-scatter of the 4 values (q, h) over the 4 lanes: lane r ends with value r, the
        // same sum tree ((l0 + l1) + (l2 + l3), up to the order of each pair) as a full
        // butterfly, in 3 shuffles instead of 8, and every lane stores one value.
        const bool b0 = rsel & 1, b1 = rsel & 2;
        const float lo = b0 ? sums[0][1] : sums[0][0], lo_out = b0 ? sums[0][0] : sums[0][1];
        const float hi = b0 ? sums[1][1] : sums[1][0], hi_out = b0 ? sums[1][0] : sums[1][1];
        const float w0 = lo + __shfl_xor_sync(0xFFFFFFFFu, lo_out, 1);  // value (0, b0)
        const float w1 = hi + __shfl_xor_sync(0xFFFFFFFFu, hi_out, 1);  // value (1, b0)
        const float x = (b1 ? w1 : w0) + __shfl_xor_sync(0xFFFFFFFFu, b1 ? w0 : w1, 2);
        ebuf[(b1 ? kBlockKV : 0) + (b0 ? 8 : 0)] = x * (b0 ? scale1 : scale0);
      } else {
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float x = sums[q][h];
            x += __shfl_xor_sync(0xFFFFFFFFu, x, 1);
            x += __shfl_xor_sync(0xFFFFFFFFu, x, 2);
            if (lane % 4 == 0) ebuf[q * kBlockKV + 8 * h] = x * (h ? scale1 : scale0);
          }
        }
      }
      mbar_arrive(&sm.full_epi[es]);
    }
    mbar_arrive(&sm.empty_q[qs]);
  }
}

// ------------------------------------------------------------------ decode's wide tail
// The CTA's last item ends here with all 640 threads: the math, producer and select warps are
// done, so its final cut and the merge of its tile run on 20 warps instead of the seven select
// warps (the end of the last item is the one part of a decode no stream overlaps).
template <class Cfg>
__device__ __forceinline__ void wide_tail(const FusedParams& p, const Shared<Cfg> sm, int item) {
  constexpr int kNQ = Cfg::kNQ;
  const Item<Cfg> it(p, item);
  int cnt[kNQ];
  uint32_t umax[kNQ], thr[kNQ];
#pragma unroll
  for (int q = 0; q < kNQ; ++q) {
    cnt[q] = sm.tail[q], thr[q] = uint32_t(sm.tail[kNQ + q]), umax[q] = 0;
#pragma unroll
    for (int w = 0; w < Cfg::kSelWarps; ++w)
      umax[q] = max(umax[q], uint32_t(sm.tail[2 * kNQ + q * Cfg::kSelWarps + w]));
  }
  if (Cfg::kPairTail && p.pair_tail) {
    if (it.appends_segment(p))
      append_segment<Cfg>(p, it, cnt[0], umax[0], thr[0], sm.cand_u, sm.cand_pos, sm.hist, sm.scan,
                          sm.bcast);
    pair_finish<Cfg>(p, it, cnt[0], umax[0], thr[0], sm.cand_u, sm.cand_pos, sm.hist, sm.scan,
                     sm.bcast, sm.tail + Cfg::kPeerOff, reinterpret_cast<int*>(sm.epi),
                     sm.empty_epi + Cfg::kEpiStages);
  } else {
    finish_item<Cfg, Cfg::kThreads>(
        p, it, cnt, umax, thr, sm.cand_u, sm.cand_pos, sm.hist, sm.scan, sm.bcast,
        [] { __syncthreads(); }, int(threadIdx.x));
  }
}

// Decode: the first item's inputs asked for before the barriers are set up (kEarlyPrefetch).
template <class Cfg>
__device__ __forceinline__ void early_prefetch(const CUtensorMap& map_q, const CUtensorMap& map_k,
                                               const FusedParams& p) {
  const int lane = threadIdx.x % 32;
  // The first item's pages from the split alone (Item would wait for the length first).
  const int item0 = int(blockIdx.x), pair_items = p.num_tiles * p.splits;
  const bool helper0 = Cfg::kPairTail && p.helpers > 0 && item0 >= pair_items;
  if (threadIdx.x >= Cfg::kProdBase && threadIdx.x < Cfg::kProdBase + 32 &&
      (item0 < pair_items || helper0)) {
    const int tile = helper0 ? item0 - pair_items : item0 / p.splits;
    const int split = helper0 ? 2 : item0 - tile * p.splits;
    if (lane == 0) {
      prefetch_l1(p.seq_lens + tile);
      tma_prefetch_desc(&map_q);
      tma_prefetch_desc(&map_k);
    }
    // (a helper walks many requests: every length; the next items' pages and w are prefetched
    // by the producer as it starts each item)
    if (helper0)
      for (int i = 32 * lane; i < p.num_tiles; i += 32 * 32) prefetch_l1(p.seq_lens + i);
    // (with helpers, split 1 and the helper start where they would for a full-length request)
    const int pg0 = Cfg::kPairTail && p.helpers > 0 ? p.helper_split_page0(split, p.max_pages)
                                                    : split * p.pages_per_split;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int pg = pg0 + 32 * c + lane;
      if (pg < p.max_pages && pg < pg0 + p.pages_per_split)
        prefetch_l1(p.block_table + int64_t(tile) * p.max_pages + pg);
    }
    for (int i = lane; i < Cfg::kQRows; i += 32) {
      const int64_t r = int64_t(tile) * p.next_n + i / Cfg::kHeads;
      if (r < p.row_end) prefetch_l1(p.w + r * Cfg::kHeads + i % Cfg::kHeads);
    }
  }
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    sm90_fused_topk_kernel(const __grid_constant__ CUtensorMap map_q,
                           const __grid_constant__ CUtensorMap map_k,
                           const __grid_constant__ CUtensorMap map_scale,
                           const __grid_constant__ FusedParams p) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  constexpr int kQS = Cfg::kQStages, kKS = Cfg::kKVStages, kES = Cfg::kEpiStages;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // Align by pointer arithmetic on the __shared__ array: a round trip through an integer loses the
  // address space and every access becomes a generic LD.E/ST.E.
  const Shared<Cfg> sm(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
  constexpr int kMathThreads = Cfg::kMathWG * 128;

  // A merge kernel launched after this one as a programmatic dependent may start now: it waits
  // for this grid's completion itself (griddepcontrol.wait).
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if constexpr (Cfg::kEarlyPrefetch) early_prefetch<Cfg>(map_q, map_k, p);
  if (threadIdx.x == 0) {
    for (int i = 0; i < kQS; ++i)
      mbar_init(&sm.full_q[i], 32), mbar_init(&sm.empty_q[i], kMathThreads);
    for (int i = 0; i < kKS; ++i)
      mbar_init(&sm.full_kv[i], Cfg::kKVArrivals), mbar_init(&sm.empty_kv[i], kMathThreads);
    for (int i = 0; i < kES; ++i)
      mbar_init(&sm.full_epi[i], kMathThreads), mbar_init(&sm.empty_epi[i], Cfg::kSelThreads);
    if constexpr (Cfg::kPairTail)
      mbar_init(&sm.empty_epi[kES], 1), mbar_init(&sm.empty_epi[kES + 1], 1);
    for (int i = 0; i < Cfg::kAppendBytes / 4; ++i) sm.append[i] = 0;  // unused slots read 0
    fence_barrier_init();
  }
  __syncthreads();

  const int num_items = p.num_tiles * p.splits;
  // Helper CTAs (kPairTail with p.helpers, after the pairs): the requests blockIdx.x - num_items,
  // + helpers, ... as items num_items + request.
  const bool helper_cta = Cfg::kPairTail && p.helpers > 0 && int(blockIdx.x) >= num_items;
  ItemRange items;
  items.first = int(blockIdx.x);
  items.end = helper_cta ? num_items + p.num_tiles : num_items;
  items.step = helper_cta ? p.helpers : int(gridDim.x);
  // The CTA's last item (items are strided over the CTAs); valid when blockIdx.x < num_items.
  items.last =
      int(blockIdx.x) + (num_items - 1 - int(blockIdx.x)) / int(gridDim.x) * int(gridDim.x);

  if (threadIdx.x >= kMathThreads) {
    // kSplitRegs: the producer warp and the select warps fill two warpgroups (setmaxnreg is
    // executed by whole warpgroups), so they release their registers here, in one instruction.
    if constexpr (Cfg::kSplitRegs) setmaxnreg_dec<Cfg::kSelectRegs>();
    if (threadIdx.x >= Cfg::kProdBase && threadIdx.x < Cfg::kProdBase + (Cfg::kSlim ? 32 : 128)) {
      if constexpr (!Cfg::kSlim) setmaxnreg_dec<Cfg::kProducerRegs>();
      if (threadIdx.x % 128 >= 32) return;
      producer_warp<Cfg>(map_q, map_k, map_scale, p, sm, items, helper_cta);
    } else if (threadIdx.x >= Cfg::kSelBase && threadIdx.x < Cfg::kSelBase + Cfg::kSelThreads) {
      if constexpr (!Cfg::kSlim) setmaxnreg_dec<Cfg::kSelectRegs>();
      select_warps<Cfg>(p, sm, items);
    }
  } else {
    if constexpr (!Cfg::kSlim || Cfg::kSplitRegs) setmaxnreg_inc<Cfg::kMathRegs>();
    math_warpgroups<Cfg>(p, sm, items);
  }
  if constexpr (Cfg::kWideTail) {
    __syncthreads();
    if (blockIdx.x < num_items) wide_tail<Cfg>(p, sm, items.last);
  }
#endif
}

}  // namespace hisa::cuda::sm90
