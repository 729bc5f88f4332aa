// Seeded workloads: determinism, shapes, validity, and that each generator has the structure it
// claims (docs/workloads.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <vector>

#include "hisa/error.hpp"
#include "hisa/reference.hpp"
#include "hisa/validate.hpp"
#include "hisa/workloads.hpp"

namespace hisa {
namespace {

const WorkloadKind kKinds[] = {WorkloadKind::Gaussian, WorkloadKind::Topical, WorkloadKind::Needles,
                               WorkloadKind::SinkRecency};
const DType kDtypes[] = {DType::F8E4M3, DType::BF16, DType::F32};

WorkloadSpec small_spec(WorkloadKind kind, DType dtype, uint64_t seed) {
  WorkloadSpec s;
  s.kind = kind;
  s.seq_keys = {700, 1500};
  s.num_heads = 8;
  s.head_dim = 64;
  s.dtype = dtype;
  s.seed = seed;
  return s;
}

SelectConfig flat_config(int topk) {
  SelectConfig cfg;
  cfg.method = Method::Flat;
  cfg.topk = topk;
  return cfg;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes;
}

bool same_case(const Case& a, const Case& b) {
  return same_tensor(a.q, b.q) && same_tensor(a.k, b.k) && same_tensor(a.k_scale, b.k_scale) &&
         same_tensor(a.w, b.w) && same_tensor(a.cu_seqlens_q, b.cu_seqlens_q) &&
         same_tensor(a.cu_seqlens_k, b.cu_seqlens_k) && a.metadata == b.metadata;
}

std::vector<int32_t> ints(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

// Dequantised keys [S, D] (k_scale folded in) as float.
std::vector<float> keys_of(const Case& c) {
  const int64_t S = c.k.shape[0], D = c.k.shape[1];
  std::vector<float> k(size_t(S * D));
  to_float(c.k.dtype, c.k.bytes.data(), k.data(), k.size());
  for (int64_t p = 0; p < S; ++p)
    for (int64_t d = 0; d < D; ++d) k[size_t(p * D + d)] *= c.k_scale.data<float>()[p];
  return k;
}

double mean_neighbour_cosine(const Case& c) {
  const std::vector<float> k = keys_of(c);
  const int64_t S = c.k.shape[0], D = c.k.shape[1];
  double total = 0;
  for (int64_t p = 0; p + 1 < S; ++p) {
    double dot = 0, n0 = 0, n1 = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double x = k[size_t(p * D + d)], y = k[size_t((p + 1) * D + d)];
      dot += x * y;
      n0 += x * x;
      n1 += y * y;
    }
    total += dot / std::sqrt(n0 * n1);
  }
  return total / double(S - 1);
}

TEST(Workloads, NamesRoundTrip) {
  for (WorkloadKind k : kKinds) EXPECT_EQ(workload_from_name(workload_name(k)), k);
  EXPECT_EQ(workload_name(WorkloadKind::SinkRecency), "sink-recency");
  EXPECT_THROW(workload_from_name("uniform"), Error);
}

TEST(Workloads, SameSeedGivesIdenticalBytesOtherSeedDiffers) {
  for (WorkloadKind kind : kKinds) {
    for (DType dtype : kDtypes) {
      const uint64_t seed = 1234;
      SCOPED_TRACE(workload_name(kind) + " " + dtype_name(dtype) + " seed " + std::to_string(seed));
      const Case a = make_workload(small_spec(kind, dtype, seed));
      const Case b = make_workload(small_spec(kind, dtype, seed));
      EXPECT_TRUE(same_case(a, b));
      const Case c = make_workload(small_spec(kind, dtype, seed + 1));
      EXPECT_NE(a.q.bytes, c.q.bytes);
      EXPECT_NE(a.k.bytes, c.k.bytes);
      EXPECT_NE(a.w.bytes, c.w.bytes);
    }
  }
}

TEST(Workloads, ShapesDtypesAndCuSeqlens) {
  WorkloadSpec s;
  s.kind = WorkloadKind::Gaussian;
  s.seq_keys = {100, 300, 1000};  // no seq_queries: min(256, S_b) last tokens of each
  s.num_heads = 32;
  s.head_dim = 128;
  s.seed = 7;
  const Case c = make_workload(s);
  EXPECT_EQ(c.q.dtype, DType::F8E4M3);
  EXPECT_EQ(c.q.shape, (std::vector<int64_t>{612, 32, 128}));
  EXPECT_EQ(c.k.dtype, DType::F8E4M3);
  EXPECT_EQ(c.k.shape, (std::vector<int64_t>{1400, 128}));
  EXPECT_EQ(c.k_scale.dtype, DType::F32);
  EXPECT_EQ(c.k_scale.shape, (std::vector<int64_t>{1400}));
  EXPECT_EQ(c.w.dtype, DType::F32);
  EXPECT_EQ(c.w.shape, (std::vector<int64_t>{612, 32}));
  EXPECT_EQ(c.cu_seqlens_q.dtype, DType::I32);
  EXPECT_EQ(ints(c.cu_seqlens_q), (std::vector<int32_t>{0, 100, 356, 612}));
  EXPECT_EQ(ints(c.cu_seqlens_k), (std::vector<int32_t>{0, 100, 400, 1400}));
  EXPECT_TRUE(c.ks.empty() && c.ke.empty());
  EXPECT_EQ(c.metadata.at("workload"), "gaussian");
  EXPECT_EQ(c.metadata.at("seed"), "7");
  EXPECT_EQ(c.metadata.at("seq_keys"), "100,300,1000");
  EXPECT_EQ(c.metadata.at("seq_queries"), "100,256,256");
  EXPECT_EQ(c.metadata.at("dtype"), "F8_E4M3");
  EXPECT_EQ(c.metadata.at("scale_rule"), "ue8m0");
  // UE8M0 scales are powers of two.
  for (int64_t p = 0; p < 1400; ++p) {
    int e;
    EXPECT_EQ(std::frexp(c.k_scale.data<float>()[p], &e), 0.5f);
  }

  s.seq_queries = {1, 0, 17};
  s.dtype = DType::BF16;
  const Case d = make_workload(s);
  EXPECT_EQ(d.q.dtype, DType::BF16);
  EXPECT_EQ(d.q.shape, (std::vector<int64_t>{18, 32, 128}));
  EXPECT_EQ(ints(d.cu_seqlens_q), (std::vector<int32_t>{0, 1, 1, 18}));
  for (int64_t p = 0; p < 1400; ++p) EXPECT_EQ(d.k_scale.data<float>()[p], 1.0f);
}

TEST(Workloads, CaseInputsValidate) {
  for (WorkloadKind kind : kKinds) {
    for (DType dtype : kDtypes) {
      SCOPED_TRACE(workload_name(kind) + " " + dtype_name(dtype));
      const Case c = make_workload(small_spec(kind, dtype, 11));
      const PrefillInputs in = c.inputs();
      EXPECT_EQ(in.num_seqs, 2);
      EXPECT_EQ(in.dtype, dtype);
      EXPECT_NO_THROW(validate_prefill(in, flat_config(2048)));
    }
  }
}

TEST(Workloads, BadSpecsThrow) {
  WorkloadSpec s = small_spec(WorkloadKind::Gaussian, DType::F32, 0);
  s.seq_queries = {10};  // one entry for two sequences
  EXPECT_THROW(make_workload(s), Error);
  s.seq_queries = {10, 1501};  // T_b > S_b
  EXPECT_THROW(make_workload(s), Error);
  s = small_spec(WorkloadKind::Gaussian, DType::F32, 0);
  s.seq_keys = {100, 0};
  EXPECT_THROW(make_workload(s), Error);
  s = small_spec(WorkloadKind::Gaussian, DType::F32, 0);
  s.head_dim = 96;
  EXPECT_THROW(make_workload(s), Error);
  s = small_spec(WorkloadKind::Gaussian, DType::I32, 0);
  EXPECT_THROW(make_workload(s), Error);
}

// The fp8 case is the fp32 case quantised: q rows per (token, head) with the scale folded into w,
// keys per token. Compare w * q and k_scale * k elementwise against the fp32 case.
TEST(Workloads, Fp8CaseIsTheF32CaseQuantised) {
  for (ScaleRule rule : {ScaleRule::UE8M0, ScaleRule::Amax}) {
    WorkloadSpec s = small_spec(WorkloadKind::Topical, DType::F32, 5);
    const Case f = make_workload(s);
    s.dtype = DType::F8E4M3;
    s.scale_rule = rule;
    const Case q8 = make_workload(s);
    const int64_t T = f.q.shape[0], H = f.q.shape[1], D = f.q.shape[2];
    std::vector<float> qd(size_t(T * H * D));
    to_float(DType::F8E4M3, q8.q.bytes.data(), qd.data(), qd.size());
    for (int64_t r = 0; r < T * H; ++r) {
      double err = 0, mag = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double exact = double(f.w.data<float>()[r]) * f.q.data<float>()[r * D + d];
        err += std::fabs(double(q8.w.data<float>()[r]) * qd[size_t(r * D + d)] - exact);
        mag += std::fabs(exact);
      }
      ASSERT_LE(err, 0.07 * mag) << "q row " << r;
    }
    const std::vector<float> k8 = keys_of(q8);
    const int64_t S = f.k.shape[0];
    for (int64_t p = 0; p < S; ++p) {
      double err = 0, mag = 0;
      for (int64_t d = 0; d < D; ++d) {
        err += std::fabs(double(k8[size_t(p * D + d)]) - f.k.data<float>()[p * D + d]);
        mag += std::fabs(f.k.data<float>()[p * D + d]);
      }
      ASSERT_LE(err, 0.07 * mag) << "key " << p;
    }
  }
}

// w mostly positive with some negative entries; ReLU keeps a sizeable fraction of the head dots.
TEST(Workloads, ScoreDistributionLooksLikeAnIndexer) {
  for (WorkloadKind kind : kKinds) {
    SCOPED_TRACE(workload_name(kind));
    WorkloadSpec s = small_spec(kind, DType::F32, 21);
    s.seq_queries = {16, 16};
    const Case c = make_workload(s);
    const float* w = c.w.data<float>();
    const int64_t wn = c.w.numel();
    const int64_t positive_w = std::count_if(w, w + wn, [](float x) { return x > 0; });
    EXPECT_GT(positive_w, wn * 6 / 10);
    EXPECT_LT(positive_w, wn);
    const auto rows = reference::prefill_rows(c.inputs());
    int64_t positive = 0, total = 0;
    for (const auto& row : rows) {
      for (int64_t p = 0; p < row.visible; ++p) {
        for (int h = 0; h < row.num_heads; ++h) {
          double dot = 0;
          for (int d = 0; d < row.head_dim; ++d)
            dot += row.q[size_t(h * row.head_dim + d)] * (*row.keys)[size_t(p * row.head_dim + d)];
          positive += dot > 0;
          ++total;
        }
      }
    }
    const double frac = double(positive) / double(total);
    EXPECT_GT(frac, 0.25);
    EXPECT_LT(frac, 0.85);
  }
}

TEST(Workloads, NeedlesArePlantedAndTheTargetQueriesFindThem) {
  WorkloadSpec s;
  s.kind = WorkloadKind::Needles;
  s.seq_keys = {4096, 9000};
  s.seq_queries = {24, 24};
  s.num_heads = 16;
  s.head_dim = 128;
  s.seed = 99;
  SCOPED_TRACE("seed 99");
  const Case c = make_workload(s);
  // "seq:start:len;" per needle: 1 per 4096 keys.
  std::istringstream needles(c.metadata.at("needles"));
  std::string item;
  std::set<int64_t> blocks;
  int count = 0;
  while (std::getline(needles, item, ';')) {
    int64_t b, start, len;
    char sep;
    std::istringstream(item) >> b >> sep >> start >> sep >> len;
    EXPECT_GE(len, 1);
    EXPECT_LE(start + len, s.seq_keys[size_t(b)]);
    blocks.insert(b * 1000000 + start / 128);
    ++count;
  }
  EXPECT_EQ(count, 1 + 2);
  EXPECT_EQ(blocks.size(), 3u);

  const auto rows = reference::prefill_rows(c.inputs());
  std::istringstream targets(c.metadata.at("needle_targets"));
  int found = 0, checked = 0;
  while (std::getline(targets, item, ';')) {
    int64_t row, start;
    char sep;
    std::istringstream(item) >> row >> sep >> start;
    const auto& r = rows[size_t(row)];
    std::vector<int32_t> all(size_t(r.visible));
    for (int64_t p = 0; p < r.visible; ++p) all[size_t(p)] = int32_t(p);
    const std::vector<int32_t> top = reference::select_topk(reference::token_scores(r), all, 16);
    found += std::count(top.begin(), top.end(), int32_t(start)) > 0;
    ++checked;
  }
  EXPECT_GE(checked, 12);  // about half of the 48 queries target a needle
  EXPECT_EQ(found, checked);
}

TEST(Workloads, TopicalNeighboursResembleEachOther) {
  const double topical =
      mean_neighbour_cosine(make_workload(small_spec(WorkloadKind::Topical, DType::F8E4M3, 3)));
  const double gaussian =
      mean_neighbour_cosine(make_workload(small_spec(WorkloadKind::Gaussian, DType::F8E4M3, 3)));
  std::cout << "neighbour cosine: topical " << topical << ", gaussian " << gaussian << "\n";
  EXPECT_GT(topical, 0.25);
  EXPECT_LT(std::fabs(gaussian), 0.05);
}

TEST(Workloads, SinkRecencyFavoursSinkAndRecentKeys) {
  WorkloadSpec s = small_spec(WorkloadKind::SinkRecency, DType::F8E4M3, 8);
  s.seq_keys = {2048};
  s.seq_queries = {32};
  const Case c = make_workload(s);
  const auto rows = reference::prefill_rows(c.inputs());
  int sink_in_top = 0;
  double recent = 0, overall = 0;
  for (const auto& r : rows) {
    const std::vector<double> score = reference::token_scores(r);
    std::vector<int32_t> all(size_t(r.visible));
    for (int64_t p = 0; p < r.visible; ++p) all[size_t(p)] = int32_t(p);
    const std::vector<int32_t> top = reference::select_topk(score, all, 32);
    sink_in_top += top.front() == 0;
    double mean = 0, last = 0;
    for (int64_t p = 0; p < r.visible; ++p) mean += score[size_t(p)] / double(r.visible);
    for (int64_t p = r.visible - 64; p < r.visible; ++p) last += score[size_t(p)] / 64;
    recent += last;
    overall += mean;
  }
  EXPECT_GE(sink_in_top, 28);
  EXPECT_GT(recent, 1.3 * overall);
}

TEST(Workloads, DecodeCaseValidatesWithAShuffledPageTable) {
  const std::vector<int64_t> lens = {100, 64, 1000, 129, 5};
  for (WorkloadKind kind : kKinds) {
    SCOPED_TRACE(workload_name(kind) + " seed 4");
    const DecodeCase dc = make_decode_workload(kind, lens, 2, 8, 64, DType::F8E4M3, 4);
    const DecodeInputs in = dc.inputs();
    EXPECT_NO_THROW(validate_decode(in, flat_config(2048)));
    SelectConfig hisa_cfg;
    hisa_cfg.top_blocks = 4;
    hisa_cfg.topk = 256;
    EXPECT_NO_THROW(validate_decode(in, hisa_cfg));
    EXPECT_EQ(in.page_size, 64);
    EXPECT_EQ(in.max_pages, 16);
    EXPECT_EQ(dc.q.shape, (std::vector<int64_t>{5 * 2, 8, 64}));
    EXPECT_EQ(dc.kv_cache.shape, (std::vector<int64_t>{in.num_pages, 64, 64 + 4}));
    EXPECT_TRUE(dc.pooled.empty());
    // Used entries: distinct pages in range, one per used page; the rest -1; not contiguous.
    std::set<int32_t> pages;
    int64_t used_total = 0, steps_of_one = 0, steps = 0;
    for (int b = 0; b < in.batch; ++b) {
      const int64_t used = (lens[size_t(b)] + 63) / 64;
      used_total += used;
      for (int64_t j = 0; j < in.max_pages; ++j) {
        const int32_t page = in.block_table[b * in.max_pages + j];
        if (j >= used) {
          EXPECT_EQ(page, -1);
          continue;
        }
        EXPECT_GE(page, 0);
        EXPECT_LT(page, in.num_pages);
        pages.insert(page);
        if (j > 0) {
          steps_of_one += page == in.block_table[b * in.max_pages + j - 1] + 1;
          ++steps;
        }
      }
    }
    EXPECT_EQ(int64_t(pages.size()), used_total);
    EXPECT_GE(in.num_pages, used_total);
    EXPECT_LT(steps_of_one, steps / 2);
    const DecodeCase again = make_decode_workload(kind, lens, 2, 8, 64, DType::F8E4M3, 4);
    EXPECT_EQ(again.kv_cache.bytes, dc.kv_cache.bytes);
    EXPECT_EQ(again.block_table.bytes, dc.block_table.bytes);
    EXPECT_EQ(again.q.bytes, dc.q.bytes);
    EXPECT_EQ(again.w.bytes, dc.w.bytes);
  }
}

// The paged case holds the same keys, queries and weights as the prefill case of the same seed
// with seq_queries = next_n (fp8, ue8m0): checks the cache layout end to end.
TEST(Workloads, DecodeCaseMatchesThePrefillCaseOfTheSameSeed) {
  const std::vector<int64_t> lens = {300, 70, 64};
  for (DType qd : kDtypes) {
    SCOPED_TRACE(dtype_name(qd) + " seed 17");
    const DecodeCase dc = make_decode_workload(WorkloadKind::Topical, lens, 3, 8, 128, qd, 17);
    EXPECT_EQ(dc.q.dtype, qd);
    WorkloadSpec s;
    s.kind = WorkloadKind::Topical;
    s.seq_keys = lens;
    s.seq_queries = {3, 3, 3};
    s.num_heads = 8;
    s.head_dim = 128;
    s.dtype = DType::F8E4M3;
    s.scale_rule = ScaleRule::UE8M0;
    s.seed = 17;
    const Case c = make_workload(s);
    const auto drows = reference::decode_rows(dc.inputs());
    const auto prows = reference::prefill_rows(c.inputs());
    ASSERT_EQ(drows.size(), prows.size());
    for (size_t i = 0; i < drows.size(); ++i) {
      EXPECT_EQ(drows[i].visible, prows[i].visible);
      EXPECT_EQ(drows[i].seq_keys, prows[i].seq_keys);
      EXPECT_EQ(*drows[i].keys, *prows[i].keys) << "row " << i;
      if (qd == DType::F8E4M3) {  // the same quantisation: identical q and w
        EXPECT_EQ(drows[i].q, prows[i].q);
        EXPECT_EQ(drows[i].w, prows[i].w);
      }
    }
  }
}

TEST(Workloads, DecodeBadArgumentsThrow) {
  EXPECT_THROW(make_decode_workload(WorkloadKind::Gaussian, {100}, 5, 8, 64, DType::F8E4M3, 0),
               Error);
  EXPECT_THROW(make_decode_workload(WorkloadKind::Gaussian, {2}, 3, 8, 64, DType::F8E4M3, 0),
               Error);
  EXPECT_THROW(make_decode_workload(WorkloadKind::Gaussian, {}, 1, 8, 64, DType::F8E4M3, 0), Error);
}

}  // namespace
}  // namespace hisa
