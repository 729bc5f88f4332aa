// hisa: seeded synthetic workloads spanning what real indexers see (docs/workloads.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hisa/io.hpp"

namespace hisa {

enum class WorkloadKind : int {
  Gaussian = 0,  // i.i.d. Gaussian q and k: no structure, the hard case for block filtering
  Topical = 1,   // keys from a slowly drifting topic mixture: neighbours resemble each other
  Needles = 2,   // a few planted keys that specific queries target, placed in random blocks
  SinkRecency = 3,  // attention sink at the start plus a recency bias
};
std::string workload_name(WorkloadKind k);
WorkloadKind workload_from_name(const std::string& name);  // "gaussian|topical|needles|sink-recency"

struct WorkloadSpec {
  WorkloadKind kind = WorkloadKind::Topical;
  std::vector<int64_t> seq_keys = {8192};     // S_b per sequence
  std::vector<int64_t> seq_queries = {};      // T_b per sequence; empty = 256 last tokens of each
  int num_heads = 64;
  int head_dim = 128;
  DType dtype = DType::F8E4M3;  // F8E4M3 (k with per-token scale, ScaleRule below), BF16 or F32
  ScaleRule scale_rule = ScaleRule::UE8M0;
  uint64_t seed = 0;
};

// Builds a prefill case (q, k, k_scale, w, cu_seqlens_q, cu_seqlens_k). Deterministic in spec.
Case make_workload(const WorkloadSpec& spec);

// A paged decode case (hisa/io.hpp) built from the same generators: request b holds the keys of
// the prefill case with seq_keys = seq_lens and its last next_n tokens as queries. Pages of 64
// tokens, handed out in shuffled order (as an allocator that has run a while does), a few spare
// pages, -1 past each request's last page. q in q_dtype (per-row fp8 scales folded into w), the
// cache's fp8 keys scaled per token by scale_rule. No pooled keys (DecodeCase::pool adds them).
DecodeCase make_decode_workload(WorkloadKind kind, const std::vector<int64_t>& seq_lens, int next_n,
                                int num_heads, int head_dim, DType q_dtype, uint64_t seed,
                                ScaleRule scale_rule = ScaleRule::UE8M0);

}  // namespace hisa
