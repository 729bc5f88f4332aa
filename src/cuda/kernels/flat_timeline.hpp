// Measurement only: the events the fused kernel's kProf instances stamp per CTA into
// FlatParams::timeline (hisa::cuda::Options::timeline), read back by the benchmark.
#pragma once

namespace hisa::cuda::sm90 {

// Events of FlatParams::timeline, per CTA (the CTA's last item; decode's wide tail).
enum TimelineEvent : int {
  kTlStart = 0,    // the producer warp starts
  kTlIssued,       // the producer has issued its last key stage
  kTlConsumed,     // the select warps have taken the last stage's scores (the stream is done)
  kTlTail,         // the wide tail starts (every role done, __syncthreads passed)
  kTlArrived,      // the item's lists are cut and published, the arrival counted
  kTlEnd,          // the end of the item (after the merge where this CTA merged)
  kTlMerged,       // 1 where this CTA merged its tile's lists
  kTlMergeLoaded,  // the merge has the union of the lists in shared memory (last query)
  kTlMergeCut,     // the merge's cut is done (last query)
  kTlSmid,         // the SM the CTA runs on, plus 1 (not a time)
  kTlSegment,      // split 1 with helpers: the helper's segment is appended (wide tail)
  kTlSelected,     // the pair tail: the joint cut's radix passes are done (the cut is known)
  kTlPasses,       // the pair tail: the joint cut's radix passes, plus 1 (not a time)
  kTimelineEvents = 13
};

}  // namespace hisa::cuda::sm90
