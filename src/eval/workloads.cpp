// Seeded synthetic workloads (docs/workloads.md): gaussian, topical, needles, sink-recency.
//
// Random numbers are counter-based: every (seed, purpose, sequence, token) owns its own splitmix64
// stream, and normals come from a hand-written Box-Muller transform. So the output depends on the
// spec only (not on the thread count or the order of generation), tokens can be generated in
// parallel, and nothing goes through the implementation-defined <random> distributions.
#include "hisa/workloads.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "hisa/error.hpp"

// No fused multiply-adds: contraction is the compiler's choice (and depends on -march), and it
// would change the generated bits between builds of the same source.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace hisa {
namespace {

// ---- Random numbers ----

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// What a stream is for; part of its key so that streams never collide.
enum Purpose : uint64_t {
  kKeyNoise = 1,
  kQueryNoise = 2,
  kWeights = 3,
  kHeadMeans = 4,
  kTopicCentres = 5,
  kWalk = 6,
  kQueryPlan = 7,
  kNeedles = 8,
  kSink = 9,
  kPages = 10,
};

// splitmix64 over a state derived from (seed, purpose, a, b).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b)
      : state_(mix64(mix64(mix64(seed + kGolden * purpose) ^ (a + 0x632be59bd9b4e019ULL)) ^ b)) {}
  uint64_t next() {
    state_ += kGolden;
    return mix64(state_);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  // Uniform integer in [0, n) (multiply-shift; the bias is below 2^-32 for the n used here).
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next() * n >> 64); }
  // Box-Muller: two independent N(0, 1) values per call, computed in double.
  void normal_pair(double* z0, double* z1) {
    const double u1 = double((next() >> 11) + 1) * 0x1.0p-53;  // (0, 1]: log stays finite
    const double u2 = double(next() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double t = 6.283185307179586 * u2;
    *z0 = r * std::cos(t);
    *z1 = r * std::sin(t);
  }
  double normal() {
    double a, b;
    normal_pair(&a, &b);
    return a;
  }
  // out[i] = scale * N(0, 1), or out[i] += scale * N(0, 1) with add.
  void normals(float* out, int64_t n, double scale, bool add) {
    for (int64_t i = 0; i < n; i += 2) {
      double z0, z1;
      normal_pair(&z0, &z1);
      out[i] = float((add ? double(out[i]) : 0.0) + scale * z0);
      if (i + 1 < n) out[i + 1] = float((add ? double(out[i + 1]) : 0.0) + scale * z1);
    }
  }

 private:
  uint64_t state_;
};

// ---- Generator parameters (docs/workloads.md explains each) ----

constexpr double kHeadMeanCentre = 0.5, kHeadMeanSpread = 0.5, kWeightNoise = 0.25;

constexpr int kTopics = 12;                // topic centres per sequence
constexpr double kTopicCorrelation = 256;  // tokens: correlation length of the mixture walk
constexpr double kTopicLogitStd = 3.0;     // stationary std of the mixture logits (peaked mixture)
constexpr double kTopicAmplitude = 1.5;    // topic part of a key, against unit noise
constexpr int kQueryTopicsMax = 3;

constexpr int kNeedleBlock = 128;          // needles are placed in random blocks of this size
constexpr int kNeedleTokensPerNeedle = 4;  // each needle spans 1..4 consecutive keys
constexpr double kNeedleKeyNoise = 0.3;
constexpr double kNeedleTargetRate = 0.5;  // fraction of queries that look for a needle
constexpr double kNeedleHeadRate = 0.75;   // positive-weight heads that do the retrieval

constexpr int kSinkTokens = 4;
constexpr float kSinkAmplitude = 2.0f;  // sink keys outweigh even the query's own key on sink heads
constexpr double kSinkKeyNoise = 0.2;
constexpr double kSinkHeadRate = 0.75;  // heads that attend to the sink
constexpr double kRecencyLength = 256;  // tokens: correlation length of the recency walk
constexpr double kRecencyKeyNoise = 0.5;

// The fp32 workload before conversion to the spec's dtype.
struct RawWorkload {
  int heads = 0, dim = 0;
  std::vector<int64_t> seq_keys, seq_queries;
  std::vector<int64_t> key_start, query_start;  // [N + 1]
  std::vector<float> k;                         // [S, D]
  std::vector<float> q;                         // [T, H, D]
  std::vector<float> w_raw;                     // [T, H] before any scale is folded in
  std::string needles, needle_targets;
};

void check_dims(int heads, int dim, const char* what) {
  HISA_CHECK(heads >= 1 && heads <= 128, what, ": num_heads must be in [1, 128], got ", heads);
  HISA_CHECK(dim == 64 || dim == 128, what, ": head_dim must be 64 or 128, got ", dim);
}

// Per-head weight means: a property of the model's heads, shared by all sequences.
std::vector<double> head_means(uint64_t seed, int heads) {
  Rng rng(seed, kHeadMeans, 0, 0);
  std::vector<double> mu(static_cast<size_t>(heads));
  for (double& m : mu) m = kHeadMeanCentre + kHeadMeanSpread * rng.normal();
  return mu;
}

// Keys [S_b, D] and queries [T_b, H, D] of one sequence; w_raw [T_b, H] is already filled.
void generate_sequence(WorkloadKind kind, uint64_t seed, int64_t b, int64_t S, int64_t T, int H,
                       int D, float* k, float* q, float* w_raw, int64_t row0, RawWorkload* raw) {
  const int64_t first_query_pos = S - T;  // query t sits at key position S - T + t
  switch (kind) {
    case WorkloadKind::Gaussian: {
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < S; ++p) Rng(seed, kKeyNoise, b, p).normals(k + p * D, D, 1.0, false);
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t)
        Rng(seed, kQueryNoise, b, t).normals(q + t * H * D, int64_t(H) * D, 1.0, false);
      return;
    }

    case WorkloadKind::Topical: {
      // Topic centres u_c ~ N(0, I).
      std::vector<float> centre(size_t(kTopics) * D);
      for (int c = 0; c < kTopics; ++c)
        Rng(seed, kTopicCentres, b, c).normals(centre.data() + c * D, D, 1.0, false);
      // Mixture weights pi_p = softmax(l_p), l an AR(1) walk (stationary std kTopicLogitStd).
      const double rho = std::exp(-1.0 / kTopicCorrelation);
      const double step = std::sqrt(1.0 - rho * rho) * kTopicLogitStd;
      std::vector<float> mix(size_t(S) * kTopics);
      std::vector<int> dominant(static_cast<size_t>(S));
      {
        Rng walk(seed, kWalk, b, 0);
        double logit[kTopics];
        for (double& l : logit) l = kTopicLogitStd * walk.normal();
        for (int64_t p = 0; p < S; ++p) {
          if (p > 0)
            for (double& l : logit) l = rho * l + step * walk.normal();
          const double mx = *std::max_element(logit, logit + kTopics);
          double e[kTopics], sum = 0;
          for (int c = 0; c < kTopics; ++c) sum += (e[c] = std::exp(logit[c] - mx));
          int best = 0;
          for (int c = 0; c < kTopics; ++c) {
            mix[size_t(p * kTopics + c)] = float(e[c] / sum);
            if (e[c] > e[best]) best = c;
          }
          dominant[size_t(p)] = best;
        }
      }
      // k_p = A * sum_c pi_pc u_c + N(0, I).
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < S; ++p) {
        float* kp = k + p * D;
        Rng(seed, kKeyNoise, b, p).normals(kp, D, 1.0, false);
        for (int c = 0; c < kTopics; ++c) {
          const float a = float(kTopicAmplitude) * mix[size_t(p * kTopics + c)];
          for (int d = 0; d < D; ++d) kp[d] += a * centre[size_t(c * D + d)];
        }
      }
      // A query recalls 1..3 topics that occurred in its visible context (the dominant topic at
      // a random visible position); each head looks for one of them.
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        Rng plan(seed, kQueryPlan, b, t);
        const int64_t visible = first_query_pos + t + 1;
        const int n = 1 + int(plan.below(kQueryTopicsMax));
        int topic[kQueryTopicsMax];
        for (int i = 0; i < n; ++i) topic[i] = dominant[size_t(plan.below(uint64_t(visible)))];
        float* qt = q + t * H * D;
        Rng(seed, kQueryNoise, b, t).normals(qt, int64_t(H) * D, 1.0, false);
        for (int h = 0; h < H; ++h) {
          const float* u = centre.data() + topic[plan.below(uint64_t(n))] * D;
          for (int d = 0; d < D; ++d) qt[h * D + d] += u[d];
        }
      }
      return;
    }

    case WorkloadKind::Needles: {
      // Gaussian background.
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < S; ++p) Rng(seed, kKeyNoise, b, p).normals(k + p * D, D, 1.0, false);
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t)
        Rng(seed, kQueryNoise, b, t).normals(q + t * H * D, int64_t(H) * D, 1.0, false);
      // Needles: 1 per 4096 keys (1 to 16), each 1..4 keys long, in a random block, no overlap.
      Rng rng(seed, kNeedles, b, 0);
      const int64_t want = std::clamp<int64_t>(S / 4096, 1, 16);
      struct Needle {
        int64_t start, len;
        std::vector<float> dir;
      };
      std::vector<Needle> needles;
      const int64_t blocks = (S + kNeedleBlock - 1) / kNeedleBlock;
      for (int attempt = 0; attempt < 64 * int(want) && int64_t(needles.size()) < want; ++attempt) {
        const int64_t len = std::min<int64_t>(S, 1 + int64_t(rng.below(kNeedleTokensPerNeedle)));
        const int64_t j = int64_t(rng.below(uint64_t(blocks)));
        const int64_t lo = j * kNeedleBlock;
        const int64_t hi = std::min<int64_t>(lo + kNeedleBlock, S) - len;  // last valid start
        if (hi < lo) continue;
        const int64_t start = lo + int64_t(rng.below(uint64_t(hi - lo + 1)));
        bool overlaps = false;
        for (const Needle& n : needles)
          overlaps |= start < n.start + n.len && n.start < start + len;
        if (overlaps) continue;
        Needle n{start, len, std::vector<float>(size_t(D))};
        rng.normals(n.dir.data(), D, 1.0, false);
        for (int64_t p = start; p < start + len; ++p) {
          float* kp = k + p * D;
          for (int d = 0; d < D; ++d) kp[d] = n.dir[size_t(d)] + float(kNeedleKeyNoise) * kp[d];
        }
        needles.push_back(std::move(n));
      }
      std::sort(needles.begin(), needles.end(),
                [](const Needle& x, const Needle& y) { return x.start < y.start; });
      std::ostringstream ns, ts;
      for (const Needle& n : needles) ns << b << ':' << n.start << ':' << n.len << ';';
      // Targets: half the queries look for one needle they can see (all its keys visible): the
      // retrieval heads (positive weight, 3 in 4) get q = needle direction + noise.
      for (int64_t t = 0; t < T; ++t) {
        Rng plan(seed, kQueryPlan, b, t);
        if (plan.uniform() >= kNeedleTargetRate) continue;
        const int64_t visible = first_query_pos + t + 1;
        int64_t seen = 0;
        while (seen < int64_t(needles.size()) &&
               needles[size_t(seen)].start + needles[size_t(seen)].len <= visible)
          ++seen;
        if (seen == 0) continue;
        const Needle& n = needles[size_t(plan.below(uint64_t(seen)))];
        float* wt = w_raw + t * H;
        int targeted = 0, strongest = 0;
        for (int h = 0; h < H; ++h) {
          if (wt[h] > wt[strongest]) strongest = h;
          if (plan.uniform() < kNeedleHeadRate && wt[h] > 0) {
            for (int d = 0; d < D; ++d) q[(t * H + h) * D + d] += n.dir[size_t(d)];
            ++targeted;
          }
        }
        if (targeted == 0) {  // every query that targets a needle has at least one retrieval head
          wt[strongest] = std::fabs(wt[strongest]);
          for (int d = 0; d < D; ++d) q[(t * H + strongest) * D + d] += n.dir[size_t(d)];
        }
        ts << row0 + t << ':' << n.start << ';';
      }
      raw->needles += ns.str();
      raw->needle_targets += ts.str();
      return;
    }

    case WorkloadKind::SinkRecency: {
      std::vector<float> sink(static_cast<size_t>(D));
      Rng(seed, kSink, b, 0).normals(sink.data(), D, 1.0, false);
      // Recency latent r_p: AR(1) walk in R^D with unit stationary variance. The innovations come
      // from per-token streams (parallel), the recursion is one sequential pass.
      const double rho = std::exp(-1.0 / kRecencyLength);
      const float step = float(std::sqrt(1.0 - rho * rho));
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < S; ++p)
        Rng(seed, kWalk, b, p).normals(k + p * D, D, p == 0 ? 1.0 : double(step), false);
      for (int64_t p = 1; p < S; ++p) {
        for (int d = 0; d < D; ++d) k[p * D + d] += float(rho) * k[(p - 1) * D + d];
      }
      // Queries: the latent at their own position (they resemble recent keys), the sink direction
      // on 3 heads in 4, and unit noise. Read r before the keys get their noise.
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        Rng plan(seed, kQueryPlan, b, t);
        const float* r = k + (first_query_pos + t) * D;
        float* qt = q + t * H * D;
        Rng(seed, kQueryNoise, b, t).normals(qt, int64_t(H) * D, 1.0, false);
        for (int h = 0; h < H; ++h) {
          const bool sinks = plan.uniform() < kSinkHeadRate;
          for (int d = 0; d < D; ++d) qt[h * D + d] += r[d] + (sinks ? sink[size_t(d)] : 0.0f);
        }
      }
      // Keys: r_p + noise; the first tokens are twice the sink direction + small noise.
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < S; ++p) {
        float* kp = k + p * D;
        if (p < kSinkTokens) {
          Rng(seed, kKeyNoise, b, p).normals(kp, D, kSinkKeyNoise, false);
          for (int d = 0; d < D; ++d) kp[d] += kSinkAmplitude * sink[size_t(d)];
        } else {
          Rng(seed, kKeyNoise, b, p).normals(kp, D, kRecencyKeyNoise, true);
        }
      }
      return;
    }
  }
  throw Error("make_workload: unknown workload kind " + std::to_string(int(kind)));
}

std::string join(const std::vector<int64_t>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

RawWorkload generate(const WorkloadSpec& spec) {
  check_dims(spec.num_heads, spec.head_dim, "workload");
  HISA_CHECK(!spec.seq_keys.empty(), "workload: seq_keys must name at least one sequence");
  HISA_CHECK(spec.seq_queries.empty() || spec.seq_queries.size() == spec.seq_keys.size(),
             "workload: seq_queries has ", spec.seq_queries.size(), " entries but seq_keys has ",
             spec.seq_keys.size(), " (give one per sequence, or none for the last 256 tokens)");
  RawWorkload raw;
  raw.heads = spec.num_heads;
  raw.dim = spec.head_dim;
  raw.seq_keys = spec.seq_keys;
  const size_t N = spec.seq_keys.size();
  raw.key_start.assign(N + 1, 0);
  raw.query_start.assign(N + 1, 0);
  for (size_t b = 0; b < N; ++b) {
    const int64_t S = spec.seq_keys[b];
    HISA_CHECK(S >= 1, "workload: seq_keys[", b, "] = ", S, " (each sequence needs >= 1 key)");
    const int64_t T = spec.seq_queries.empty() ? std::min<int64_t>(256, S) : spec.seq_queries[b];
    HISA_CHECK(T >= 0 && T <= S, "workload: seq_queries[", b, "] = ", T,
               " must be in [0, S_b = ", S, "]");
    raw.seq_queries.push_back(T);
    raw.key_start[b + 1] = raw.key_start[b] + S;
    raw.query_start[b + 1] = raw.query_start[b] + T;
  }
  HISA_CHECK(raw.key_start[N] < (int64_t(1) << 31), "workload: ", raw.key_start[N],
             " keys in total exceed int32 positions");
  const int H = spec.num_heads, D = spec.head_dim;
  raw.k.resize(size_t(raw.key_start[N]) * D);
  raw.q.resize(size_t(raw.query_start[N]) * H * D);
  raw.w_raw.resize(size_t(raw.query_start[N]) * H);

  const std::vector<double> mu = head_means(spec.seed, H);
  for (size_t b = 0; b < N; ++b) {
    const int64_t T = raw.seq_queries[b], row0 = raw.query_start[b];
    for (int64_t t = 0; t < T; ++t) {
      Rng rng(spec.seed, kWeights, b, t);
      for (int h = 0; h < H; ++h)
        raw.w_raw[size_t((row0 + t) * H + h)] = float(mu[size_t(h)] + kWeightNoise * rng.normal());
    }
    generate_sequence(spec.kind, spec.seed, int64_t(b), spec.seq_keys[b], T, H, D,
                      raw.k.data() + raw.key_start[b] * D, raw.q.data() + row0 * H * D,
                      raw.w_raw.data() + row0 * H, row0, &raw);
  }
  return raw;
}

// fp8 rows in parallel chunks (quantize_fp8_rows is row-independent, so the result is the same).
void quantize_rows_parallel(const float* in, int64_t rows, int cols, ScaleRule rule, uint8_t* out,
                            float* scale) {
  constexpr int64_t kChunk = 256;
  const int64_t chunks = (rows + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kChunk, n = std::min(kChunk, rows - r0);
    quantize_fp8_rows(in + r0 * cols, size_t(n), size_t(cols), rule, out + r0 * cols, scale + r0);
  }
}

// q [rows, H, D] fp32 to `dtype` (into `out`), folding the q scale and 1/sqrt(H * D) into w.
void convert_queries(const std::vector<float>& q, const std::vector<float>& w_raw, int H, int D,
                     DType dtype, ScaleRule rule, uint8_t* out, float* w) {
  const int64_t rows = int64_t(w_raw.size()) / H;  // query tokens
  const int64_t n = rows * H * D;
  const double fold = 1.0 / std::sqrt(double(H) * D);
  std::vector<float> qscale(size_t(rows) * H, 1.0f);
  switch (dtype) {
    case DType::F8E4M3:
      quantize_rows_parallel(q.data(), rows * H, D, rule, out, qscale.data());
      break;
    case DType::BF16: {
      uint16_t* o = reinterpret_cast<uint16_t*>(out);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) o[i] = float_to_bf16(q[size_t(i)]);
      break;
    }
    case DType::F32:
      std::memcpy(out, q.data(), size_t(n) * 4);
      break;
    default:
      throw Error("workload: dtype must be F8_E4M3, BF16 or F32, got " + dtype_name(dtype));
  }
  for (size_t i = 0; i < w_raw.size(); ++i) w[i] = float(double(w_raw[i]) * qscale[i] * fold);
}

}  // namespace

std::string workload_name(WorkloadKind k) {
  switch (k) {
    case WorkloadKind::Gaussian:
      return "gaussian";
    case WorkloadKind::Topical:
      return "topical";
    case WorkloadKind::Needles:
      return "needles";
    case WorkloadKind::SinkRecency:
      return "sink-recency";
  }
  return "?";
}

WorkloadKind workload_from_name(const std::string& name) {
  for (WorkloadKind k : {WorkloadKind::Gaussian, WorkloadKind::Topical, WorkloadKind::Needles,
                         WorkloadKind::SinkRecency})
    if (workload_name(k) == name) return k;
  throw Error("unknown workload '" + name +
              "' (expected gaussian, topical, needles or sink-recency)");
}

Case make_workload(const WorkloadSpec& spec) {
  HISA_CHECK(spec.dtype == DType::F8E4M3 || spec.dtype == DType::BF16 || spec.dtype == DType::F32,
             "workload: dtype must be F8_E4M3, BF16 or F32, got ", dtype_name(spec.dtype));
  const RawWorkload raw = generate(spec);
  const int H = spec.num_heads, D = spec.head_dim;
  const size_t N = spec.seq_keys.size();
  const int64_t S = raw.key_start[N], T = raw.query_start[N];

  Case c;
  c.q = Tensor(spec.dtype, {T, H, D});
  c.w = Tensor(DType::F32, {T, H});
  convert_queries(raw.q, raw.w_raw, H, D, spec.dtype, spec.scale_rule, c.q.data<uint8_t>(),
                  c.w.data<float>());
  c.k = Tensor(spec.dtype, {S, D});
  c.k_scale = Tensor(DType::F32, {S});
  float* ks = c.k_scale.data<float>();
  switch (spec.dtype) {
    case DType::F8E4M3:
      quantize_rows_parallel(raw.k.data(), S, D, spec.scale_rule, c.k.data<uint8_t>(), ks);
      break;
    case DType::BF16: {
      uint16_t* o = c.k.data<uint16_t>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < S * D; ++i) o[i] = float_to_bf16(raw.k[size_t(i)]);
      std::fill(ks, ks + S, 1.0f);
      break;
    }
    default:
      std::memcpy(c.k.data<float>(), raw.k.data(), size_t(S) * D * 4);
      std::fill(ks, ks + S, 1.0f);
      break;
  }
  c.cu_seqlens_q = Tensor(DType::I32, {int64_t(N) + 1});
  c.cu_seqlens_k = Tensor(DType::I32, {int64_t(N) + 1});
  for (size_t b = 0; b <= N; ++b) {
    c.cu_seqlens_q.data<int32_t>()[b] = int32_t(raw.query_start[b]);
    c.cu_seqlens_k.data<int32_t>()[b] = int32_t(raw.key_start[b]);
  }
  c.metadata["generator"] = "hisa.workloads/1";
  c.metadata["workload"] = workload_name(spec.kind);
  c.metadata["seed"] = std::to_string(spec.seed);
  c.metadata["seq_keys"] = join(raw.seq_keys);
  c.metadata["seq_queries"] = join(raw.seq_queries);
  c.metadata["num_heads"] = std::to_string(H);
  c.metadata["head_dim"] = std::to_string(D);
  c.metadata["dtype"] = dtype_name(spec.dtype);
  if (spec.dtype == DType::F8E4M3)
    c.metadata["scale_rule"] = spec.scale_rule == ScaleRule::UE8M0 ? "ue8m0" : "amax";
  if (spec.kind == WorkloadKind::Needles) {
    c.metadata["needles"] = raw.needles;                // "seq:start:len;" per needle
    c.metadata["needle_targets"] = raw.needle_targets;  // "row:start;" per targeting query row
  }
  return c;
}

DecodeCase make_decode_workload(WorkloadKind kind, const std::vector<int64_t>& seq_lens, int next_n,
                                int num_heads, int head_dim, DType q_dtype, uint64_t seed,
                                ScaleRule scale_rule) {
  HISA_CHECK(next_n >= 1 && next_n <= 4, "decode workload: next_n must be in 1..4, got ", next_n);
  HISA_CHECK(!seq_lens.empty(), "decode workload: seq_lens must name at least one request");
  HISA_CHECK(q_dtype == DType::F8E4M3 || q_dtype == DType::BF16 || q_dtype == DType::F32,
             "decode workload: q dtype must be F8_E4M3, BF16 or F32, got ", dtype_name(q_dtype));
  for (size_t b = 0; b < seq_lens.size(); ++b)
    HISA_CHECK(seq_lens[b] >= next_n, "decode workload: seq_lens[", b, "] = ", seq_lens[b],
               " is shorter than next_n = ", next_n);
  // The same generator as the prefill case with seq_keys = seq_lens and next_n queries per
  // sequence, so both views of one seed hold the same keys.
  WorkloadSpec spec;
  spec.kind = kind;
  spec.seq_keys = seq_lens;
  spec.seq_queries.assign(seq_lens.size(), next_n);
  spec.num_heads = num_heads;
  spec.head_dim = head_dim;
  spec.seed = seed;
  const RawWorkload raw = generate(spec);

  constexpr int ps = 64;  // tokens per page, as DeepGEMM and vLLM page the indexer cache
  const int H = num_heads, D = head_dim;
  const int64_t batch = int64_t(seq_lens.size());
  const int64_t rows = batch * next_n;
  DecodeCase dc;
  dc.q = Tensor(q_dtype, {rows, H, D});
  dc.w = Tensor(DType::F32, {rows, H});
  convert_queries(raw.q, raw.w_raw, H, D, q_dtype, scale_rule, dc.q.data<uint8_t>(),
                  dc.w.data<float>());

  // Pages: a few spare ones, then a shuffled assignment. Entries past a request's used pages
  // are -1.
  constexpr int kSparePages = 3;
  int64_t used_total = 0, max_pages = 0;
  for (int64_t len : seq_lens) {
    const int64_t used = (len + ps - 1) / ps;
    used_total += used;
    max_pages = std::max(max_pages, used);
  }
  HISA_CHECK(used_total + kSparePages < (int64_t(1) << 31), "decode workload: too many pages");
  const int64_t num_pages = used_total + kSparePages;
  std::vector<int32_t> perm(static_cast<size_t>(num_pages));
  for (int64_t i = 0; i < num_pages; ++i) perm[size_t(i)] = int32_t(i);
  Rng rng(seed, kPages, 0, 0);
  for (int64_t i = num_pages - 1; i > 0; --i)
    std::swap(perm[size_t(i)], perm[size_t(rng.below(uint64_t(i) + 1))]);
  dc.block_table = Tensor(DType::I32, {batch, max_pages});
  dc.seq_lens = Tensor(DType::I32, {batch});
  int32_t* table = dc.block_table.data<int32_t>();
  std::fill(table, table + batch * max_pages, -1);
  size_t next_page = 0;
  for (int64_t b = 0; b < batch; ++b) {
    dc.seq_lens.data<int32_t>()[b] = int32_t(seq_lens[size_t(b)]);
    const int64_t used = (seq_lens[size_t(b)] + ps - 1) / ps;
    for (int64_t j = 0; j < used; ++j) table[b * max_pages + j] = perm[next_page++];
  }

  // Cache: per page, ps x D fp8 values (token-major) then ps fp32 scales. Unused slots hold zeros
  // with scale 1, so every slot is a valid key.
  const int64_t pbytes = page_bytes(ps, D);
  dc.kv_cache = Tensor(DType::U8, {num_pages, ps, D + 4});
  uint8_t* cache = dc.kv_cache.data<uint8_t>();
  const float one = 1.0f;
  for (int64_t pg = 0; pg < num_pages; ++pg)
    for (int s = 0; s < ps; ++s)
      std::memcpy(cache + pg * pbytes + int64_t(ps) * D + s * 4, &one, 4);
  const int64_t S = raw.key_start.back();
  std::vector<uint8_t> k8(size_t(S) * D);
  std::vector<float> kscale(static_cast<size_t>(S));
  quantize_rows_parallel(raw.k.data(), S, D, scale_rule, k8.data(), kscale.data());
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t k0 = raw.key_start[size_t(b)];
    for (int64_t p = 0; p < seq_lens[size_t(b)]; ++p) {
      uint8_t* base = cache + table[b * max_pages + p / ps] * pbytes;
      const int64_t off = p % ps;
      std::memcpy(base + off * D, k8.data() + (k0 + p) * D, size_t(D));
      std::memcpy(base + int64_t(ps) * D + off * 4, &kscale[size_t(k0 + p)], 4);
    }
  }
  dc.metadata["generator"] = "hisa.workloads/1";
  dc.metadata["workload"] = workload_name(kind);
  dc.metadata["seed"] = std::to_string(seed);
  dc.metadata["seq_lens"] = join(seq_lens);
  dc.metadata["next_n"] = std::to_string(next_n);
  dc.metadata["num_heads"] = std::to_string(H);
  dc.metadata["head_dim"] = std::to_string(D);
  dc.metadata["dtype"] = dtype_name(q_dtype);
  dc.metadata["scale_rule"] = scale_rule == ScaleRule::UE8M0 ? "ue8m0" : "amax";
  return dc;
}

}  // namespace hisa
