// Flat (DSA) decode from the paged fp8 cache: the plan (splits per request and how a split
// request ends), the fused kernel, and the CUDA-core path for what it does not take.
#include <algorithm>

#include "cuda/backend.hpp"
#include "cuda/fused_launch.cuh"
#include "cuda/tensor_maps.hpp"
#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

// The most split lists the in-kernel merge takes (it keeps their offsets in its histogram).
constexpr int kMaxMergeSplits = 64;
// Pages a pair with helpers moves from its split 1 to its split 0: split 1 appends the helper's
// segment after its own stream.
constexpr int kHelperShift = 6;
// The helpers' share of the pages in sixteenths of a pair CTA's (FusedParams::helper_frac).
constexpr int kHelperWeight = 15;
// The shortest helper segment (pages) the plan uses helpers for (b64: 58 at 128K, measured
// faster; 14 at 32K, slower: 96.3 against 86.0 us), and the longest: split 1 appends the segment
// after its stream (1.8 us for 58 pages); far longer segments (b40 at 128K: 653 pages, 40
// helpers) are correct but their end is unmeasured, so the plan leaves them out.
constexpr int kAutoHelperPages = 40;
constexpr int kAutoHelperPagesMax = 128;

template <int H>
cudaError_t launch_paged_n(int next_n, const FusedLaunch& l) {
  switch (next_n) {
    case 1:
      return launch_fused<kFp8, H, 1, sm90::kPagedKeys, false>(l);
    case 2:
      return launch_fused<kFp8, H, 2, sm90::kPagedKeys, false>(l);
    case 3:
      return launch_fused<kFp8, H, 3, sm90::kPagedKeys, false>(l);
    default:
      return launch_fused<kFp8, H, 4, sm90::kPagedKeys, false>(l);
  }
}
cudaError_t launch_paged(int heads, int next_n, const FusedLaunch& l) {
  return heads == 64 ? launch_paged_n<64>(next_n, l) : launch_paged_n<32>(next_n, l);
}
template <int H>
int paged_cap_n(int next_n) {
  switch (next_n) {
    case 1:
      return FusedConfigOf<kFp8, H, 1, sm90::kPagedKeys, false>::kCap;
    case 2:
      return FusedConfigOf<kFp8, H, 2, sm90::kPagedKeys, false>::kCap;
    case 3:
      return FusedConfigOf<kFp8, H, 3, sm90::kPagedKeys, false>::kCap;
    default:
      return FusedConfigOf<kFp8, H, 4, sm90::kPagedKeys, false>::kCap;
  }
}
// Candidate-list capacity of the decode instance (the in-kernel merge needs splits * k of it).
int paged_cap(int heads, int next_n) {
  return heads == 64 ? paged_cap_n<64>(next_n) : paged_cap_n<32>(next_n);
}
// The pair tail exists in the slim decode (H = 64, next_n = 1).
bool paged_has_pair_tail(int heads, int next_n) {
  return heads == 64 && next_n == 1 &&
         FusedConfigOf<kFp8, 64, 1, sm90::kPagedKeys, false>::kPairTail;
}

// Splits per request: minimise (rounds of items over the SMs) x (pages per split) x (time per page
// per CTA, selection included) + the merge (one CTA per row over splits x k entries). Constants
// fitted to a split sweep on the H200 (b1 and b8 at 128K best at 16 splits, b64 at 2).
int decode_splits(const DecodeInputs& in, int k) {
  const int sms = current_device().sm_count;
  const double us_per_page = 0.46, us_per_merged_entry = 0.0025;
  double best = 1e30;
  int best_s = 1;
  for (int s = 1; s <= 64; ++s) {
    const int64_t pps = ceil_div(in.max_pages, s);
    if (s > 1 && pps < 16) break;
    const double rounds = double(ceil_div(int64_t(in.batch) * s, sms));
    const double scoring = rounds * pps * us_per_page;
    const double merge = s > 1 ? 3.0 + double(s) * k * us_per_merged_entry : 0.0;
    if (scoring + merge < best * 0.97) best = scoring + merge, best_s = s;
  }
  return best_s;
}

// The helpers' fraction of a request's pages (FusedParams::helper_frac), bit for bit the
// kernel's split.
uint32_t helper_frac(int helpers, int weight, int batch) {
  return helpers > 0 ? uint32_t((uint64_t(weight * helpers) << 32) /
                                uint64_t(weight * helpers + 32 * batch))
                     : 0u;
}

void decode_simt(const DecodeInputs& in, int k, int32_t* out, Workspace& ws, cudaStream_t st,
                 size_t budget) {
  const int64_t rows = int64_t(in.batch) * in.next_n;
  const int64_t ld = int64_t(in.max_pages) * in.page_size;
  const int64_t by_budget = int64_t(budget / (4 * size_t(std::max<int64_t>(ld, 1))));
  const int64_t R = std::max<int64_t>(1, std::min<int64_t>({rows, by_budget, 65535}));
  float* scores = static_cast<float*>(ws.get(kSlotScores, size_t(R) * ld * 4));
  // Row lengths: visible = seq_len - next_n + j + 1, built once per call.
  int32_t* lens = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(rows) * 4));
  launch_decode_lens(in.seq_lens, in.next_n, rows, lens, st);
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int64_t n = std::min(R, rows - r0);
    SimtParams sp;
    sp.row_begin = r0;
    sp.rows = n;
    sp.heads = in.num_heads;
    sp.dim = in.head_dim;
    sp.q_dtype = in.q_dtype;
    sp.k_dtype = DType::F8E4M3;
    sp.q = in.q;
    sp.w = in.w;
    sp.paged = 1;
    sp.next_n = in.next_n;
    sp.page_size = in.page_size;
    sp.max_pages = in.max_pages;
    sp.kv_cache = in.kv_cache;
    sp.block_table = in.block_table;
    sp.seq_lens = in.seq_lens;
    sp.scores = scores;
    sp.ld = ld;
    simt_scores(sp, st);
    launch_topk_rows({scores, ld, lens + r0, 0, nullptr}, n, k, out, r0, st);
  }
}

}  // namespace

bool fused_applies(const DecodeInputs& in) {
  return in.q_dtype == DType::F8E4M3 && in.head_dim == 128 &&
         (in.num_heads == 32 || in.num_heads == 64) && in.page_size == 64 && aligned16(in.q) &&
         aligned16(in.kv_cache) && current_device().major == 9;
}

DecodePlan plan_flat_decode(const DecodeInputs& in, int k, int forced_splits) {
  const int sms = current_device().sm_count;
  DecodePlan plan;
  plan.splits = forced_splits > 0 ? std::min(forced_splits, in.max_pages) : decode_splits(in, k);
  // The pair tail: a request's two splits as one 2-CTA cluster that cuts the union of their
  // lists (one item per CTA: no partial lists, no merge).
  plan.pair_tail = plan.splits == 2 && int64_t(in.batch) * 2 <= sms &&
                   paged_has_pair_tail(in.num_heads, in.next_n);
  // Else the merge by the request's last split (no merge kernel) where the union of the partial
  // lists fits the kernel's candidate list.
  plan.merge_in_kernel = !plan.pair_tail && plan.splits > 1 && plan.splits <= kMaxMergeSplits &&
                         int64_t(plan.splits) * k <= paged_cap(in.num_heads, in.next_n);
  // Helpers on the SMs the pairs leave idle score the requests' last pages (an even count: the
  // launch is 2-CTA clusters; at most one per request), where a segment has kAutoHelperPages to
  // kAutoHelperPagesMax pages (a helper's item pays a start-up).
  if (plan.pair_tail) {
    const int helpers = int(std::min<int64_t>(sms - 2 * int64_t(in.batch), in.batch)) & ~1;
    sm90::FusedParams p;
    p.helper_frac = helper_frac(helpers, kHelperWeight, in.batch);
    const int seg_max = p.helper_pages(in.max_pages);
    if (helpers > 0 && seg_max >= kAutoHelperPages && seg_max <= kAutoHelperPagesMax) {
      plan.helpers = helpers;
      plan.helper_shift = kHelperShift;
      plan.helper_weight = kHelperWeight;
    }
  }
  return plan;
}

void flat_decode(const DecodeInputs& in, int k, int32_t* out, Path path, Workspace& ws,
                 cudaStream_t st, const Options& opt, const DecodeOverrides& over) {
  if (path != Path::Fused) {
    decode_simt(in, k, out, ws, st, opt.max_chunk_bytes);
    return;
  }
  const int sms = current_device().sm_count;
  DecodePlan plan = plan_flat_decode(in, k, opt.splits);
  if (over.pair_tail == 0) plan.pair_tail = false;
  if (over.pair_tail == 1)
    plan.pair_tail = plan.splits == 2 && int64_t(in.batch) * 2 <= sms &&
                     paged_has_pair_tail(in.num_heads, in.next_n);
  if (!plan.pair_tail) plan.helpers = 0;
  if (over.pair_tail >= 0 || over.merge_in_kernel >= 0) {
    const bool fits = plan.splits > 1 && plan.splits <= kMaxMergeSplits &&
                      int64_t(plan.splits) * k <= paged_cap(in.num_heads, in.next_n);
    plan.merge_in_kernel = !plan.pair_tail && fits && over.merge_in_kernel != 0;
  }
  if (plan.pair_tail && over.helpers >= 0) {
    // A forced count: at most that many, wherever a segment has a key stage (three pages).
    int helpers = int(std::min<int64_t>(sms - 2 * int64_t(in.batch), in.batch)) & ~1;
    helpers = std::min(helpers, over.helpers & ~1);
    const int weight = over.helper_weight > 0 ? std::min(over.helper_weight, 16) : kHelperWeight;
    sm90::FusedParams p;
    p.helper_frac = helper_frac(helpers, weight, in.batch);
    plan.helpers = helpers > 0 && p.helper_pages(in.max_pages) >= 3 ? helpers : 0;
    plan.helper_weight = weight;
    plan.helper_shift = kHelperShift;
  }
  if (over.helper_shift >= 0) plan.helper_shift = over.helper_shift;
  if (over.helper_weight > 0 && over.helpers < 0) plan.helper_weight = std::min(over.helper_weight, 16);

  const int splits = plan.splits;
  const int64_t rows = int64_t(in.batch) * in.next_n;
  FusedLaunch l;
  l.q = map_rows(in.q, DType::F8E4M3, uint64_t(rows) * in.num_heads,
                 uint32_t(in.next_n * in.num_heads), "q");
  l.k = map_cache(in.kv_cache, uint64_t(in.num_pages));
  l.scale = l.k;
  sm90::FusedParams& p = l.p;
  p.row_begin = 0;
  p.row_end = rows;
  p.num_tiles = in.batch;
  p.splits = splits;
  p.topk = k;
  p.has_scale = 1;
  p.next_n = in.next_n;
  p.max_pages = in.max_pages;
  p.pages_per_split = int(ceil_div(in.max_pages, splits));
  p.block_table = in.block_table;
  p.seq_lens = in.seq_lens;
  p.kv_cache = in.kv_cache;
  p.w = in.w;
  p.out = out;
  p.pair_tail = plan.pair_tail ? 1 : 0;
  p.part_stride = k;
  const bool merge_kernel = splits > 1 && !plan.pair_tail && !plan.merge_in_kernel;
  if (splits > 1 && !plan.pair_tail) use_partial_lists(p, rows, ws);
  l.grid = int(std::min<int64_t>(int64_t(in.batch) * splits, sms));
  l.cluster = plan.pair_tail ? 2 : 1;
  if (plan.helpers > 0) {
    p.helpers = plan.helpers;
    p.helper_frac = helper_frac(plan.helpers, plan.helper_weight, in.batch);
    p.helper_shift = plan.helper_shift;
    p.helper_stride = p.helper_pages(in.max_pages) * 64;
    p.helper_scores = static_cast<float*>(
        ws.get(kSlotHelperScores, size_t(in.batch) * size_t(p.helper_stride) * 4));
    p.helper_flags = static_cast<int*>(
        ws.get(kSlotHelperFlags, size_t(in.batch) * sizeof(int), /*zero_new=*/true));
    l.grid = 2 * in.batch + plan.helpers;
  }
  l.stream = st;
  if (plan.merge_in_kernel)
    p.merge_count = static_cast<int*>(
        ws.get(kSlotMergeCount, size_t(in.batch) * sizeof(int), /*zero_new=*/true));
  HISA_CUDA_CHECK(launch_paged(in.num_heads, in.next_n, l));
  // The merge as a programmatic dependent only when the fused grid leaves at least half the SMs
  // free for its CTAs to wait on.
  if (merge_kernel)
    launch_merge(p.part_u, p.part_pos, p.part_cnt, splits, rows, k, out, st, 2 * l.grid <= sms);
}

}  // namespace hisa::cuda
