// Helpers of the GPU tests: random and exact-integer inputs, device copies, judging against the
// float64 reference (hisa::judge_row), rows judged in parallel.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.hpp"
#include "hisa/cuda.hpp"
#include "hisa/dtype.hpp"
#include "hisa/error.hpp"
#include "hisa/judge.hpp"
#include "hisa/reference.hpp"

namespace hisa::testing {

inline bool have_gpu() { return hisa::cuda::device_present(); }
#define SKIP_WITHOUT_GPU() \
  if (!::hisa::testing::have_gpu()) GTEST_SKIP() << "no CUDA device visible"

// Device copies: the library's buffer (every byte 0x5A = poison, never a valid index).
template <typename T>
using Dev = cuda::DeviceBuffer<T>;
template <typename T>
void poison(Dev<T>& d) {
  d.fill_bytes(0x5A);
}

inline uint64_t seed_for(const std::string& name, uint64_t salt = 0) {
  uint64_t h = 1469598103934665603ull ^ salt;
  for (char c : name) h = (h ^ uint8_t(c)) * 1099511628211ull;
  return h;
}

// Values of q / k before quantisation: Gaussian (random) or small integers (exact).
inline float draw(std::mt19937_64& rng, bool exact) {
  if (exact) return float(int(rng() % 9) - 4);  // -4..4: exact in fp8 e4m3 and bf16
  std::normal_distribution<float> g(0.0f, 1.0f);
  return g(rng);
}

// Encodes fp32 values as `t` (fp8 without scale: values must be representable or are rounded).
inline std::vector<uint8_t> encode(DType t, const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F8E4M3) {
      out[i] = float_to_fp8e4m3(v[i]);
    } else if (t == DType::BF16) {
      const uint16_t b = float_to_bf16(v[i]);
      std::memcpy(&out[2 * i], &b, 2);
    } else {
      std::memcpy(&out[4 * i], &v[i], 4);
    }
  }
  return out;
}

// A prefill problem on the host: sequences (T_b, S_b), random or exact-integer values.
struct PrefillCase {
  int H = 64, D = 128;
  DType dtype = DType::F8E4M3;
  int64_t T = 0, S = 0;
  std::vector<uint8_t> q, k;
  std::vector<float> k_scale, w;
  std::vector<int32_t> cu_q, cu_k, ks, ke;
  bool use_kske = false, use_scale = true;

  PrefillInputs host() const {
    PrefillInputs in;
    in.num_q = T, in.num_k = S, in.num_heads = H, in.head_dim = D, in.dtype = dtype;
    in.q = q.data(), in.k = k.data(), in.w = w.data();
    in.k_scale = use_scale ? k_scale.data() : nullptr;
    if (use_kske) {
      in.ks = ks.data(), in.ke = ke.data();
    } else {
      in.num_seqs = int(cu_q.size()) - 1, in.cu_seqlens_q = cu_q.data(),
      in.cu_seqlens_k = cu_k.data();
    }
    return in;
  }
};

// seqs: (T_b, S_b). exact: integer q/k in [-4, 4], integer w in [-2, 3], scales powers of two.
inline PrefillCase make_prefill(const std::vector<std::pair<int64_t, int64_t>>& seqs, int H,
                                DType dtype, uint64_t seed, bool exact,
                                ScaleRule rule = ScaleRule::Amax) {
  std::mt19937_64 rng(seed);
  PrefillCase c;
  c.H = H, c.dtype = dtype;
  c.cu_q = {0}, c.cu_k = {0};
  for (auto [tb, sb] : seqs) {
    c.cu_q.push_back(c.cu_q.back() + int32_t(tb));
    c.cu_k.push_back(c.cu_k.back() + int32_t(sb));
  }
  c.T = c.cu_q.back(), c.S = c.cu_k.back();
  for (size_t b = 0; b + 1 < c.cu_q.size(); ++b) {
    const int64_t tb = c.cu_q[b + 1] - c.cu_q[b], sb = c.cu_k[b + 1] - c.cu_k[b];
    for (int64_t t = 0; t < tb; ++t) {
      c.ks.push_back(c.cu_k[b]);
      c.ke.push_back(int32_t(c.cu_k[b] + sb - tb + t + 1));
    }
  }
  std::vector<float> qv(size_t(c.T) * H * c.D), kv(size_t(c.S) * c.D);
  for (auto& x : qv) x = draw(rng, exact);
  for (auto& x : kv) x = draw(rng, exact);
  c.w.resize(size_t(c.T) * H);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& x : c.w) x = exact ? float(int(rng() % 6) - 2) : g(rng) * 0.1f;
  c.k_scale.resize(size_t(c.S));
  if (dtype == DType::F8E4M3 && !exact) {
    // Keys quantised per token the way the models do (amax / 448 scale, or its power of two
    // above: UE8M0).
    c.k.resize(kv.size());
    for (auto& x : kv) x *= 3.0f;
    quantize_fp8_rows(kv.data(), size_t(c.S), size_t(c.D), rule, c.k.data(),
                      c.k_scale.data());
    for (auto& x : qv) x *= 40.0f;  // spread over the fp8 range
    c.q = encode(dtype, qv);
  } else {
    for (auto& s : c.k_scale)
      s = exact ? float(1 << (rng() % 3)) : 0.5f + float(rng() % 1000) / 1000.0f;
    c.q = encode(dtype, qv);
    c.k = encode(dtype, kv);
  }
  return c;
}

// Device copy of a PrefillCase and its inputs struct.
struct PrefillDev {
  Dev<uint8_t> q, k;
  Dev<float> k_scale, w;
  Dev<int32_t> cu_q, cu_k, ks, ke;
  PrefillInputs in;
  explicit PrefillDev(const PrefillCase& c)
      : q(c.q), k(c.k), k_scale(c.k_scale), w(c.w), cu_q(c.cu_q), cu_k(c.cu_k), ks(c.ks), ke(c.ke) {
    in = c.host();
    in.q = q.data(), in.k = k.data(), in.w = w.data();
    in.k_scale = c.use_scale ? k_scale.data() : nullptr;
    if (c.use_kske) {
      in.ks = ks.data(), in.ke = ke.data();
    } else {
      in.cu_seqlens_q = cu_q.data(), in.cu_seqlens_k = cu_k.data();
    }
  }
};

// A paged decode batch.
struct DecodeCase {
  int H = 64, D = 128, next_n = 1, page_size = 64;
  DType q_dtype = DType::F8E4M3;
  std::vector<uint8_t> q, cache;
  std::vector<float> w;
  std::vector<int32_t> block_table, seq_lens;
  int num_pages = 0, max_pages = 0;
  DecodeInputs host() const {
    DecodeInputs in;
    in.batch = int(seq_lens.size()), in.next_n = next_n, in.num_heads = H, in.head_dim = D;
    in.q_dtype = q_dtype, in.q = q.data(), in.w = w.data();
    in.num_pages = num_pages, in.page_size = page_size, in.kv_cache = cache.data();
    in.max_pages = max_pages, in.block_table = block_table.data(), in.seq_lens = seq_lens.data();
    return in;
  }
};

inline DecodeCase make_decode(const std::vector<int>& lens, int next_n, int H, uint64_t seed,
                              bool exact, DType q_dtype = DType::F8E4M3) {
  std::mt19937_64 rng(seed);
  DecodeCase c;
  c.H = H, c.next_n = next_n, c.q_dtype = q_dtype, c.seq_lens = lens;
  const int ps = c.page_size, D = c.D;
  for (int len : lens) c.max_pages = std::max(c.max_pages, (len + ps - 1) / ps);
  c.max_pages += 1;  // a spare column: entries past a request's pages are never read
  int used = 0;
  for (int len : lens) used += (len + ps - 1) / ps;
  c.num_pages = used + 3;
  std::vector<int32_t> perm(static_cast<size_t>(c.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);                  // pages scattered over the cache
  c.block_table.assign(lens.size() * size_t(c.max_pages), -7);  // garbage past the used pages
  int next = 0;
  for (size_t b = 0; b < lens.size(); ++b)
    for (int j = 0; j < (lens[b] + ps - 1) / ps; ++j)
      c.block_table[b * size_t(c.max_pages) + size_t(j)] = perm[size_t(next++)];
  c.cache.assign(size_t(c.num_pages) * page_bytes(ps, D), 0);
  std::vector<float> row(static_cast<size_t>(D));
  for (int p = 0; p < c.num_pages; ++p) {
    uint8_t* base = c.cache.data() + size_t(p) * page_bytes(ps, D);
    for (int t = 0; t < ps; ++t) {
      for (auto& x : row) x = draw(rng, exact) * (exact ? 1.0f : 3.0f);
      float scale = 1.0f;
      if (exact) {
        for (int d = 0; d < D; ++d)
          base[size_t(t) * D + size_t(d)] = float_to_fp8e4m3(row[size_t(d)]);
        scale = float(1 << (rng() % 3));
      } else {
        quantize_fp8_rows(row.data(), 1, size_t(D), ScaleRule::UE8M0, base + size_t(t) * D, &scale);
      }
      std::memcpy(base + size_t(ps) * D + size_t(t) * 4, &scale, 4);
    }
  }
  const size_t rows = lens.size() * size_t(next_n);
  std::vector<float> qv(rows * size_t(H) * D);
  for (auto& x : qv) x = draw(rng, exact) * (exact ? 1.0f : 40.0f);
  c.q = encode(q_dtype, qv);
  c.w.resize(rows * size_t(H));
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& x : c.w) x = exact ? float(int(rng() % 6) - 2) : g(rng) * 0.1f;
  return c;
}

struct DecodeDev {
  Dev<uint8_t> q, cache;
  Dev<float> w;
  Dev<int32_t> block_table, seq_lens;
  DecodeInputs in;
  explicit DecodeDev(const DecodeCase& c)
      : q(c.q), cache(c.cache), w(c.w), block_table(c.block_table), seq_lens(c.seq_lens) {
    in = c.host();
    in.q = q.data(), in.w = w.data(), in.kv_cache = cache.data();
    in.block_table = block_table.data(), in.seq_lens = seq_lens.data();
  }
};

// Judges rows (all, or an evenly spread sample of at most max_rows) against the reference; for
// hisa and block with the backend's chosen blocks [rows, m] and its pooled-key rounding.
// Returns the number of failing rows; prints the first few failures.
inline int judge_rows(const std::vector<reference::Row>& rows, const SelectConfig& cfg,
                      const std::vector<int32_t>& indices, DType dtype, bool exact,
                      int64_t max_rows = 1 << 30, const std::vector<int32_t>* blocks = nullptr,
                      PooledRounding rounding = PooledRounding::Exact) {
  const int64_t n = int64_t(rows.size());
  const int64_t step = std::max<int64_t>(1, (n + max_rows - 1) / max_rows);
  std::vector<std::string> errs(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < n; t += step) {
    errs[size_t(t)] =
        judge_row(rows[size_t(t)], cfg, indices.data() + t * cfg.out_width(),
                  blocks ? blocks->data() + t * cfg.top_blocks : nullptr, judge_rel_eps(dtype),
                  exact, rounding);
  }
  int bad = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (errs[size_t(t)].empty()) continue;
    if (++bad <= 5)
      ADD_FAILURE() << "row " << t << " (e = " << rows[size_t(t)].visible
                    << "): " << errs[size_t(t)];
  }
  return bad;
}

// The message of the hisa::Error that f throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline SelectConfig flat(int k) {
  SelectConfig c;
  c.method = Method::Flat;
  c.topk = k;
  return c;
}

// hisa (or block) with B, m, k and the default sink and local blocks.
inline SelectConfig hisa_cfg(int B, int m, int k, Method method = Method::Hisa) {
  SelectConfig c;
  c.method = method;
  c.block_size = B;
  c.top_blocks = m;
  c.topk = k;
  return c;
}

}  // namespace hisa::testing
