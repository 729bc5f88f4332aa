#include "hisa/config.hpp"

#include <sstream>

#include "hisa/error.hpp"

namespace hisa {

std::string method_name(Method m) {
  switch (m) {
    case Method::Flat: return "flat";
    case Method::Hisa: return "hisa";
    case Method::Block: return "block";
  }
  return "?";
}

Method method_from_name(const std::string& n) {
  if (n == "flat" || n == "dsa") return Method::Flat;
  if (n == "hisa") return Method::Hisa;
  if (n == "block") return Method::Block;
  throw Error("unknown method '" + n + "' (expected flat, hisa or block)");
}

std::string pooling_name(Pooling p) { return p == Pooling::Max ? "max" : "mean"; }

Pooling pooling_from_name(const std::string& n) {
  if (n == "mean") return Pooling::Mean;
  if (n == "max") return Pooling::Max;
  throw Error("unknown pooling '" + n + "' (expected mean or max)");
}

void SelectConfig::validate() const {
  HISA_CHECK(topk >= 1 && topk <= 65536, "topk must be in [1, 65536], got ", topk);
  if (method == Method::Flat) return;
  HISA_CHECK(block_size >= 64 && block_size <= 256 && (block_size & (block_size - 1)) == 0,
             "block_size must be a power of two in [64, 256], got ", block_size);
  HISA_CHECK(sink_blocks >= 0, "sink_blocks must be >= 0, got ", sink_blocks);
  HISA_CHECK(local_blocks >= 1, "local_blocks must be >= 1 (the current block may be partial and has ",
             "no pooled key), got ", local_blocks);
  HISA_CHECK(top_blocks >= sink_blocks + local_blocks + 1, "top_blocks (m = ", top_blocks,
             ") must be at least sink_blocks + local_blocks + 1 = ", sink_blocks + local_blocks + 1);
  if (method == Method::Hisa) {
    HISA_CHECK(int64_t(top_blocks) * block_size >= topk, "top_blocks * block_size (", top_blocks, " * ",
               block_size, " = ", int64_t(top_blocks) * block_size,
               ") must be at least topk (", topk, "): the candidate pool would be smaller than k");
  }
  HISA_CHECK(int64_t(top_blocks) * block_size <= (int64_t(1) << 24),
             "top_blocks * block_size is too large: ", int64_t(top_blocks) * block_size);
}

int SelectConfig::out_width() const {
  return method == Method::Block ? top_blocks * block_size : topk;
}

std::string SelectConfig::describe() const {
  std::ostringstream os;
  os << method_name(method);
  if (method == Method::Flat) {
    os << " k=" << topk;
  } else {
    os << " B=" << block_size << " m=" << top_blocks;
    if (method == Method::Hisa) os << " k=" << topk;
    os << " sink=" << sink_blocks << " local=" << local_blocks;
    if (pooling == Pooling::Max) os << " pool=max";
  }
  return os.str();
}

}  // namespace hisa
