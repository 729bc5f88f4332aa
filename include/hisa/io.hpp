// hisa: safetensors and .npy files for the tensors of SEMANTICS.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include "hisa/config.hpp"
#include "hisa/params.hpp"
#include "hisa/tensor.hpp"

namespace hisa {

// safetensors: 8-byte little-endian header length, JSON header, raw data. Dtypes F32, BF16, F8_E4M3,
// I32, U8, F64, I64. Errors (truncated file, overlapping or out-of-range offsets, unknown dtype,
// size mismatch) throw hisa::Error naming the file and tensor.
// `metadata`, when given, receives the header's "__metadata__" string map.
std::map<std::string, Tensor> read_safetensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);
// Writes as the reference implementation (huggingface/safetensors) does, byte for byte: data
// ordered by dtype alignment (8-byte types first) then by name, so every tensor's data is aligned;
// compact JSON header padded with spaces to a multiple of 8 bytes.
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// .npy version 1.0/2.0/3.0, little-endian, C order: '<f4', '<f8', '<i4', '<i8', '|u1' ('<u1').
// bf16/fp8 arrays saved by ml_dtypes have the opaque descr '<V2'/'|V1' and are refused unless
// `dtype_override` says what the items are; the override also reinterprets any other descr of the
// same item size (e.g. bf16 saved as a '<u2' view). Throws on anything else.
Tensor read_npy(const std::string& path, std::optional<DType> dtype_override = std::nullopt);
// Writes version 1.0; BF16 as '<V2' and F8_E4M3 as '|V1' (view them with ml_dtypes in numpy).
void write_npy(const std::string& path, const Tensor& t);

// A prefill case: the inputs of one indexer call (names as in SEMANTICS.md: q, k, k_scale, w,
// cu_seqlens_q, cu_seqlens_k or ks, ke). Absent tensors stay empty.
struct Case {
  Tensor q, k, k_scale, w, cu_seqlens_q, cu_seqlens_k, ks, ke;
  std::map<std::string, std::string> metadata;
  // Pointers into this case's tensors; absent cu_seqlens and ks/ke mean one sequence.
  // Checks shapes and dtypes against each other (throws hisa::Error); values (cu_seqlens order,
  // ks/ke ranges, finiteness) are validate_prefill's job. The pointers stay valid while this Case
  // lives and its tensors are not resized. A one-sequence case points cu_seqlens at {0, T} / {0, S}
  // kept inside this Case, so two threads must not call inputs() on the same Case at once.
  PrefillInputs inputs() const;

 private:
  // [2 + 2] int32: cu_seqlens_q {0, T} then cu_seqlens_k {0, S} for a case that gives neither
  // cu_seqlens nor ks/ke; written by inputs() because PrefillInputs holds raw pointers.
  mutable std::array<int32_t, 4> one_seq_cu_{};
};
// Reads a case file (safetensors). Tensors other than the eight above are refused (a misspelt
// optional tensor would otherwise silently change the selection); the case is checked as inputs()
// does, with the file named in the message.
Case load_case(const std::string& path);
// Checks the case as inputs() does, then writes the tensors it has and its metadata.
void save_case(const std::string& path, const Case& c);

// A decode case: the inputs of one paged decode call (SEMANTICS.md section 1; the file format is
// docs/case-files.md). Sizes come from the shapes: N from seq_lens, next_n = q's rows / N,
// page_size and D from kv_cache. Absent optional tensors stay empty.
struct DecodeCase {
  Tensor q;            // [N * next_n, H, D] F32, BF16 or F8_E4M3; row b * next_n + j: query j of b
  Tensor w;            // [N * next_n, H] F32
  Tensor kv_cache;     // [num_pages, page_size, D + 4] U8: per page page_size * D fp8 e4m3 values
                       // (token-major), then page_size fp32 scales
  Tensor block_table;  // [N, max_pages] I32: physical page of each logical page; entries past a
                       // request's last page are not read (engines pad them, often with -1)
  Tensor seq_lens;     // [N] I32: tokens in each request's cache, its next_n queries included
  Tensor pooled;       // optional [N, max_blocks, D] F32: block j of request b at [b, j]
  // How `pooled` was pooled; stored as the metadata entries "pooled_block_size" and "pooling".
  int pooled_block_size = 0;  // B; 0 exactly when there is no pooled tensor
  Pooling pooling = Pooling::Mean;
  std::map<std::string, std::string> metadata;  // the other metadata entries (generator, seed, ...)

  // Pointers into this case's tensors (pooled too, when present). Checks shapes, dtypes and the
  // pooled-key fields against each other (throws hisa::Error naming the tensor); values
  // (seq_lens, block_table entries, finiteness) are validate_decode's job.
  DecodeInputs inputs() const;
  // Pools every complete block of every request from scratch (hisa::update_pooled_keys) into
  // `pooled` [N, max(1, max_b seq_lens[b] / B), D], replacing any pooled keys the case had.
  void pool(int block_size, Pooling pooling);
  // For a method that chooses blocks: the case's pooled keys, when it has some, must have been
  // pooled with cfg's block size and pooling (a mismatch would score blocks with the wrong keys).
  void check_pooled(const SelectConfig& cfg) const;
};
// Reads a decode case file. Tensors other than the six above are refused; the case is checked as
// inputs() does, with the file named in the message.
DecodeCase load_decode_case(const std::string& path);
// Checks the case as inputs() does, then writes its tensors and metadata.
void save_decode_case(const std::string& path, const DecodeCase& c);
// Reads a case file of either kind, reading it once: a file with kv_cache holds a decode case,
// any other a prefill case.
std::variant<Case, DecodeCase> load_any_case(const std::string& path);

}  // namespace hisa
