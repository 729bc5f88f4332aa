// hisa_cuda_bench: times the CUDA flat indexer (fused exact top-k) on the device, checks sampled
// rows of every timed output against the float64 reference, and prints the numbers against the
// measured ceilings and DeepGEMM's anchors (../shared/ANCHORS.md, same device type).
//
//   hisa_cuda_bench [--json out.json] [--quick] [--prefill-sizes 8192,32768] [--no-decode]
//
// Prefill: full causal T = S = L, H = 64, D = 128, k = 2048, fp8 (one call; the kernel is
// persistent and its workspace does not grow with T x S). Decode: paged fp8 cache, next_n = 1,
// batch 1 / 8 / 64 at 32K and 128K; requests rotate through a 64-request cache so that batches 1
// and 8 do not run from L2. CUDA events, warm-up, median.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda/kernels/flat_timeline.hpp"
#include "hisa/cuda.hpp"
#include "hisa/judge.hpp"
#include "hisa/reference.hpp"

namespace {

using nlohmann::json;

#define CK(call)                                                                               \
  do {                                                                                         \
    cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, \
                   __LINE__);                                                                  \
      throw std::runtime_error("cuda error");                                                  \
    }                                                                                          \
  } while (0)

// Ceilings and DeepGEMM numbers measured on this device type (ANCHORS.md, 2026-11-22).
constexpr double kFp8GemmTflops = 1438.0;
constexpr double kCopyTBps = 4.2;
struct Anchor {
  int64_t L;
  double logits_ms, with_topk_ms;
};
const Anchor kPrefillAnchors[] = {
    {8192, 0.61, 1.84}, {32768, 7.97, 24.4}, {65536, 35.3, 93.8}, {131072, 142.0, 374.0}};

__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return uint32_t(x);
}
// Roughly Gaussian (sum of 4 uniforms), scaled.
__device__ float gauss(uint64_t seed, uint64_t i) {
  float s = 0.0f;
  for (int j = 0; j < 4; ++j)
    s += float(mix(seed * 0x9E3779B97F4A7C15ull + i * 4 + j) >> 8) * (1.0f / 16777216.0f);
  return (s - 2.0f) * 1.7320508f;
}
__global__ void fill_fp8(uint8_t* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    __nv_fp8_e4m3 v(gauss(seed, uint64_t(i)) * scale);
    p[i] = *reinterpret_cast<uint8_t*>(&v);
  }
}
__global__ void fill_f32(float* p, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = lo + (hi - lo) * float(mix(seed * 7919 + uint64_t(i)) >> 8) * (1.0f / 16777216.0f);
}
__global__ void fill_gauss(float* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = gauss(seed, uint64_t(i)) * scale;
}
// Cache pages: values in [0, 64 * 128), scales after (1.0 .. 2.0).
__global__ void fill_cache(uint8_t* cache, int64_t pages, uint64_t seed) {
  const int64_t n = pages * 64 * 132;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t off = i % (64 * 132);
    if (off < 64 * 128) {
      __nv_fp8_e4m3 v(gauss(seed, uint64_t(i)) * 3.0f);
      cache[i] = *reinterpret_cast<uint8_t*>(&v);
    } else if ((off - 64 * 128) % 4 == 0) {
      const float s = 1.0f + float(mix(seed + uint64_t(i)) >> 8) * (1.0f / 16777216.0f);
      std::memcpy(cache + i, &s, 4);
    }
  }
}

template <typename T>
struct Buf {
  T* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) {
    CK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
  }
  ~Buf() { cudaFree(p); }
  std::vector<T> get(size_t off, size_t count) const {
    std::vector<T> h(count);
    CK(cudaMemcpy(h.data(), p + off, count * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Read-only ceilings for decode (the kernel's job is a read of the paged cache): every byte of
// the cache read once with 16-byte streaming loads, (a) as one flat buffer, (b) page by page in
// the block table's shuffled order (one warp per 8448-byte page record: 64 x 128 fp8 + 64 fp32
// scales). Nothing is written but a data-dependent word, so the loads cannot be dropped.
__global__ void read_flat(const int4* p, int64_t n16, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * step < n16; i += 4 * step) {
    int4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = __ldcs(p + i + j * step);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc ^= uint32_t(v[j].x ^ v[j].y ^ v[j].z ^ v[j].w);
  }
  for (; i < n16; i += step) {
    const int4 v = __ldcs(p + i);
    acc ^= uint32_t(v.x ^ v.y ^ v.z ^ v.w);
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;
}
__global__ void read_paged(const uint8_t* cache, const int32_t* table, int64_t pages,
                           uint32_t* sink) {
  constexpr int kVec = 64 * 132 / 16;  // 528 int4 per page record
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  uint32_t acc = 0;
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; w < pages; w += warps) {
    const int4* pg = reinterpret_cast<const int4*>(cache + int64_t(table[w]) * (64 * 132));
    int4 v[(kVec + 31) / 32];
#pragma unroll
    for (int j = 0; j < (kVec + 31) / 32; ++j)
      v[j] = lane + 32 * j < kVec ? __ldcs(pg + lane + 32 * j) : make_int4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < (kVec + 31) / 32; ++j) acc ^= uint32_t(v[j].x ^ v[j].y ^ v[j].z ^ v[j].w);
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;
}

struct Timing {
  double median_ms = 0, min_ms = 0;
  int reps = 0;
};

__global__ void spin_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

// f(rep) between two stream events, then a synchronisation: its time in ms.
struct CallTimer {
  cudaEvent_t a, b;
  CallTimer() {
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
  }
  ~CallTimer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // queued: a ~40 us spin kernel goes first, so that the call's launches are queued behind it
  // before the start event completes: the interval is GPU time only (no host time of the call:
  // its argument checks, tensor-map encodes and launch latency), as a profiler's kernel time.
  bool queued = false;
  double operator()(const std::function<void(int)>& f, int rep) {
    if (queued) spin_kernel<<<1, 32>>>(80000);
    CK(cudaEventRecord(a));
    f(rep);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    return t;
  }
};

// Warm-up once, then repeat until `budget_s` or max_reps; f(rep) launches one call. queued: the
// calls are timed behind a spin kernel (CallTimer::queued: GPU time); rest_ms: idle GPU between
// the warm-up and the timed calls.
Timing time_it(const std::function<void(int)>& f, double budget_s, int min_reps, int max_reps,
               bool queued = false, int rest_ms = 0) {
  CallTimer timer;
  timer.queued = queued;
  f(0);
  CK(cudaDeviceSynchronize());
  if (rest_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(rest_ms));
  std::vector<double> ms;
  double total = 0;
  for (int rep = 1; rep <= max_reps && (rep <= min_reps || total < budget_s * 1e3); ++rep) {
    ms.push_back(timer(f, rep));
    total += ms.back();
  }
  std::sort(ms.begin(), ms.end());
  Timing r;
  r.median_ms = ms[ms.size() / 2];
  r.min_ms = ms.front();
  r.reps = int(ms.size());
  return r;
}

// Same-run A/B that shares the drift of clock and power between the two: g_ab_rounds rounds of
// kABPer synchronised calls of a and of b (in turn a or b first; the last round ends with b); the
// medians over all calls of each (ms).
constexpr int kABPer = 25;
int g_ab_rounds = 8;              // --ab-rounds
int g_timeline_calls = 0;         // --timeline-calls
std::vector<int> g_helper_shifts;  // --helper-shifts
std::vector<int> g_helper_weights;  // --helper-weights
std::vector<int> g_only_variants;  // --variants: the A/B variants to run (empty: all)
// b_queued: b's calls are timed queued behind a spin kernel (CallTimer::queued: GPU time).
std::pair<double, double> time_interleaved(const std::function<void(int)>& a,
                                           const std::function<void(int)>& b,
                                           bool b_queued = false, int rounds = 0) {
  if (rounds <= 0) rounds = g_ab_rounds;
  CallTimer timer, timer_b;
  timer_b.queued = b_queued;
  a(0), b(0);
  CK(cudaDeviceSynchronize());
  std::vector<double> ta, tb;
  for (int r = 0; r < rounds; ++r) {
    for (int h = 0; h < 2; ++h) {
      const bool first_a = ((rounds - 1 - r) % 2 == 0) == (h == 0);  // b ends
      for (int i = 1; i <= kABPer; ++i) {
        if (first_a)
          ta.push_back(timer(a, r * kABPer + i));
        else
          tb.push_back(timer_b(b, r * kABPer + i));
      }
    }
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2], tb[tb.size() / 2]};
}

bool variant_wanted(int v) {
  return g_only_variants.empty() ||
         std::find(g_only_variants.begin(), g_only_variants.end(), v) != g_only_variants.end();
}

// UTC wall-clock time HH:MM:SS.mmm, to line results up with nvidia-smi samples (device_run.sh).
std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
                         .count() %
                     1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

// Time per call with the calls queued back to back (one event pair around `reps` calls, no host
// synchronisation in between): the host's per-call work (tensor maps, launches) overlaps the GPU
// work of the previous call, as in a serving loop, so this is the GPU time per call, kernels and
// the gaps between them. time_it above synchronises after every call and so also counts the
// host time from its first event to the first kernel.
constexpr int kB2BReps = 100;
double time_back_to_back_ms(const std::function<void(int)>& f, int reps) {
  CallTimer timer;
  f(0);
  CK(cudaDeviceSynchronize());
  return timer([&](int) {
           for (int rep = 1; rep <= reps; ++rep) f(rep);
         }, 0) / reps;
}

// Judges sampled rows: builds one-row host inputs (the row's q and w, its sequence's keys).
int check_prefill_rows(const Buf<uint8_t>& q, const Buf<uint8_t>& k, const Buf<float>& ks,
                       const Buf<float>& w, const Buf<int32_t>& out, int64_t L, int H, int topk,
                       const std::vector<int64_t>& rows, json& report) {
  const auto kh = k.get(0, size_t(L) * 128);
  const auto sh = ks.get(0, size_t(L));
  int bad = 0;
  for (int64_t t : rows) {
    const auto qh = q.get(size_t(t) * H * 128, size_t(H) * 128);
    const auto wh = w.get(size_t(t) * H, size_t(H));
    const auto oh = out.get(size_t(t) * topk, size_t(topk));
    const int32_t zero = 0, end = int32_t(t + 1);
    hisa::PrefillInputs in;
    in.num_q = 1, in.num_k = L, in.num_heads = H, in.head_dim = 128, in.dtype = hisa::DType::F8E4M3;
    in.q = qh.data(), in.k = kh.data(), in.k_scale = sh.data(), in.w = wh.data();
    in.ks = &zero, in.ke = &end;
    const auto ref_rows = hisa::reference::prefill_rows(in);
    hisa::SelectConfig cfg;
    cfg.method = hisa::Method::Flat;
    cfg.topk = topk;
    const std::string e = hisa::judge_row(ref_rows[0], cfg, oh.data(), nullptr, 1e-3, false);
    if (!e.empty()) {
      ++bad;
      std::printf("  CHECK FAILED row %lld: %s\n", (long long)t, e.c_str());
    }
  }
  report["rows_checked"] = rows.size();
  report["rows_failed"] = bad;
  return bad;
}

// "0,8,16" -> {0, 8, 16} (command-line lists).
std::vector<int> int_list(const std::string& list) {
  std::vector<int> v;
  for (size_t at = 0; at < list.size();) {
    const size_t comma = std::min(list.find(',', at), list.size());
    v.push_back(std::atoi(list.substr(at, comma - at).c_str()));
    at = comma + 1;
  }
  return v;
}

std::string fmt_us(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// The buffers of a profiled call: the cycle counters (16 u64, ProfSlot order) and the per-CTA
// timeline (kTimelineEvents u64 per SM); run() zeroes both, optionally rests the GPU, makes one
// call with them and returns the timeline.
struct ProfiledRun {
  static constexpr int kEv = hisa::cuda::sm90::kTimelineEvents;
  static int sm_count() {
    int n = 0;
    CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0));
    return n;
  }
  const int sms = sm_count();
  Buf<unsigned long long> prof{16}, tl{size_t(sms) * kEv};
  std::vector<unsigned long long> run(const std::function<void(hisa::cuda::Options&)>& call,
                                      int rest_ms = 0) {
    CK(cudaMemset(prof.p, 0, 16 * 8));
    CK(cudaMemset(tl.p, 0, size_t(sms) * kEv * 8));
    CK(cudaDeviceSynchronize());
    if (rest_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(rest_ms));
    hisa::cuda::Options opt;
    opt.validate = false;
    opt.profile = prof.p;
    opt.timeline = tl.p;
    call(opt);
    CK(cudaDeviceSynchronize());
    return tl.get(0, size_t(sms) * kEv);
  }
  // The first CTA's start (the timeline's zero).
  unsigned long long t0(const std::vector<unsigned long long>& t) const {
    unsigned long long v = ~0ull;
    for (int b = 0; b < sms; ++b)
      if (t[size_t(b) * kEv + hisa::cuda::sm90::kTlStart])
        v = std::min(v, t[size_t(b) * kEv + hisa::cuda::sm90::kTlStart]);
    return v;
  }
};

// One profiled call: the select and producer warpgroups' cycle breakdown (ProfSlot order).
json profile_call(const std::function<void(hisa::cuda::Options&)>& call) {
  ProfiledRun pr;
  const auto t = pr.run(call);
  const int sms = pr.sms;
  constexpr int kEv = ProfiledRun::kEv;
  const auto c = pr.prof.get(0, 16);
  // Slots: sel total, wait epi, append, compact, final, compactions, appended, prod total,
  // prod wait q, prod wait kv, items.
  const double sel = double(std::max<unsigned long long>(c[0], 1));
  const double prod = double(std::max<unsigned long long>(c[7], 1));
  const double items = double(std::max<unsigned long long>(c[10], 1));
  json r;
  r["select_idle_waiting_for_scores"] = c[1] / sel;
  r["select_append"] = c[2] / sel;
  r["select_compact"] = c[3] / sel;
  r["select_final"] = c[4] / sel;
  r["compactions_per_item"] = c[5] / items;
  r["appended_per_item"] = c[6] / items;
  r["producer_wait_q"] = c[8] / prod;
  r["producer_wait_kv_free"] = c[9] / prod;
  r["items"] = c[10];
  r["cycles_per_compaction"] = c[5] ? c[3] / double(c[5]) : 0.0;
  // The SM clock over the producer warps' lifetimes (clock64 ticks / globaltimer ns).
  r["sm_clock_ghz"] = c[12] ? double(c[11]) / double(c[12]) : 0.0;
  std::printf(
      "    profile: select idle %.0f%%, append %.0f%%, compact %.0f%% (%.1f per item, %.0f cycles "
      "each), "
      "final %.0f%%; %.0f candidates appended per item; producer waits for free stages %.0f%%; "
      "SM clock %.2f GHz\n",
      100 * r["select_idle_waiting_for_scores"].get<double>(),
      100 * r["select_append"].get<double>(), 100 * r["select_compact"].get<double>(),
      r["compactions_per_item"].get<double>(), r["cycles_per_compaction"].get<double>(),
      100 * r["select_final"].get<double>(), r["appended_per_item"].get<double>(),
      100 * r["producer_wait_kv_free"].get<double>(), r["sm_clock_ghz"].get<double>());
  // Timeline of the CTAs' last items (decode's wide tail), in us after the first CTA's start.
  using namespace hisa::cuda::sm90;
  const unsigned long long t0 = pr.t0(t);
  std::vector<double> consumed, tail_wait, publish, merge, merge_load, merge_cut, merge_out, end;
  std::vector<double> passes, select;  // the pair cut: radix passes, their time
  for (int b = 0; b < sms; ++b) {
    const unsigned long long* e = &t[size_t(b) * kEv];
    if (!e[kTlStart] || !e[kTlConsumed] || !e[kTlTail] || !e[kTlEnd]) continue;
    consumed.push_back((e[kTlConsumed] - t0) * 1e-3);
    tail_wait.push_back((double(e[kTlTail]) - double(e[kTlConsumed])) * 1e-3);
    end.push_back((e[kTlEnd] - t0) * 1e-3);
    if (e[kTlArrived]) {
      publish.push_back((double(e[kTlArrived]) - double(e[kTlTail])) * 1e-3);
      if (e[kTlMerged]) {
        merge.push_back((double(e[kTlEnd]) - double(e[kTlArrived])) * 1e-3);
        if (e[kTlMergeLoaded] && e[kTlMergeCut]) {
          merge_load.push_back((double(e[kTlMergeLoaded]) - double(e[kTlArrived])) * 1e-3);
          merge_cut.push_back((double(e[kTlMergeCut]) - double(e[kTlMergeLoaded])) * 1e-3);
          merge_out.push_back((double(e[kTlEnd]) - double(e[kTlMergeCut])) * 1e-3);
        }
        if (e[kTlPasses] && e[kTlSelected] && e[kTlMergeLoaded]) {
          passes.push_back(double(e[kTlPasses]) - 1.0);
          select.push_back((double(e[kTlSelected]) - double(e[kTlMergeLoaded])) * 1e-3);
        }
      }
    } else {
      publish.push_back((double(e[kTlEnd]) - double(e[kTlTail])) * 1e-3);
    }
  }
  if (!consumed.empty()) {
    const auto stats = [](std::vector<double> v) {
      json j;
      if (v.empty()) return j;
      std::sort(v.begin(), v.end());
      j["min"] = v.front(), j["median"] = v[v.size() / 2], j["max"] = v.back();
      j["n"] = v.size();
      return j;
    };
    json tj;
    tj["stream_done"] = stats(consumed);
    tj["roles_to_tail"] = stats(tail_wait);
    tj["cut_and_publish"] = stats(publish);
    tj["merge"] = stats(merge);
    tj["merge_load"] = stats(merge_load);
    tj["merge_cut"] = stats(merge_cut);
    tj["merge_output"] = stats(merge_out);
    tj["end"] = stats(end);
    tj["pair_passes"] = stats(passes);
    tj["pair_cut_passes"] = stats(select);
    r["timeline_us"] = tj;
    const auto s3 = [&](const char* k) {
      const json& j = tj[k];
      return j.is_null() ? std::string("-")
                         : fmt_us(j["min"].get<double>()) + "/" + fmt_us(j["median"].get<double>()) +
                               "/" + fmt_us(j["max"].get<double>());
    };
    std::printf(
        "    timeline (us, min/median/max over %zu CTAs): stream done %s; roles -> tail %s; cut + "
        "publish %s; merge %s (load %s, cut %s, output %s); end %s\n",
        consumed.size(), s3("stream_done").c_str(), s3("roles_to_tail").c_str(),
        s3("cut_and_publish").c_str(), s3("merge").c_str(), s3("merge_load").c_str(),
        s3("merge_cut").c_str(), s3("merge_output").c_str(), s3("end").c_str());
    if (!passes.empty())
      std::printf("    pair cut: radix passes %s, the passes %s us (the rest of the cut: the "
                  "compaction and the output)\n",
                  s3("pair_passes").c_str(), s3("pair_cut_passes").c_str());
  }
  return r;
}

// Per-CTA timelines of `n` profiled calls, each after `rest_ms` of idle GPU: for each call and
// CTA (blockIdx order) its SM and the times (us after the call's first CTA start) of its start,
// stream done, tail, arrival (pair cut started) and end. Summaries per call: the stream-done
// spread, the largest gap inside a 2-CTA pair, and what balancing would bound the stream-done
// time to (within pairs: the slowest pair's mean; over all CTAs: the mean).
json timeline_calls(const std::function<void(hisa::cuda::Options&)>& call, int n, int rest_ms,
                    int pair_ctas) {
  using namespace hisa::cuda::sm90;
  ProfiledRun pr;
  const int sms = pr.sms;
  constexpr int kEv = ProfiledRun::kEv;
  json calls = json::array();
  std::map<int, std::vector<double>> by_sm;  // stream done per SM over the calls
  for (int c = 0; c < n; ++c) {
    const auto t = pr.run(call, rest_ms);
    const unsigned long long t0 = pr.t0(t);
    const auto us = [&](unsigned long long v) { return v ? (double(v) - double(t0)) * 1e-3 : -1.0; };
    json ctas = json::array();
    std::vector<double> done(sms, -1.0);
    double mx = 0, sum = 0, pair_mean_max = 0, pair_gap_max = 0, pair_gap_sum = 0;
    int cnt = 0, pairs = 0;
    // Splits 0 and 1 of the pairs, and the helpers (CTAs >= pair_ctas): mean and last stream
    // done; split 1's segment appends (kTlSegment, where stamped).
    double split_sum[2] = {0, 0}, helper_max = -1, end_max = 0, seg_sum = 0;
    int split_n[2] = {0, 0}, seg_n = 0;
    for (int b = 0; b < sms; ++b) {
      const unsigned long long* e = &t[size_t(b) * kEv];
      if (!e[kTlStart]) continue;
      done[b] = us(e[kTlConsumed]);
      ctas.push_back({{"cta", b}, {"sm", int(e[kTlSmid]) - 1}, {"start", us(e[kTlStart])},
                      {"issued", us(e[kTlIssued])}, {"stream_done", done[b]},
                      {"tail", us(e[kTlTail])}, {"segment", us(e[kTlSegment])},
                      {"arrived", us(e[kTlArrived])},
                      {"end", us(e[kTlEnd])}});
      if (e[kTlSmid]) by_sm[int(e[kTlSmid]) - 1].push_back(done[b]);
      end_max = std::max(end_max, us(e[kTlEnd]));
      if (e[kTlSegment] && e[kTlTail])
        seg_sum += (double(e[kTlSegment]) - double(e[kTlTail])) * 1e-3, ++seg_n;
      if (done[b] < 0) continue;
      if (b >= pair_ctas) {
        helper_max = std::max(helper_max, done[b]);
        continue;
      }
      split_sum[b % 2] += done[b], ++split_n[b % 2];
      mx = std::max(mx, done[b]), sum += done[b], ++cnt;
      if (b % 2 == 1 && done[b - 1] >= 0) {
        pair_mean_max = std::max(pair_mean_max, 0.5 * (done[b] + done[b - 1]));
        const double gap = std::abs(done[b] - done[b - 1]);
        pair_gap_max = std::max(pair_gap_max, gap), pair_gap_sum += gap, ++pairs;
      }
    }
    json cj;
    cj["segment_append_mean"] = seg_n ? seg_sum / seg_n : 0.0;
    cj["ctas"] = ctas;
    cj["stream_done_max"] = mx;
    cj["stream_done_mean"] = cnt ? sum / cnt : 0.0;
    cj["pair_mean_max"] = pair_mean_max;
    cj["pair_gap_max"] = pair_gap_max;
    cj["pair_gap_mean"] = pairs ? pair_gap_sum / pairs : 0.0;
    cj["split0_mean"] = split_n[0] ? split_sum[0] / split_n[0] : 0.0;
    cj["split1_mean"] = split_n[1] ? split_sum[1] / split_n[1] : 0.0;
    cj["helper_max"] = helper_max;
    cj["end_max"] = end_max;
    std::printf("    timeline call %d: stream done max %.1f, mean %.1f, slowest pair's mean %.1f; "
                "gap in a pair: mean %.2f, max %.2f us; split 0 / 1 mean %.1f / %.1f, helpers' "
                "last %.1f; last end %.1f; split 1's segment append %.2f us\n",
                c, mx, cnt ? sum / cnt : 0.0, pair_mean_max, pairs ? pair_gap_sum / pairs : 0.0,
                pair_gap_max, cj["split0_mean"].get<double>(), cj["split1_mean"].get<double>(),
                helper_max, end_max, cj["segment_append_mean"].get<double>());
    calls.push_back(cj);
  }
  // Is a slow SM slow in every call? The SMs with the latest mean stream done over the calls.
  json out;
  out["calls"] = calls;
  if (n > 1) {
    std::vector<std::pair<double, int>> mean_sm;
    for (auto& [sm, v] : by_sm)
      mean_sm.push_back({std::accumulate(v.begin(), v.end(), 0.0) / v.size(), sm});
    std::sort(mean_sm.begin(), mean_sm.end());
    std::string slow;
    for (size_t i = mean_sm.size() >= 8 ? mean_sm.size() - 8 : 0; i < mean_sm.size(); ++i)
      slow += " " + std::to_string(mean_sm[i].second) + ":" + fmt_us(mean_sm[i].first);
    std::printf("    slowest SMs by mean stream done over the calls (sm:us):%s\n", slow.c_str());
  }
  return out;
}

// Same-run A/B configurations of the fused kernel (Options::variant).
struct Variant {
  const char* prefill_name;  // nullptr: decode only
  const char* decode_name;
  int variant;
  bool merge_pdl;
  bool merge_in_kernel = true;   // decode: Options::merge_in_kernel
  bool no_select = false;        // decode: also time it without the selection (debug_mode 1)
  bool pair_tail = true;         // decode: Options::pair_tail
};
const Variant kVariants[] = {
    {"variant 1 (run 27's kernel: 768 threads, two N = 64 banks)",
     "variant 1 (run 22's 16-stage epilogue ring)", 1, true},
    {nullptr, "the merge in the fused kernel instead of the pair tail (runs 65-72)", 0, true, true,
     false, false},
    {nullptr, "the merge kernel instead of the pair tail", 0, true, false, false, false},
    {"variant 3 (w in registers, two N = 64 banks drained in turn)", nullptr, 3, true},
    {"variant 4 (runs 35-55's kernel: w from shared memory every stage, no register split)",
     nullptr, 4, true},
    {"variant 7 (key scales loaded at the top of the stage, run 56's kernel)", nullptr, 7, true},
    {"variant 9 (cut digit counts with match_any, runs 1-58's kernel)", nullptr, 9, true},
    {nullptr, "variant 14 (four key stages: runs 61-64's ring)", 14, true},
    {nullptr, "variant 15 (two N = 32 banks)", 15, true},
    {nullptr, "variant 16 with the merge kernel (runs 61-63's decode)", 16, true, false, true},
    {nullptr, "variant 17 (the select warps finish the last item too)", 17, true},
    {nullptr, "variant 18 (select warps poll with 200 ns sleeps)", 18, true},
    {nullptr, "variant 19 (select, producer and math warps poll with sleeps)", 19, true},
    {nullptr, "variant 20 (exact cut 28 stages before the end: short lists into the pair's cut)",
     20, true},
    {nullptr, "variant 20 without the pair tail (exact cut 28 stages before the end, lists "
              "published uncut)", 20, true, true, false, false},
    {nullptr, "variant 21 without the pair tail (the merge keeps its own list in shared memory)",
     21, true, true, false, false},
    {nullptr, "variant 22 (no early prefetch of the first item's inputs: run 77's decode)", 22,
     true},
    {nullptr, "variant 24 (six key stages: one q stage, a 16-stage epilogue ring)", 24, true},
};

double copy_ceiling_tbps() {
  const size_t n = size_t(2) << 30;
  Buf<uint8_t> a(n), b(n);
  CK(cudaMemset(a.p, 1, n));
  const Timing t =
      time_it([&](int) { CK(cudaMemcpyAsync(b.p, a.p, n, cudaMemcpyDeviceToDevice)); }, 0.3, 5, 20);
  return 2.0 * double(n) / (t.median_ms * 1e-3) / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false, no_decode = false;
  // --light: one timed call per size, two checked rows, no profile or variants (1M tokens).
  bool light = false;
  std::string decode_case;  // "BATCHxCONTEXT": only that decode case, automatic splits
  std::string only_sizes;   // comma-separated prefill lengths (profiling one case)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else if (a == "--quick")
      quick = true;
    else if (a == "--prefill-sizes" && i + 1 < argc)
      only_sizes = argv[++i];
    else if (a == "--no-decode")
      no_decode = true;
    else if (a == "--no-prefill")
      only_sizes = "none";
    else if (a == "--light")
      light = true;
    else if (a == "--decode-case" && i + 1 < argc)
      decode_case = argv[++i];
    else if (a == "--ab-rounds" && i + 1 < argc)
      g_ab_rounds = std::max(1, std::atoi(argv[++i]));
    else if (a == "--timeline-calls" && i + 1 < argc)
      g_timeline_calls = std::max(0, std::atoi(argv[++i]));
    else if (a == "--helper-shifts" && i + 1 < argc)
      g_helper_shifts = int_list(argv[++i]);
    else if (a == "--helper-weights" && i + 1 < argc)
      g_helper_weights = int_list(argv[++i]);
    else if (a == "--variants" && i + 1 < argc)
      g_only_variants = int_list(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: hisa_cuda_bench [--json F] [--quick] [--prefill-sizes L,L] "
                   "[--no-decode] [--no-prefill] [--light] [--decode-case 64x131072] "
                   "[--variants 0,21] [--ab-rounds 8] [--timeline-calls N] [--helper-shifts 0,8] [--helper-weights 14,16]\n");
      return 2;
    }
  }
  try {
    json report;
    report["device"] = hisa::cuda::device_description();
    std::printf("device: %s\n", report["device"].get<std::string>().c_str());
    const double copy = copy_ceiling_tbps();
    report["copy_tbps_measured"] = copy;
    report["ceilings"] = {{"fp8_gemm_tflops", kFp8GemmTflops}, {"copy_tbps", kCopyTBps}};
    std::printf("copy ceiling measured: %.2f TB/s (ANCHORS: %.1f)\n", copy, kCopyTBps);
    hisa::cuda::Workspace ws;
    const int H = 64, topk = 2048;
    hisa::SelectConfig cfg;
    cfg.method = hisa::Method::Flat;
    cfg.topk = topk;

    // ------------------------------------------------------------ prefill
    std::vector<int64_t> sizes = {8192, 32768, 65536, 131072};
    if (quick) sizes = {8192, 32768};
    if (only_sizes == "none") {
      sizes.clear();
    } else if (!only_sizes.empty()) {
      sizes.clear();
      for (size_t pos = 0; pos < only_sizes.size();) {
        const size_t comma = std::min(only_sizes.find(',', pos), only_sizes.size());
        sizes.push_back(std::stoll(only_sizes.substr(pos, comma - pos)));
        pos = comma + 1;
      }
    }
    for (int64_t L : sizes) {
      Buf<uint8_t> q(size_t(L) * H * 128), k(size_t(L) * 128);
      Buf<float> ks(static_cast<size_t>(L)), w(size_t(L) * H);
      Buf<int32_t> cu(2), out(size_t(L) * topk);
      fill_fp8<<<4096, 256>>>(q.p, int64_t(q.n), 1000 + L, 40.0f);
      fill_fp8<<<4096, 256>>>(k.p, int64_t(k.n), 2000 + L, 3.0f);
      fill_f32<<<1024, 256>>>(ks.p, L, 3000 + L, 0.5f, 2.0f);
      fill_gauss<<<1024, 256>>>(w.p, int64_t(w.n), 4000 + L, 0.1f);
      const int32_t cuh[2] = {0, int32_t(L)};
      CK(cudaMemcpy(cu.p, cuh, 8, cudaMemcpyHostToDevice));
      CK(cudaGetLastError());
      hisa::PrefillInputs in;
      in.num_q = L, in.num_k = L, in.num_heads = H, in.head_dim = 128,
      in.dtype = hisa::DType::F8E4M3;
      in.q = q.p, in.k = k.p, in.k_scale = ks.p, in.w = w.p;
      in.num_seqs = 1, in.cu_seqlens_q = cu.p, in.cu_seqlens_k = cu.p;
      hisa::SelectOutputs o;
      o.indices = out.p;
      hisa::cuda::Options opt;
      opt.validate = false;
      size_t free_before = 0, total_mem = 0;
      CK(cudaMemGetInfo(&free_before, &total_mem));
      const Timing t =
          time_it([&](int) { hisa::cuda::select_prefill(in, cfg, o, ws, nullptr, opt); },
                  light ? 0.0 : (L >= 65536 ? 1.0 : 0.5), light ? 1 : 3, light ? 1 : 20);
      size_t free_after = 0;
      CK(cudaMemGetInfo(&free_after, &total_mem));
      const double flops = double(L) * double(L + 1) / 2.0 * H * 128 * 2;
      json r;
      r["kind"] = "prefill";
      r["L"] = L;
      r["H"] = H;
      r["k"] = topk;
      r["dtype"] = "fp8";
      r["path"] = hisa::cuda::path_name(hisa::cuda::chosen_path(in, cfg));
      r["median_ms"] = t.median_ms;
      r["min_ms"] = t.min_ms;
      r["reps"] = t.reps;
      r["flops"] = flops;
      r["tflops"] = flops / (t.median_ms * 1e-3) / 1e12;
      r["fraction_of_fp8_gemm_ceiling"] = r["tflops"].get<double>() / kFp8GemmTflops;
      r["workspace_bytes"] = ws.bytes();
      // Device memory the call took beyond the inputs and outputs allocated above (workspace).
      r["device_bytes_taken_by_call"] = double(free_before) - double(free_after);
      r["inputs_outputs_bytes"] = double(q.n + k.n + (ks.n + w.n) * 4 + out.n * 4);
      for (const Anchor& a : kPrefillAnchors) {
        if (a.L != L) continue;
        r["deepgemm_logits_ms"] = a.logits_ms;
        r["deepgemm_logits_topk_ms"] = a.with_topk_ms;
        r["ratio_to_deepgemm_logits"] = t.median_ms / a.logits_ms;
        r["speedup_vs_deepgemm_logits_topk"] = a.with_topk_ms / t.median_ms;
      }
      std::printf(
          "prefill L=%-7lld  %9.3f ms (min %.3f, %d reps)  %7.1f TFLOP/s (%.0f%% of fp8 GEMM)",
          (long long)L, t.median_ms, t.min_ms, t.reps, r["tflops"].get<double>(),
          100 * r["fraction_of_fp8_gemm_ceiling"].get<double>());
      if (r.contains("ratio_to_deepgemm_logits"))
        std::printf("  x%.2f of DG logits, %.2fx faster than DG logits+topk",
                    r["ratio_to_deepgemm_logits"].get<double>(),
                    r["speedup_vs_deepgemm_logits_topk"].get<double>());
      std::printf("\n");
      std::printf("    workspace %.1f MB; inputs and outputs %.2f GB\n", ws.bytes() / 1e6,
                  r["inputs_outputs_bytes"].get<double>() / 1e9);
      check_prefill_rows(
          q, k, ks, w, out, L, H, topk,
          light ? std::vector<int64_t>{L - 1, 17}
                : std::vector<int64_t>{L - 1, L / 2 + 3, std::min<int64_t>(L - 1, 2100), 17},
          r);
      if (light) {
        report["results"].push_back(r);
        continue;
      }
      // Where the time goes: the select warpgroup's breakdown, the pipeline without selection
      // (debug_mode 1), and the tensor-core scores written to memory (DeepGEMM's logits shape).
      r["profile"] = profile_call([&](hisa::cuda::Options& po) {
        hisa::cuda::select_prefill(in, cfg, o, ws, nullptr, po);
      });
      // The pipeline alone of a configuration: debug_mode 1, its profiled instance.
      const auto time_no_select = [&](hisa::cuda::Options dbg) {
        dbg.debug_mode = 1;
        return time_it([&](int) { hisa::cuda::select_prefill(in, cfg, o, ws, nullptr, dbg); },
                       L >= 65536 ? 0.6 : 0.3, 3, 20)
            .median_ms;
      };
      const double td = time_no_select(opt);
      r["no_select_ms"] = td;
      std::printf(
          "    without selection (scores consumed, pipeline only): %.3f ms = %.1f TFLOP/s\n", td,
          flops / (td * 1e-3) / 1e12);
      // Same-run A/B against an earlier configuration: timed, checked and profiled.
      for (const Variant& v : kVariants) {
        if (!v.prefill_name || !variant_wanted(v.variant)) continue;
        hisa::cuda::Options vo = opt;
        vo.variant = v.variant;
        const Timing tv =
            time_it([&](int) { hisa::cuda::select_prefill(in, cfg, o, ws, nullptr, vo); },
                    L >= 65536 ? 0.6 : 0.3, 3, 20);
        json rv;
        rv["name"] = v.prefill_name, rv["variant"] = v.variant;
        rv["median_ms"] = tv.median_ms;
        rv["tflops"] = flops / (tv.median_ms * 1e-3) / 1e12;
        std::printf("    %s: %.3f ms = %.1f TFLOP/s\n", v.prefill_name, tv.median_ms,
                    rv["tflops"].get<double>());
        check_prefill_rows(q, k, ks, w, out, L, H, topk, {L - 1, L / 2 + 3, 17}, rv);
        rv["profile"] = profile_call([&](hisa::cuda::Options& po) {
          po.variant = v.variant;
          hisa::cuda::select_prefill(in, cfg, o, ws, nullptr, po);
        });
        // The variant's pipeline alone, against the production's above.
        const double tvd = time_no_select(vo);
        rv["no_select_ms"] = tvd;
        std::printf("      its pipeline alone (scores consumed): %.3f ms = %.1f TFLOP/s\n", tvd,
                    flops / (tvd * 1e-3) / 1e12);
        r["variants"].push_back(rv);
      }
      if (L <= 65536) {
        Buf<float> sc(size_t(L) * L);
        const Timing ts = time_it(
            [&](int) {
              hisa::cuda::score_prefill(in, 0, L, sc.p, L, hisa::cuda::Path::Scores, ws);
            },
            0.3, 3, 20);
        r["scores_to_memory_ms"] = ts.median_ms;
        std::printf(
            "    scores written to memory (like DeepGEMM's logits): %.3f ms = %.1f TFLOP/s\n",
            ts.median_ms, flops / (ts.median_ms * 1e-3) / 1e12);
      }
      report["results"].push_back(r);
    }

    // ------------------------------------------------------------ decode
    if (!no_decode) {
      const int kReq = 64, ctx_max = 131072, pages_per_req = ctx_max / 64;
      const int64_t num_pages = int64_t(kReq) * pages_per_req;
      Buf<uint8_t> cache(size_t(num_pages) * 64 * 132);
      fill_cache<<<8192, 256>>>(cache.p, num_pages, 77);
      std::vector<int32_t> perm(static_cast<size_t>(num_pages));
      std::iota(perm.begin(), perm.end(), 0);
      std::mt19937_64 rng(5);
      std::shuffle(perm.begin(), perm.end(), rng);
      {
        // The decode floor: the best of a few launch shapes for each read-only ceiling.
        Buf<int32_t> all_pages(perm.size());
        CK(cudaMemcpy(all_pages.p, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice));
        Buf<uint32_t> sink(1);
        int dev = 0, sms = 0;
        CK(cudaGetDevice(&dev));
        CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        const double bytes = double(cache.n);
        double best_flat = 0, best_paged = 0;
        for (int per_sm : {1, 2, 4, 8}) {
          for (int threads : {128, 256, 512, 1024}) {
            const Timing tf = time_it(
                [&](int) {
                  read_flat<<<sms * per_sm, threads>>>(reinterpret_cast<const int4*>(cache.p),
                                                       int64_t(cache.n / 16), sink.p);
                },
                0.1, 5, 50);
            const Timing tp = time_it(
                [&](int) {
                  read_paged<<<sms * per_sm, threads>>>(cache.p, all_pages.p, num_pages, sink.p);
                },
                0.1, 5, 50);
            const double f = bytes / (tf.median_ms * 1e-3) / 1e12;
            const double g = bytes / (tp.median_ms * 1e-3) / 1e12;
            best_flat = std::max(best_flat, f);
            best_paged = std::max(best_paged, g);
            // Resident threads per SM bound the bytes in flight (the paged kernel: one 8448-byte
            // page per warp).
            const int resident = std::min(per_sm * threads, 2048);
            std::printf("    read %d CTAs/SM x %4d threads (%4d resident, paged %3d KB in flight): flat %.2f, paged %.2f TB/s\n",
                        per_sm, threads, resident, resident / 32 * 8448 / 1024, f, g);
            report["read_configs"].push_back(
                {{"ctas_per_sm", per_sm}, {"threads", threads}, {"flat_tbps", f}, {"paged_tbps", g}});
          }
        }
        CK(cudaGetLastError());
        report["read_flat_tbps_measured"] = best_flat;
        report["read_paged_tbps_measured"] = best_paged;
        std::printf(
            "read-only ceilings over the %.2f GB decode cache: flat %.2f TB/s, page by page "
            "(shuffled table) %.2f TB/s -> decode b64 x 128K floor %.1f us (flat %.1f us)\n",
            bytes / 1e9, best_flat, best_paged, bytes / best_paged / 1e6, bytes / best_flat / 1e6);
      }
      Buf<uint8_t> dq(size_t(kReq) * H * 128);
      Buf<float> dw(size_t(kReq) * H);
      fill_fp8<<<256, 256>>>(dq.p, int64_t(dq.n), 88, 40.0f);
      fill_gauss<<<64, 256>>>(dw.p, int64_t(dw.n), 99, 0.1f);
      Buf<int32_t> lens(kReq), dout(size_t(kReq) * topk);
      CK(cudaGetLastError());
      for (int ctx : {32768, 131072}) {
        std::vector<int32_t> lh(kReq, ctx);
        CK(cudaMemcpy(lens.p, lh.data(), kReq * 4, cudaMemcpyHostToDevice));
        // block_table [64, ctx / 64]: the first ctx / 64 pages of each request (max_pages = ctx /
        // 64, so that the split heuristic sees the real length).
        const int max_pages = ctx / 64;
        std::vector<int32_t> th(size_t(kReq) * max_pages);
        for (int r = 0; r < kReq; ++r)
          for (int j = 0; j < max_pages; ++j)
            th[size_t(r) * max_pages + j] = perm[size_t(r) * pages_per_req + j];
        Buf<int32_t> table(th.size());
        CK(cudaMemcpy(table.p, th.data(), th.size() * 4, cudaMemcpyHostToDevice));
        for (int batch : {1, 8, 64}) {
          std::vector<int> split_list = {0};
          if (ctx == 131072 && !quick && decode_case.empty()) split_list = {0, 1, 2, 4, 8, 16, 32};
          if (!decode_case.empty() &&
              decode_case != std::to_string(batch) + "x" + std::to_string(ctx))
            continue;
          for (int splits : split_list) {
            const int groups = kReq / batch;
            auto make_in = [&](int rep) {
              const int r0 = (rep % groups) * batch;
              hisa::DecodeInputs in;
              in.batch = batch, in.next_n = 1, in.num_heads = H, in.head_dim = 128;
              in.q_dtype = hisa::DType::F8E4M3;
              in.q = dq.p + size_t(r0) * H * 128, in.w = dw.p + size_t(r0) * H;
              in.num_pages = int(num_pages), in.page_size = 64, in.kv_cache = cache.p;
              in.max_pages = max_pages, in.block_table = table.p + size_t(r0) * max_pages;
              in.seq_lens = lens.p + r0;
              return in;
            };
            hisa::SelectOutputs o;
            hisa::cuda::Options opt;
            opt.validate = false;
            opt.splits = splits;
            // A call with options `co`, the batch rotating through the requests by `rep`.
            const auto call_with = [&](const hisa::cuda::Options& co) {
              return [&, co](int rep) {
                o.indices = dout.p + size_t((rep % groups) * batch) * topk;
                hisa::cuda::select_decode(make_in(rep), cfg, o, ws, nullptr, co);
              };
            };
            const auto call = call_with(opt);
            // The default splits: first a rested burst of GPU time (1 s of idle GPU, long enough
            // for the SW power cap, which lowers the SM clock within ~0.1 s of continuous decode
            // load, to lift; then 25 calls queued behind a spin kernel: a profiler's kernel time,
            // the state a harness of 20-30 queued calls measures in), then the synchronised calls,
            // rested again; the other split counts go straight to the synchronised calls.
            constexpr int kRestMs = 1000;
            const bool rest = splits == 0;
            const double rested = rest ? time_it(call, 0, 25, 25, true, kRestMs).median_ms : 0.0;
            const Timing t = time_it(call, 0.3, 10, 200, false, rest ? kRestMs : 0);
            const double bytes = double(batch) * ctx * 132 + double(batch) * H * (128 + 4);
            const double flops = double(batch) * ctx * H * 128 * 2;
            const double b2b = time_back_to_back_ms(call, kB2BReps);
            // GPU time alone (queued behind a spin kernel: no host time in the interval),
            // interleaved with synchronised calls (kGpuRounds rounds of 25 each) so that both see
            // the same clock: their difference is the host's share of a synchronised call.
            constexpr int kGpuRounds = 4;
            const auto gq = time_interleaved(call, call, /*b_queued=*/true, kGpuRounds);
            json r;
            r["back_to_back_us"] = b2b * 1e3;
            r["gpu_us"] = gq.second * 1e3;
            if (rest) r["rested_gpu_us"] = rested * 1e3;
            r["synchronised_with_gpu_us"] = gq.first * 1e3;
            r["kind"] = "decode";
            r["batch"] = batch;
            r["context"] = ctx;
            r["next_n"] = 1;
            r["splits"] = splits;
            r["median_us"] = t.median_ms * 1e3;
            r["min_us"] = t.min_ms * 1e3;
            r["reps"] = t.reps;
            r["bytes"] = bytes;
            r["tbps"] = bytes / (t.median_ms * 1e-3) / 1e12;
            r["fraction_of_copy_ceiling"] = r["tbps"].get<double>() / kCopyTBps;
            r["tflops"] = flops / (t.median_ms * 1e-3) / 1e12;
            if (batch == 64 && ctx == 131072) {
              r["deepgemm_logits_us"] = 305.0;
              r["deepgemm_logits_topk_us"] = 480.0;
              r["ratio_to_deepgemm_logits"] = t.median_ms * 1e3 / 305.0;
              r["gpu_ratio_to_deepgemm_logits"] = gq.second * 1e3 / 305.0;
              if (rest) r["rested_gpu_ratio_to_deepgemm_logits"] = rested * 1e3 / 305.0;
            }
            if (batch == 64 && ctx == 32768) {
              r["deepgemm_logits_us"] = 98.0;
              r["ratio_to_deepgemm_logits"] = t.median_ms * 1e3 / 98.0;
            }
            std::printf(
                "decode b=%-2d ctx=%-6d splits=%-2d %9.1f us (min %.1f)  %5.2f TB/s (%.0f%% of "
                "copy) "
                " %6.1f TFLOP/s",
                batch, ctx, splits, t.median_ms * 1e3, t.min_ms * 1e3, r["tbps"].get<double>(),
                100 * r["fraction_of_copy_ceiling"].get<double>(), r["tflops"].get<double>());
            if (r.contains("ratio_to_deepgemm_logits"))
              std::printf("  x%.2f of DG logits", r["ratio_to_deepgemm_logits"].get<double>());
            if (rest) std::printf("  rested GPU time %.1f us", rested * 1e3);
            std::printf("  back to back %.1f us  GPU time %.1f us (synchronised %.1f in the same "
                        "rounds)  [%s]\n",
                        b2b * 1e3, gq.second * 1e3, gq.first * 1e3, utc_now().c_str());
            // Checks 2 rows of the last call against the reference (one-request host inputs).
            const auto check_two = [&](int rep) {
              CK(cudaDeviceSynchronize());
              const int r0 = (rep % groups) * batch;
              int bad = 0;
              for (int b : {0, batch - 1}) {
                const int req = r0 + b;
                std::vector<int32_t> pages(
                    perm.begin() + int64_t(req) * pages_per_req,
                    perm.begin() + int64_t(req) * pages_per_req + (ctx + 63) / 64);
                // Compact host cache holding only this request's pages.
                std::vector<uint8_t> hc(pages.size() * 64 * 132);
                std::vector<int32_t> bt(pages.size());
                for (size_t j = 0; j < pages.size(); ++j) {
                  CK(cudaMemcpy(hc.data() + j * 64 * 132, cache.p + size_t(pages[j]) * 64 * 132,
                                64 * 132, cudaMemcpyDeviceToHost));
                  bt[j] = int32_t(j);
                }
                const auto qh = dq.get(size_t(req) * H * 128, size_t(H) * 128);
                const auto wh = dw.get(size_t(req) * H, size_t(H));
                const auto oh = dout.get(size_t(req) * topk, size_t(topk));
                hisa::DecodeInputs hin;
                hin.batch = 1, hin.next_n = 1, hin.num_heads = H, hin.head_dim = 128;
                hin.q_dtype = hisa::DType::F8E4M3, hin.q = qh.data(), hin.w = wh.data();
                hin.num_pages = int(pages.size()), hin.page_size = 64, hin.kv_cache = hc.data();
                hin.max_pages = int(pages.size()), hin.block_table = bt.data();
                const int32_t len = ctx;
                hin.seq_lens = &len;
                const auto rows = hisa::reference::decode_rows(hin);
                const std::string e =
                    hisa::judge_row(rows[0], cfg, oh.data(), nullptr, 1e-3, false);
                if (!e.empty()) {
                  ++bad;
                  std::printf("  CHECK FAILED request %d: %s\n", req, e.c_str());
                }
              }
              return bad;
            };
            if (splits == 0) {
              // The last call's rotation (the GPU-time rounds' last call).
              const int bad = check_two(kGpuRounds * kABPer);
              r["rows_checked"] = 2;
              r["rows_failed"] = bad;
              if (ctx == 131072) {
                r["profile"] = profile_call([&](hisa::cuda::Options& po) {
                  o.indices = dout.p;
                  hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                });
                if (g_timeline_calls > 0) {
                  // Per-CTA timelines of rested calls: production, then the key stream alone.
                  std::printf("    per-CTA timelines, production:\n");
                  r["timelines"] = timeline_calls([&](hisa::cuda::Options& po) {
                    o.indices = dout.p;
                    hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                  }, g_timeline_calls, 50, 2 * batch);
                  std::printf("    per-CTA timelines, the key stream alone:\n");
                  r["stream_only_timelines"] = timeline_calls([&](hisa::cuda::Options& po) {
                    po.debug_mode = 1, po.variant = 2;
                    o.indices = dout.p;
                    hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                  }, g_timeline_calls, 50, 2 * batch);
                  std::printf("    per-CTA timelines, without helpers:\n");
                  r["no_helper_timelines"] = timeline_calls([&](hisa::cuda::Options& po) {
                    po.helpers = 0;
                    o.indices = dout.p;
                    hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                  }, g_timeline_calls, 50, 2 * batch);
                }
                // Rested bursts in turn (6 rounds: 500 ms idle, 25 queued calls of one, 500 ms
                // idle, 25 of the other; which goes first alternates): the median of each one's
                // burst medians, recorded in `into` as <key>rested_rounds_us (all six) and
                // <key>rested_median_us, and printed with the labels; returns a's over b's.
                const auto rested_in_turn = [&](const hisa::cuda::Options& a,
                                                const hisa::cuda::Options& b, json& into,
                                                const std::string& key_a, const std::string& key_b,
                                                const char* label_a, const char* label_b) {
                  std::vector<double> ra, rb;
                  for (int round = 0; round < 6; ++round) {
                    for (int h = 0; h < 2; ++h) {
                      const bool first = (round + h) % 2 == 0;
                      const double m =
                          time_it(call_with(first ? a : b), 0, 25, 25, true, 500).median_ms * 1e3;
                      (first ? ra : rb).push_back(m);
                    }
                  }
                  std::sort(ra.begin(), ra.end());
                  std::sort(rb.begin(), rb.end());
                  const double ma = 0.5 * (ra[2] + ra[3]), mb = 0.5 * (rb[2] + rb[3]);
                  into[key_a + "rested_rounds_us"] = ra;
                  into[key_b + "rested_rounds_us"] = rb;
                  into[key_a + "rested_median_us"] = ma;
                  into[key_b + "rested_median_us"] = mb;
                  std::printf("    rested bursts in turn (6 each): %s %.1f us (%.1f-%.1f), %s %.1f us "
                              "(%.1f-%.1f): x%.3f [%s]\n",
                              label_a, ma, ra.front(), ra.back(), label_b, mb, rb.front(),
                              rb.back(), ma / mb, utc_now().c_str());
                  return ma / mb;
                };
                if (batch == 64) {
                  // The helpers: off against production (on), interleaved, and off as a rested
                  // burst of GPU time (production's is above); then helper shifts (--helper-shifts).
                  hisa::cuda::Options ho = opt;
                  ho.helpers = 0;
                  const auto ab = time_interleaved(call_with(ho), call_with(opt));
                  const double rested_off =
                      time_it(call_with(ho), 0, 25, 25, true, kRestMs).median_ms * 1e3;
                  rested_in_turn(opt, ho, r, "helpers_on_", "helpers_off_", "helpers on", "off");
                  r["helpers_off_interleaved_us"] = ab.first * 1e3;
                  r["helpers_on_interleaved_us"] = ab.second * 1e3;
                  r["helpers_off_rested_gpu_us"] = rested_off;
                  std::printf("    helpers off / on interleaved: %.1f / %.1f us (x%.3f); helpers off "
                              "rested GPU time %.1f us [%s]\n",
                              ab.first * 1e3, ab.second * 1e3, ab.second / ab.first, rested_off,
                              utc_now().c_str());
                  // Sweeps, each value interleaved with production: helper weights, shifts.
                  const auto sweep = [&](const char* what, const std::vector<int>& values,
                                         int hisa::cuda::Options::*field) {
                    for (int value : values) {
                      hisa::cuda::Options so = opt;
                      so.*field = value;
                      const auto as = time_interleaved(call_with(opt), call_with(so));
                      std::printf("    helper %s %d: %.1f us, production interleaved %.1f us "
                                  "(x%.3f)\n",
                                  what, value, as.second * 1e3, as.first * 1e3,
                                  as.second / as.first);
                      r[std::string("helper_") + what + "s"].push_back(
                          {{what, value},
                           {"median_us", as.second * 1e3},
                           {"production_interleaved_us", as.first * 1e3}});
                    }
                  };
                  sweep("weight", g_helper_weights, &hisa::cuda::Options::helper_weight);
                  sweep("shift", g_helper_shifts, &hisa::cuda::Options::helper_shift);
                }
                // Times the batch rotating through the requests, with options `to`.
                const auto time_decode = [&](const hisa::cuda::Options& to) {
                  return time_it(call_with(to), 0.2, 10, 200);
                };
                hisa::cuda::Options dbg = opt;
                dbg.debug_mode = 1;
                const Timing td = time_decode(dbg);
                r["no_select_us"] = td.median_ms * 1e3;
                std::printf("    without selection: %.1f us = %.2f TB/s\n", td.median_ms * 1e3,
                            bytes / (td.median_ms * 1e-3) / 1e12);
                r["no_select_profile"] = profile_call([&](hisa::cuda::Options& po) {
                  po.debug_mode = 1;
                  o.indices = dout.p;
                  hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                });
                hisa::cuda::Options so = dbg;
                so.variant = 2;  // the key stream alone: no scoring either
                const Timing ts = time_decode(so);
                r["stream_only_us"] = ts.median_ms * 1e3;
                std::printf("    key stream alone (no scoring, no selection): %.1f us = %.2f TB/s\n",
                            ts.median_ms * 1e3, bytes / (ts.median_ms * 1e-3) / 1e12);
                r["stream_only_profile"] = profile_call([&](hisa::cuda::Options& po) {
                  po.debug_mode = 1, po.variant = 2;
                  o.indices = dout.p;
                  hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                });
                {
                  // The merge kernel alone (debug_mode 2; 128K always splits), over the partial
                  // lists of one production call.
                  hisa::cuda::Options lo = opt;  // a call that leaves partial lists
                  lo.pair_tail = false, lo.merge_in_kernel = false;
                  o.indices = dout.p;
                  hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, lo);
                  hisa::cuda::Options mo = lo;
                  mo.debug_mode = 2;
                  const Timing tm = time_decode(mo);
                  r["merge_only_us"] = tm.median_ms * 1e3;
                  std::printf("    the merge kernel alone: %.1f us\n", tm.median_ms * 1e3);
                }
                for (const Variant& v : kVariants) {
                  if (!v.decode_name || !variant_wanted(v.variant)) continue;
                  hisa::cuda::Options vo = opt;
                  vo.variant = v.variant, vo.merge_pdl = v.merge_pdl;
                  vo.merge_in_kernel = v.merge_in_kernel, vo.pair_tail = v.pair_tail;
                  // Interleaved with production (rounds of 25 calls each), so that both see the
                  // same drift of clock and power; the variant's last call is checked.
                  const auto ab = time_interleaved(call_with(opt), call_with(vo));
                  json rv;
                  rv["name"] = v.decode_name, rv["variant"] = v.variant;
                  rv["merge_in_kernel"] = v.merge_in_kernel;
                  rv["pair_tail"] = v.pair_tail;
                  rv["median_us"] = ab.second * 1e3;
                  rv["production_interleaved_us"] = ab.first * 1e3;
                  rv["rows_failed"] = check_two(g_ab_rounds * kABPer);  // its last call
                  std::printf(
                      "    %s: %.1f us = %.2f TB/s; production interleaved %.1f us (x%.3f) "
                      "[%s]%s\n",
                      v.decode_name, ab.second * 1e3, bytes / ab.second * 1e-9, ab.first * 1e3,
                      ab.second / ab.first, utc_now().c_str(),
                      rv["rows_failed"].get<int>() ? "  CHECK FAILED" : "");
                  // The goal's measure: rested bursts in turn with production.
                  if (batch == 64)
                    rested_in_turn(vo, opt, rv, "", "production_", "the variant", "production");
                  rv["profile"] = profile_call([&](hisa::cuda::Options& po) {
                    po.variant = v.variant, po.merge_pdl = v.merge_pdl;
                    po.merge_in_kernel = v.merge_in_kernel, po.pair_tail = v.pair_tail;
                    o.indices = dout.p;
                    hisa::cuda::select_decode(make_in(0), cfg, o, ws, nullptr, po);
                  });
                  if (v.no_select) {
                    hisa::cuda::Options vd = vo;
                    vd.debug_mode = 1;
                    const Timing tn = time_decode(vd);
                    rv["no_select_us"] = tn.median_ms * 1e3;
                    std::printf("      without selection: %.1f us\n", tn.median_ms * 1e3);
                  }
                  r["variants"].push_back(rv);
                }
              }
            }
            report["results"].push_back(r);
          }
        }
      }
    }  // decode
    if (!json_path.empty()) {
      std::ofstream f(json_path);
      f << report.dump(2) << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hisa_cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
