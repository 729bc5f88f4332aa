// Kernels of the fast CPU backend: dequantisation, the fp32 scoring microkernel, exact top-k.
//
// One scoring routine serves every path (prefill and decode; flat, hisa token stage, block stage):
// score_range() walks a "key tile source" (dense keys, the paged cache, or pooled keys) tile by
// tile and scores each tile for a few query rows. A key's score therefore does not depend on the
// path, the grouping of rows or the thread that computed it, which makes every output deterministic
// and makes hisa with J <= m bitwise equal to flat.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/dtype.hpp"

namespace hisa::cpu {

constexpr int kTileKeys = 64;   // keys dequantised at a time (64 x 128 fp32 = 32 KiB, stays in L1)
constexpr int kHeadLanes = 16;  // heads per packed query chunk (two AVX2 vectors, one AVX-512)

inline int head_chunks(int num_heads) { return (num_heads + kHeadLanes - 1) / kHeadLanes; }

// Dequantises n values of dtype t (F32, BF16 or F8E4M3) to fp32. Returns true when an fp8 NaN code
// (0x7f / 0xff) was seen (its output is then unspecified); never for F32 and BF16.
bool dequantize(DType t, const void* src, float* dst, int64_t n);

// One query row laid out for the microkernel.
struct PackedQuery {
  const float* qt = nullptr;  // [head_chunks(H), D, 16] fp32: q transposed, heads padded with zeros
  const float* w = nullptr;   // [head_chunks(H) * 16] fp32: weights, padded heads weigh 0
};
// Floats of one packed query (qt followed by w).
inline int64_t packed_query_floats(int num_heads, int head_dim) {
  return int64_t(head_chunks(num_heads)) * kHeadLanes * (head_dim + 1);
}
// Packs q [H, D] (dtype t) and w [H] into `buf` (packed_query_floats); `scratch` holds H * D
// floats.
PackedQuery pack_query(DType t, const void* q, const float* w, int num_heads, int head_dim,
                       float* buf, float* scratch);

// Microkernel instruction sets. The default is AVX-512 where the CPU has it (checked at run time), else
// AVX2 (the portable loop in builds without AVX2). Sums differ in the last bits between the two, so
// outputs are bitwise deterministic per machine. set_kernel lets tests run both; it is not meant to
// change while a selection runs.
enum class Kernel { Avx2, Avx512 };
Kernel active_kernel();
void set_kernel(Kernel kernel);  // throws hisa::Error when the CPU lacks it

// out[i] = scale[i] * sum_h w[h] * max(0, dot(q[h], keys[i])) for i < n. keys: [n, D] fp32
// row-major; scale: [n] or nullptr (1). fp32 accumulation in a fixed order.
void score_keys(const float* keys, const float* scale, int n, int head_dim, const PackedQuery& q,
                int chunks, float* out);

// A tile of dequantised keys, as a key tile source returns it (may point into the source itself).
struct KeyTile {
  const float* keys;   // [n, D] fp32, unscaled
  const float* scale;  // [n] fp32 or nullptr (1)
};

// Scratch of one thread for a key tile source.
struct TileBuffer {
  std::vector<float> keys, scale;
  explicit TileBuffer(int head_dim) : keys(size_t(kTileKeys) * head_dim), scale(kTileKeys) {}
};

// Scores positions [p0, p1) of `source` for `nrows` query rows: out[r][p] for absolute p.
// Source: KeyTile load(int64_t p, int n, TileBuffer&) const with n <= kTileKeys, and
// void prefetch(int64_t p, int n) const. The next tile is prefetched while one is scored (paged
// decode reads scattered pages from DRAM).
template <class Source>
void score_range(const Source& source, int64_t p0, int64_t p1, const PackedQuery* rows, int nrows,
                 float* const* out, int head_dim, int chunks, TileBuffer& buf) {
  for (int64_t p = p0; p < p1; p += kTileKeys) {
    const int n = int(std::min<int64_t>(kTileKeys, p1 - p));
    const KeyTile tile = source.load(p, n, buf);
    if (p + n < p1) source.prefetch(p + n, int(std::min<int64_t>(kTileKeys, p1 - p - n)));
    for (int r = 0; r < nrows; ++r)
      score_keys(tile.keys, tile.scale, n, head_dim, rows[r], chunks, out[r] + p);
  }
}

// The pooled key of block `block` (positions [block * B, (block + 1) * B), all present): the mean
// (or max) of the B scaled keys, fp32, summed in position order. out: [D].
template <class Source>
void pool_block(const Source& source, int64_t block, int block_size, int head_dim, Pooling pooling,
                float* out, TileBuffer& buf) {
  const bool mean = pooling == Pooling::Mean;
  std::fill(out, out + head_dim, mean ? 0.0f : -__builtin_inff());
  for (int64_t p = block * block_size; p < (block + 1) * block_size; p += kTileKeys) {
    const int n = int(std::min<int64_t>(kTileKeys, (block + 1) * block_size - p));
    const KeyTile tile = source.load(p, n, buf);
    for (int i = 0; i < n; ++i) {
      const float s = tile.scale ? tile.scale[i] : 1.0f;
      const float* key = tile.keys + int64_t(i) * head_dim;
      for (int d = 0; d < head_dim; ++d) {
        const float v = s * key[d];
        out[d] = mean ? out[d] + v : std::max(out[d], v);
      }
    }
  }
  if (mean) {
    const float inv = 1.0f / float(block_size);  // exact: B is a power of two
    for (int d = 0; d < head_dim; ++d) out[d] *= inv;
  }
}

// Keys of a contiguous [rows, D] array (a prefill sequence's keys, or pooled keys as F32).
struct DenseKeys {
  DType dtype;
  const void* k;         // [rows, D] dtype, row 0 = position 0
  const float* k_scale;  // [rows] fp32 or nullptr
  int head_dim;
  KeyTile load(int64_t p, int n, TileBuffer& buf) const;
  void prefetch(int64_t p, int n) const;  // hints the bytes of keys [p, p + n) into the cache
};

// Keys of one request in the paged fp8 cache. Throws hisa::Error on a NaN value or a scale that is
// not finite and > 0 (the cache is checked where it is read, never scanned as a whole).
struct PagedKeys {
  const uint8_t* cache;  // [num_pages, page_size, D + 4] uint8
  const int32_t* pages;  // [max_pages] int32: this request's row of block_table
  int page_size;
  int head_dim;
  int request;  // for messages
  KeyTile load(int64_t p, int n, TileBuffer& buf) const;
  void prefetch(int64_t p, int n) const;
};

// ---- Exact top-k: (score desc, position asc) as one integer, larger is better ----
inline uint64_t rank_key(float score, int32_t pos) {
  score += 0.0f;  // -0 -> +0: equal scores must get equal keys
  const uint32_t b = __builtin_bit_cast(uint32_t, score);
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (uint64_t(ordered) << 32) | uint32_t(~uint32_t(pos));
}
inline int32_t rank_pos(uint64_t key) { return int32_t(~uint32_t(key)); }

// Positions of the best min(k, keys.size()) ranks, ascending, in `out`. keys must be in ascending
// position order (every caller builds them so). scratch: any buffer, reused.
void top_positions(const std::vector<uint64_t>& keys, int k, std::vector<uint64_t>& scratch,
                   std::vector<int32_t>& out);

}  // namespace hisa::cpu
