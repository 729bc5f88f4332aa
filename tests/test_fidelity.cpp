// Fidelity metrics (SEMANTICS.md section 8) on hand-computed rows.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "hisa/error.hpp"
#include "hisa/fidelity.hpp"

namespace hisa {
namespace {

// Scores log(1), log(2), ..., log(n): softmax weights proportional to 1, 2, ..., n.
std::vector<double> log_ramp(int n) {
  std::vector<double> s;
  for (int i = 1; i <= n; ++i) s.push_back(std::log(double(i)));
  return s;
}

TEST(Fidelity, HandComputedRow) {
  const std::vector<double> s = log_ramp(6);  // weights 1..6 at positions 0..5
  const int32_t a[4] = {5, 4, 3, -1};         // A = {3, 4, 5}: mass 4 + 5 + 6 = 15
  const int32_t b[4] = {2, 5, 4, -1};         // B = {2, 4, 5}: mass 3 + 5 + 6 = 14
  const RowFidelity f = row_fidelity(a, b, 4, s.data(), 6, 3);
  EXPECT_DOUBLE_EQ(f.iou, 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(f.recall, 2.0 / 3.0);
  EXPECT_NEAR(f.mass_recall, 15.0 / 14.0, 1e-14);
  EXPECT_TRUE(f.can_differ);  // visible 6 > budget 3
}

TEST(Fidelity, IdenticalSetsInAnyOrderAreOne) {
  const std::vector<double> s = log_ramp(10);
  const int32_t a[5] = {1, 7, 3, 9, -1};
  const int32_t b[5] = {9, 3, 1, 7, -1};
  const RowFidelity f = row_fidelity(a, b, 5, s.data(), 10, 8192);
  EXPECT_EQ(f.iou, 1.0);
  EXPECT_EQ(f.recall, 1.0);
  EXPECT_EQ(f.mass_recall, 1.0);
  EXPECT_FALSE(f.can_differ);
}

TEST(Fidelity, DisjointSetsAreZero) {
  const std::vector<double> s = log_ramp(8);
  const int32_t a[2] = {0, 1};  // mass 1 + 2 = 3
  const int32_t b[2] = {6, 7};  // mass 7 + 8 = 15
  const RowFidelity f = row_fidelity(a, b, 2, s.data(), 8, 2);
  EXPECT_EQ(f.iou, 0.0);
  EXPECT_EQ(f.recall, 0.0);
  EXPECT_NEAR(f.mass_recall, 3.0 / 15.0, 1e-14);  // the mass of what A did pick, not 0
}

TEST(Fidelity, PaddingIsIgnored) {
  const std::vector<double> s(5, 0.0);  // uniform softmax: mass recall = |A| / |B|
  const int32_t a[5] = {2, -1, -1, -1, -1};
  const int32_t b[5] = {3, 2, -1, -1, -1};
  const RowFidelity f = row_fidelity(a, b, 5, s.data(), 5, 1);
  EXPECT_DOUBLE_EQ(f.iou, 0.5);
  EXPECT_DOUBLE_EQ(f.recall, 0.5);
  EXPECT_DOUBLE_EQ(f.mass_recall, 0.5);
}

TEST(Fidelity, BothEmptyIsOne) {
  const int32_t a[3] = {-1, -1, -1};
  const RowFidelity f = row_fidelity(a, a, 3, nullptr, 0, 2048);
  EXPECT_EQ(f.iou, 1.0);
  EXPECT_EQ(f.recall, 1.0);
  EXPECT_EQ(f.mass_recall, 1.0);
  EXPECT_FALSE(f.can_differ);
}

TEST(Fidelity, MassIsStableForLargeScores) {
  // exp(1e6) overflows and exp(-1e6) underflows: the max must be subtracted first.
  const std::vector<double> s = {1e6, 1e6 - 1, -1e6, 1e6 - 2};
  const int32_t a[1] = {1};
  const int32_t b[1] = {0};
  const RowFidelity f = row_fidelity(a, b, 1, s.data(), 4, 1);
  EXPECT_NEAR(f.mass_recall, std::exp(-1.0), 1e-12);
  const int32_t c[2] = {3, 2};   // e^-2 + e^-2e6 = e^-2 ...
  const int32_t d[2] = {0, -1};  // ... over e^0
  EXPECT_NEAR(row_fidelity(c, d, 2, s.data(), 4, 1).mass_recall, std::exp(-2.0), 1e-12);
}

TEST(Fidelity, CanDifferIsVisibleAboveBudget) {
  const std::vector<double> s(8193, 1.0);
  const int32_t a[1] = {0};
  EXPECT_FALSE(row_fidelity(a, a, 1, s.data(), 8192, 8192).can_differ);
  EXPECT_TRUE(row_fidelity(a, a, 1, s.data(), 8193, 8192).can_differ);
}

TEST(Fidelity, EntriesOutsideTheVisibleRangeThrow) {
  const std::vector<double> s(4, 1.0);
  const int32_t ok[2] = {0, 3};
  const int32_t past[2] = {0, 4};
  const int32_t negative[2] = {0, -2};
  EXPECT_THROW(row_fidelity(past, ok, 2, s.data(), 4, 1), Error);
  EXPECT_THROW(row_fidelity(ok, negative, 2, s.data(), 4, 1), Error);
  EXPECT_THROW(row_fidelity(ok, ok, 2, nullptr, 4, 1), Error);  // scores needed for the mass
}

std::vector<RowFidelity> rows_with_iou(const std::vector<double>& v) {
  std::vector<RowFidelity> rows;
  for (double x : v) {
    RowFidelity r;
    r.iou = x;
    r.recall = x;
    r.mass_recall = x;
    rows.push_back(r);
  }
  return rows;
}

TEST(Fidelity, SummaryMeanMinAndNearestRankPercentile) {
  // Nearest rank: the 1st percentile of n values is the ceil(n / 100)-th smallest.
  auto p1_of = [](int n) {
    std::vector<double> v;
    for (int i = n; i >= 1; --i) v.push_back(double(i));  // values 1..n, given in reverse
    return summarize(rows_with_iou(v)).iou_p1;
  };
  EXPECT_EQ(p1_of(1), 1.0);
  EXPECT_EQ(p1_of(100), 1.0);
  EXPECT_EQ(p1_of(101), 2.0);
  EXPECT_EQ(p1_of(250), 3.0);
  EXPECT_EQ(p1_of(1000), 10.0);

  const FidelitySummary s = summarize(rows_with_iou({0.5, 1.0, 0.75, 1.0}));
  EXPECT_EQ(s.rows, 4);
  EXPECT_DOUBLE_EQ(s.iou_mean, 0.8125);
  EXPECT_DOUBLE_EQ(s.recall_mean, 0.8125);
  EXPECT_DOUBLE_EQ(s.mass_mean, 0.8125);
  EXPECT_EQ(s.iou_min, 0.5);
  EXPECT_EQ(s.recall_min, 0.5);
  EXPECT_EQ(s.mass_min, 0.5);
  EXPECT_EQ(s.iou_p1, 0.5);
  EXPECT_EQ(s.mass_p1, 0.5);
}

TEST(Fidelity, EmptySummaryHasNoRows) {
  const FidelitySummary s = summarize({});
  EXPECT_EQ(s.rows, 0);
  EXPECT_EQ(s.iou_mean, 1.0);
}

}  // namespace
}  // namespace hisa
