// How many OpenMP threads a call of the fast CPU backend runs on.
#pragma once

#include <omp.h>

#include <vector>

#include "hisa/config.hpp"
#include "hisa/params.hpp"
#include "hisa/validate.hpp"

namespace hisa::cpu {

// Multiply-adds below which a call runs on the calling thread alone: about 0.2 ms of one core's
// AVX-512 scoring (0.4 ms with AVX2). On an idle machine waking the team costs a few
// microseconds, but a worker whose core another process holds waits for that core's next time
// slice: with one of two cores busy, a 4K-token decode took 4.0 ms on two threads against 0.36 ms
// on one.
constexpr double kParallelWork = double(1 << 24);

// The threshold in effect. Tests set it to 0 to run the threaded paths on small cases.
inline double& parallel_work() {
  static double work = kParallelWork;
  return work;
}

inline int threads_for_work(double multiply_adds) {
  return multiply_adds < parallel_work() ? 1 : omp_get_max_threads();
}

// Multiply-adds a call costs, as the fast backend estimates them for threads_for_work: H * D per
// key score (the pooled keys of hisa and block rows with J > m; the candidates of flat and hisa
// rows with more than k: every visible key for flat, at most m * B for hisa) plus B * D per pooled
// block a prefill computes.
double prefill_work(const PrefillInputs& in, const SelectConfig& cfg,
                    const std::vector<RowSpan>& spans);
double decode_work(const DecodeInputs& in, const SelectConfig& cfg);

}  // namespace hisa::cpu
