// hisa: prefill case files: the tensors of SEMANTICS.md section 1 in one safetensors file.
#include <climits>
#include <cstdint>
#include <utility>
#include <vector>

#include "hisa/error.hpp"
#include "hisa/io.hpp"
#include "io/safetensors_views.hpp"

namespace hisa {
namespace {

bool is_qk_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F8E4M3; }

// A Tensor is a plain struct, so its bytes may disagree with its shape; PrefillInputs would then
// point past the end of the buffer.
void check_bytes(const Tensor& t, const char* name) {
  for (int64_t d : t.shape) HISA_CHECK(d >= 0, name, " has a negative dimension: ", t.shape_str());
  const size_t need = size_t(t.numel()) * dtype_size(t.dtype);
  HISA_CHECK(t.bytes.size() == need, name, " ", t.shape_str(), " ", dtype_name(t.dtype), " needs ",
             need, " bytes but holds ", t.bytes.size());
}

// The case's tensors by file name, in the order SEMANTICS.md lists them.
template <typename C>
std::vector<std::pair<const char*, decltype(&std::declval<C&>().q)>> named_tensors(C& c) {
  return {{"q", &c.q},
          {"k", &c.k},
          {"k_scale", &c.k_scale},
          {"w", &c.w},
          {"cu_seqlens_q", &c.cu_seqlens_q},
          {"cu_seqlens_k", &c.cu_seqlens_k},
          {"ks", &c.ks},
          {"ke", &c.ke}};
}

}  // namespace

PrefillInputs Case::inputs() const {
  PrefillInputs in;

  HISA_CHECK(!q.empty(), "q is missing (a case needs q [T, H, D], k [S, D] and w [T, H])");
  HISA_CHECK(q.shape.size() == 3, "q must be [T, H, D], got ", q.shape_str());
  HISA_CHECK(is_qk_dtype(q.dtype), "q must be F32, BF16 or F8_E4M3, got ", dtype_name(q.dtype));
  check_bytes(q, "q");
  const int64_t T = q.shape[0], H = q.shape[1], D = q.shape[2];
  HISA_CHECK(T <= INT32_MAX, "q has T = ", T, " rows, more than int32 cu_seqlens can address");
  HISA_CHECK(H <= INT_MAX && D <= INT_MAX, "q ", q.shape_str(), ": H and D must fit in int");

  HISA_CHECK(!k.empty(), "k is missing (a case needs q [T, H, D], k [S, D] and w [T, H])");
  HISA_CHECK(k.shape.size() == 2 && k.shape[1] == D, "k must be [S, D] with D = ", D, " as in q ",
             q.shape_str(), ", got ", k.shape_str());
  HISA_CHECK(k.dtype == q.dtype, "k must have q's dtype ", dtype_name(q.dtype), ", got ",
             dtype_name(k.dtype));
  check_bytes(k, "k");
  const int64_t S = k.shape[0];
  HISA_CHECK(S <= INT32_MAX, "k has S = ", S, " rows, more than int32 positions can address");

  if (!k_scale.empty()) {
    HISA_CHECK(k_scale.shape == std::vector<int64_t>{S}, "k_scale must be [S] = [", S, "], got ",
               k_scale.shape_str());
    HISA_CHECK(k_scale.dtype == DType::F32, "k_scale must be F32, got ", dtype_name(k_scale.dtype));
    check_bytes(k_scale, "k_scale");
  }

  HISA_CHECK(!w.empty(), "w is missing (need w [T, H] = [", T, ", ", H, "] F32)");
  HISA_CHECK(w.shape == (std::vector<int64_t>{T, H}), "w must be [T, H] = [", T, ", ", H, "], got ",
             w.shape_str());
  HISA_CHECK(w.dtype == DType::F32, "w must be F32, got ", dtype_name(w.dtype));
  check_bytes(w, "w");

  const bool has_cu_q = !cu_seqlens_q.empty(), has_cu_k = !cu_seqlens_k.empty();
  const bool has_ks = !ks.empty(), has_ke = !ke.empty();
  HISA_CHECK(has_cu_q == has_cu_k, "cu_seqlens_q and cu_seqlens_k go together (only ",
             has_cu_q ? "cu_seqlens_q" : "cu_seqlens_k", " given)");
  HISA_CHECK(has_ks == has_ke, "ks and ke go together (only ", has_ks ? "ks" : "ke", " given)");
  HISA_CHECK(!(has_cu_q && has_ks), "give either cu_seqlens_q/cu_seqlens_k or ks/ke, not both");

  in.num_q = T;
  in.num_k = S;
  in.num_heads = int(H);
  in.head_dim = int(D);
  in.dtype = q.dtype;
  in.q = q.data<void>();
  in.k = k.data<void>();
  in.k_scale = k_scale.empty() ? nullptr : k_scale.data<float>();
  in.w = w.data<float>();

  if (has_cu_q) {
    for (const auto& [name, t] :
         {std::pair<const char*, const Tensor*>{"cu_seqlens_q", &cu_seqlens_q},
          {"cu_seqlens_k", &cu_seqlens_k}}) {
      HISA_CHECK(t->shape.size() == 1 && t->shape[0] >= 2 && t->dtype == DType::I32, name,
                 " must be [N + 1] I32 with N >= 1 sequences, got ", t->shape_str(), " ",
                 dtype_name(t->dtype));
      check_bytes(*t, name);
    }
    HISA_CHECK(cu_seqlens_q.shape == cu_seqlens_k.shape, "cu_seqlens_q ", cu_seqlens_q.shape_str(),
               " and cu_seqlens_k ", cu_seqlens_k.shape_str(), " must both be [N + 1]");
    HISA_CHECK(cu_seqlens_q.shape[0] - 1 <= INT_MAX, "cu_seqlens: too many sequences");
    in.num_seqs = int(cu_seqlens_q.shape[0] - 1);
    in.cu_seqlens_q = cu_seqlens_q.data<int32_t>();
    in.cu_seqlens_k = cu_seqlens_k.data<int32_t>();
  } else if (has_ks) {
    for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"ks", &ks}, {"ke", &ke}}) {
      HISA_CHECK(t->shape == std::vector<int64_t>{T} && t->dtype == DType::I32, name,
                 " must be [T] = [", T, "] I32, got ", t->shape_str(), " ", dtype_name(t->dtype));
      check_bytes(*t, name);
    }
    in.num_seqs = 0;
    in.ks = ks.data<int32_t>();
    in.ke = ke.data<int32_t>();
  } else {
    one_seq_cu_ = {0, int32_t(T), 0, int32_t(S)};
    in.num_seqs = 1;
    in.cu_seqlens_q = one_seq_cu_.data();
    in.cu_seqlens_k = one_seq_cu_.data() + 2;
  }
  return in;
}

Case load_case(const std::string& path) {
  Case c;
  std::map<std::string, Tensor> tensors = read_safetensors(path, &c.metadata);
  const auto slots = named_tensors(c);
  for (auto& [name, t] : tensors) {
    Tensor* slot = nullptr;
    for (const auto& [n, s] : slots) {
      if (name == n) slot = s;
    }
    HISA_CHECK(slot, path, ": unknown tensor '", name,
               "' in a case file (expected q, k, k_scale, w, cu_seqlens_q, cu_seqlens_k, ks, ke)");
    *slot = std::move(t);
  }
  try {
    c.inputs();
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return c;
}

void save_case(const std::string& path, const Case& c) {
  try {
    c.inputs();
  } catch (const Error& e) {
    throw Error("save_case '" + path + "': " + e.what());
  }
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const auto& [name, t] : named_tensors(c)) {
    if (!t->empty()) tensors.emplace_back(name, t);
  }
  detail::write_safetensors_views(path, tensors, c.metadata);
}

}  // namespace hisa
