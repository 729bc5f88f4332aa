// hisa: the selection configuration (SEMANTICS.md sections 3-5).
#pragma once

#include <string>

namespace hisa {

enum class Method : int {
  Flat = 0,   // DSA: top-k over every visible key
  Hisa = 1,   // hierarchical: top-m pooled blocks, then top-k tokens inside them
  Block = 2,  // block-sparse baseline: every visible key of the top-m blocks
};

std::string method_name(Method m);
Method method_from_name(const std::string& name);  // "flat" | "hisa" | "block"; throws otherwise

// Mean is the contract's pooling (SEMANTICS.md 4.2). Max (the CPU backends only) is there for
// fidelity studies of the pooling rule.
enum class Pooling : int { Mean = 0, Max = 1 };
std::string pooling_name(Pooling p);                 // "mean" | "max"
Pooling pooling_from_name(const std::string& name);  // "mean" | "max"; throws otherwise

// How a backend rounds the pooled keys it stores (SEMANTICS.md 4.2 lets it narrow them; tests
// round the float64 reference the same way). Every form starts from the float64 mean of the
// dequantised keys rounded to fp32. Exact: the float64 mean itself (the reference); Fp32: fp32
// (the cpu backends sum in fp32 instead and are judged within tolerance); Fp8Block: fp8 e4m3 with
// one fp32 scale per block, amax / 448 of the fp32 mean (1 for a zero block); Bf16: bf16.
enum class PooledRounding : int { Exact = 0, Fp32 = 1, Fp8Block = 2, Bf16 = 3 };

struct SelectConfig {
  Method method = Method::Hisa;
  int block_size = 128;  // B: power of two in [64, 256]
  int top_blocks = 64;   // m: blocks kept, forced ones included
  int topk = 2048;       // k: tokens kept per row (flat and hisa)
  int sink_blocks = 1;   // first blocks always kept
  int local_blocks = 1;  // last eligible blocks always kept (>= 1: the current block may be partial)
  Pooling pooling = Pooling::Mean;

  // Throws hisa::Error with a message naming the offending field. Flat ignores the block fields.
  void validate() const;
  // Columns of the `indices` output: k for flat and hisa, m * B for block.
  int out_width() const;
  // True when the method chooses blocks (hisa, block) and so fills a `blocks` [T, m] output.
  bool has_blocks() const { return method != Method::Flat; }
  std::string describe() const;  // "hisa B=128 m=64 k=2048 sink=1 local=1"
};

}  // namespace hisa
