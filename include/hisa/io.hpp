// hisa: safetensors and .npy files for the tensors of SEMANTICS.md.
#pragma once

#include <map>
#include <string>

#include "hisa/params.hpp"
#include "hisa/tensor.hpp"

namespace hisa {

// safetensors: 8-byte little-endian header length, JSON header, raw data. Dtypes F32, BF16, F8_E4M3,
// I32, U8, F64, I64. Errors (truncated file, overlapping or out-of-range offsets, unknown dtype,
// size mismatch) throw hisa::Error naming the file and tensor.
std::map<std::string, Tensor> read_safetensors(const std::string& path);
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// .npy version 1.0/2.0, little-endian, C order: '<f4', '<f8', '<i4', '<i8', '|u1', and bf16/fp8 as
// ml_dtypes writes them ('<V2'/'|V1' are refused: pass dtype_override). Throws on anything else.
Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const Tensor& t);

// A prefill case: the inputs of one indexer call (names as in SEMANTICS.md: q, k, k_scale, w,
// cu_seqlens_q, cu_seqlens_k or ks, ke). Absent tensors stay empty.
struct Case {
  Tensor q, k, k_scale, w, cu_seqlens_q, cu_seqlens_k, ks, ke;
  std::map<std::string, std::string> metadata;
  // Pointers into this case's tensors; absent cu_seqlens and ks/ke mean one sequence.
  // Checks shapes and dtypes against each other (throws hisa::Error).
  PrefillInputs inputs() const;
};
Case load_case(const std::string& path);  // safetensors
void save_case(const std::string& path, const Case& c);

}  // namespace hisa
