// The fast CPU backend: OpenMP over groups of query rows, AVX2 / AVX-512 fp32 scoring, exact top-k
// per row without a [T, S] score matrix (SEMANTICS.md sections 3-6).
//
// A group is up to 4 query rows of one sequence (consecutive prefill rows, or the next_n rows of a
// decode request). Its rows share every dequantised key tile. Per group: pack the queries; for
// hisa/block score the pooled keys and choose blocks; then score only the candidate positions into
// an O(S) buffer per row and select with the exact (score desc, position asc) order.
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>

#include "backends.hpp"
#include "cpu/fast_kernels.hpp"
#include "cpu/threads.hpp"
#include "hisa/error.hpp"
#include "hisa/validate.hpp"

namespace hisa {
namespace {

using cpu::DenseKeys;
using cpu::PackedQuery;
using cpu::PagedKeys;

constexpr int kMaxGroup = 4;  // rows per group: next_n <= 4; 4 prefill rows share each key tile

struct QueryRow {
  const void* q;    // [H, D] q dtype
  const float* w;   // [H] fp32
  int64_t visible;  // e: the row sees positions [0, e)
  int64_t out_row;  // row of the outputs
};

// What every group of one call shares.
struct Call {
  const SelectConfig& cfg;
  int num_heads, head_dim;
  DType q_dtype;
  const SelectOutputs& out;
  int threads;                   // threads_for_work of the whole call
  const int32_t* given_blocks;   // [rows, m] the caller's chosen blocks (reuse), or nullptr
};

// Throws when a score overflowed fp32 (the microkernel lets inf and NaN through its ReLU). The
// shared input checks bound prefill inputs so that this cannot happen; in decode a cache scale
// (not scanned up front) can still be too large.
void check_score(float score, int64_t row, const char* what) {
  HISA_CHECK(std::fabs(score) <= std::numeric_limits<float>::max(), "cpu backend: a ", what,
             " score of row ", row, " overflowed fp32 (", score,
             "): the inputs (q, w or the key scales) are too large for fp32 sums");
}

// Scratch of one thread, reused across the groups it runs.
struct Workspace {
  cpu::TileBuffer tile;
  std::vector<float> packed, scratch;
  std::vector<float> scores;        // [rows, stride]: token scores by position
  std::vector<float> block_scores;  // [rows, stride]: block scores by block index
  std::vector<uint64_t> ranks, rank_scratch;
  std::vector<int32_t> picked, union_blocks;
  std::vector<int32_t> chosen[kMaxGroup];  // chosen blocks of each row, ascending
  explicit Workspace(int head_dim) : tile(head_dim) {}
};

// Runs fn(i, ws) for i < n on the OpenMP threads, one Workspace per thread; rethrows the first
// error (an exception must not leave an OpenMP region).
template <class Fn>
void parallel_for(int64_t n, int head_dim, int threads, const Fn& fn) {
  if (n <= 1 || threads <= 1) {
    // No region at all, not an inactive one: a region for_each_task opens inside is then a
    // top-level one, served by the thread pool instead of a nested team.
    Workspace ws(head_dim);
    for (int64_t i = 0; i < n; ++i) fn(i, ws);
    return;
  }
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    Workspace ws(head_dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      try {
        fn(i, ws);
      } catch (...) {
#pragma omp critical(hisa_cpu_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs fn(i, tile_buffer) for i < n. A call with a single group (one decode request, a short
// prefill) runs outside any active parallel region: then the tasks spread over the call's threads.
// Inside a team they run in order on the calling thread. Scores land in disjoint slots either way,
// so the output does not depend on the split.
template <class Fn>
void for_each_task(int64_t n, const Call& call, Workspace& ws, const Fn& fn) {
  if (n > 1 && !omp_in_parallel() && call.threads > 1) {
    parallel_for(n, call.head_dim, call.threads,
                 [&](int64_t i, Workspace& local) { fn(i, local.tile); });
  } else {
    for (int64_t i = 0; i < n; ++i) fn(i, ws.tile);
  }
}

// cpu::score_range in tasks of kTaskKeys positions (see for_each_task).
constexpr int64_t kTaskKeys = 16 * cpu::kTileKeys;
template <class Keys>
void score_range_tasks(const Keys& keys, int64_t p0, int64_t p1, const PackedQuery* rows, int nrows,
                       float* const* out, const Call& call, Workspace& ws) {
  const int chunks = cpu::head_chunks(call.num_heads);
  for_each_task(ceil_div(p1 - p0, kTaskKeys), call, ws, [&](int64_t i, cpu::TileBuffer& tile) {
    const int64_t a = p0 + i * kTaskKeys;
    cpu::score_range(keys, a, std::min(a + kTaskKeys, p1), rows, nrows, out, call.head_dim, chunks,
                     tile);
  });
}

// Chooses blocks for each row (SEMANTICS.md 4.4): all eligible blocks when J <= m, else the forced
// sink and local blocks plus the best-scoring others, ties toward the lower block.
void choose_blocks(const QueryRow* rows, int nrows, const PackedQuery* packed,
                   const DenseKeys& pooled, const Call& call, Workspace& ws) {
  const SelectConfig& cfg = call.cfg;
  if (call.given_blocks) {  // the caller's blocks (validated): no block stage
    for (int r = 0; r < nrows; ++r) {
      const int32_t* g = call.given_blocks + rows[r].out_row * cfg.top_blocks;
      ws.chosen[r].clear();
      for (int c = 0; c < cfg.top_blocks && g[c] >= 0; ++c) ws.chosen[r].push_back(g[c]);
    }
    return;
  }
  PackedQuery need[kMaxGroup];  // rows with J > m, which need block scores
  float* out[kMaxGroup];
  int need_row[kMaxGroup], nneed = 0;
  int64_t hi = 0;  // block scores are needed for blocks [sink, hi)
  for (int r = 0; r < nrows; ++r) {
    const int64_t J = ceil_div(rows[r].visible, cfg.block_size);
    ws.chosen[r].clear();
    if (J <= cfg.top_blocks) {
      for (int64_t j = 0; j < J; ++j) ws.chosen[r].push_back(int32_t(j));
    } else {
      need_row[nneed] = r;
      need[nneed++] = packed[r];
      hi = std::max(hi, J - cfg.local_blocks);
    }
  }
  if (nneed == 0) return;
  ws.block_scores.resize(size_t(nneed) * size_t(hi));
  for (int i = 0; i < nneed; ++i) out[i] = ws.block_scores.data() + int64_t(i) * hi;
  score_range_tasks(pooled, cfg.sink_blocks, hi, need, nneed, out, call, ws);
  for (int i = 0; i < nneed; ++i) {
    const int r = need_row[i];
    const int64_t J = ceil_div(rows[r].visible, cfg.block_size);
    ws.ranks.clear();
    for (int64_t j = cfg.sink_blocks; j < J - cfg.local_blocks; ++j) {
      check_score(out[i][j], rows[r].out_row, "block");
      ws.ranks.push_back(cpu::rank_key(out[i][j], int32_t(j)));
    }
    cpu::top_positions(ws.ranks, cfg.top_blocks - cfg.sink_blocks - cfg.local_blocks,
                       ws.rank_scratch, ws.picked);
    std::vector<int32_t>& c = ws.chosen[r];
    for (int j = 0; j < cfg.sink_blocks; ++j) c.push_back(j);
    c.insert(c.end(), ws.picked.begin(), ws.picked.end());
    for (int64_t j = J - cfg.local_blocks; j < J; ++j) c.push_back(int32_t(j));
  }
}

// Visible positions of one row's candidates as [p0, p1) ranges, ascending.
template <class Fn>
void for_each_candidate_range(const QueryRow& row, const std::vector<int32_t>& chosen,
                              const SelectConfig& cfg, const Fn& fn) {
  if (cfg.method == Method::Flat) {
    fn(int64_t(0), row.visible);
    return;
  }
  const int64_t B = cfg.block_size;
  for (int32_t j : chosen) fn(j * B, std::min((j + 1) * B, row.visible));
}

// Token scores of every candidate position p of the rows need_row[i] into out[i][p]. Flat: one
// range for all rows. Hisa: each block chosen by any row is dequantised once and scored for the
// rows that chose it.
template <class Keys>
void score_candidates(const QueryRow* rows, const int* need_row, int nneed,
                      const PackedQuery* packed, float* const* out, const Keys& keys,
                      const Call& call, Workspace& ws) {
  const int D = call.head_dim, chunks = cpu::head_chunks(call.num_heads);
  int64_t end = 0;
  for (int i = 0; i < nneed; ++i) end = std::max(end, rows[need_row[i]].visible);
  if (call.cfg.method == Method::Flat) {
    score_range_tasks(keys, 0, end, packed, nneed, out, call, ws);
    return;
  }
  ws.union_blocks.clear();
  for (int i = 0; i < nneed; ++i)
    ws.union_blocks.insert(ws.union_blocks.end(), ws.chosen[need_row[i]].begin(),
                           ws.chosen[need_row[i]].end());
  std::sort(ws.union_blocks.begin(), ws.union_blocks.end());
  ws.union_blocks.erase(std::unique(ws.union_blocks.begin(), ws.union_blocks.end()),
                        ws.union_blocks.end());
  const int64_t B = call.cfg.block_size;
  const std::vector<int32_t>& blocks = ws.union_blocks;
  for_each_task(int64_t(blocks.size()), call, ws, [&](int64_t u, cpu::TileBuffer& tile) {
    const int32_t j = blocks[size_t(u)];
    if (size_t(u) + 1 < blocks.size())  // score_range prefetches within a block, this across
      keys.prefetch(blocks[size_t(u) + 1] * B, int(std::min<int64_t>(B, cpu::kTileKeys)));
    PackedQuery sub_packed[kMaxGroup];
    float* sub_out[kMaxGroup];
    int nsub = 0;
    int64_t sub_end = 0;
    for (int i = 0; i < nneed; ++i) {
      const std::vector<int32_t>& c = ws.chosen[need_row[i]];
      if (!std::binary_search(c.begin(), c.end(), j)) continue;
      sub_packed[nsub] = packed[i];
      sub_out[nsub++] = out[i];
      sub_end = std::max(sub_end, rows[need_row[i]].visible);
    }
    cpu::score_range(keys, j * B, std::min((j + 1) * B, sub_end), sub_packed, nsub, sub_out, D,
                     chunks, tile);
  });
}

template <class Keys>
void select_group(const QueryRow* rows, int nrows, const Keys& keys, const DenseKeys* pooled,
                  const Call& call, Workspace& ws) {
  const SelectConfig& cfg = call.cfg;
  const int H = call.num_heads, D = call.head_dim;
  const int width = cfg.out_width();

  const int64_t pq_floats = cpu::packed_query_floats(H, D);
  ws.packed.resize(size_t(nrows * pq_floats));
  ws.scratch.resize(size_t(H) * D);
  PackedQuery packed[kMaxGroup];
  for (int r = 0; r < nrows; ++r)
    packed[r] = cpu::pack_query(call.q_dtype, rows[r].q, rows[r].w, H, D,
                                ws.packed.data() + r * pq_floats, ws.scratch.data());

  if (cfg.has_blocks()) {
    choose_blocks(rows, nrows, packed, *pooled, call, ws);
    if (call.out.blocks)
      for (int r = 0; r < nrows; ++r) {
        int32_t* b = call.out.blocks + rows[r].out_row * cfg.top_blocks;
        std::fill(b, b + cfg.top_blocks, -1);
        std::copy(ws.chosen[r].begin(), ws.chosen[r].end(), b);
      }
  }

  // Rows with more candidates than k need token scores; the others keep every candidate.
  const bool refine = cfg.method != Method::Block;
  int need_row[kMaxGroup], nneed = 0;
  int64_t stride = 0;
  for (int r = 0; r < nrows; ++r) {
    int64_t count = 0;
    for_each_candidate_range(rows[r], ws.chosen[r], cfg,
                             [&](int64_t p0, int64_t p1) { count += p1 - p0; });
    if (refine && count > cfg.topk) {
      need_row[nneed++] = r;
      stride = std::max(stride, rows[r].visible);
    }
  }
  if (nneed > 0) {
    ws.scores.resize(size_t(nneed) * size_t(stride));
    PackedQuery need_packed[kMaxGroup];
    float* out[kMaxGroup];
    for (int i = 0; i < nneed; ++i) {
      need_packed[i] = packed[need_row[i]];
      out[i] = ws.scores.data() + i * stride;
    }
    score_candidates(rows, need_row, nneed, need_packed, out, keys, call, ws);
  }

  for (int r = 0, i = 0; r < nrows; ++r) {
    int32_t* idx = call.out.indices + rows[r].out_row * width;
    std::fill(idx, idx + width, -1);
    if (i < nneed && need_row[i] == r) {
      const float* s = ws.scores.data() + i * stride;
      ws.ranks.clear();
      for_each_candidate_range(rows[r], ws.chosen[r], cfg, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
          check_score(s[p], rows[r].out_row, "token");
          ws.ranks.push_back(cpu::rank_key(s[p], int32_t(p)));
        }
      });
      cpu::top_positions(ws.ranks, cfg.topk, ws.rank_scratch, ws.picked);
      std::copy(ws.picked.begin(), ws.picked.end(), idx);
      ++i;
    } else {
      for_each_candidate_range(rows[r], ws.chosen[r], cfg, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) *idx++ = int32_t(p);
      });
    }
  }
}

class CpuIndexer final : public Indexer {
 public:
  std::string name() const override { return "cpu"; }

  void select_prefill(const PrefillInputs& in, const SelectConfig& cfg,
                      const SelectOutputs& out) override {
    validate_prefill(in, cfg);
    if (in.num_q == 0) return;  // an empty batch: nothing to write
    HISA_CHECK(out.indices, "select_prefill: out.indices must be given");
    const int D = in.head_dim;
    const size_t esz = dtype_size(in.dtype);
    const std::vector<RowSpan> spans = prefill_row_spans(in);

    // Groups: consecutive rows of one sequence whose ends are close (their key ranges overlap).
    std::vector<std::pair<int64_t, int>> groups;  // first row, rows
    for (int64_t t = 0; t < in.num_q; ++t) {
      if (!groups.empty()) {
        auto& g = groups.back();
        const RowSpan& first = spans[size_t(g.first)];
        const RowSpan& s = spans[size_t(t)];
        if (g.first + g.second == t && g.second < kMaxGroup && s.key_start == first.key_start &&
            s.seq_keys == first.seq_keys && std::abs(s.visible - first.visible) <= cpu::kTileKeys) {
          ++g.second;
          continue;
        }
      }
      groups.push_back({t, 1});
    }

    // Pooled keys, once per sequence that has a row with more than m eligible blocks (none with
    // given blocks).
    std::map<int64_t, int> seq_of;  // key_start -> index in seqs
    std::vector<RowSpan> seqs;
    std::vector<int64_t> seq_offset;  // first pooled block of each sequence
    int64_t total_blocks = 0;
    for (int64_t t = 0; cfg.has_blocks() && !in.given_blocks && t < in.num_q; ++t) {
      const RowSpan& s = spans[size_t(t)];
      if (ceil_div(s.visible, cfg.block_size) <= cfg.top_blocks) continue;
      if (!seq_of.emplace(s.key_start, int(seqs.size())).second) continue;
      seqs.push_back(s);
      seq_offset.push_back(total_blocks);
      total_blocks += s.seq_keys / cfg.block_size;
    }
    std::vector<float> pooled(size_t(total_blocks) * D);
    std::vector<int> block_seq(static_cast<size_t>(total_blocks));
    for (size_t i = 0; i < seqs.size(); ++i)
      std::fill_n(block_seq.begin() + seq_offset[i], seqs[i].seq_keys / cfg.block_size, int(i));
    auto seq_keys = [&](int64_t start) {
      return DenseKeys{in.dtype, static_cast<const uint8_t*>(in.k) + size_t(start) * D * esz,
                       in.k_scale ? in.k_scale + start : nullptr, D};
    };
    const int threads = cpu::threads_for_work(cpu::prefill_work(in, cfg, spans));
    parallel_for(total_blocks, D, threads, [&](int64_t i, Workspace& ws) {
      const size_t q = size_t(block_seq[size_t(i)]);
      cpu::pool_block(seq_keys(seqs[q].key_start), i - seq_offset[q], cfg.block_size, D,
                      cfg.pooling, pooled.data() + i * D, ws.tile);
    });

    const Call call{cfg, in.num_heads, D, in.dtype, out, threads, in.given_blocks};
    const size_t q_row = size_t(in.num_heads) * D * esz;
    parallel_for(int64_t(groups.size()), D, threads, [&](int64_t g, Workspace& ws) {
      const auto [first, count] = groups[size_t(g)];
      QueryRow rows[kMaxGroup];
      for (int r = 0; r < count; ++r) {
        const int64_t t = first + r;
        rows[r] = {static_cast<const uint8_t*>(in.q) + size_t(t) * q_row, in.w + t * in.num_heads,
                   spans[size_t(t)].visible, t};
      }
      const int64_t start = spans[size_t(first)].key_start;
      const auto seq = seq_of.find(start);  // absent: no row of the group needs block scores
      const DenseKeys pooled_keys{
          DType::F32,
          seq == seq_of.end() ? nullptr : pooled.data() + seq_offset[size_t(seq->second)] * D,
          nullptr, D};
      select_group(rows, count, seq_keys(start), &pooled_keys, call, ws);
    });
  }

  void select_decode(const DecodeInputs& in, const SelectConfig& cfg,
                     const SelectOutputs& out) override {
    validate_decode(in, cfg);
    HISA_CHECK(out.indices, "select_decode: out.indices must be given");
    const int D = in.head_dim, H = in.num_heads;
    if (cfg.has_blocks() && !in.given_blocks) {
      HISA_CHECK(in.pooled, "decode: method ", method_name(cfg.method),
                 " on the cpu backend needs pooled keys (DecodeInputs::pooled, kept by "
                 "hisa::update_pooled_keys) or given_blocks");
      for (int b = 0; b < in.batch; ++b) {
        const int64_t complete = in.seq_lens[b] / cfg.block_size;
        HISA_CHECK(complete <= in.pooled_max_blocks,
                   "decode: pooled_max_blocks = ", in.pooled_max_blocks, " but request ", b,
                   " has ", complete, " complete blocks of ", cfg.block_size, " tokens");
      }
    }
    const Call call{cfg, H, D, in.q_dtype, out, cpu::threads_for_work(cpu::decode_work(in, cfg)),
                    in.given_blocks};
    const size_t q_row = size_t(H) * D * dtype_size(in.q_dtype);
    parallel_for(in.batch, D, call.threads, [&](int64_t b, Workspace& ws) {
      const int64_t len = in.seq_lens[b];
      QueryRow rows[kMaxGroup];
      for (int j = 0; j < in.next_n; ++j) {
        const int64_t t = b * in.next_n + j;
        rows[j] = {static_cast<const uint8_t*>(in.q) + size_t(t) * q_row, in.w + t * H,
                   len - in.next_n + j + 1, t};
      }
      const PagedKeys keys{in.kv_cache, in.block_table + b * in.max_pages, in.page_size, D, int(b)};
      const DenseKeys pooled{
          DType::F32, in.pooled ? in.pooled + b * in.pooled_max_blocks * D : nullptr, nullptr, D};
      select_group(rows, in.next_n, keys, &pooled, call, ws);
    });
  }
};

}  // namespace

namespace cpu {
namespace {

// Key scores of a row with causal end e (see prefill_work). A row with at most k candidates keeps
// them all and scores none.
double row_key_scores(int64_t visible, const SelectConfig& cfg) {
  const int64_t J = ceil_div(visible, cfg.block_size);
  const bool pools = cfg.has_blocks() && J > cfg.top_blocks;
  const int64_t candidates =
      pools ? std::min<int64_t>(visible, int64_t(cfg.top_blocks) * cfg.block_size) : visible;
  const double tokens =
      cfg.method != Method::Block && candidates > cfg.topk ? double(candidates) : 0.0;
  return (pools ? double(J) : 0.0) + tokens;
}

}  // namespace

double prefill_work(const PrefillInputs& in, const SelectConfig& cfg,
                    const std::vector<RowSpan>& spans) {
  double scores = 0, pooled_keys = 0;
  std::map<int64_t, int64_t> pooled_seqs;  // key_start -> seq_keys, of sequences that pool
  for (const RowSpan& s : spans) {
    scores += row_key_scores(s.visible, cfg);
    if (cfg.has_blocks() && ceil_div(s.visible, cfg.block_size) > cfg.top_blocks)
      pooled_seqs.emplace(s.key_start, s.seq_keys);
  }
  for (const auto& [start, keys] : pooled_seqs) pooled_keys += double(keys);
  return (scores * in.num_heads + pooled_keys) * in.head_dim;
}

double decode_work(const DecodeInputs& in, const SelectConfig& cfg) {
  double scores = 0;
  for (int b = 0; b < in.batch; ++b)
    for (int j = 0; j < in.next_n; ++j)
      scores += row_key_scores(int64_t(in.seq_lens[b]) - in.next_n + j + 1, cfg);
  return scores * in.num_heads * in.head_dim;
}

}  // namespace cpu

std::unique_ptr<Indexer> make_cpu_indexer() { return std::make_unique<CpuIndexer>(); }

}  // namespace hisa
