// The timing summary `hisa bench` prints: median, min, max, p10 and p90 of the repeats, and the
// warning when they are too spread to trust.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "timing.hpp"

namespace hisa::cli {
namespace {

TEST(BenchTiming, SummaryOfTheRepeats) {
  Timing t = summarize_times({0.003, 0.001, 0.002});
  EXPECT_EQ(t.repeats, 3);
  EXPECT_DOUBLE_EQ(t.min_s, 0.001);
  EXPECT_DOUBLE_EQ(t.median_s, 0.002);
  EXPECT_DOUBLE_EQ(t.max_s, 0.003);
  EXPECT_DOUBLE_EQ(t.p10_s, 0.001);  // fewer than 11 repeats: p10 and p90 are min and max
  EXPECT_DOUBLE_EQ(t.p90_s, 0.003);
  // 21 repeats 1..21 ms: p10 and p90 are the 3rd and 19th.
  std::vector<double> v;
  for (int i = 21; i >= 1; --i) v.push_back(i * 1e-3);
  t = summarize_times(v);
  EXPECT_DOUBLE_EQ(t.p10_s, 3e-3);
  EXPECT_DOUBLE_EQ(t.median_s, 11e-3);
  EXPECT_DOUBLE_EQ(t.p90_s, 19e-3);
}

TEST(BenchTiming, WarnsWhenTheRepeatsAreTooSpread) {
  Timing t = summarize_times({14e-6, 15e-6, 16e-6});
  t.device = "cpu";
  t.mode = "decode";
  t.method = "flat";
  EXPECT_EQ(spread_warning(t), "");
  // With one of two cores busy, a 14 us decode measured 14 us to 8 ms.
  t = summarize_times({14e-6, 8e-3, 16e-6, 7.9e-3, 15e-6});
  t.device = "cpu";
  t.mode = "decode";
  t.method = "flat";
  const std::string w = spread_warning(t);
  EXPECT_THAT(w, ::testing::HasSubstr(
                     "warning: cpu decode flat: its 5 repeats range from 14 us to 8.00 ms"));
  EXPECT_THAT(w, ::testing::HasSubstr("too spread to trust the median"));
  // A single call has no spread.
  EXPECT_EQ(spread_warning(summarize_times({1.0})), "");
}

}  // namespace
}  // namespace hisa::cli
