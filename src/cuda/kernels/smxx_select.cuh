// Exact, deterministic block-level top-k building blocks (any sm_70+ GPU).
//
// The selection works on 32-bit order keys (order_key maps fp32 scores to uint32 so that unsigned
// order equals float order, with -0 == +0). Entries live in "slots" whose order is the position
// order, so ties broken toward the lower position are ties broken toward the lower slot:
//   1. radix_select finds the k-th largest key by 8-bit digits (at most 4 passes, stopping early
//      once the bucket that holds the k-th key holds exactly as many keys as are still needed);
//   2. ordered_compact walks the slots in order and keeps every key above the cut plus the first
//      `need` keys equal to it, writing them densely in slot order (so the output is sorted by
//      position and bitwise reproducible).
// Both are cooperative over kThreads threads that share `sync` (a __syncthreads or named barrier).
#pragma once

#include <cstdint>

namespace hisa::cuda {

__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t b = __float_as_uint(f);
  if (b == 0x80000000u) b = 0;  // -0.0 compares equal to +0.0: same key
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The cut found by radix_select: a slot is kept when (u & mask) > prefix, or when
// (u & mask) == prefix and fewer than `need` earlier slots were equal to the prefix.
struct RadixCut {
  uint32_t prefix;
  uint32_t mask;
  int need;
  int kept;  // slots the cut keeps if the whole last bucket is kept (the above ones + the bucket)
};

// Lowest key a later (higher-position) entry must exceed to enter a full top-k set cut by `cut`:
// exact when the cut resolved all 32 bits, a lower bound otherwise (never rejects a winner).
__device__ __forceinline__ uint32_t cut_threshold(const RadixCut& cut) {
  if (cut.mask == 0xFFFFFFFFu) return cut.prefix;
  return cut.prefix ? cut.prefix - 1 : 0;
}

// Inclusive prefix sum of `v` over the lanes of a (full) warp; lane: this thread's lane.
__device__ __forceinline__ int warp_inclusive_sum(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int x = __shfl_up_sync(0xFFFFFFFFu, v, o);
    if (lane >= o) v += x;
  }
  return v;
}

// Exclusive prefix sum of `v` over the kThreads threads (thread order), and the block's `total`.
// sc: kThreads / 32 ints of shared memory, free until the barrier `sync`, which the call makes
// (between a call's reads of sc and the next call's writes, the caller's barrier).
template <int kThreads, class Sync>
__device__ __forceinline__ int block_exclusive_sum(int v, int lane, int warp, int* sc, Sync sync,
                                                   int& total) {
  const int incl = warp_inclusive_sum(v, lane);
  if (lane == 31) sc[warp] = incl;
  sync();
  int before = 0;
  total = 0;
#pragma unroll 4
  for (int w = 0; w < kThreads / 32; ++w) {
    const int x = sc[w];
    before += w < warp ? x : 0;
    total += x;
  }
  return before + incl - v;
}

// A single CTA's cut: nothing to combine. A Peer adds a partner's digit counts to each pass
// (the decode's 2-CTA cluster cuts the union of two lists: PairPeer in sm90_fused_topk.cuh):
// exchange(hist, pass) is called by every thread after the pass's counts are complete and must
// leave the partner's counts of that pass readable through other(bin, pass) in both CTAs.
struct NoPeer {
  __device__ __forceinline__ void exchange(const int*, int) const {}
  __device__ __forceinline__ int other(int, int) const { return 0; }
};

// get(i, &u) -> bool valid. Slots [0, n). hist: 256 ints; bcast: 4 ints (shared memory).
// When at most k slots are valid (or counted), every counted slot is kept (need = INT_MAX).
// kUnroll slots per thread and step, loaded before they are counted: several loads in flight
// (the merge reads its lists from L2; one load per step left each pass latency-bound).
//
// Anchored start (the fused kernel's candidate lists): when every valid key is known to share the
// bits above `top_bit` with `start_prefix` (keys lie between the list's threshold and its maximum),
// the first digit is bits [top_bit, top_bit - 7] instead of the top byte, which skips the passes
// over bits every key has in common. `max_passes` limits the passes (the result is then a partial
// cut: need counts within the bucket; `kept` says how many slots keeping the whole bucket keeps).
// `stop_kept` ends the passes early once keeping the whole bucket keeps at most that many slots
// (a lower-bound cut of a chosen tightness; -1: never). `aggregate` (a compile-time constant at
// the call sites): equal digits of a warp are counted with one atomic (__match_any_sync) rather
// than one each: worth it where a warp's keys share digits (the top byte of unanchored passes,
// lists of many equal scores), a loss on anchored passes over spread-out keys, where the MATCH
// sits in every key's dependent chain (the fused kernel's cuts: 24.6K -> 17.6K cycles without
// it).
template <int kThreads, int kUnroll = 4, class Get, class Sync, class Peer = NoPeer>
__device__ __forceinline__ RadixCut radix_select(int64_t n, int k, Get get, int* hist, int* bcast,
                                                 Sync sync, uint32_t start_prefix = 0u,
                                                 int top_bit = 31, int max_passes = 4,
                                                 int stop_kept = -1, bool aggregate = true,
                                                 Peer peer = Peer{}) {
  static_assert(kThreads % 32 == 0, "whole warps");
  const int tid = threadIdx.x % kThreads;
  const int lane = threadIdx.x % 32;
  const uint32_t start_mask = top_bit >= 31 ? 0u : ~0u << (top_bit + 1);
  RadixCut cut{start_prefix & start_mask, start_mask, k, 0};
#pragma unroll 1
  for (int pass = 0; pass < max_passes; ++pass) {
    const int top = top_bit - 8 * pass;  // highest bit of this pass's digit
    if (top < 0) break;
    const int shift = top >= 7 ? top - 7 : 0;  // the last digit may reach into bits already fixed
    for (int i = tid; i < 256; i += kThreads) hist[i] = 0;
    sync();
#pragma unroll 1
    for (int64_t base = 0; base < n; base += int64_t(kThreads) * kUnroll) {
      uint32_t u[kUnroll];
      bool ok[kUnroll];
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        const int64_t i = base + int64_t(j) * kThreads + tid;
        u[j] = 0;
        ok[j] = i < n && get(i, &u[j]);
      }
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        const int digit =
            ok[j] && (u[j] & cut.mask) == cut.prefix ? int((u[j] >> shift) & 0xFF) : 256;
        // Keys of a top-k set share their leading bits: aggregate equal digits of the warp first
        // so that 32 lanes do not serialise on one counter (256: not counted).
        if (aggregate) {
          const unsigned peers = __match_any_sync(0xFFFFFFFFu, digit);
          if (digit < 256 && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
        } else if (digit < 256) {
          atomicAdd(&hist[digit], 1);
        }
      }
    }
    sync();
    peer.exchange(hist, pass);
    if (tid < 32) {
      // Lane L owns bins 255 - 8L down to 248 - 8L: a scan over lanes walks keys from the top.
      int c[8], s = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int bin = 255 - 8 * lane - j;
        s += (c[j] = hist[bin] + peer.other(bin, pass));
      }
      const int incl = warp_inclusive_sum(s, lane);
      const int total = __shfl_sync(0xFFFFFFFFu, incl, 31);
      if (pass == 0 && total <= cut.need) {
        if (lane == 0) bcast[0] = -1, bcast[1] = total, bcast[2] = 0;
      } else {
        const unsigned hit = __ballot_sync(0xFFFFFFFFu, incl >= cut.need);
        const int first = __ffs(hit) - 1;
        if (lane == first) {
          int run = incl - s;
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            if (run + c[j] >= cut.need) {
              bcast[0] = 255 - 8 * lane - j, bcast[1] = run, bcast[2] = c[j];
              break;
            }
            run += c[j];
          }
        }
      }
    }
    sync();
    const int digit = bcast[0], above = bcast[1], bucket = bcast[2];
    // All counted keys fit: keep them (and only them: with an anchored start, keys that do not
    // share the start prefix were not counted and lie below it).
    if (digit < 0) return RadixCut{cut.prefix, cut.mask, 0x7FFFFFFF, above};
    cut.kept = (k - cut.need) + above + bucket;
    cut.need -= above;
    cut.prefix |= uint32_t(digit) << shift;
    cut.mask |= 0xFFu << shift;
    if (bucket == cut.need || shift == 0 || cut.kept <= stop_kept) break;
  }
  return cut;
}

// Keeps the slots selected by `cut` in slot order. get(i, &u, &pos) -> bool valid;
// put(dst, u, pos) stores kept slot number dst. In-place compaction (put writing the slots get
// reads) is safe: a chunk is read completely before any of it is written, and dst <= i.
// scan: 2 * (kThreads / 32) ints of shared memory. Returns the number kept.
template <int kThreads, int kItems, class Get, class Put, class Sync>
__device__ __forceinline__ int ordered_compact(int64_t n, const RadixCut& cut, Get get, Put put,
                                               int* scan, Sync sync) {
  constexpr int kWarps = kThreads / 32;
  const int tid = threadIdx.x % kThreads;
  const int lane = threadIdx.x % 32, warp = tid / 32;
  int total_sure = 0, total_tie = 0, parity = 0;
#pragma unroll 1
  for (int64_t base = 0; base < n; base += int64_t(kThreads) * kItems, parity ^= 1) {
    uint32_t u[kItems];
    int32_t pos[kItems];
    int flag[kItems];  // 0 drop, 1 sure, 2 tie
    int mine = 0;      // sure count in the low 16 bits, tie count in the high 16 bits
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int64_t i = base + int64_t(tid) * kItems + j;
      flag[j] = 0;
      if (i < n && get(i, &u[j], &pos[j])) {
        const uint32_t hi = u[j] & cut.mask;
        flag[j] = hi > cut.prefix ? 1 : (hi == cut.prefix ? 2 : 0);
      }
      mine += flag[j] == 1 ? 1 : (flag[j] == 2 ? 0x10000 : 0);
    }
    int chunk;
    const int before =
        block_exclusive_sum<kThreads>(mine, lane, warp, scan + parity * kWarps, sync, chunk);
    int sure_before = total_sure + (before & 0xFFFF);
    int tie_before = total_tie + (before >> 16);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (flag[j] == 1 || (flag[j] == 2 && tie_before < cut.need)) {
        put(sure_before + min(tie_before, cut.need), u[j], pos[j]);
      }
      sure_before += flag[j] == 1;
      tie_before += flag[j] == 2;
    }
    total_sure += chunk & 0xFFFF;
    total_tie += chunk >> 16;
  }
  sync();
  return total_sure + min(total_tie, cut.need);
}

// ---- The anchored cut: every caller's cut of a candidate list ----
//
// A candidate list is n entries in shared memory, keys cu[i] (order keys) with positions cp[i], in
// position order. When every key lies in [lo, mx] (lo: the list's threshold or smallest key, mx:
// its largest key), the radix digits start at the highest bit where lo and mx differ: the bits
// above are common to all keys, so the passes over them are skipped (at 128K a list's keys share
// the sign, the exponent and more).

// The largest of every thread's `mx` over kT threads (whole warps; warp: the caller's warp among
// them; the barrier `sync` is made). scratch: kT / 32 ints that nothing else uses until the
// caller's next barrier.
template <int kT, class Sync>
__device__ __forceinline__ uint32_t block_max(uint32_t mx, int warp, int* scratch, Sync sync) {
  mx = __reduce_max_sync(0xFFFFFFFFu, mx);
  if (threadIdx.x % 32 == 0) scratch[warp] = int(mx);
  sync();
#pragma unroll
  for (int w = 0; w < kT / 32; ++w) mx = max(mx, uint32_t(scratch[w]));
  return mx;
}

// radix_select anchored at [lo, mx] over `get` (see radix_select for max_passes, stop_kept and
// the Peer). Plain shared-memory atomics: anchored digits spread a list over many bins.
template <int kT, class Get, class Sync, class Peer = NoPeer>
__device__ __forceinline__ RadixCut anchored_select(int64_t n, int k, Get get, uint32_t lo,
                                                    uint32_t mx, int* hist, int* bcast, Sync sync,
                                                    int max_passes = 4, int stop_kept = -1,
                                                    Peer peer = Peer{}) {
  const uint32_t diff = mx ^ lo;
  const int top_bit = diff ? 31 - __clz(diff) : 0;
  return radix_select<kT>(n, k, get, hist, bcast, sync, mx, top_bit, max_passes, stop_kept, false,
                          peer);
}

// The list's cut: anchored_select over cu[0, n).
template <int kT, class Sync, class Peer = NoPeer>
__device__ __forceinline__ RadixCut select_list(int n, int k, const uint32_t* cu, uint32_t lo,
                                                uint32_t mx, int* hist, int* bcast, Sync sync,
                                                int max_passes = 4, int stop_kept = -1,
                                                Peer peer = Peer{}) {
  return anchored_select<kT>(
      n, k, [&](int64_t i, uint32_t* u) { return *u = cu[i], true; }, lo, mx, hist, bcast, sync,
      max_passes, stop_kept, peer);
}

// Keeps the list entries the cut keeps, in place and in order; returns the new length.
// scan: 2 * kT / 32 ints.
template <int kT, class Sync>
__device__ __forceinline__ int compact_list(int n, const RadixCut& cut, uint32_t* cu, int32_t* cp,
                                            int* scan, Sync sync) {
  return ordered_compact<kT, 4>(
      n, cut, [&](int64_t i, uint32_t* u, int32_t* p) { return *u = cu[i], *p = cp[i], true; },
      [&](int dst, uint32_t u, int32_t p) { cu[dst] = u, cp[dst] = p; }, scan, sync);
}

// The exact top k of the list (ties toward the lower position), in place; returns the new length
// (min(n, k)).
template <int kT, class Sync>
__device__ __forceinline__ int cut_list_exact(int n, int k, uint32_t* cu, int32_t* cp, uint32_t lo,
                                              uint32_t mx, int* hist, int* bcast, int* scan,
                                              Sync sync) {
  const RadixCut cut = select_list<kT>(n, k, cu, lo, mx, hist, bcast, sync);
  return compact_list<kT>(n, cut, cu, cp, scan, sync);
}

}  // namespace hisa::cuda
