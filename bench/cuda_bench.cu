// hisa_cuda_bench: times the CUDA backend's production calls (hisa::cuda::select_prefill and
// select_decode, validation off) on this device, checks sampled rows of every timed output against
// the float64 reference, and prints the numbers against the ceilings measured in this run and the
// baselines timed in the same run (DeepGEMM: ../shared/baselines/dg_anchor.py --json; PyTorch:
// bench/torch_baseline.py --json). A speed-up "vs X" is X's time over hisa's (above 1: hisa is
// faster); none is printed when the baseline is absent or was timed on another device model.
//
//   hisa_cuda_bench [--json F] [--deepgemm F] [--torch F] [--commit HASH] [--quick] [--once]
//                   [--methods flat,hisa,block] [--prefill 8192,32768|none] [--ragged] [--sweep]
//                   [--decode 1x32768,64x131072|none] [--next-n 1,2,4] [--block-size 128]
//                   [--top-blocks 64] [--topk 2048] [--path auto|fused|scores|simt] [--splits 0]
//                   [--no-ceilings] [--workload topical|gaussian]
//
// Shapes: H = 64, D = 128, k = 2048 (--topk: another k, to see what the selection costs), fp8
// e4m3 q and k with per-key fp32 scales. Prefill is full causal (T_b = S_b) in one call; decode reads a paged cache (page 64) whose requests the batches
// rotate through, so that batches 1 and 8 do not run from L2.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cuda/common.hpp"
#include "cuda/device_buffer.hpp"
#include "hisa/cuda.hpp"
#include "hisa/error.hpp"
#include "hisa/judge.hpp"
#include "hisa/reference.hpp"

namespace {

using hisa::Method;
using hisa::SelectConfig;
using hisa::cuda::DeviceBuffer;
using nlohmann::json;

constexpr int kHeads = 64, kDim = 128, kTopk = 2048;
constexpr int kPage = 64, kPageBytes = kPage * (kDim + 4);  // 8448: 64 x 128 fp8, 64 fp32 scales
constexpr int kCacheRequests = 64;  // decode batches rotate through at least this many requests
constexpr int kRestMs = 1000;       // idle GPU before a rested timing: the power cap lifts in it

// ------------------------------------------------------------------ random inputs on the device
__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return uint32_t(x ^ (x >> 33));
}
__device__ float uniform(uint64_t seed, uint64_t i) {  // [0, 1)
  return float(mix(seed * 0x9E3779B97F4A7C15ull + i) >> 8) * (1.0f / 16777216.0f);
}
__device__ float gauss(uint64_t seed, uint64_t i) {  // sum of 4 uniforms, unit variance
  float s = 0.0f;
  for (int j = 0; j < 4; ++j) s += uniform(seed, i * 4 + j);
  return (s - 2.0f) * 1.7320508f;
}
__device__ uint8_t to_fp8(float v) { return __nv_fp8_e4m3(v).__x; }

enum Fill { kFp8Gauss, kUniform, kGauss };
// p[i], i < n: fp8 e4m3 of a * gauss (uint8 p), fp32 a + (b - a) * uniform, or fp32 a * gauss.
__global__ void fill_random(void* p, int64_t n, uint64_t seed, Fill kind, float a, float b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (kind == kFp8Gauss)
      static_cast<uint8_t*>(p)[i] = to_fp8(a * gauss(seed, i));
    else
      static_cast<float*>(p)[i] =
          kind == kUniform ? a + (b - a) * uniform(seed, i) : a * gauss(seed, i);
  }
}
// Reserves n elements of buf and fills them.
template <typename T>
void fill(DeviceBuffer<T>& buf, size_t n, uint64_t seed, Fill kind, float a, float b = 0.0f) {
  fill_random<<<4096, 256>>>(buf.reserve(n), int64_t(n), seed, kind, a, b);
  HISA_CUDA_CHECK(cudaGetLastError());
}
// Topical inputs (docs/workloads.md's topical generator, on the device): 16 topic centres
// u_c ~ N(0, I); key p belongs to topic hash(p / 512) (documents move between topics in 512-token
// spans): k_p = 1.5 u_c + N(0, I); head h of query t asks about topic hash(t / 32, h) (neighbouring
// queries ask about the same things): q = u_c + N(0, I). Keys are then quantised per token to fp8
// with amax / 448 scales, queries scaled by 40 into fp8's range. This is where blocks carry the
// signal and neighbouring rows choose overlapping blocks; --workload gaussian is i.i.d.
constexpr int kTopics = 16;
__device__ uint32_t topic_of(uint64_t seed, uint64_t span, uint64_t h) {
  return mix(seed * 31 + span * 977 + h * 0x9E3779B97F4A7C15ull) % kTopics;
}
__global__ void fill_topical_q(uint8_t* q, int64_t rows, int heads, uint64_t seed) {
  const int64_t n = rows * heads * kDim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / (int64_t(heads) * kDim);
    const int h = int(i / kDim % heads), d = int(i % kDim);
    const uint32_t c = topic_of(seed, uint64_t(t / 32), uint64_t(h));
    q[i] = to_fp8(40.0f * (gauss(seed + 1, uint64_t(c) * kDim + d) + gauss(seed + 2, i)));
  }
}
// One warp per key row: the topical key, then its per-token fp8 quantisation (amax / 448).
__global__ void fill_topical_k(uint8_t* k, float* k_scale, int64_t rows, uint64_t seed) {
  const int lane = threadIdx.x % 32;
  for (int64_t p = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; p < rows;
       p += int64_t(gridDim.x) * blockDim.x / 32) {
    const uint32_t c = topic_of(seed, uint64_t(p / 512), 0);
    float v[kDim / 32], amax = 0.0f;
    for (int j = 0; j < kDim / 32; ++j) {
      const int d = lane + 32 * j;
      v[j] =
          1.5f * gauss(seed + 1, uint64_t(c) * kDim + d) + gauss(seed + 3, uint64_t(p) * kDim + d);
      amax = fmaxf(amax, fabsf(v[j]));
    }
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, o));
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    for (int j = 0; j < kDim / 32; ++j) k[p * kDim + lane + 32 * j] = to_fp8(v[j] / scale);
    if (lane == 0) k_scale[p] = scale;
  }
}

// Cache pages: fp8 values (3 x Gaussian), then the page's 64 scales in [1, 2).
__global__ void fill_cache(uint8_t* cache, int64_t pages, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pages * kPageBytes;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t off = i % kPageBytes;
    if (off < kPage * kDim) {
      cache[i] = to_fp8(3.0f * gauss(seed, i));
    } else if ((off - kPage * kDim) % 4 == 0) {
      const float s = 1.0f + uniform(seed, i);
      memcpy(cache + i, &s, 4);
    }
  }
}

// Read-only ceilings for decode (its job is a read of the paged cache): every byte read once with
// 16-byte streaming loads, (a) as one flat buffer, (b) page by page in a shuffled block table's
// order (one warp per 8448-byte page record). Only a data-dependent word is written, so that the
// loads cannot be dropped.
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
  constexpr int kVec = kPageBytes / 16;  // 528 int4 per page record
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  uint32_t acc = 0;
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; w < pages; w += warps) {
    const int4* pg = reinterpret_cast<const int4*>(cache + int64_t(table[w]) * kPageBytes);
    int4 v[(kVec + 31) / 32];
#pragma unroll
    for (int j = 0; j < (kVec + 31) / 32; ++j)
      v[j] = lane + 32 * j < kVec ? __ldcs(pg + lane + 32 * j) : make_int4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < (kVec + 31) / 32; ++j) acc ^= uint32_t(v[j].x ^ v[j].y ^ v[j].z ^ v[j].w);
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;
}

__global__ void spin_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

// ------------------------------------------------------------------ timing
struct Timing {
  double median_ms = 0, min_ms = 0;
  int reps = 0;
};

// f(rep) between two events on the default stream, then a synchronisation: its time in ms.
// queued: an 80000-cycle (~40 us) spin kernel goes first, so that the call's launches queue behind
// it before the start event completes: the interval is GPU time only, as a profiler's kernel time
// (dg_anchor.py times DeepGEMM the same way, with torch.cuda._sleep(80000)).
double time_call(const std::function<void(int)>& f, int rep, bool queued) {
  cudaEvent_t a, b;
  HISA_CUDA_CHECK(cudaEventCreate(&a));
  HISA_CUDA_CHECK(cudaEventCreate(&b));
  if (queued) spin_kernel<<<1, 32>>>(80000);
  HISA_CUDA_CHECK(cudaEventRecord(a));
  f(rep);
  HISA_CUDA_CHECK(cudaEventRecord(b));
  HISA_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  HISA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  HISA_CUDA_CHECK(cudaEventDestroy(a));
  HISA_CUDA_CHECK(cudaEventDestroy(b));
  return ms;
}

// --once: every timing makes one warm-up and one timed call, so that a profiler run (ncu) lists
// the kernels of exactly two calls per case.
bool g_once = false;

// A warm-up call f(0), then f(1), f(2), ... until budget_s of timed calls (at least min_reps, at
// most max_reps): median and min. rest_ms: idle GPU between the warm-up and the timed calls.
Timing time_it(const std::function<void(int)>& f, double budget_s, int min_reps, int max_reps,
               bool queued = false, int rest_ms = 0) {
  if (g_once) budget_s = 0, min_reps = max_reps = 1;
  f(0);
  HISA_CUDA_CHECK(cudaDeviceSynchronize());
  if (rest_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(rest_ms));
  std::vector<double> ms;
  double total = 0;
  for (int rep = 1; rep <= max_reps && (rep <= min_reps || total < budget_s * 1e3); ++rep) {
    ms.push_back(time_call(f, rep, queued));
    total += ms.back();
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), int(ms.size())};
}

// Time per call of `reps` calls queued back to back (no synchronisation in between: the host's
// work per call overlaps the previous call's GPU work, as in a serving loop).
double time_back_to_back_ms(const std::function<void(int)>& f, int reps) {
  f(0);
  HISA_CUDA_CHECK(cudaDeviceSynchronize());
  return time_call(
             [&](int) {
               for (int rep = 1; rep <= reps; ++rep) f(rep);
             },
             0, false) /
         reps;
}

// ------------------------------------------------------------------ options
struct Args {
  std::string json_path, deepgemm_path, torch_path, commit, command_line;
  bool quick = false, ragged = false, sweep = false, ceilings = true;
  std::vector<Method> methods = {Method::Flat, Method::Hisa};
  std::vector<int64_t> prefill = {8192, 32768, 65536, 131072};
  std::vector<std::pair<int, int>> decode = {{1, 32768},  {8, 32768},  {64, 32768},
                                             {1, 131072}, {8, 131072}, {64, 131072}};
  std::vector<int> next_n = {1};
  int block_size = 128, top_blocks = 64, splits = 0, topk = kTopk;
  hisa::cuda::Path path = hisa::cuda::Path::Auto;
  std::string workload = "topical";  // prefill inputs: topical or gaussian
};

// "a,b,c" -> {a, b, c}; "none" -> {}.
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> v;
  for (size_t at = 0; s != "none" && at < s.size();) {
    const size_t comma = std::min(s.find(',', at), s.size());
    if (comma > at) v.push_back(s.substr(at, comma - at));
    at = comma + 1;
  }
  return v;
}

// Throws std::invalid_argument naming the flag on anything it does not know.
Args parse_args(int argc, char** argv) {
  Args a;
  bool prefill_given = false, decode_given = false;
  for (int i = 0; i < argc; ++i) a.command_line += (i ? " " : "") + std::string(argv[i]);
  int i = 1;
  std::string flag;
  const auto value = [&]() -> std::string {
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    return argv[++i];
  };
  const auto positive = [&](const std::string& s) {
    const long long v = std::stoll(s);
    if (v <= 0) throw std::invalid_argument(flag + ": " + s + " is not positive");
    return v;
  };
  const std::map<std::string, std::function<void()>> flags = {
      {"--json", [&] { a.json_path = value(); }},
      {"--deepgemm", [&] { a.deepgemm_path = value(); }},
      {"--torch", [&] { a.torch_path = value(); }},
      {"--commit", [&] { a.commit = value(); }},
      {"--quick", [&] { a.quick = true; }},
      {"--once", [&] { g_once = true; }},
      {"--ragged", [&] { a.ragged = true; }},
      {"--sweep", [&] { a.sweep = true; }},
      {"--no-ceilings", [&] { a.ceilings = false; }},
      {"--block-size", [&] { a.block_size = int(positive(value())); }},
      {"--top-blocks", [&] { a.top_blocks = int(positive(value())); }},
      {"--topk", [&] { a.topk = int(positive(value())); }},
      {"--splits", [&] { a.splits = std::stoi(value()); }},
      {"--workload",
       [&] {
         a.workload = value();
         if (a.workload != "topical" && a.workload != "gaussian")
           throw std::invalid_argument("--workload: topical or gaussian, got " + a.workload);
       }},
      {"--methods",
       [&] {
         a.methods.clear();
         for (const auto& m : split_list(value())) a.methods.push_back(hisa::method_from_name(m));
       }},
      {"--prefill",
       [&] {
         a.prefill.clear(), prefill_given = true;
         for (const auto& s : split_list(value())) a.prefill.push_back(positive(s));
       }},
      {"--decode",
       [&] {
         a.decode.clear(), decode_given = true;
         for (const auto& s : split_list(value())) {
           const size_t x = s.find('x');
           if (x == std::string::npos)
             throw std::invalid_argument("--decode: " + s + " is not BxCTX");
           a.decode.push_back({int(positive(s.substr(0, x))), int(positive(s.substr(x + 1)))});
         }
       }},
      {"--next-n",
       [&] {
         a.next_n.clear();
         for (const auto& s : split_list(value())) a.next_n.push_back(int(positive(s)));
         if (a.next_n.empty()) throw std::invalid_argument("--next-n: empty list");
       }},
      {"--path",
       [&] {
         const std::string p = value();
         bool known = false;
         for (auto c : {hisa::cuda::Path::Auto, hisa::cuda::Path::Fused, hisa::cuda::Path::Scores,
                        hisa::cuda::Path::Simt})
           if (hisa::cuda::path_name(c) == p) a.path = c, known = true;
         if (!known) throw std::invalid_argument("--path: unknown path " + p);
       }},
  };
  for (; i < argc; ++i) {
    flag = argv[i];
    const auto it = flags.find(flag);
    if (it == flags.end()) throw std::invalid_argument("unknown flag " + flag);
    it->second();
  }
  if (a.quick && !prefill_given) a.prefill = {8192, 32768};
  if (a.quick && !decode_given) a.decode = {{1, 32768}, {64, 32768}};
  return a;
}

hisa::cuda::Options timing_options(const Args& a) {
  hisa::cuda::Options o;
  o.validate = false;  // the device-side input checks synchronise the stream
  o.path = a.path;
  o.splits = a.splits;
  return o;
}

SelectConfig make_config(Method m, const Args& a) {
  SelectConfig c;
  c.method = m, c.topk = a.topk, c.block_size = a.block_size, c.top_blocks = a.top_blocks;
  return c;
}

// The path Auto takes, or "-" where the backend rejects the inputs.
template <typename Inputs>
std::string path_of(const Inputs& in, const SelectConfig& c) {
  try {
    return hisa::cuda::path_name(hisa::cuda::chosen_path(in, c));
  } catch (const hisa::Error&) {
    return "-";
  }
}

std::string utc_now(const char* format) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[64];
  std::strftime(b, sizeof b, format, &tm);
  return b;
}

// ------------------------------------------------------------------ baselines (same run)
json field(const json& j, const char* key) {  // j[key], or null
  return j.is_object() && j.contains(key) ? j[key] : json();
}
double num(const json& j, const char* key) {  // j[key] as a number, or NaN
  const json v = field(j, key);
  return v.is_number() ? v.get<double>() : NAN;
}

// A baseline JSON (dg_anchor.py's or torch_baseline.py's), kept only when it was timed on a device
// of this one's name.
struct Baseline {
  json data;
  void load(const std::string& path, const char* what, const std::string& device, json& note) {
    if (path.empty()) return;
    std::ifstream f(path);
    const json j = f ? json::parse(f, nullptr, false) : json();
    const std::string dev = j.is_object() ? j.value("device", "?") : "";
    note = {{"file", path}, {"device", dev}, {"usable", dev == device}};
    if (dev == device)
      data = j;
    else if (dev.empty())
      std::printf("WARNING: %s baseline %s is missing or unreadable: no ratios against it\n", what,
                  path.c_str());
    else
      std::printf("WARNING: %s baseline %s was timed on '%s', this is '%s': no ratios against it\n",
                  what, path.c_str(), dev.c_str(), device.c_str());
  }
  // Its first result of `kind` whose fields equal those of `match`, or null.
  json find(const char* kind, const json& match) const {
    if (data.is_object() && data.contains("results"))
      for (const auto& r : data["results"]) {
        bool all = r.is_object() && r.value("kind", "") == kind;
        for (const auto& [k, v] : match.items()) all = all && r.value(k, json()) == v;
        if (all) return r;
      }
    return nullptr;
  }
};
struct Baselines {
  Baseline deepgemm, torch;
  double fp8_gemm_tflops = NAN;  // from the torch baseline (torch._scaled_mm, 8192^3)
};

// base / ours as "2.31x" (and into[key]) where both are known, else "-".
std::string speedup(double base, double ours, json& into, const char* key) {
  if (!(base > 0) || !(ours > 0)) return "-";
  into[key] = base / ours;
  char b[32];
  std::snprintf(b, sizeof b, "%.2fx", base / ours);
  return b;
}

// ------------------------------------------------------------------ checks
// Judges output row `row` against its reference row: 0 when right, else 1 (and prints why).
int judge(const hisa::reference::Row& ref, const SelectConfig& cfg,
          const DeviceBuffer<int32_t>& idx, const DeviceBuffer<int32_t>& blocks, size_t row,
          const std::string& label) {
  const auto oh = idx.to_host(row * cfg.out_width(), size_t(cfg.out_width()));
  const auto bh = cfg.has_blocks() ? blocks.to_host(row * cfg.top_blocks, size_t(cfg.top_blocks))
                                   : std::vector<int32_t>();
  // The block check judges the chosen blocks on pooled keys rounded as the backend stores them.
  // (HISA_BENCH_OLD_LIBRARY: built against a library before HISA on CUDA, for the flat A/B.)
#ifdef HISA_BENCH_OLD_LIBRARY
  const std::string err =
      hisa::judge_row(ref, cfg, oh.data(), cfg.has_blocks() ? bh.data() : nullptr,
                      hisa::judge_rel_eps(hisa::DType::F8E4M3), /*exact=*/false);
#else
  const std::string err =
      hisa::judge_row(ref, cfg, oh.data(), cfg.has_blocks() ? bh.data() : nullptr,
                      hisa::judge_rel_eps(hisa::DType::F8E4M3), /*exact=*/false,
                      hisa::cuda::pooled_rounding(hisa::DType::F8E4M3));
#endif
  if (!err.empty()) std::printf("  CHECK FAILED %s: %s\n", label.c_str(), err.c_str());
  return err.empty() ? 0 : 1;
}

std::string checked(const json& r) {  // "4/4", or "FAIL 3/4"
  const int n = r.value("rows_checked", 0), bad = r.value("rows_failed", 0);
  return (bad ? "FAIL " : "") + std::to_string(n - bad) + "/" + std::to_string(n);
}

// ------------------------------------------------------------------ prefill
// Full causal prefill over sequences of the given lengths (T_b = S_b), one call with cu_seqlens.
struct PrefillData {
  std::vector<int32_t> lens, cu;   // host: lengths and cu_seqlens (the same for q and k)
  DeviceBuffer<uint8_t> q, k;      // [T, H, D], [T, D] fp8 e4m3
  DeviceBuffer<float> k_scale, w;  // [T] in [0.5, 2), [T, H]
  DeviceBuffer<int32_t> cu_dev;    // [N + 1]
  int64_t tokens() const { return cu.back(); }
  hisa::PrefillInputs inputs() const {
    hisa::PrefillInputs in;
    in.num_q = in.num_k = tokens();
    in.num_heads = kHeads, in.head_dim = kDim, in.dtype = hisa::DType::F8E4M3;
    in.q = q.data(), in.k = k.data(), in.k_scale = k_scale.data(), in.w = w.data();
    in.num_seqs = int(lens.size()), in.cu_seqlens_q = in.cu_seqlens_k = cu_dev.data();
    return in;
  }
  // Row t from one-row host inputs: its q and w, the visible keys of its sequence (ks 0, ke e).
  hisa::reference::Row reference_row(int64_t t) const {
    const size_t s = size_t(std::upper_bound(cu.begin(), cu.end(), int32_t(t)) - cu.begin()) - 1;
    const int64_t k0 = cu[s], e = t - k0 + 1;
    const auto kh = k.to_host(size_t(k0) * kDim, size_t(e) * kDim);
    const auto sh = k_scale.to_host(size_t(k0), size_t(e));
    const auto qh = q.to_host(size_t(t) * kHeads * kDim, size_t(kHeads) * kDim);
    const auto wh = w.to_host(size_t(t) * kHeads, kHeads);
    const int32_t zero = 0, end = int32_t(e);
    hisa::PrefillInputs in;
    in.num_q = 1, in.num_k = e, in.num_heads = kHeads, in.head_dim = kDim;
    in.dtype = hisa::DType::F8E4M3;
    in.q = qh.data(), in.k = kh.data(), in.k_scale = sh.data(), in.w = wh.data();
    in.ks = &zero, in.ke = &end;
    return hisa::reference::prefill_rows(in)[0];
  }
};

PrefillData make_prefill(const std::vector<int32_t>& lens, const std::string& workload) {
  PrefillData d;
  d.lens = lens, d.cu = {0};
  for (int32_t n : lens) d.cu.push_back(d.cu.back() + n);
  const int64_t T = d.tokens();
  d.q.reserve(size_t(T) * kHeads * kDim), d.k.reserve(size_t(T) * kDim);
  d.k_scale.reserve(size_t(T)), d.w.reserve(size_t(T) * kHeads);
  d.cu_dev.assign(d.cu);
  if (workload == "topical") {
    fill_topical_q<<<4096, 256>>>(d.q.data(), T, kHeads, 1000 + T);
    fill_topical_k<<<2048, 256>>>(d.k.data(), d.k_scale.data(), T, 1000 + T);
    HISA_CUDA_CHECK(cudaGetLastError());
  } else {
    fill(d.q, size_t(T) * kHeads * kDim, 1000 + T, kFp8Gauss, 40.0f);
    fill(d.k, size_t(T) * kDim, 2000 + T, kFp8Gauss, 3.0f);
    fill(d.k_scale, size_t(T), 3000 + T, kUniform, 0.5f, 2.0f);
  }
  fill(d.w, size_t(T) * kHeads, 4000 + T, kGauss, 0.1f);
  return d;
}

// FLOPs of one call, 2 per multiply-add, summed over rows (e: the row's visible keys):
//   flat:  e * H * D * 2                   (L(L+1)/2 * H * D * 2 for one sequence of L)
//   hisa:  min(e, m*B) * H * D * 2         token stage: the candidates of m blocks
//        + floor(e / B) * H * D * 2        block stage: one pooled key per complete block
//   block: floor(e / B) * H * D * 2        the block stage alone
// token_stage: the token stage's part alone (flat: all of it; block: none).
double prefill_flops(const SelectConfig& c, const std::vector<int32_t>& lens,
                     bool token_stage = false) {
  double keys = 0;
  const int64_t budget = int64_t(c.top_blocks) * c.block_size;
  for (int32_t n : lens)
    for (int64_t e = 1; e <= n; ++e) {
      if (c.method == Method::Flat) keys += double(e);
      if (c.method == Method::Hisa) keys += double(std::min(e, budget));
      if (c.method != Method::Flat && !token_stage) keys += double(e / c.block_size);
    }
  return keys * kHeads * kDim * 2;
}

// Times `cfg` over `d` (fresh workspace) and checks `rows`. Throws hisa::Error when the backend
// rejects the call.
json time_prefill(const PrefillData& d, const SelectConfig& cfg, const Args& a,
                  const std::vector<int64_t>& rows) {
  const int64_t T = d.tokens();
  DeviceBuffer<int32_t> idx(size_t(T) * cfg.out_width());
  DeviceBuffer<int32_t> blocks(cfg.has_blocks() ? size_t(T) * cfg.top_blocks : 0);
  hisa::SelectOutputs out;
  out.indices = idx.data();
  out.blocks = cfg.has_blocks() ? blocks.data() : nullptr;
  hisa::cuda::Workspace ws;
  const hisa::cuda::Options opt = timing_options(a);
  const hisa::PrefillInputs in = d.inputs();
  // 3 to 20 timed calls in 0.5-1 s; past 128K tokens at least 1 (flat at 1M: ~10 s a call).
  const Timing t = time_it([&](int) { hisa::cuda::select_prefill(in, cfg, out, ws, nullptr, opt); },
                           T >= 65536 ? 1.0 : 0.5, T > 131072 ? 1 : 3, 20);
  const double flops = prefill_flops(cfg, d.lens);
  json r = {{"method", hisa::method_name(cfg.method)},
            {"config", cfg.describe()},
            {"tokens", T},
            {"path", path_of(in, cfg)},
            {"median_ms", t.median_ms},
            {"min_ms", t.min_ms},
            {"reps", t.reps},
            {"ns_per_token", t.median_ms * 1e6 / double(T)},
            {"flops", flops},
            {"tflops", flops / (t.median_ms * 1e-3) / 1e12},
            {"workspace_bytes", ws.bytes()}};
  if (cfg.method == Method::Hisa) {
    // The token stage streams, per tile of two rows, the union of their chosen blocks once: the
    // keys gathered per query (and their bytes, 128 + 4 per key) with that reuse and without.
    const int64_t tiles = T / 2, m = cfg.top_blocks, step = std::max<int64_t>(1, tiles / 4096);
    double sum_union = 0, sum_own = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < tiles; i += step, ++n) {
      const auto b = blocks.to_host(size_t(2 * i * m), size_t(2 * m));
      std::set<int32_t> u;
      for (int32_t x : b)
        if (x >= 0) u.insert(x);
      sum_union += double(u.size());
      sum_own += double(std::count_if(b.begin(), b.end(), [](int32_t x) { return x >= 0; }));
    }
    const double per_query = sum_union / std::max<int64_t>(n, 1) / 2.0 * cfg.block_size;
    const double without = sum_own / std::max<int64_t>(n, 1) / 2.0 * cfg.block_size;
    r["gathered_keys_per_query"] = per_query;
    r["gathered_bytes_per_query"] = per_query * (kDim + 4);
    r["keys_per_query_without_reuse"] = without;
    r["reuse_fraction"] = without > 0 ? 1.0 - per_query / without : 0.0;
    r["token_stage_flops"] = prefill_flops(cfg, d.lens, /*token_stage=*/true);
  }
  int bad = 0;
  for (int64_t row : rows)
    bad += judge(d.reference_row(row), cfg, idx, blocks, size_t(row), "row " + std::to_string(row));
#ifndef HISA_BENCH_OLD_LIBRARY
  if (cfg.has_blocks()) {
    // Cross-layer reuse: the same call given these blocks (the next layer's call with r > 0):
    // no pooling and no block stage (no blocks output: the given ones stay as they are).
    DeviceBuffer<int32_t> idx2(size_t(T) * cfg.out_width());
    hisa::PrefillInputs gin = in;
    gin.given_blocks = blocks.data();
    hisa::SelectOutputs out2;
    out2.indices = idx2.data();
    const Timing tg =
        time_it([&](int) { hisa::cuda::select_prefill(gin, cfg, out2, ws, nullptr, opt); },
                T >= 65536 ? 1.0 : 0.5, T > 131072 ? 1 : 3, 20);
    r["given_blocks_ms"] = tg.median_ms;
    // Given its own blocks the call selects what it selected (the checked rows).
    const size_t w = size_t(cfg.out_width());
    for (int64_t row : rows) {
      if (idx2.to_host(size_t(row) * w, w) != idx.to_host(size_t(row) * w, w)) {
        std::printf("  CHECK FAILED given blocks, row %lld: the selection differs from the call's "
                    "own\n", (long long)row);
        ++bad;
      }
    }
  }
#endif
  r["rows_checked"] = rows.size(), r["rows_failed"] = bad;
  return r;
}

const char* const kPrefillHeader =
    "method  L/tokens    median ms  ns/token  TFLOP/s  %fp8  ws MB  checked  vs DG logits  "
    "vs DG+topk  vs torch\n";

// Prints one prefill result; its speed-ups over the same-length baselines go into r.
void print_prefill(json& r, const Baselines& base) {
  const int64_t L = r["tokens"].get<int64_t>();
  const double ms = r["median_ms"].get<double>();
  const json dg = base.deepgemm.find("prefill", {{"L", L}});
  json sp = json::object();
  const std::string vdg = speedup(num(field(dg, "logits"), "median_ms"), ms, sp, "deepgemm_logits");
  const std::string vdgt =
      speedup(num(field(dg, "logits_topk"), "median_ms"), ms, sp, "deepgemm_logits_topk");
  const std::string vt =
      speedup(num(base.torch.find("prefill", {{"L", L}}), "ms"), ms, sp, "torch");
  if (!sp.empty()) r["speedups"] = sp;
  std::string fp8 = "-";
  if (base.fp8_gemm_tflops > 0) {
    r["fraction_of_fp8_gemm"] = r["tflops"].get<double>() / base.fp8_gemm_tflops;
    fp8 = std::to_string(int(std::lround(100 * r["fraction_of_fp8_gemm"].get<double>())));
  }
  std::printf("%-6s  %-9lld %10.3f  %8.1f  %7.1f  %4s  %5.1f  %7s  %12s  %10s  %8s\n",
              r["method"].get<std::string>().c_str(), (long long)L, ms,
              r["ns_per_token"].get<double>(), r["tflops"].get<double>(), fp8.c_str(),
              r["workspace_bytes"].get<double>() / 1e6, checked(r).c_str(), vdg.c_str(),
              vdgt.c_str(), vt.c_str());
  if (r.contains("gathered_keys_per_query"))
    std::printf(
        "        token stage: %.0f keys (%.2f MB) gathered per query, %.0f without the "
        "tile's reuse (%.0f%% reused)\n",
        r["gathered_keys_per_query"].get<double>(),
        r["gathered_bytes_per_query"].get<double>() / 1e6,
        r["keys_per_query_without_reuse"].get<double>(), 100 * r["reuse_fraction"].get<double>());
  if (r.contains("given_blocks_ms"))
    std::printf("        given blocks (cross-layer reuse, no block stage): %.3f ms (%.2fx)\n",
                r["given_blocks_ms"].get<double>(), ms / r["given_blocks_ms"].get<double>());
  std::fflush(stdout);
}

void record_error(json& results, json r, const std::string& what, const hisa::Error& e) {
  std::printf("%s: %s\n", what.c_str(), e.what());
  cudaGetLastError();  // a launch error the call threw on is not left for the next case
  r["error"] = e.what();
  results.push_back(r);
}

// ------------------------------------------------------------------ cases
json run_ceilings(const Args& a, const Baselines& base) {
  json c;
  if (a.ceilings) {
    const size_t n = size_t(2) << 30;  // 2 GB device copy; bytes read + written
    DeviceBuffer<uint8_t> x(n), y(n);
    HISA_CUDA_CHECK(cudaMemset(x.data(), 1, n));
    const auto copy = [&](int) {
      HISA_CUDA_CHECK(cudaMemcpyAsync(y.data(), x.data(), n, cudaMemcpyDeviceToDevice));
    };
    c["copy_tbps"] = 2.0 * double(n) / (time_it(copy, 0.3, 5, 20).median_ms * 1e-3) / 1e12;
    x.release(), y.release();
    // The decode floor over a cache of 64 requests x 128K tokens (1.1 GB), pages shuffled: the
    // best of a few launch shapes (the resident warps bound the pages in flight).
    const int64_t pages = int64_t(kCacheRequests) * (131072 / kPage);
    const size_t cache_bytes = size_t(pages) * kPageBytes;
    DeviceBuffer<uint8_t> cache(cache_bytes);
    fill_cache<<<8192, 256>>>(cache.data(), pages, 77);
    HISA_CUDA_CHECK(cudaGetLastError());
    std::vector<int32_t> perm(static_cast<size_t>(pages));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937_64(5));
    DeviceBuffer<int32_t> table(perm);
    DeviceBuffer<uint32_t> sink(1);
    int dev = 0, sms = 0;
    HISA_CUDA_CHECK(cudaGetDevice(&dev));
    HISA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const double bytes = double(cache_bytes);
    double flat = 0, paged = 0;
    for (int per_sm : a.quick ? std::vector<int>{4} : std::vector<int>{1, 2, 4, 8})
      for (int threads : a.quick ? std::vector<int>{512} : std::vector<int>{256, 512, 1024}) {
        const Timing tf = time_it(
            [&](int) {
              read_flat<<<sms * per_sm, threads>>>(reinterpret_cast<const int4*>(cache.data()),
                                                   int64_t(cache_bytes / 16), sink.data());
            },
            0.1, 5, 50);
        const Timing tp = time_it(
            [&](int) {
              read_paged<<<sms * per_sm, threads>>>(cache.data(), table.data(), pages, sink.data());
            },
            0.1, 5, 50);
        HISA_CUDA_CHECK(cudaGetLastError());
        flat = std::max(flat, bytes / (tf.median_ms * 1e-3) / 1e12);
        if (bytes / (tp.median_ms * 1e-3) / 1e12 > paged) {
          paged = bytes / (tp.median_ms * 1e-3) / 1e12;
          c["read_paged_launch"] = {{"ctas_per_sm", per_sm}, {"threads", threads}};
        }
      }
    c.update({{"read_bytes", bytes}, {"read_flat_tbps", flat}, {"read_paged_tbps", paged}});
    std::printf(
        "ceilings: device copy %.2f TB/s (2 GB, read + written); read-only over a %.2f GB "
        "cache: flat %.2f TB/s, page by page through a shuffled table %.2f TB/s\n",
        c["copy_tbps"].get<double>(), bytes / 1e9, flat, paged);
  }
  c["fp8_gemm_tflops"] = base.fp8_gemm_tflops > 0 ? json(base.fp8_gemm_tflops) : json();
  if (base.fp8_gemm_tflops > 0)
    std::printf("fp8 GEMM ceiling: %.0f TFLOP/s (torch._scaled_mm 8192^3, torch baseline)\n",
                base.fp8_gemm_tflops);
  else
    std::printf("fp8 GEMM ceiling: not measured in this run\n");
  return c;
}

void run_prefill(const Args& a, const Baselines& base, json& results) {
  if (a.prefill.empty() || a.methods.empty()) return;
  std::printf(
      "\nprefill: one sequence, full causal, fp8, H=%d D=%d k=%d (hisa, block: B=%d m=%d)\n",
      kHeads, kDim, a.topk, a.block_size, a.top_blocks);
  std::fputs(kPrefillHeader, stdout);
  for (int64_t L : a.prefill) {
    const PrefillData d = make_prefill({int32_t(L)}, a.workload);
    // A float64 reference row costs e * H * D multiply-adds: 2 rows past 128K tokens, else 4.
    std::set<int64_t> rows = {std::min<int64_t>(17, L - 1), L - 1};
    if (L <= 131072) rows.insert({std::min<int64_t>(L - 1, 2100), L / 2});
    for (Method m : a.methods) {
      const json id = {{"kind", "prefill"}, {"method", hisa::method_name(m)}, {"L", L}};
      try {
        json r = time_prefill(d, make_config(m, a), a, {rows.begin(), rows.end()});
        r.update(id);
        print_prefill(r, base);
        results.push_back(r);
      } catch (const hisa::Error& e) {
        record_error(results, id,
                     "prefill L=" + std::to_string(L) + " method=" + hisa::method_name(m), e);
      }
    }
  }
}

// 16 sequences of 1K-64K tokens in one call against one sequence of the same FLOPs; the goal:
// ragged tokens/s within 1.3x of it, i.e. ragged time / its time <= 1.3 at equal work.
void run_ragged(const Args& a, const Baselines& base, json& results) {
  if (!a.ragged) return;
  std::vector<int32_t> lens = {65536, 1000,  16411, 4096,  49152, 2085, 8192,  32768,
                               1536,  24600, 3072,  12288, 57344, 6150, 40960, 20480};
  if (a.quick)
    for (auto& n : lens) n /= 4;
  const PrefillData d = make_prefill(lens, a.workload);
  std::printf(
      "\nragged prefill: %zu sequences of %d-%d tokens (%lld in all) in one call, then one "
      "sequence of the same FLOPs\n",
      lens.size(), *std::min_element(lens.begin(), lens.end()),
      *std::max_element(lens.begin(), lens.end()), (long long)d.tokens());
  std::fputs(kPrefillHeader, stdout);
  const std::vector<int64_t> rows = {d.cu[1] - 1, d.cu[2] - 1, d.cu.back() - 1};  // sequences' ends
  for (Method m : a.methods) {
    const SelectConfig cfg = make_config(m, a);
    const json id = {{"kind", "ragged"}, {"method", hisa::method_name(m)}, {"lengths", lens}};
    try {
      json r = time_prefill(d, cfg, a, rows);
      r.update(id);
      print_prefill(r, base);
      int32_t lo = 1, hi = int32_t(d.tokens());  // the shortest L of at least the batch's FLOPs
      while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (prefill_flops(cfg, {mid}) < r["flops"].get<double>())
          lo = mid + 1;
        else
          hi = mid;
      }
      json s = time_prefill(make_prefill({lo}, a.workload), cfg, a, {lo - 1});
      print_prefill(s, base);
      const double ms = r["median_ms"].get<double>(), one_ms = s["median_ms"].get<double>();
      s["tokens_per_s"] = lo / (one_ms * 1e-3);
      r.update({{"tokens_per_s", double(d.tokens()) / (ms * 1e-3)},
                {"same_work_single", s},
                {"time_over_same_work_single", ms / one_ms}});
      std::printf(
          "  %s: ragged %.3g tokens/s; one sequence of %d tokens (same FLOPs) %.3g tokens/s; "
          "ragged time / its time %.2f (goal <= 1.3)\n",
          hisa::method_name(m).c_str(), r["tokens_per_s"].get<double>(), lo,
          s["tokens_per_s"].get<double>(), ms / one_ms);
      results.push_back(r);
    } catch (const hisa::Error& e) {
      record_error(results, id, "ragged prefill method=" + hisa::method_name(m), e);
    }
  }
}

// HISA prefill over B in {64, 128, 256} x candidate budget m*B in {4K, 8K, 16K, L/4}.
void run_sweep(const Args& a, json& results) {
  if (!a.sweep) return;
  for (int64_t L : a.quick ? std::vector<int64_t>{32768} : std::vector<int64_t>{32768, 131072}) {
    const PrefillData d = make_prefill({int32_t(L)}, a.workload);
    const std::set<int64_t> budgets = {4096, 8192, 16384, L / 4};
    std::printf("\nhisa sweep, L = %lld: median ms (TFLOP/s) by B and budget m*B\n  B   ",
                (long long)L);
    for (int64_t b : budgets) std::printf(" %16lld", (long long)b);
    std::printf("\n");
    std::vector<std::string> errors;
    for (int B : {64, 128, 256}) {
      std::printf("  %-4d", B);
      for (int64_t budget : budgets) {
        Args s = a;
        s.block_size = B, s.top_blocks = int(budget / B);
        json id = {{"kind", "sweep"}, {"method", "hisa"},  {"L", L},
                   {"B", B},          {"m", s.top_blocks}, {"budget", budget}};
        try {
          json r = time_prefill(d, make_config(Method::Hisa, s), s, {L / 2});
          r.update(id);
          std::printf(" %8.3f (%5.0f)%s", r["median_ms"].get<double>(), r["tflops"].get<double>(),
                      r["rows_failed"].get<int>() ? "!" : " ");
          results.push_back(r);
        } catch (const hisa::Error& e) {
          cudaGetLastError();
          std::printf(" %16s", "error");
          errors.push_back("B=" + std::to_string(B) + " m=" + std::to_string(s.top_blocks) + ": " +
                           e.what());
          id["error"] = e.what();
          results.push_back(id);
        }
        std::fflush(stdout);
      }
      std::printf("\n");
    }
    for (const auto& e : errors) std::printf("  sweep L=%lld %s\n", (long long)L, e.c_str());
  }
}

// The paged cache of `requests` requests of up to ctx_max tokens, pages shuffled (request r's
// page j is perm[r * pages_per_req + j]), and their queries: q [requests * nn_max, H, D] fp8,
// w [requests * nn_max, H].
struct DecodeData {
  int requests = 0, pages_per_req = 0, num_pages = 0;
  std::vector<int32_t> perm;
  DeviceBuffer<uint8_t> cache, q;
  DeviceBuffer<float> w;
};

// Times one decode case (`batch` requests of `ctx` tokens, next_n queries each, rotating through
// the requests): rested GPU time, synchronised median, back-to-back; 2 rows checked.
json time_decode(const DecodeData& d, int batch, int ctx, int next_n, const SelectConfig& cfg,
                 const Args& a) {
  const int max_pages = (ctx + kPage - 1) / kPage, groups = d.requests / batch;
  std::vector<int32_t> th(size_t(d.requests) * max_pages);
  for (size_t r = 0; r < size_t(d.requests); ++r)
    for (size_t j = 0; j < size_t(max_pages); ++j)
      th[r * max_pages + j] = d.perm[r * d.pages_per_req + j];
  const DeviceBuffer<int32_t> table(th), lens(std::vector<int32_t>(size_t(d.requests), ctx));
  const size_t width = size_t(cfg.out_width()), m = size_t(cfg.top_blocks);
  DeviceBuffer<int32_t> idx(size_t(d.requests) * next_n * width);
  DeviceBuffer<int32_t> blocks(cfg.has_blocks() ? size_t(d.requests) * next_n * m : 0);
  const auto inputs = [&](int rep) {
    const size_t r0 = size_t(rep % groups) * batch;
    hisa::DecodeInputs in;
    in.batch = batch, in.next_n = next_n, in.num_heads = kHeads, in.head_dim = kDim;
    in.q_dtype = hisa::DType::F8E4M3;
    in.q = d.q.data() + r0 * next_n * kHeads * kDim, in.w = d.w.data() + r0 * next_n * kHeads;
    in.num_pages = d.num_pages, in.page_size = kPage, in.kv_cache = d.cache.data();
    in.max_pages = max_pages, in.block_table = table.data() + r0 * max_pages;
    in.seq_lens = lens.data() + r0;
    return in;
  };
  json update;
#ifndef HISA_BENCH_OLD_LIBRARY  // (a library before HISA decode on CUDA: flat decode only)
  // hisa, block: the device pooled cache of every request (rows follow the block table's), and
  // the update's cost for a decode step that completes a block in every request of the batch.
  const int max_blocks = int((int64_t(max_pages) * kPage + cfg.block_size - 1) / cfg.block_size);
  DeviceBuffer<uint8_t> pooled_keys(cfg.has_blocks() ? size_t(d.requests) * max_blocks * 128 : 0);
  DeviceBuffer<float> pooled_scales(cfg.has_blocks() ? size_t(d.requests) * max_blocks : 0);
  const auto pooled_view = [&](int rep) {
    const size_t r0 = size_t(rep % groups) * batch;
    hisa::cuda::PooledCache pc;
    pc.keys = pooled_keys.data() + r0 * max_blocks * 128;
    pc.scales = pooled_scales.data() + r0 * max_blocks;
    pc.batch = batch, pc.max_blocks = max_blocks, pc.block_size = cfg.block_size;
    return pc;
  };
  if (cfg.has_blocks()) {
    for (int g = 0; g < groups; ++g)
      hisa::cuda::update_pooled_cache(inputs(g), nullptr, lens.data() + size_t(g) * batch,
                                      pooled_view(g));
    HISA_CUDA_CHECK(cudaDeviceSynchronize());
    // One decode token per request (old = ctx - 1: block ctx / B - 1 completes when B divides
    // ctx), and a 32K-token prefill chunk (old = ctx - 32768) of every request of the batch.
    const DeviceBuffer<int32_t> step_old(std::vector<int32_t>(size_t(batch), ctx - 1));
    const DeviceBuffer<int32_t> chunk_old(
        std::vector<int32_t>(size_t(batch), std::max(0, ctx - 32768)));
    const auto upd = [&](const DeviceBuffer<int32_t>& old) {
      return [&](int rep) {
        hisa::cuda::update_pooled_cache(
            inputs(rep), old.data(), lens.data() + size_t(rep % groups) * batch, pooled_view(rep));
      };
    };
    const Timing ts = time_it(upd(step_old), 0, 25, 25, /*queued=*/true, kRestMs);
    const Timing tc = time_it(upd(chunk_old), 0, 10, 10, /*queued=*/true, kRestMs);
    update = {{"decode_step_rested_us", ts.median_ms * 1e3},
              {"prefill_chunk_tokens", std::min(ctx, 32768)},
              {"prefill_chunk_rested_us", tc.median_ms * 1e3},
              {"pooled_cache_bytes_per_request", double(max_blocks) * 132}};
  }
#endif
  hisa::cuda::Workspace ws;
  const hisa::cuda::Options opt = timing_options(a);
  int last_rep = 0;
  const auto call = [&](int rep) {
    const size_t row0 = size_t(rep % groups) * batch * next_n;
    hisa::SelectOutputs o;
    o.indices = idx.data() + row0 * width;
    o.blocks = cfg.has_blocks() ? blocks.data() + row0 * m : nullptr;
#ifdef HISA_BENCH_OLD_LIBRARY
    hisa::cuda::select_decode(inputs(rep), cfg, o, ws, nullptr, opt);
#else
    const hisa::cuda::PooledCache pc = pooled_view(rep);
    hisa::cuda::select_decode(inputs(rep), cfg, o, ws, nullptr, opt,
                              cfg.has_blocks() ? &pc : nullptr);
#endif
    last_rep = rep;
  };
  const Timing rested = time_it(call, 0, 25, 25, /*queued=*/true, kRestMs);
  const Timing sync = time_it(call, 0.3, 10, 200, false, kRestMs);
  const double b2b_ms = time_back_to_back_ms(call, 100);
  // Bytes per step: the keys read (D fp8 + a fp32 scale each): every visible key for flat; for
  // hisa and block the m*B candidates and one pooled key per complete block (taken as D + 4
  // bytes: fp8 with a scale); plus q (fp8) and w (fp32) of every query row.
  const double keys =
      cfg.method == Method::Flat
          ? double(ctx)
          : double(std::min<int64_t>(ctx, int64_t(m) * cfg.block_size) + ctx / cfg.block_size);
  const double bytes = double(batch) * (keys + double(next_n) * kHeads) * (kDim + 4);
  json r = {{"config", cfg.describe()},
            {"path", path_of(inputs(0), cfg)},
            {"rested_us", rested.median_ms * 1e3},
            {"rested_min_us", rested.min_ms * 1e3},
            {"sync_us", sync.median_ms * 1e3},
            {"sync_min_us", sync.min_ms * 1e3},
            {"sync_reps", sync.reps},
            {"back_to_back_us", b2b_ms * 1e3},
            {"bytes", bytes},
            {"tbps_rested", bytes / (rested.median_ms * 1e-3) / 1e12},
            {"tbps_sync", bytes / (sync.median_ms * 1e-3) / 1e12},
            {"workspace_bytes", ws.bytes()}};
  if (!update.is_null()) r["pooled_update"] = update;
#ifndef HISA_BENCH_OLD_LIBRARY
  if (cfg.has_blocks()) {
    // Cross-layer reuse: each group's call given the blocks its own call chose (the next layer's
    // call with r > 0): no block stage, no pooled cache read.
    for (int g = 0; g < groups; ++g) call(g);  // every group's blocks
    HISA_CUDA_CHECK(cudaDeviceSynchronize());
    DeviceBuffer<int32_t> idx2(size_t(batch) * next_n * width);
    const auto given_call = [&](int rep) {
      hisa::DecodeInputs in = inputs(rep);
      in.given_blocks = blocks.data() + size_t(rep % groups) * batch * next_n * m;
      hisa::SelectOutputs o;
      o.indices = idx2.data();
      hisa::cuda::select_decode(in, cfg, o, ws, nullptr, opt, nullptr);
    };
    r["given_blocks_rested_us"] = time_it(given_call, 0, 25, 25, true, kRestMs).median_ms * 1e3;
  }
#endif
  // The last call's request 0 query 0 and last request's last query, from one-request host
  // inputs holding that request's pages in table order.
  HISA_CUDA_CHECK(cudaDeviceSynchronize());
  const int r0 = (last_rep % groups) * batch;
  int bad = 0;
  for (const auto& [req, j] : {std::pair<int, int>{r0, 0}, {r0 + batch - 1, next_n - 1}}) {
    std::vector<uint8_t> hc(size_t(max_pages) * kPageBytes);
    std::vector<int32_t> bt(static_cast<size_t>(max_pages));
    for (int p = 0; p < max_pages; ++p) {
      HISA_CUDA_CHECK(
          cudaMemcpy(hc.data() + size_t(p) * kPageBytes,
                     d.cache.data() + size_t(th[size_t(req) * max_pages + p]) * kPageBytes,
                     kPageBytes, cudaMemcpyDeviceToHost));
      bt[size_t(p)] = p;
    }
    const auto qh =
        d.q.to_host(size_t(req) * next_n * kHeads * kDim, size_t(next_n) * kHeads * kDim);
    const auto wh = d.w.to_host(size_t(req) * next_n * kHeads, size_t(next_n) * kHeads);
    hisa::DecodeInputs in;
    in.batch = 1, in.next_n = next_n, in.num_heads = kHeads, in.head_dim = kDim;
    in.q_dtype = hisa::DType::F8E4M3, in.q = qh.data(), in.w = wh.data();
    in.num_pages = max_pages, in.page_size = kPage, in.kv_cache = hc.data();
    in.max_pages = max_pages, in.block_table = bt.data(), in.seq_lens = &ctx;
    bad += judge(hisa::reference::decode_rows(in)[size_t(j)], cfg, idx, blocks,
                 size_t(req) * next_n + j,
                 "request " + std::to_string(req) + " query " + std::to_string(j));
  }
  r["rows_checked"] = 2, r["rows_failed"] = bad;
  return r;
}

void run_decode(const Args& a, const Baselines& base, const json& ceilings, json& results) {
  if (a.decode.empty() || a.methods.empty()) return;
  int ctx_max = 0, batch_max = 0;
  for (const auto& [b, c] : a.decode)
    ctx_max = std::max(ctx_max, c), batch_max = std::max(batch_max, b);
  const int nn_max = *std::max_element(a.next_n.begin(), a.next_n.end());
  DecodeData d;
  d.requests = std::max(kCacheRequests, batch_max);
  d.pages_per_req = (ctx_max + kPage - 1) / kPage;
  d.num_pages = d.requests * d.pages_per_req;
  d.cache.reserve(size_t(d.num_pages) * kPageBytes);
  fill_cache<<<8192, 256>>>(d.cache.data(), d.num_pages, 77);
  HISA_CUDA_CHECK(cudaGetLastError());
  d.perm.resize(size_t(d.num_pages));
  std::iota(d.perm.begin(), d.perm.end(), 0);
  std::shuffle(d.perm.begin(), d.perm.end(), std::mt19937_64(5));
  fill(d.q, size_t(d.requests) * nn_max * kHeads * kDim, 88, kFp8Gauss, 40.0f);
  fill(d.w, size_t(d.requests) * nn_max * kHeads, 99, kGauss, 0.1f);
  const double read_tbps = num(ceilings, "read_paged_tbps");
  std::printf(
      "\ndecode: paged fp8 cache (page %d), H=%d D=%d k=%d, batches rotating through %d "
      "requests; rested: GPU time of 25 calls queued after %d ms idle\n",
      kPage, kHeads, kDim, a.topk, d.requests, kRestMs);
  std::printf(
      "method  b    ctx      n  sync us  rested us  b2b us  MB/step  TB/s  %%read  checked  "
      "vs DG rested (DG us, kineto)  vs DG+topk  vs torch\n");
  for (const auto& [batch, ctx] : a.decode)
    for (int next_n : a.next_n)
      for (Method m : a.methods) {
        json r = {{"kind", "decode"},
                  {"method", hisa::method_name(m)},
                  {"batch", batch},
                  {"context", ctx},
                  {"next_n", next_n}};
        try {
          r.update(time_decode(d, batch, ctx, next_n, make_config(m, a), a));
        } catch (const hisa::Error& e) {
          record_error(results, r,
                       "decode b=" + std::to_string(batch) + " ctx=" + std::to_string(ctx) +
                           " next_n=" + std::to_string(next_n) + " method=" + hisa::method_name(m),
                       e);
          continue;
        }
        const double rested = r["rested_us"].get<double>(), sync = r["sync_us"].get<double>();
        std::string frac = "-";
        if (read_tbps > 0) {
          r["fraction_of_read_ceiling"] = r["tbps_rested"].get<double>() / read_tbps;
          frac =
              std::to_string(int(std::lround(100 * r["fraction_of_read_ceiling"].get<double>())));
        }
        // DeepGEMM and torch time next_n = 1 only.
        const json match = {{"batch", batch}, {"context", ctx}};
        const json dg = next_n == 1 ? base.deepgemm.find("decode", match) : json();
        const json tp = next_n == 1 ? base.torch.find("decode", match) : json();
        json sp = json::object();
        std::string vdg = speedup(num(dg, "rested_gpu_us"), rested, sp, "deepgemm_logits_rested");
        speedup(num(dg, "sync_us"), sync, sp, "deepgemm_logits_sync");
        const std::string vdgt =
            speedup(num(dg, "topk_rested_gpu_us"), rested, sp, "deepgemm_logits_topk_rested");
        const std::string vt = speedup(num(tp, "us"), sync, sp, "torch_sync");
        if (!sp.empty()) r["speedups"] = sp;
        if (dg.is_object()) {
          r["deepgemm"] = {{"rested_us", num(dg, "rested_gpu_us")},
                           {"sync_us", num(dg, "sync_us")},
                           {"kineto_us", num(dg, "kineto_us")},
                           {"topk_rested_us", num(dg, "topk_rested_gpu_us")}};
          char b[64];
          std::snprintf(b, sizeof b, " (%.1f, %.1f)", num(dg, "rested_gpu_us"),
                        num(dg, "kineto_us"));
          vdg += b;
        }
        std::printf(
            "%-6s  %-4d %-7d  %d  %7.1f  %9.1f  %6.1f  %7.2f  %4.2f  %5s  %7s  %28s  %10s  %8s\n",
            hisa::method_name(m).c_str(), batch, ctx, next_n, sync, rested,
            r["back_to_back_us"].get<double>(), r["bytes"].get<double>() / 1e6,
            r["tbps_rested"].get<double>(), frac.c_str(), checked(r).c_str(), vdg.c_str(),
            vdgt.c_str(), vt.c_str());
        if (r.contains("pooled_update"))
          std::printf(
              "        pooled-cache update: a decode step %.1f us, a %d-token chunk %.1f us "
              "(rested); %.0f KB per request\n",
              r["pooled_update"]["decode_step_rested_us"].get<double>(),
              r["pooled_update"]["prefill_chunk_tokens"].get<int>(),
              r["pooled_update"]["prefill_chunk_rested_us"].get<double>(),
              r["pooled_update"]["pooled_cache_bytes_per_request"].get<double>() / 1e3);
        if (r.contains("given_blocks_rested_us"))
          std::printf("        given blocks (cross-layer reuse, no block stage): %.1f us rested\n",
                      r["given_blocks_rested_us"].get<double>());
        std::fflush(stdout);
        results.push_back(r);
      }
}

bool write_report(const std::string& path, const json& report) {
  if (path.empty()) return true;
  std::ofstream f(path);
  f << report.dump(1) << "\n";
  if (!f) std::fprintf(stderr, "hisa_cuda_bench: cannot write %s\n", path.c_str());
  return bool(f);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse_args(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(
        stderr,
        "hisa_cuda_bench: %s\nusage: hisa_cuda_bench [--json F] [--deepgemm F] [--torch F] "
        "[--commit H] [--quick] [--once] [--methods flat,hisa,block] [--prefill 8192,...|none] "
        "[--ragged] [--sweep] [--decode 1x32768,...|none] [--next-n 1,2,4] "
        "[--block-size 128] [--top-blocks 64] [--path auto|fused|scores|simt] "
        "[--topk 2048] [--splits N] [--no-ceilings] [--workload topical|gaussian]\n",
        e.what());
    return 2;
  }
  try {
    if (!hisa::cuda::device_present()) {
      std::fprintf(stderr, "hisa_cuda_bench: no CUDA device\n");
      return 1;
    }
    int dev = 0;
    cudaDeviceProp prop{};
    HISA_CUDA_CHECK(cudaGetDevice(&dev));
    HISA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    json report = {{"device", hisa::cuda::device_description()},
                   {"device_name", prop.name},
                   {"date_utc", utc_now("%Y-%m-%dT%H:%M:%SZ")},
                   {"command", a.command_line}};
    if (!a.commit.empty()) report["commit"] = a.commit;
    std::printf("device: %s, %s UTC\n", report["device"].get<std::string>().c_str(),
                utc_now("%Y-%m-%d %H:%M").c_str());
    Baselines base;
    base.deepgemm.load(a.deepgemm_path, "DeepGEMM", prop.name, report["baselines"]["deepgemm"]);
    base.torch.load(a.torch_path, "torch", prop.name, report["baselines"]["torch"]);
    base.fp8_gemm_tflops = num(base.torch.data, "fp8_gemm_tflops");
    report["ceilings"] = run_ceilings(a, base);
    report["results"] = json::array();
    json& results = report["results"];
    bool ok = write_report(a.json_path, report);
    run_prefill(a, base, results);
    ok = write_report(a.json_path, report) && ok;
    run_ragged(a, base, results);
    run_sweep(a, results);
    ok = write_report(a.json_path, report) && ok;
    run_decode(a, base, report["ceilings"], results);
    ok = write_report(a.json_path, report) && ok;
    int failed = 0;
    for (const auto& r : results) failed += r.value("rows_failed", 0);
    if (failed) std::printf("%d checked rows FAILED\n", failed);
    return ok && failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hisa_cuda_bench: %s\n", e.what());
    return 1;
  }
}
