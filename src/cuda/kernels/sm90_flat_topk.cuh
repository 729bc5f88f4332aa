// sm90 flat DSA indexer with the exact top-k fused in: I(t, p) = k_scale[p] * sum_h w[t, h] *
// relu(q[t, h, :] . k[p, :]) on the tensor cores, selection in shared memory, so the [T, S] score
// matrix never reaches device memory.
//
// One CTA (persistent; one per SM) walks work items. An item is kNQ query rows that share a key
// stream (prefill: kNQ consecutive rows; decode: the next_n rows of one request) and one key range
// (a split of the rows' keys; one split unless the rows are too few to fill the GPU). Roles:
//   - producer warp: TMA loads of the q tile [kNQ * H, D] (once per item) and of key tiles
//     [64 * kMathWG, D] (+ their fp32 scales) into a ring of kKVStages shared-memory stages;
//   - kMathWG math warpgroups (4; 3 in the slim kernels, 640 threads: fp8 prefill and decode
//     next_n 1, both with H = 64):
//     warpgroup g scores keys [64g, 64g + 64) of a stage against all q rows with wgmma (M = 64
//     keys, N = q rows, both operands K-major with the 128-byte swizzle), N split into 2 or 4
//     banks so that the epilogue of one bank overlaps the wgmma of the next (slim: one N = 128
//     bank, the key tile read once; the other warpgroups' wgmma cover the epilogue). Epilogue in
//     registers: ReLU, times w[t, h], sum over the heads a thread holds, 2 shuffles for the 4
//     lanes that share a key, times k_scale[p]; one fp32 per (query, key) goes to a small
//     epilogue buffer;
//   - select warps (4; 7 in the slim kernel): keep per query a candidate list in shared memory,
//     in position order, with a rising threshold: keys above the threshold are appended
//     (ordered, via ballots and a scan over the select warps); when the list could overflow, an
//     exact radix select cuts it to k and raises the threshold to the k-th key. At the end of
//     the item the list is cut to k and written out (sorted ascending, -1 padded), or handed to
//     the merge kernel when split.
// Modes: kWriteScores = true writes the scores of a row chunk instead (k above kMaxK; the
// stand-alone top-k then selects).
#pragma once

#include <cuda.h>

#include <cstdint>
#include <type_traits>

#include "cuda/kernels/flat_timeline.hpp"
#include "cuda/kernels/sm90_ptx.cuh"
#include "cuda/kernels/sm90_wgmma.cuh"
#include "cuda/kernels/smxx_select.cuh"

namespace hisa::cuda::sm90 {

// Plain parameters of one launch. Rows are global row numbers (prefill: query rows of the call;
// decode: b * next_n + j).
struct FlatParams {
  int64_t row_begin = 0, row_end = 0;  // rows handled by this launch
  int num_tiles = 0;                   // prefill: ceil((row_end - row_begin) / kNQ); decode: batch
  int splits = 1;                      // key ranges per tile (items = num_tiles * splits)
  int topk = 0;                        // k (<= kMaxK)
  int has_scale = 0;                   // keys carry fp32 scales (else 1)

  // prefill
  const int32_t* row_ks = nullptr;  // [T] int32: first key row of the row's sequence
  const int32_t* row_ke = nullptr;  // [T] int32: end of the row's visible key rows

  // decode (paged cache, page_size 64)
  int next_n = 1, max_pages = 0, pages_per_split = 0;
  const int32_t* block_table = nullptr;  // [batch, max_pages] int32
  const int32_t* seq_lens = nullptr;     // [batch] int32
  const uint8_t* kv_cache = nullptr;     // [pages, 64, D + 4] uint8 (for the scale rows)

  const float* w = nullptr;  // [rows, H] fp32

  // outputs (top-k mode)
  int32_t* out = nullptr;       // [rows, topk] int32 (splits == 1)
  uint32_t* part_u = nullptr;   // [rows, splits, topk] uint32 order keys (splits > 1)
  int32_t* part_pos = nullptr;  // [rows, splits, topk] int32 positions
  int32_t* part_cnt = nullptr;  // [rows, splits] int32 valid entries
  // Merge in the kernel (splits > 1 and splits * topk <= the candidate list): arrivals per tile,
  // zero before the launch and left zero after it; the last split of a tile to finish merges the
  // tile's partial lists into `out` (no merge kernel). nullptr: the merge kernel does it.
  int* merge_count = nullptr;
  // Entries per partial-list slot (>= topk): the decode's split lists are [rows, splits,
  // part_stride]; larger than topk where they go out uncut (kEarlyCut).
  int part_stride = 0;
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
  // (weight * helpers + 2 * num_tiles), weight = the helper's share relative to a pair CTA's
  // (< 1: the helpers' SMs ran ~4% slower per page than the pairs' in run 86).
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

  // Measurement only: cycle counters summed over CTAs ([kProfSlots] u64, nullptr = off), and
  // debug_mode 1 = the select warpgroup consumes the scores without selecting (pipeline bound).
  unsigned long long* prof = nullptr;
  int debug_mode = 0;
  // Measurement only (the kProf instances): per CTA kTimelineEvents %globaltimer stamps in ns
  // (TimelineEvent order; 0 = not reached), nullptr = off.
  unsigned long long* timeline = nullptr;
};

// Slots of FlatParams::prof (cycles unless noted; one thread per role counts).
enum ProfSlot : int {
  kProfSelTotal = 0,
  kProfSelWaitEpi,
  kProfSelAppend,
  kProfSelCompact,
  kProfSelFinal,
  kProfSelCompactions /* count */,
  kProfSelAppended /* candidates, both queries */,
  kProfProdTotal,
  kProfProdWaitQ,
  kProfProdWaitKV,
  kProfItems /* count */,
  kProfClkCycles /* SM clock64 ticks of the producer warp's lifetime, summed over CTAs */,
  kProfClkNs /* %globaltimer ns of the same span: cycles / ns = the SM clock in GHz */,
  kProfSlots
};

// kProf_: a measurement instance that honours FlatParams::prof and debug_mode (the counters cost
// registers the math warpgroups do not have, so production instances compile them out).
// kTune_: a configuration for A/B timing in one run (0 = production; 1 = an earlier one: fp8
// prefill with H = 64 as in device run 27 (768 threads, two N = 64 banks, four key stages per
// select step), decode next_n 1 as in run 22, a 16-stage epilogue ring; 2 = decode's key stream
// alone, kStreamOnly; 3 = the slim prefill with w in registers and two N = 64 banks; 4 = the slim
// prefill reading w from shared memory every stage without a register split, as in runs 35-55;
// 7 = the slim prefill with the key scales loaded at the top of the stage, not kLateScales; 9 =
// the cuts' digit counts with __match_any_sync (prefill); decode next_n 1 with H = 64: 14 = four
// key stages (runs 61-64), 15 = two N = 32 banks, 16 = runs 61-63's decode (w from shared
// memory, two banks, four key stages, the select warps finishing every item), 17 = the select
// warps finishing the CTA's last item too (no kWideTail), 18 and 19 = sleeping polls
// (kSleepSelect, kSleepProducer, kSleepMath), 20 = the exact cut before the end with the split
// lists published uncut (kEarlyCut), 21 = the merging split's own list kept in shared memory
// (kMergeLocal), 22 = without kEarlyPrefetch (run 77's decode), 24 = six key stages
// (kSixStages). Removed: 5, 6 (list / ring sizes, slower in run 56), 13 (runs 38-59's decode,
// slower in runs 61-63), 23 (the balanced pair, 6-8% slower in runs 79-82; commit 3d6c6d6).
// kSub_: key stages the select warpgroup takes per step (0 = automatic: 4 for fp8 prefill, 2
// with the other large candidate lists, else 1); one scan barrier per step.
template <class T, int kHeads_, int kNQ_, bool kPaged_, bool kWriteScores_, bool kProf_ = false,
          int kTune_ = 0, int kSub_ = 0>
struct FlatConfig {
  // One select warpgroup (a second one would take the CTA to 896 threads, 72 registers at launch,
  // and ptxas serialises the wgmma: C7512).
  static constexpr int kHeads = kHeads_, kNQ = kNQ_, kTune = kTune_;
  static constexpr bool kPaged = kPaged_, kWriteScores = kWriteScores_, kProf = kProf_;
  static constexpr int kDim = 128;
  static constexpr int kElem = std::is_same<T, Fp8>::value ? 1 : 2;
  static constexpr int kRowBytes = kDim * kElem;  // 128 (fp8) or 256 (bf16) bytes per row
  static constexpr int kAtoms = kRowBytes / 128;  // 128-byte swizzle atoms along D
  static constexpr int kKSteps = kRowBytes / 32;  // each wgmma consumes 32 bytes of K
  static constexpr int kQRows = kNQ * kHeads;
  // fp8 prefill, two queries per item (the benchmarked path).
  static constexpr bool kFp8Prefill = kElem == 1 && !kPaged && kNQ == 2 && !kWriteScores;
  // The slim CTA (runs 31-35; fp8 prefill with H = 64): 3 math warpgroups (192 keys per stage) with
  // one N = 128 wgmma per k-step (each key tile read from shared memory once, not once per
  // 64-column bank: 25% less operand traffic; the instruction needs 90 registers, which the
  // 768-thread launch bound does not allow, C7602), a producer warp and seven select warps (run
  // 35; four in runs 31-32, six in run 34): 640 threads, the most that keeps 96 registers at
  // launch (split by setmaxnreg since run 56, kSplitRegs below). Runs 29-30 kept four math
  // warpgroups in 640 threads, with three select warps (too few) or no producer warp (the math
  // warps issuing the loads stalled the pipeline). Everything else: 768 threads, four math
  // warpgroups, a select warpgroup and a producer warpgroup.
  // Decode with one query per request (the benchmarked decode path).
  static constexpr bool kDecode1 = kPaged && kNQ == 1 && !kWriteScores;
  // Decode next_n 1 with H = 64 uses the slim CTA too (runs 37-38: seven select warps; 192-key
  // stages of three pages, its two N = 32 banks unchanged; five key stages, a 32-stage ring).
  static constexpr bool kSlimPrefill = kFp8Prefill && kHeads == 64 && kTune != 1;
  static constexpr bool kSlimDecode = kDecode1 && kHeads == 64 && kTune != 1;
  // kTune 2 (measurement only): the production kernel whose math warps skip the wgmma and the
  // epilogue (they wait for each key stage, release it, and hand an unwritten epilogue stage on):
  // the time of the key stream and the barrier protocol alone.
  static constexpr bool kStreamOnly = kTune == 2;
  static constexpr bool kSlim = kSlimPrefill || kSlimDecode;
  static constexpr int kMathWG = kSlim ? 3 : 4;
  static constexpr int kPagesPerStage = kMathWG;  // decode: 64-token pages per key stage
  static constexpr int kBlockKV = 64 * kMathWG;  // keys per stage
  static constexpr int kSelThreads = kSlim ? 224 : 128;  // slim: seven select warps (run 35)
  static constexpr int kThreads = kSlim ? kMathWG * 128 + 32 + kSelThreads : (kMathWG + 2) * 128;
  // (640 threads: ptxas compiles for 96; 768: 80)
  static constexpr int kLaunchRegs = kSlim ? 96 : 65536 / kThreads / 8 * 8;
  static constexpr int kSelWarps = kSelThreads / 32;
  static constexpr int kWarpSlots = kSelWarps <= 4 ? 4 : 8;  // append count slots per word
  static constexpr int kProdBase = kSlim ? kMathWG * 128 : (kMathWG + 1) * 128;  // producer warp
  static constexpr int kSelBase = kSlim ? kMathWG * 128 + 32 : kMathWG * 128;  // select warps
  // The slim prefill keeps each math thread's 32 weights in registers for the whole item (kWRegs,
  // production since run 56): run 53's probe showed the 8 LDS.128 of w per stage (32
  // shared-memory wavefronts per warp, broadcast or not) taking the math loop from 938 to 1083
  // cycles per stage (the wgmma alone: 768). 64 accumulators of the N = 128 bank plus 32 weights
  // do not fit the launch's 96 registers, so the CTA's 640 x 96 are split with setmaxnreg
  // (kSplitRegs): the math warpgroups 104, the producer warp and the seven select warps (which
  // share two warpgroups, so they take one setmaxnreg.dec together) 80. ptxas: the math code needs
  // 104 (with kLateScales; one register spilled per stage without), the select code 88 to spill nothing
  // (80: 28 bytes, in the per-item code; 72: 116, in the append loop); run 55 measured 112 / 72
  // 2-4% slower than 104 / 80 at every length. Variants for same-run A/B: kTune 3 = w in
  // registers with two N = 64 banks, each drained before the next (the key tile read twice;
  // run 54: 1-3% slower than w from shared memory); kTune 4 = runs 35-55's production, w read from
  // shared memory every stage, every warp at 96 (run 55: 4-6% slower than kTune 0).
  static constexpr bool kWRegs = kSlimPrefill && kTune != 4;
  // The slim decode keeps w in registers and takes one N = 64 wgmma bank (production since run
  // 64): 16 weights per thread (its columns 8j + 2 (lane % 4) + {0, 1} of the 64 heads), loaded
  // once per item, and four wgmma per stage instead of eight (the key tile read once). Run 49's
  // Nsight Compute profile had the math warps, not the key stream, bounding the decode, their
  // bank-0 FFMA chain waiting on the 8 LDS.64 of w per stage (short_sb, ~15% of their samples).
  // The FFMA order is unchanged, so the scores are bitwise the same. Run 63 (b64 x 128K, with the
  // merge in the kernel): 288 us against 311 for runs 61-63's decode. kTune 15: w in registers
  // with two N = 32 banks; kTune 16: runs 61-63's decode (w from shared memory, two banks).
  static constexpr bool kWRegsDec = kSlimDecode && kTune != 16;
  // The slim decode ends the CTA's last item with all 640 threads (production since run 65; run
  // 64: 283.2 against 288.0 us): its final cut and the merge are the part of the decode no key
  // stream overlaps. kTune 17: the select warps finish it, as every other item.
  static constexpr bool kWideTail = kSlimDecode && kTune != 16 && kTune != 17;
  // kTune 20 (run 69): a split item that the kernel merges cuts its list exactly once, some
  // kEarlyStages key stages before its end (overlapped with the stream), and then publishes its
  // list uncut (at most part_stride entries; else cut first): the end of the item loses the final
  // cut, and the merge's one cut covers the union. With the pair tail (run 74): the lists enter
  // the pair's joint cut at ~k + 160 entries instead of up to kCap.
  static constexpr bool kEarlyCut = kSlimDecode && kTune == 20;
  static constexpr int kEarlyStages = 28;
  // kTune 21 (run 72): the merging split keeps its own (cut) list in shared memory and loads
  // only the other splits' lists; one thread fences after the arrival instead of all of them
  // (run 71's timeline: the merge took ~10 us after the arrival, twice the split's own cut).
  static constexpr bool kMergeLocal = kSlimDecode && kTune == 21;
  // Decode (production since run 78): before the barriers are set up, the producer warp asks for
  // what its first item's first key copy waits on: the request's length, the page ids of its first
  // 64 pages, the w of its rows and the tensor maps. The chain in front of the key stream (length
  // -> w to shared memory -> q copy -> page ids -> first key copy) made two to three dependent
  // global round trips (~0.6-0.9 us each from DRAM: every call's key stream has flushed L2); with
  // the lines requested together at the start they take about one (run 78: 0.3-0.5% faster).
  // kTune 22: without (run 77's decode).
  static constexpr bool kEarlyPrefetch = kPaged && kTune != 22;
  // kTune 24 (run 83): six key stages in the slim decode, paid for with one q stage (one item per
  // CTA at b64), a 16-stage epilogue ring and a 6912-entry list (runs 79-82: the stream slows as
  // soon as the CTA holds its key stages a little longer, so more of them in flight may help).
  static constexpr bool kSixStages = kSlimDecode && kTune == 24;
  static_assert(!(kMergeLocal && kEarlyCut), "a local merge needs lists cut to k");
  // The pair tail (run 73 as variant 22, production since run 74), where FlatParams::pair_tail
  // says the launch is one: a request's two splits run as one 2-CTA cluster, one item per CTA,
  // and cut the union of their two (uncut) lists together: each radix pass counts its own list
  // and adds the partner's counts through distributed shared memory (PairPeer), each CTA
  // compacts its own list and writes its part of the output (no partial lists, no arrival
  // counters, no global round trip; run 72's timeline: the split's cut 4.9 us, then the merge
  // 7.4-9.7 us; run 73: the pair's tail ~6 us, x0.956 interleaved).
  static constexpr bool kPairTail = kWideTail;
  // Sleeping polls (mbar_wait<ns>) instead of suspended try-waits, for warps with slack (run
  // 66's question: the decode runs under the SW power cap at ~1.71 GHz, and a suspended try-wait
  // wakes on every barrier event of the CTA): kTune 18, the select warps waiting for scores
  // (200 ns); kTune 19, also the producer waiting for free key stages (200 ns) and the math warps
  // waiting for keys (50 ns).
  static constexpr unsigned kSleepSelect = kSlimDecode && (kTune == 18 || kTune == 19) ? 200 : 0;
  static constexpr unsigned kSleepProducer = kSlimDecode && kTune == 19 ? 200 : 0;
  static constexpr unsigned kSleepMath = kSlimDecode && kTune == 19 ? 50 : 0;
  static constexpr bool kSplitRegs = kSlimPrefill && kTune != 3 && kTune != 4;
  static constexpr int kBanks = kQRows > 128                                        ? 4
                               : (kSlimPrefill && kTune != 3) ||
                                         (kSlimDecode && kTune != 15 && kTune != 16)
                                     ? 1
                                     : 2;
  // The split kernel loads the key scales after the wgmma (below), which removes the math warps'
  // one spilled register per stage (ptxas: 28 -> 24 bytes of spill stores); run 56: 2% faster at
  // 128K (169.9 vs 173.4 ms; the math loop alone 137 ms), even at 64K, 2% slower at 8K and 32K,
  // where the selection is the limit. kTune 7: the scales loaded at the top of the stage (run 56's
  // production, run 55's variant 5).
  static constexpr bool kLateScales = kSplitRegs && kTune != 7;
  // The cuts count digits with one shared-memory atomic per key (run 58: an anchored digit spreads
  // a list over many bins, so __match_any_sync rarely merged lanes, and it sat in every key's
  // dependent chain: cuts 24.6K -> 17.6K cycles at 128K, prefill 6-19% faster). kTune 9: with
  // __match_any_sync (runs 1-58). Run 58 also measured, and dropped: one stage-barrier arrival per
  // warp instead of per thread (prefill 3-6% slower, decode 3% slower, the decode key stream
  // alone unchanged) and 8 list entries in flight per thread in the counts (no change).
  static constexpr bool kCutAggregate = kTune == 9;
  static constexpr int kBankN = kQRows / kBanks;
  using Mma = Wgmma<T, kBankN>;
  static constexpr int kAccRegs = Mma::kRegs;
  // Register split (setmaxnreg) of the registers the CTA starts with (kLaunchRegs per thread):
  // the math warpgroups need 96 (fewer serialises wgmma, C7512; 104 with w in registers,
  // kSplitRegs); the producer and select warps share the rest (more select state with more queries
  // per warpgroup).
  static constexpr int kMathRegs = kSplitRegs ? 104 : 96;
  static constexpr int kMaxK = 2048;
  // Several key stages per select step (the append's cost is per step: dependent shared-memory
  // round trips and a barrier): four for the 768-thread fp8 prefill (runs 20-21), seven 192-key
  // stages for the slim kernels (six slices of 224 keys).
  // Candidate list capacity per query: the slack above k sets how often the list is cut (each cut
  // costs ~25-40K cycles), but a longer list means longer cuts and a threshold that lags longer
  // (more appends). fp8 prefill: 6656 (run 15: 7168 with two key stages beat 5120 with three; run
  // 21 paid 512 of them for a deeper ring); decode next_n 1: 6144 (11264 with three key stages was
  // 13% slower), 7168 in the slim decode.
  // Run 56 re-checked the slim prefill's 6656 / 32-stage ring with w in registers against 7168 /
  // 30 and 6144 / 40: both 0.5-2% slower at every length.
  static constexpr int kCap = kWriteScores                          ? 0
                              : kFp8Prefill                         ? 6656
                              : kSlimDecode                         ? (kSixStages ? 6912 : 7168)
                              : (kElem == 1 && kPaged && kNQ == 1)  ? 6144
                                                                    : 3072;
  static constexpr int kSub = kSub_       ? kSub_
                             : kSlim       ? 7  // 7 x 192 keys = 6 slices of 224
                             : kFp8Prefill ? 4
                                           : (kCap >= 4096 && kNQ <= 2 ? 2 : 1);
  // Four stages per step hold twice the scores: 64 registers for the select warpgroup (the
  // prefill producer fits 32).
  // Slim kernels without kSplitRegs (the decode, prefill kTune 3 and 4) keep the launch's 96 in
  // every warp, no setmaxnreg. With kSplitRegs the producer warp and the select warps share two
  // warpgroups, so they take one setmaxnreg.dec together, to 80 (run 29's first try gave the math
  // warpgroups 104 without a matching setmaxnreg.dec elsewhere and hung them: setmaxnreg.inc only
  // takes registers that a setmaxnreg.dec of the CTA released).
  static constexpr int kSelectRegs =
      kSplitRegs ? 80 : kSlim ? 96 : kNQ <= 2 && kSub < 4 ? 56 : 64;
  static constexpr int kProducerRegs =
      kSlim ? kSelectRegs : kNQ <= 2 && kSub < 4 ? 40 : 32;
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

  static constexpr int kQBytes = kQRows * kRowBytes;
  static constexpr int kKVBytes = kBlockKV * kRowBytes;
  // Epilogue ring: deep enough that the math warps (and behind them the key stream) keep going
  // while the select warpgroup cuts a list (a cut takes ~25-37K cycles, 10-15 stages' worth; with
  // 4 stages the select sat idle 13% (prefill 128K) to 38% (decode b64) of its time after cuts,
  // run 10). For fp8 prefill with H = 64 the second q stage makes room for it.
  // Decode next_n 1 (run 24): 27 stages with H = 64 (what the free shared memory holds with two q
  // stages and four key stages), 32 with H = 32: a cut of a 6144-entry list lasts ~43K cycles,
  // ~24 stages of the key stream at full bandwidth, and 16 stages stalled it (run 22: the producer
  // waited for free key stages 20% of its time).
  static constexpr int kEpiStages = kWriteScores                          ? 4
                                    : kDecode1                            ? (kTune == 1 || kSixStages ? 16
                                                                             : kSlimDecode ? 32
                                                                             : kHeads == 64 ? 27
                                                                                            : 32)
                                    // slim (run 32): 32 stages of 192 keys (16: less than a cut)
                                    : kFp8Prefill                         ? (kSlim ? 32 : 16)
                                                                          : 4;
  static constexpr int kQStages =
      kSixStages ? 1
      : kWriteScores || kQBytes < 16384 || (kQBytes == 16384 && kEpiStages <= 4) ? 2 : 1;
  // The slim prefill keeps w in shared memory in the order its math threads read it (run 51):
  // thread class r = lane % 4 reads columns 8j + 2r + {0, 1}, j = 0..15, i.e. 32 floats stored
  // at r * 36 (the 4-float pad puts the four classes' 16-byte loads in different banks): 8
  // LDS.128 per read (once per item with kWRegs, per stage in kTune 4).
  static constexpr bool kWPerm = kSlimPrefill;
  static constexpr int kWStride = kWPerm ? 4 * 36 : kQRows;  // floats of w per q stage

  // Scan space of the selection (ordered_compact: two ints per warp of the cutting threads) and
  // the last item's list state handed to the CTA-wide tail ([kNQ] counts, [kNQ] thresholds,
  // [kNQ][select warps] maxima).
  static constexpr int kScanInts = kWideTail ? 2 * kThreads / 32 : 16;
  // The last item's state handed to the wide tail, then (kPairTail) 4 ints the partner writes.
  static constexpr int kPeerOff = (2 + kSelWarps) * kNQ;
  static constexpr int kTailBytes =
      kWideTail ? ((kPeerOff + (kPairTail ? 4 : 0)) * 4 + 15) / 16 * 16 : 0;
  // Everything but the key stages, then as many key stages as fit (2 to 6).
  static constexpr int kFixed = kQStages * kQBytes + kQStages * kWStride * 4 +
                                kEpiStages * kNQ * kBlockKV * 4 + kNQ * kCap * 8 +
                                4 * (256 + kScanInts + 4) + kTailBytes + kAppendBytes +
                                1024 /* barriers */ + 1024 /* alignment */;
  static constexpr int kSmemLimit = 232448;  // 227 KB per block on sm_90
  static constexpr int kStageBytes = kKVBytes + kBlockKV * 4;
  static constexpr int kFitStages = (kSmemLimit - kFixed) / kStageBytes;
  // Key stages: as many as fit, at most 6; the slim decode five (production since run 65): runs
  // 62-64 measured five 5-8 us faster than four at b64 x 128K with the math running, though the
  // key stream alone prefers four (run 60's hisa_stream_probe: 263 us on four, 274 on five).
  // kTune 14 and 16: four (runs 61-64's ring).
  static constexpr int kKVStages =
      kSlimDecode && (kTune == 14 || kTune == 16) && kFitStages > 4 ? 4
      : kFitStages > 6                                           ? 6
                                                                 : kFitStages;
  static_assert(kKVStages >= 2, "shared memory too small for two key stages");
  static_assert(!kSlimDecode || kTune == 14 || kTune == 16 || kKVStages == (kSixStages ? 6 : 5),
                "the slim decode's five key stages (kSixStages: six)");

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
};

// The rows and keys of one work item, computed identically by every role.
template <class Cfg>
struct Item {
  int64_t row0;    // first row of the item
  int64_t key0;    // first key of the item's range (prefill: key row; decode: position)
  int64_t key_hi;  // end of the item's key range
  int nblocks;     // key stages
  int tile, split;   // split 2 with p.helpers: a helper's item (the request's last pages)
  int page0, page1;  // decode: logical pages [page0, page1)
  int seg0, seg1;    // decode with helpers: the request's helper segment, pages [seg0, seg1)

  __device__ __forceinline__ bool helper(const FlatParams& p) const {
    return Cfg::kPairTail && p.helpers > 0 && split == 2;
  }
  // Split 1 of a request with a helper segment: it appends the segment (append_segment).
  __device__ __forceinline__ bool appends_segment(const FlatParams& p) const {
    return Cfg::kPairTail && p.helpers > 0 && split == 1 && seg1 > seg0;
  }

  __device__ __forceinline__ Item(const FlatParams& p, int item) {
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
    if constexpr (!Cfg::kPaged) {
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
        // The helpers' share of every request's pages (helper_pages): with weight w / 16 a helper
        // takes w / 16 of a pair CTA's share of the rest.
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

// Measurement (kProf instances with FlatParams::timeline): this CTA's event `ev`, by the calling
// thread when `who` holds (the caller names one thread); `value` 0 stamps %globaltimer.
template <class Cfg>
__device__ __forceinline__ void timeline_stamp(const FlatParams& p, bool who, int ev,
                                               unsigned long long value = 0) {
  if (Cfg::kProf && p.timeline && who)
    p.timeline[blockIdx.x * kTimelineEvents + ev] = value ? value : globaltimer_ns();
}

// The end of an item, with kT threads (tid: 0 .. kT - 1; `sync` is their barrier): each
// query's list cut to exactly k (an anchored radix select, ties by position), then the sorted
// output (one split) or the partial lists; with p.merge_count (decode), the tile's last split to
// finish merges the tile's partial lists into the output. cnt, thr: uniform; umax: this thread's
// maxima of the lists (reduced here). scan: 2 * kT / 32 ints, and [kMx, kMx + kT / 32).
template <class Cfg, int kT, class Sync>
__device__ __forceinline__ void finish_item(const FlatParams& p, const Item<Cfg>& it,
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
  // Exact cut of a list whose keys all lie in [lo, max]: the digits start at the highest bit
  // where lo and the maximum differ.
  const auto cut_exact = [&](int n, const uint32_t* cu, uint32_t mx, uint32_t lo) {
    mx = __reduce_max_sync(0xFFFFFFFFu, mx);
    if (lane == 0) scan[kMx + w] = int(mx);
    sync();
#pragma unroll
    for (int i = 0; i < kWarps; ++i) mx = max(mx, uint32_t(scan[kMx + i]));
    const uint32_t diff = mx ^ lo;
    const int top_bit = diff ? 31 - __clz(diff) : 0;
    return radix_select<kT>(
        n, p.topk, [&](int64_t i, uint32_t* uu) { return *uu = cu[i], true; }, hist, bcast, sync,
        mx, top_bit, 4, -1, Cfg::kCutAggregate);
  };
  const auto compact = [&](int n, const RadixCut& cut, uint32_t* cu, int32_t* cp) {
    return ordered_compact<kT, 4>(
        n, cut,
        [&](int64_t i, uint32_t* uu, int32_t* pp) { return *uu = cu[i], *pp = cp[i], true; },
        [&](int dst, uint32_t uu, int32_t pp) { cu[dst] = uu, cp[dst] = pp; }, scan, sync);
  };
  sync();
  int own_cnt[kNQ];  // kMergeLocal: each query's list after its cut
#pragma unroll
  for (int q = 0; q < kNQ; ++q) {
    own_cnt[q] = 0;
    const int64_t r = it.row0 + q;
    const bool valid = Cfg::kPaged ? q < p.next_n : r < p.row_end;
    if (!valid) continue;
    uint32_t* cu = cand_u + q * Cfg::kCap;
    int32_t* cp = cand_pos + q * Cfg::kCap;
    int cnt = cnt_in[q];
    // kEarlyCut: a list the kernel merges goes out uncut when it fits its slot.
    const bool uncut = Cfg::kEarlyCut && p.splits > 1 && p.merge_count != nullptr &&
                       cnt <= p.part_stride;
    if (cnt > p.topk && !uncut) {
      const RadixCut cut = cut_exact(cnt, cu, umax[q], thr[q]);
      cnt = compact(cnt, cut, cu, cp);
    }
    own_cnt[q] = cnt;
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
        const int ticket = atomicAdd(p.merge_count + it.tile, 1);
        // kMergeLocal: the acquire side of the last arrival, once (the barrier below orders the
        // other threads' loads after it).
        if (Cfg::kMergeLocal && ticket == p.splits - 1) __threadfence();
        bcast[3] = ticket;  // radix_select uses [0, 3)
        timeline_stamp<Cfg>(p, true, kTlArrived);
        timeline_stamp<Cfg>(p, ticket == p.splits - 1, kTlMerged, 1);
      }
      sync();
      if (bcast[3] == p.splits - 1) {  // uniform
        if constexpr (!Cfg::kMergeLocal) __threadfence();
        const auto stamp = [&](int ev) { timeline_stamp<Cfg>(p, tid == 0, ev); };
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
          int own = 0;  // kMergeLocal: this split's list, [0, own) in shared memory
#pragma unroll
          for (int qq = 0; qq < kNQ; ++qq) own = qq == q ? own_cnt[qq] : own;
          const int me = Cfg::kMergeLocal ? it.split : -1;
          if (tid < p.splits)
            hist[128 + tid] = tid == me ? own : __ldcg(p.part_cnt + r * p.splits + tid);
          sync();
          if (tid == 0) {
            int off = 0;
            for (int sp = 0; sp < p.splits; ++sp) hist[sp] = off, off += hist[128 + sp];
            hist[p.splits] = off;
          }
          sync();
          const int n = hist[p.splits];
          int lo_me = 0, hi_me = 0;  // kMergeLocal: the own list's place in the union
          if constexpr (Cfg::kMergeLocal) {
            // Move the own list (<= topk <= 2048 entries) to its place in split order: all of it
            // read into registers before any of it is written (the ranges may overlap).
            constexpr int kPer = (2048 + kT - 1) / kT;
            lo_me = hist[me], hi_me = lo_me + own;
            uint32_t tu[kPer];
            int32_t tp[kPer];
#pragma unroll
            for (int i = 0; i < kPer; ++i) {
              const int j = tid + i * kT;
              tu[i] = j < own ? cu[j] : 0u, tp[i] = j < own ? cp[j] : 0;
              if (j < own) mx = max(mx, tu[i]), mn = min(mn, tu[i]);
            }
            if (lo_me > 0) {
              sync();
#pragma unroll
              for (int i = 0; i < kPer; ++i) {
                const int j = tid + i * kT;
                if (j < own) cu[lo_me + j] = tu[i], cp[lo_me + j] = tp[i];
              }
            }
          }
#pragma unroll 4
          for (int j = tid; j < n; j += kT) {
            if (Cfg::kMergeLocal && j >= lo_me && j < hi_me) continue;
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
          stamp(kTlMergeLoaded);
          int kept = n;
          if (n > p.topk) {
            const RadixCut cut = cut_exact(n, cu, mx, mn);
            kept = compact(n, cut, cu, cp);
          }
          stamp(kTlMergeCut);
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
// memory (two buffers, by pass parity). One way (since run 90; a cluster barrier per pass before):
// each count goes to the partner by st.async, which completes transaction bytes on the partner's
// barrier of that buffer, and each CTA waits on its own barrier (expect_tx 1024 bytes; the phase
// is the buffer's use count). A buffer is written again two passes later, after the partner has
// received this CTA's counts of the pass in between, which this CTA sends only after reading it.
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
// all threads of the CTA once the roles are done (run 87: the select warps' three dependent
// append steps took ~5 us; this takes 1.8, run 89). Chunks of kT * kPer keys, kPer consecutive
// keys per thread (list order = position order); where the passing keys do not fit the list, the
// list is first cut exactly to k (its threshold rises, fewer keys pass). cnt, umax, thr: the
// list's state (uniform), updated.
template <class Cfg>
__device__ __forceinline__ void append_segment(const FlatParams& p, const Item<Cfg>& it, int& cnt,
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
  if (Cfg::kProf && p.debug_mode == 1) return;  // (no selection: the helpers wrote nothing)
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
      const uint32_t diff = umax ^ thr;
      const int top_bit = diff ? 31 - __clz(diff) : 0;
      const RadixCut cut = radix_select<kT>(
          cnt, p.topk, [&](int64_t i, uint32_t* uu) { return *uu = cu[i], true; }, hist, bcast,
          sync, umax, top_bit, 4, -1, Cfg::kCutAggregate);
      cnt = ordered_compact<kT, 4>(
          cnt, cut,
          [&](int64_t i, uint32_t* uu, int32_t* pp) { return *uu = cu[i], *pp = cp[i], true; },
          [&](int d, uint32_t uu, int32_t pp) { cu[d] = uu, cp[d] = pp; }, scan, sync);
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
__device__ __forceinline__ void pair_finish(const FlatParams& p, const Item<Cfg>& it, int cnt,
                                            uint32_t umax, uint32_t thr, uint32_t* cu, int32_t* cp,
                                            int* hist, int* scan, int* bcast, int* peer_state,
                                            int* phist, uint64_t* pair_bars) {
  static_assert(Cfg::kNQ == 1, "one query row per request (next_n 1)");
  constexpr int kT = Cfg::kThreads;
  const int tid = threadIdx.x;
  const auto sync = [] { __syncthreads(); };
  const uint32_t rank = cluster_ctarank(), other = rank ^ 1u;
  const auto stamp = [&](int ev) { timeline_stamp<Cfg>(p, tid == 0, ev); };
  if (tid == 0) {
    const uint32_t at = map_to_cta(peer_state, other);
    st_cluster_u32(at, uint32_t(cnt));
    st_cluster_u32(at + 4, umax);
    st_cluster_u32(at + 8, thr);
  }
  cluster_sync();  // both CTAs are in their tails (their epilogue rings are free)
  stamp(kTlArrived);
  timeline_stamp<Cfg>(p, tid == 0, kTlMerged, 1);
  stamp(kTlMergeLoaded);
  const int n_other = peer_state[0];
  const int n_all = cnt + n_other;
  int32_t* out = p.out + it.row0 * p.topk;
  if (n_all <= p.topk) {  // every key of both lists is kept (uniform in both CTAs)
    const int base = rank == 0 ? 0 : n_other;
    for (int i = tid; i < cnt; i += kT) out[base + i] = cp[i];
    if (rank == 1)
      for (int i = n_all + tid; i < p.topk; i += kT) out[i] = -1;
    stamp(kTlMergeCut);
    return;
  }
  // Every key of both lists lies in [min of the thresholds, max of the maxima]: the digits start
  // at the highest bit where they differ (the same in both CTAs, so both make the same passes).
  const uint32_t mx = max(umax, uint32_t(peer_state[1]));
  const uint32_t lo = min(thr, uint32_t(peer_state[2]));
  const uint32_t diff = mx ^ lo;
  const int top_bit = diff ? 31 - __clz(diff) : 0;
  const PairPeer peer{phist, map_to_cta(phist, other), pair_bars, map_to_cta(pair_bars, other),
                      tid};
  RadixCut cut = radix_select<kT>(
      cnt, p.topk, [&](int64_t i, uint32_t* uu) { return *uu = cu[i], true; }, hist, bcast, sync,
      mx, top_bit, 4, -1, Cfg::kCutAggregate, peer);
  stamp(kTlSelected);
  {
    const uint32_t start_mask = top_bit >= 31 ? 0u : ~0u << (top_bit + 1);
    timeline_stamp<Cfg>(p, tid == 0, kTlPasses, (__popc(cut.mask ^ start_mask) + 7) / 8 + 1);
  }
  if (rank == 1 && cut.need != 0x7FFFFFFF) {
    // Keys equal to the cut's bucket: split 0's (lower positions) first. Its count of the bucket
    // in the last pass is in phist (the last pass's parity from the digits resolved).
    const uint32_t start_mask = top_bit >= 31 ? 0u : ~0u << (top_bit + 1);
    const int last = (__popc(cut.mask ^ start_mask) + 7) / 8 - 1;
    const int b0 = phist[(last & 1) * 256 + bcast[0]];
    cut.need -= min(b0, cut.need);
  }
  const int kept = ordered_compact<kT, 4>(
      cnt, cut,
      [&](int64_t i, uint32_t* uu, int32_t* pp) { return *uu = cu[i], *pp = cp[i], true; },
      [&](int dst, uint32_t uu, int32_t pp) { cu[dst] = uu, cp[dst] = pp; }, scan, sync);
  stamp(kTlMergeCut);
  // The two parts fill the k slots exactly (an exact cut of more than k keys keeps k).
  const int base = rank == 0 ? 0 : p.topk - kept;
  for (int i = tid; i < kept; i += kT) out[base + i] = cp[i];
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    sm90_flat_topk_kernel(const __grid_constant__ CUtensorMap map_q,
                          const __grid_constant__ CUtensorMap map_k,
                          const __grid_constant__ CUtensorMap map_scale, const FlatParams p) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  constexpr int kNQ = Cfg::kNQ, kBlockKV = Cfg::kBlockKV, kQRows = Cfg::kQRows;
  constexpr int kQS = Cfg::kQStages, kKS = Cfg::kKVStages, kES = Cfg::kEpiStages;

  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // Align by pointer arithmetic on the __shared__ array: a round trip through an integer loses the
  // address space and every access becomes a generic LD.E/ST.E (run 2: the select warpgroup's
  // loads and the epilogue's weight reads were all generic).
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* q_smem = smem + Cfg::kOffQ;    // [kQS][atoms][kQRows][128 B]
  uint8_t* kv_smem = smem + Cfg::kOffKV;  // [kKS][atoms][kBlockKV][128 B]
  float* scale_smem = reinterpret_cast<float*>(smem + Cfg::kOffScale);      // [kKS][kBlockKV]
  float* w_smem = reinterpret_cast<float*>(smem + Cfg::kOffW);              // [kQS][kWStride]
  float* epi_smem = reinterpret_cast<float*>(smem + Cfg::kOffEpi);          // [kES][kNQ][kBlockKV]
  uint32_t* cand_u = reinterpret_cast<uint32_t*>(smem + Cfg::kOffCandU);    // [kNQ][kCap]
  int32_t* cand_pos = reinterpret_cast<int32_t*>(smem + Cfg::kOffCandPos);  // [kNQ][kCap]
  int* hist = reinterpret_cast<int*>(smem + Cfg::kOffHist);
  int* scan = reinterpret_cast<int*>(smem + Cfg::kOffScan);
  int* bcast = reinterpret_cast<int*>(smem + Cfg::kOffBcast);
  int* append = reinterpret_cast<int*>(smem + Cfg::kOffAppend);  // [2][kNQ][words][4]
  int* tail = reinterpret_cast<int*>(smem + Cfg::kOffTail);  // kWideTail: the last item's state
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Cfg::kOffBar);
  // Measurement: fire-and-forget global reductions (no registers held across the loops).
  const auto prof_add = [&](int slot, unsigned delta) {
    atomicAdd(p.prof + slot, (unsigned long long)delta);
  };
  uint64_t* full_q = bars;
  uint64_t* empty_q = full_q + kQS;
  uint64_t* full_kv = empty_q + kQS;
  uint64_t* empty_kv = full_kv + kKS;
  uint64_t* full_epi = empty_kv + kKS;
  uint64_t* empty_epi = full_epi + kES;

  const int wg = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;
  constexpr int kMathThreads = Cfg::kMathWG * 128;

  // A merge kernel launched after this one as a programmatic dependent may start now: it waits
  // for this grid's completion itself (griddepcontrol.wait).
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if constexpr (Cfg::kEarlyPrefetch) {
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
      for (int i = lane; i < kQRows; i += 32) {
        const int64_t r = int64_t(tile) * p.next_n + i / Cfg::kHeads;
        if (r < p.row_end) prefetch_l1(p.w + r * Cfg::kHeads + i % Cfg::kHeads);
      }
    }
  }
  if (threadIdx.x == 0) {
    for (int i = 0; i < kQS; ++i) mbar_init(&full_q[i], 32), mbar_init(&empty_q[i], kMathThreads);
    for (int i = 0; i < kKS; ++i) mbar_init(&full_kv[i], 1), mbar_init(&empty_kv[i], kMathThreads);
    for (int i = 0; i < kES; ++i)
      mbar_init(&full_epi[i], kMathThreads), mbar_init(&empty_epi[i], Cfg::kSelThreads);
    if constexpr (Cfg::kPairTail) mbar_init(&empty_epi[kES], 1), mbar_init(&empty_epi[kES + 1], 1);
    for (int i = 0; i < Cfg::kAppendBytes / 4; ++i) append[i] = 0;  // unused warp slots read 0
    fence_barrier_init();
  }
  __syncthreads();

  const int num_items = p.num_tiles * p.splits;
  // Helper CTAs (kPairTail with p.helpers, after the pairs): the requests blockIdx.x - num_items,
  // + helpers, ... as items num_items + request.
  const bool helper_cta = Cfg::kPairTail && p.helpers > 0 && int(blockIdx.x) >= num_items;
  const int item_end = helper_cta ? num_items + p.num_tiles : num_items;
  const int item_step = helper_cta ? p.helpers : int(gridDim.x);
  // The CTA's last item (items are strided over the CTAs); valid when blockIdx.x < num_items.
  const int last_item =
      int(blockIdx.x) + (num_items - 1 - int(blockIdx.x)) / int(gridDim.x) * int(gridDim.x);

  if (threadIdx.x >= kMathThreads) {
    // kSplitRegs: the producer warp and the select warps fill two warpgroups (setmaxnreg is
    // executed by whole warpgroups), so they release their registers here, in one instruction.
    if constexpr (Cfg::kSplitRegs) setmaxnreg_dec<Cfg::kSelectRegs>();
    if (threadIdx.x >= Cfg::kProdBase && threadIdx.x < Cfg::kProdBase + (Cfg::kSlim ? 32 : 128)) {
      // ------------------------------------------------------------------ producer
      if constexpr (!Cfg::kSlim) setmaxnreg_dec<Cfg::kProducerRegs>();
      if (threadIdx.x % 128 >= 32) return;
      if (lane == 0 && !Cfg::kEarlyPrefetch) {  // (kEarlyPrefetch: done at the start)
        tma_prefetch_desc(&map_q);
        tma_prefetch_desc(&map_k);
        if (!Cfg::kPaged && p.has_scale) tma_prefetch_desc(&map_scale);
      }
      uint32_t q_iter = 0, kv_iter = 0;
      const bool prof = Cfg::kProf && p.prof && lane == 0;
      const unsigned c_start = clock();
      long long clk0 = 0;
      uint64_t ns0 = 0;
      if (prof) clk0 = clock64(), ns0 = globaltimer_ns();
      timeline_stamp<Cfg>(p, lane == 0, kTlStart);
      timeline_stamp<Cfg>(p, lane == 0, kTlSmid, sm_id() + 1);
      for (int item = blockIdx.x; item < item_end; item += item_step, ++q_iter) {
        const Item<Cfg> it(p, item);
        if (Cfg::kPairTail && helper_cta && item + item_step < item_end) {
          // A helper's items are short (58 pages at b64 x 128K): the next one's w and first page
          // ids are asked for now, so that its start (length -> w -> q copy -> page ids -> first
          // key copy) finds them in L1 rather than in DRAM. (The page ids of a full-length
          // request's segment: the next length is not waited for here.)
          const int nt = it.tile + item_step;
          const int pg = p.pair_pages(p.max_pages) + 32 * (lane & 1);
          if (lane < 2) {
            if (pg < p.max_pages) prefetch_l1(p.block_table + int64_t(nt) * p.max_pages + pg);
            prefetch_l1(p.w + int64_t(nt) * p.next_n * Cfg::kHeads + 32 * lane);
          }
        }
        const int qs = q_iter % kQS;
        unsigned c0 = clock();
        mbar_wait(&empty_q[qs], ((q_iter / kQS) & 1) ^ 1);
        if (prof) prof_add(kProfProdWaitQ, clock() - c0);
        for (int i = lane; i < kQRows; i += 32) {
          const int64_t r = it.row0 + i / Cfg::kHeads;
          // (kWPerm: column i = 8j + 2r + e at r * 36 + 2j + e)
          const int at = Cfg::kWPerm ? (i % 8) / 2 * 36 + i / 8 * 2 + i % 2 : i;
          w_smem[qs * Cfg::kWStride + at] =
              r < p.row_end ? p.w[r * Cfg::kHeads + i % Cfg::kHeads] : 0.0f;
        }
        if (lane == 0) {
          mbar_arrive_expect_tx(&full_q[qs], Cfg::kQBytes);
#pragma unroll
          for (int a = 0; a < Cfg::kAtoms; ++a) {
            tma_load_2d(q_smem + qs * Cfg::kQBytes + a * kQRows * 128, &map_q, &full_q[qs], a * 64,
                        int32_t(it.row0 * Cfg::kHeads));
          }
        } else {
          mbar_arrive(&full_q[qs]);
        }
        if (!Cfg::kPaged && lane != 0) continue;
        // decode: page ids of 32 consecutive pages (chunk `chunk` of the item's pages) and of the
        // next 32, one per lane: one coalesced load per 32 pages instead of dependent loads per
        // stage in front of the copies (run 1: the producer's serial block_table reads capped each
        // SM at ~20 GB/s); a stage's pages may straddle two chunks (three pages per stage).
        constexpr int kPPS = Cfg::kPagesPerStage;
        int32_t ids0 = 0, ids1 = 0;
        int chunk = -2;
        const auto load_ids = [&](int c) {
          const int pg = it.page0 + c * 32 + lane;
          return pg < it.page1 ? p.block_table[int64_t(it.tile) * p.max_pages + pg] : 0;
        };
        for (int blk = 0; blk < it.nblocks; ++blk, ++kv_iter) {
          int page_id[kPPS];
          if constexpr (Cfg::kPaged) {
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
            if (lane != 0) continue;
          }
          const int s = kv_iter % kKS;
          c0 = clock();
          mbar_wait<Cfg::kSleepProducer>(&empty_kv[s], ((kv_iter / kKS) & 1) ^ 1);
          if (prof) prof_add(kProfProdWaitKV, clock() - c0);
          uint8_t* dst = kv_smem + s * Cfg::kKVBytes;
          if constexpr (!Cfg::kPaged) {
            const int32_t y = int32_t(it.key0 + int64_t(blk) * kBlockKV);
            mbar_arrive_expect_tx(&full_kv[s], Cfg::kKVBytes + (p.has_scale ? kBlockKV * 4 : 0));
#pragma unroll
            for (int a = 0; a < Cfg::kAtoms; ++a)
              tma_load_2d(dst + a * kBlockKV * 128, &map_k, &full_kv[s], a * 64, y);
            if (p.has_scale) tma_load_1d(scale_smem + s * kBlockKV, &map_scale, &full_kv[s], y);
          } else {
            const int pg = it.page0 + blk * kPPS;
            const int valid = min(kPPS, it.page1 - pg);
            mbar_arrive_expect_tx(&full_kv[s], valid * (64 * 128 + 64 * 4));
            for (int i = 0; i < valid; ++i) {
              const int page = page_id[i];
              tma_load_3d(dst + i * 64 * 128, &map_k, &full_kv[s], 0, 0, page);
              bulk_load(scale_smem + s * kBlockKV + i * 64,
                        p.kv_cache + int64_t(page) * (64 * 132) + 64 * 128, 64 * 4, &full_kv[s]);
            }
          }
        }
      }
      timeline_stamp<Cfg>(p, lane == 0, kTlIssued);
      if (prof) {
        prof_add(kProfProdTotal, clock() - c_start);
        atomicAdd(p.prof + kProfClkCycles, (unsigned long long)(clock64() - clk0));
        atomicAdd(p.prof + kProfClkNs, (unsigned long long)(globaltimer_ns() - ns0));
      }
    } else if (threadIdx.x >= Cfg::kSelBase && threadIdx.x < Cfg::kSelBase + Cfg::kSelThreads) {
      // ------------------------------------------------------------------ select warps
      if constexpr (!Cfg::kSlim) setmaxnreg_dec<Cfg::kSelectRegs>();
      constexpr int kST = Cfg::kSelThreads;
      const int t = threadIdx.x - Cfg::kSelBase, ew = t / 32;
      auto sync = [] { named_barrier(1, Cfg::kSelThreads); };
      // Radix select over a candidate list whose keys all lie in [thr, max]: the digits start at
      // the highest bit where thr and the list's maximum differ (the bits above are common), which
      // saves the passes over the shared leading bits. max_passes 4: exact; 1: one digit.
      // mx: the largest key this thread appended to the list (the list's maximum survives every
      // cut, so the running maxima of the append stay valid; run 5 scanned the list for it
      // instead).
      const auto anchored_cut = [&](int n, const uint32_t* cu, uint32_t mx, uint32_t thr_q,
                                    int max_passes, int stop_kept) {
        mx = __reduce_max_sync(0xFFFFFFFFu, mx);
        // (scan[8, 8 + warps): ordered_compact writes scan only after the passes' barriers)
        if (lane == 0) scan[8 + ew] = int(mx);
        sync();
#pragma unroll
        for (int w = 0; w < Cfg::kSelWarps; ++w) mx = max(mx, uint32_t(scan[8 + w]));
        const uint32_t diff = mx ^ thr_q;
        const int top_bit = diff ? 31 - __clz(diff) : 0;
        return radix_select<kST>(
            n, p.topk, [&](int64_t i, uint32_t* uu) { return *uu = cu[i], true; }, hist, bcast,
            sync, mx, top_bit, max_passes, stop_kept, Cfg::kCutAggregate);
      };
      // Keeps the entries of a list of n that a cut keeps, in order (the new length).
      const auto compact = [&](int n, const RadixCut& cut, uint32_t* cu, int32_t* cp) {
        return ordered_compact<kST, 4>(
            n, cut,
            [&](int64_t i, uint32_t* uu, int32_t* pp) { return *uu = cu[i], *pp = cp[i], true; },
            [&](int dst, uint32_t uu, int32_t pp) { cu[dst] = uu, cp[dst] = pp; }, scan, sync);
      };
      uint32_t epi_iter = 0;
      int parity = 0;
      const bool prof = Cfg::kProf && p.prof && t == 0;
      const unsigned c_start = clock();
      for (int item = blockIdx.x; item < item_end; item += item_step) {
        if (prof) prof_add(kProfItems, 1);
        const Item<Cfg> it(p, item);
        // Per query: visible key range inside this item, and the position base.
        int32_t vis_lo[kNQ], vis_hi[kNQ], rel[kNQ];  // key rows < 2^31
        int cnt[kNQ];
        uint32_t thr[kNQ], umax[kNQ];
        bool early_done = false;  // kEarlyCut: the item's exact cut before its end is done
#pragma unroll
        for (int q = 0; q < kNQ; ++q) {
          cnt[q] = 0;
          umax[q] = 0;
          thr[q] = 0;  // every real score has a key above 0
          vis_lo[q] = 0, vis_hi[q] = 0, rel[q] = 0;
          const int64_t r = it.row0 + q;
          if constexpr (!Cfg::kPaged) {
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
          unsigned c0 = clock();
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
                mbar_wait<Cfg::kSleepSelect>(&full_epi[es], (epi_iter / kES) & 1);
                const float* ebuf = epi_smem + es * kNQ * kBlockKV + t;
#pragma unroll
                for (int q = 0; q < kNQ; ++q)
#pragma unroll
                  for (int i = 0; i < kPer; ++i) v[q][kPer * j + i] = ebuf[q * kBlockKV + kST * i];
                mbar_arrive(&empty_epi[es]);
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
                mbar_wait<Cfg::kSleepSelect>(&full_epi[e % kES], (e / kES) & 1);
                ++got;
              }
            }
#pragma unroll
            for (int hh = 0; hh < kH; ++hh) {
              const int kk = hh * kST + t, j = kk / kBlockKV;
              const bool h = blk + j < it.nblocks;
              if (h) have |= 1u << hh;
              const float* ebuf =
                  epi_smem + ((epi_iter + j) % kES) * kNQ * kBlockKV + kk % kBlockKV;
#pragma unroll
              for (int q = 0; q < kNQ; ++q) v[q][hh] = h ? ebuf[q * kBlockKV] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < kSub; ++j)
              if (j < got) mbar_arrive(&empty_epi[(epi_iter + j) % kES]);
            epi_iter += got;
          }
          if (prof) prof_add(kProfSelWaitEpi, clock() - c0), c0 = clock();
          if (Cfg::kProf && p.debug_mode == 1) continue;
          // Slice hh of this step covers keys base + kST * hh.
          const int32_t base = int32_t(it.key0) + blk * kBlockKV + t;
          if constexpr (Cfg::kWriteScores) {
#pragma unroll
            for (int q = 0; q < kNQ; ++q)
#pragma unroll
              for (int hh = 0; hh < kH; ++hh) {
                const int32_t key = base + kST * hh;
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
            int* ap = append + parity * kNQ * kW * kWS;  // [q][word][warp slot]
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
                const int32_t key = base + kST * hh;
                u[q][hh] = order_key(v[q][hh]);
                pass[q][hh] =
                    ((have >> hh) & 1) && key >= vis_lo[q] && key < vis_hi[q] && u[q][hh] > thr[q];
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
                mine[w] = (ew > 0 ? c.x : 0) + (ew > 1 ? c.y : 0) + (ew > 2 ? c.z : 0) +
                          (ew > 3 ? c.w : 0);
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
                  cand_pos[q * Cfg::kCap + dst] = base + kST * hh - rel[q];
                }
                before += (total[hh / 4] >> (8 * (hh % 4))) & 0xFF;
              }
              cnt[q] += before;
              if (prof) prof_add(kProfSelAppended, before);
            }
            parity ^= 1;
            if (prof) prof_add(kProfSelAppend, clock() - c0), c0 = clock();
            // kEarlyCut: once, when at most kEarlyStages stages of the item are left.
            const bool early = Cfg::kEarlyCut && !early_done &&
                               (p.merge_count != nullptr || p.pair_tail) && p.splits > 1 &&
                               blk + kSub < it.nblocks &&
                               blk + kSub + Cfg::kEarlyStages >= it.nblocks;
#pragma unroll
            for (int q = 0; q < kNQ; ++q) {
              const bool early_q = early && cnt[q] > p.topk;
              if (cnt[q] > Cfg::kCap - kSub * kBlockKV || early_q) {
                if (prof) prof_add(kProfSelCompactions, 1);
                sync();
                uint32_t* cu = cand_u + q * Cfg::kCap;
                int32_t* cp = cand_pos + q * Cfg::kCap;
                // Anchored digit passes until the bucket of the k-th key is small (at most 1/8 of
                // the slack above k kept with it; run 18: one pass from an anchor at 0 resolves
                // only sign and exponent, and the lists refilled 5.3 times per item at 128K), then
                // every bucket below it is dropped and it is kept whole (a lower-bound cut; the
                // final cut is exact). Cut whole only when it stays within half the list (else many
                // equal scores: an exact cut, ties by position).
                constexpr int kRoom = Cfg::kCap - kSub * kBlockKV;
                RadixCut cut = anchored_cut(cnt[q], cu, umax[q], thr[q], 4,
                                            early_q ? -1 : p.topk + (kRoom - p.topk) / 8);
                if (!early_q && cut.kept <= (p.topk + kRoom) / 2) cut.need = 0x7FFFFFFF;
                cnt[q] = compact(cnt[q], cut, cu, cp);
                thr[q] = max(thr[q], cut_threshold(cut));
              }
            }
            if (early) early_done = true;
            if (prof) prof_add(kProfSelCompact, clock() - c0);
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
            timeline_stamp<Cfg>(p, t == 0, kTlConsumed);
            continue;
          }
        }
        timeline_stamp<Cfg>(p, t == 0, kTlConsumed);
        if constexpr (!Cfg::kWriteScores) {
          const unsigned c0 = clock();
          if constexpr (!Cfg::kPaged) {
            // Prefill: each query's list cut to exactly k, then the sorted output or the partial
            // lists for the merge kernel (as finish_item without the merge; kept inline: through
            // finish_item ptxas spills 16 bytes more in the prefill's select code).
            sync();
#pragma unroll
            for (int q = 0; q < kNQ; ++q) {
              const int64_t r = it.row0 + q;
              if (r >= p.row_end) continue;
              uint32_t* cu = cand_u + q * Cfg::kCap;
              int32_t* cp = cand_pos + q * Cfg::kCap;
              if (cnt[q] > p.topk) {
                const RadixCut cut = anchored_cut(cnt[q], cu, umax[q], thr[q], 4, -1);
                cnt[q] = compact(cnt[q], cut, cu, cp);
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
          } else if (Cfg::kWideTail && item == last_item) {
            // The CTA's last item ends after the roles, with every thread (below): hand over the
            // lists' state (the lists themselves stay in shared memory).
#pragma unroll
            for (int q = 0; q < kNQ; ++q) {
              const uint32_t m = __reduce_max_sync(0xFFFFFFFFu, umax[q]);
              if (lane == 0) tail[2 * kNQ + q * Cfg::kSelWarps + ew] = int(m);
              if (t == 0) tail[q] = cnt[q], tail[kNQ + q] = int(thr[q]);
            }
          } else {
            finish_item<Cfg, kST>(p, it, cnt, umax, thr, cand_u, cand_pos, hist, scan, bcast, sync,
                                  t);
          }
          if (prof) prof_add(kProfSelFinal, clock() - c0);
        }
      }
      if (prof) prof_add(kProfSelTotal, clock() - c_start);
    }
  } else {
    // ------------------------------------------------------------------ math warpgroups
    if constexpr (!Cfg::kSlim || Cfg::kSplitRegs) setmaxnreg_inc<Cfg::kMathRegs>();
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
    // Built once instead of per wgmma (run 10: ~60 integer instructions per stage and warp).
    const uint64_t a_desc0 = desc_k_major_sw128(kv_smem + g * 64 * 128);
    const uint64_t b_desc0 = desc_k_major_sw128(q_smem);
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
        const float* wr = wq + (lane % 4) * 36;
#pragma unroll
        for (int m = 0; m < kBankN / 16; ++m) {
          // (kWRegs: the same 4 floats, loaded once per item)
          float4 wv;
          if constexpr (Cfg::kWRegs)
            wv = make_float4(wreg[4 * m], wreg[4 * m + 1], wreg[4 * m + 2], wreg[4 * m + 3]);
          else
            wv = *reinterpret_cast<const float4*>(wr + 4 * m);
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

    uint32_t q_iter = 0, kv_iter = 0, epi_iter = 0;
    for (int item = blockIdx.x; item < item_end; item += item_step, ++q_iter) {
      const Item<Cfg> it(p, item);
      const int qs = q_iter % kQS;
      mbar_wait(&full_q[qs], (q_iter / kQS) & 1);
      const float* wq = w_smem + qs * Cfg::kWStride;
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
        // different issue sites are pending at a control-flow merge (C7514); the other three
        // warpgroups' wgmma cover this warpgroup's last epilogue instead.
        const int s = kv_iter % kKS;
        mbar_wait<Cfg::kSleepMath>(&full_kv[s], (kv_iter / kKS) & 1);
        if constexpr (Cfg::kStreamOnly) {
          mbar_arrive(&empty_kv[s]);
          const int es = epi_iter % kES;
          mbar_wait(&empty_epi[es], ((epi_iter / kES) & 1) ^ 1);
          mbar_arrive(&full_epi[es]);
          continue;
        }
        float scale0 = 1.0f, scale1 = 1.0f;
        const auto load_scales = [&] {
          if (p.has_scale) {
            scale0 = scale_smem[s * kBlockKV + g * 64 + row_in_tile];
            scale1 = scale_smem[s * kBlockKV + g * 64 + row_in_tile + 8];
          }
        };
        // kLateScales: loaded once the wgmma is done (before the stage is released), so that they
        // do not hold two registers across it (ptxas: with the scales loaded here the split
        // kernel spills one register per stage, an STL/LDL around the reduce-scatter).
        if constexpr (!Cfg::kLateScales) load_scales();
        float sums[kNQ][2], alt[kNQ][2];
#pragma unroll
        for (int q = 0; q < kNQ; ++q) sums[q][0] = sums[q][1] = alt[q][0] = alt[q][1] = 0.0f;
        if constexpr (Cfg::kWRegs && Cfg::kBanks == 2) {
          // Bank b = query b, columns 8jj + 2r + {0, 1} of the bank = column group j = 8b + jj of
          // the N = 128 layout: the same FFMA chains in the same order as the one-bank kernels,
          // so the scores are bitwise the same.
#pragma unroll
          for (int b = 0; b < 2; ++b) {
            issue(acc0, s, qs, b);
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < kR; ++i) fence_operand(acc0[i]);
            if (b == 1) mbar_arrive(&empty_kv[s]);
#pragma unroll
            for (int jj = 0; jj < 8; ++jj) {
              const int j = 8 * b + jj;
              const float wx = wreg[2 * j], wy = wreg[2 * j + 1];
              sums[b][0] = fmaf(wx, fmaxf(acc0[4 * jj + 0], 0.0f), sums[b][0]);
              alt[b][0] = fmaf(wy, fmaxf(acc0[4 * jj + 1], 0.0f), alt[b][0]);
              sums[b][1] = fmaf(wx, fmaxf(acc0[4 * jj + 2], 0.0f), sums[b][1]);
              alt[b][1] = fmaf(wy, fmaxf(acc0[4 * jj + 3], 0.0f), alt[b][1]);
            }
#pragma unroll
            for (int q = 0; q < kNQ; ++q) {
              fence_operand(sums[q][0]), fence_operand(sums[q][1]);
              fence_operand(alt[q][0]), fence_operand(alt[q][1]);
            }
          }
        } else {
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
            if (last) mbar_arrive(&empty_kv[s]);
            accumulate(acc0, wq, b, sums, alt);
          } else {
#pragma unroll
            for (int i = 0; i < kR; ++i) fence_operand(acc1[i]);
            if (last) mbar_arrive(&empty_kv[s]);
            accumulate(acc1, wq, b, sums, alt);
          }
          // Pin this bank's epilogue before the next wgmma wait: without it ptxas sank the bank-0
          // FMNMX/FFMA below the final wait (run 2 SASS) and nothing overlapped the last bank.
#pragma unroll
          for (int q = 0; q < kNQ; ++q) {
            fence_operand(sums[q][0]), fence_operand(sums[q][1]);
            fence_operand(alt[q][0]), fence_operand(alt[q][1]);
          }
        }
        }  // kWRegs
#pragma unroll
        for (int q = 0; q < kNQ; ++q) sums[q][0] += alt[q][0], sums[q][1] += alt[q][1];
        // The 4 lanes that hold one key's columns finish the head sum.
        const int es = epi_iter % kES;
        mbar_wait(&empty_epi[es], ((epi_iter / kES) & 1) ^ 1);
        float* ebuf = epi_smem + es * kNQ * kBlockKV + g * 64 + row_in_tile;
        if constexpr (kNQ == 2) {
          // Reduce-scatter of the 4 values (q, h) over the 4 lanes: lane r ends with value r, the
          // same sum tree ((l0 + l1) + (l2 + l3), up to the order of each pair) as a full
          // butterfly, in 3 shuffles instead of 8, and every lane stores one value.
          const int r = lane % 4;
          const bool b0 = r & 1, b1 = r & 2;
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
        mbar_arrive(&full_epi[es]);
      }
      mbar_arrive(&empty_q[qs]);
    }
  }
  if constexpr (Cfg::kWideTail) {
    // The CTA's last item ends here with all 640 threads: the math, producer and select warps
    // are done, so its final cut and the merge of its tile run on 20 warps instead of the seven
    // select warps (the end of the last item is the one part of a decode no stream overlaps).
    __syncthreads();
    if (blockIdx.x < num_items) {
      const unsigned c0 = clock();
      const Item<Cfg> it(p, last_item);
      int cnt[kNQ];
      uint32_t umax[kNQ], thr[kNQ];
#pragma unroll
      for (int q = 0; q < kNQ; ++q) {
        cnt[q] = tail[q], thr[q] = uint32_t(tail[kNQ + q]), umax[q] = 0;
#pragma unroll
        for (int w = 0; w < Cfg::kSelWarps; ++w)
          umax[q] = max(umax[q], uint32_t(tail[2 * kNQ + q * Cfg::kSelWarps + w]));
      }
      timeline_stamp<Cfg>(p, threadIdx.x == 0, kTlTail);
      if (Cfg::kPairTail && p.pair_tail) {
        if (it.appends_segment(p)) {
          append_segment<Cfg>(p, it, cnt[0], umax[0], thr[0], cand_u, cand_pos, hist, scan, bcast);
          timeline_stamp<Cfg>(p, threadIdx.x == 0, kTlSegment);
        }
        pair_finish<Cfg>(p, it, cnt[0], umax[0], thr[0], cand_u, cand_pos, hist, scan, bcast,
                         tail + Cfg::kPeerOff, reinterpret_cast<int*>(epi_smem),
                         empty_epi + kES);
      } else {
        finish_item<Cfg, Cfg::kThreads>(p, it, cnt, umax, thr, cand_u, cand_pos, hist, scan,
                                        bcast, [] { __syncthreads(); }, int(threadIdx.x));
      }
      timeline_stamp<Cfg>(p, threadIdx.x == 0, kTlEnd);
      if (Cfg::kProf && p.prof && threadIdx.x == Cfg::kSelBase)
        atomicAdd(p.prof + kProfSelFinal, (unsigned long long)(unsigned(clock()) - c0));
    }
  }
#endif
}

}  // namespace hisa::cuda::sm90
