// Configuration validation: every rejected configuration says which field and why.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hisa/config.hpp"
#include "hisa/error.hpp"

namespace hisa {
namespace {

std::string error_of(const SelectConfig& c) {
  try {
    c.validate();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsArePaperSettings) {
  SelectConfig c;
  EXPECT_EQ(c.method, Method::Hisa);
  EXPECT_EQ(c.block_size, 128);
  EXPECT_EQ(c.top_blocks, 64);
  EXPECT_EQ(c.topk, 2048);
  EXPECT_EQ(c.sink_blocks, 1);
  EXPECT_EQ(c.local_blocks, 1);
  EXPECT_EQ(error_of(c), "");
  EXPECT_EQ(c.out_width(), 2048);
  c.method = Method::Block;
  EXPECT_EQ(c.out_width(), 64 * 128);
  EXPECT_EQ(c.describe(), "block B=128 m=64 sink=1 local=1");
}

TEST(Config, RejectsCandidatePoolSmallerThanK) {
  SelectConfig c;
  c.top_blocks = 8;  // 8 * 128 = 1024 < 2048
  EXPECT_THAT(error_of(c), ::testing::HasSubstr("must be at least topk"));
  c.method = Method::Block;  // block keeps m*B tokens: no k involved
  EXPECT_EQ(error_of(c), "");
}

TEST(Config, RejectsTooFewBlocksForForcedOnes) {
  SelectConfig c;
  c.topk = 128;
  c.top_blocks = 2;
  EXPECT_THAT(error_of(c), ::testing::HasSubstr("sink_blocks + local_blocks + 1 = 3"));
}

TEST(Config, RejectsBadBlockSize) {
  SelectConfig c;
  for (int b : {0, 32, 96, 512}) {
    c.block_size = b;
    EXPECT_THAT(error_of(c), ::testing::HasSubstr("block_size must be a power of two in [64, 256]")) << b;
  }
  c.method = Method::Flat;  // flat ignores the block fields
  EXPECT_EQ(error_of(c), "");
}

TEST(Config, RejectsNoLocalBlockAndBadTopk) {
  SelectConfig c;
  c.local_blocks = 0;
  EXPECT_THAT(error_of(c), ::testing::HasSubstr("local_blocks must be >= 1"));
  c = SelectConfig{};
  c.topk = 0;
  EXPECT_THAT(error_of(c), ::testing::HasSubstr("topk must be in [1, 65536]"));
}

TEST(Config, MethodNames) {
  EXPECT_EQ(method_from_name("flat"), Method::Flat);
  EXPECT_EQ(method_from_name("hisa"), Method::Hisa);
  EXPECT_EQ(method_from_name("block"), Method::Block);
  EXPECT_THROW(method_from_name("dense"), Error);
}

TEST(Config, PoolingNames) {
  EXPECT_EQ(pooling_from_name("mean"), Pooling::Mean);
  EXPECT_EQ(pooling_from_name("max"), Pooling::Max);
  try {
    pooling_from_name("median");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown pooling 'median' (expected mean or max)");
  }
}

}  // namespace
}  // namespace hisa
