// Incremental pooled keys for the paged decode cache: only blocks that just became complete are
// read.
#include "hisa/pooled.hpp"

#include <exception>
#include <vector>

#include "cpu/fast_kernels.hpp"
#include "cpu/threads.hpp"
#include "hisa/error.hpp"

namespace hisa {

void update_pooled_keys(const DecodeInputs& cache, const int32_t* old_lens, const int32_t* new_lens,
                        int block_size, Pooling pooling, float* pooled, int max_blocks) {
  const int D = cache.head_dim, ps = cache.page_size;
  HISA_CHECK(cache.batch >= 1, "update_pooled_keys: batch must be >= 1, got ", cache.batch);
  HISA_CHECK(D == 64 || D == 128, "update_pooled_keys: head_dim must be 128 or 64, got ", D);
  HISA_CHECK(ps >= 1 && block_size >= 1 && block_size % ps == 0, "update_pooled_keys: block_size (",
             block_size, ") must be a multiple of page_size (", ps, ")");
  HISA_CHECK((block_size & (block_size - 1)) == 0,
             "update_pooled_keys: block_size must be a power of two, got ", block_size);
  HISA_CHECK(cache.kv_cache && cache.block_table && new_lens && pooled,
             "update_pooled_keys: kv_cache, block_table, new_lens and pooled must be given");
  HISA_CHECK(max_blocks >= 0, "update_pooled_keys: max_blocks must be >= 0, got ", max_blocks);

  // Blocks to pool: [first, last) of each request; pages they read must be in the table and cache.
  std::vector<std::pair<int, int64_t>> todo;  // (request, block)
  for (int b = 0; b < cache.batch; ++b) {
    const int64_t old_len = old_lens ? old_lens[b] : 0, new_len = new_lens[b];
    HISA_CHECK(old_len >= 0 && old_len <= new_len, "update_pooled_keys: request ", b,
               " has old_lens = ", old_len, " > new_lens = ", new_len, " (lengths only grow)");
    HISA_CHECK(new_len <= int64_t(cache.max_pages) * ps, "update_pooled_keys: new_lens[", b,
               "] = ", new_len, " exceeds max_pages * page_size = ", int64_t(cache.max_pages) * ps);
    const int64_t first = old_len / block_size, last = new_len / block_size;
    HISA_CHECK(last <= max_blocks, "update_pooled_keys: request ", b, " has ", last,
               " complete blocks but pooled holds max_blocks = ", max_blocks);
    for (int64_t page = first * block_size / ps; page < last * block_size / ps; ++page) {
      const int32_t p = cache.block_table[int64_t(b) * cache.max_pages + page];
      HISA_CHECK(p >= 0 && p < cache.num_pages, "update_pooled_keys: block_table[", b, ", ", page,
                 "] = ", p, " is out of range [0, ", cache.num_pages, ")");
    }
    for (int64_t j = first; j < last; ++j) todo.push_back({b, j});
  }

  std::exception_ptr error;
  const int64_t n = int64_t(todo.size());
  // An incremental update completes a block or so per request: below the work threshold it runs
  // on the calling thread (B * D additions a block).
  const int threads = cpu::threads_for_work(double(n) * block_size * D);
#pragma omp parallel num_threads(threads) if (n > 1 && threads > 1)
  {
    cpu::TileBuffer buf(D);
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      const auto [b, j] = todo[size_t(i)];
      const cpu::PagedKeys keys{cache.kv_cache, cache.block_table + int64_t(b) * cache.max_pages,
                                ps, D, b};
      try {
        cpu::pool_block(keys, j, block_size, D, pooling, pooled + (int64_t(b) * max_blocks + j) * D,
                        buf);
      } catch (...) {
#pragma omp critical(hisa_pooled_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace hisa
