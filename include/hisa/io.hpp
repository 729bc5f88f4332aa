// hisa: safetensors and .npy files for the tensors of SEMANTICS.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

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

}  // namespace hisa
