// hisa: case files: the tensors of one prefill or decode call (SEMANTICS.md section 1) in one
// safetensors file (docs/case-files.md).
#include <algorithm>
#include <climits>
#include <cstdint>
#include <utility>
#include <vector>

#include "hisa/error.hpp"
#include "hisa/io.hpp"
#include "hisa/pooled.hpp"
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

template <typename C>
std::vector<std::pair<const char*, decltype(&std::declval<C&>().q)>> named_decode_tensors(C& c) {
  return {{"q", &c.q},
          {"w", &c.w},
          {"kv_cache", &c.kv_cache},
          {"block_table", &c.block_table},
          {"seq_lens", &c.seq_lens},
          {"pooled", &c.pooled}};
}

// Moves each file tensor into the case slot of its name; refuses a name the case does not have.
template <typename Slots>
void fill_slots(std::map<std::string, Tensor>& tensors, const Slots& slots, const std::string& path,
                const char* kind, const char* expected) {
  for (auto& [name, t] : tensors) {
    Tensor* slot = nullptr;
    for (const auto& [n, s] : slots) {
      if (name == n) slot = s;
    }
    HISA_CHECK(slot, path, ": unknown tensor '", name, "' in a ", kind, " case file (expected ",
               expected, ")");
    *slot = std::move(t);
  }
}

// Metadata entries of a decode case that hisa reads (the pooled keys' block size and pooling).
constexpr const char* kPooledBlockSizeKey = "pooled_block_size";
constexpr const char* kPoolingKey = "pooling";

Case case_from_tensors(std::map<std::string, Tensor> tensors,
                       std::map<std::string, std::string> metadata, const std::string& path) {
  HISA_CHECK(!tensors.count("kv_cache"), path,
             ": this is a decode case file (it holds kv_cache), not a prefill case");
  Case c;
  c.metadata = std::move(metadata);
  fill_slots(tensors, named_tensors(c), path, "prefill",
             "q, k, k_scale, w, cu_seqlens_q, cu_seqlens_k, ks, ke");
  try {
    c.inputs();
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return c;
}

DecodeCase decode_case_from_tensors(std::map<std::string, Tensor> tensors,
                                    std::map<std::string, std::string> metadata,
                                    const std::string& path) {
  DecodeCase c;
  fill_slots(tensors, named_decode_tensors(c), path, "decode",
             "q, w, kv_cache, block_table, seq_lens, pooled");
  try {
    if (auto it = metadata.find(kPooledBlockSizeKey); it != metadata.end()) {
      size_t used = 0;
      int value = 0;
      try {
        value = std::stoi(it->second, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      HISA_CHECK(used > 0 && used == it->second.size() && value > 0, "metadata ",
                 kPooledBlockSizeKey, " = '", it->second, "' is not a positive integer");
      c.pooled_block_size = value;
      metadata.erase(it);
    }
    if (auto it = metadata.find(kPoolingKey); it != metadata.end()) {
      c.pooling = pooling_from_name(it->second);
      metadata.erase(it);
    }
    c.metadata = std::move(metadata);
    c.inputs();
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return c;
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
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors = read_safetensors(path, &metadata);
  return case_from_tensors(std::move(tensors), std::move(metadata), path);
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

DecodeInputs DecodeCase::inputs() const {
  HISA_CHECK(
      !q.empty() && !w.empty() && !kv_cache.empty() && !block_table.empty() && !seq_lens.empty(),
      "a decode case needs q, w, kv_cache, block_table and seq_lens (missing: ",
      q.empty() ? "q " : "", w.empty() ? "w " : "", kv_cache.empty() ? "kv_cache " : "",
      block_table.empty() ? "block_table " : "", seq_lens.empty() ? "seq_lens" : "", ")");

  HISA_CHECK(seq_lens.shape.size() == 1 && seq_lens.dtype == DType::I32,
             "seq_lens must be [N] I32, got ", seq_lens.shape_str(), " ",
             dtype_name(seq_lens.dtype));
  check_bytes(seq_lens, "seq_lens");
  const int64_t N = seq_lens.shape[0];
  HISA_CHECK(N >= 1 && N <= INT_MAX, "seq_lens ", seq_lens.shape_str(),
             ": the batch N must be in [1, INT_MAX]");

  HISA_CHECK(q.shape.size() == 3, "q must be [N * next_n, H, D], got ", q.shape_str());
  HISA_CHECK(is_qk_dtype(q.dtype), "q must be F32, BF16 or F8_E4M3, got ", dtype_name(q.dtype));
  check_bytes(q, "q");
  const int64_t rows = q.shape[0], H = q.shape[1], D = q.shape[2];
  HISA_CHECK(rows % N == 0 && rows > 0, "q has ", rows,
             " rows, not a positive multiple of the batch N = ", N, " (seq_lens ",
             seq_lens.shape_str(), "): q must be [N * next_n, H, D]");
  const int64_t next_n = rows / N;
  HISA_CHECK(next_n <= 4, "q has ", rows, " rows for N = ", N, " requests: next_n = ", next_n,
             " but must be in 1..4");
  HISA_CHECK(H <= INT_MAX && D <= INT_MAX, "q ", q.shape_str(), ": H and D must fit in int");

  HISA_CHECK(w.shape == (std::vector<int64_t>{rows, H}), "w must be [N * next_n, H] = [", rows,
             ", ", H, "], got ", w.shape_str());
  HISA_CHECK(w.dtype == DType::F32, "w must be F32, got ", dtype_name(w.dtype));
  check_bytes(w, "w");

  HISA_CHECK(kv_cache.dtype == DType::U8,
             "kv_cache must be U8 (fp8 values and fp32 scales as bytes), got ",
             dtype_name(kv_cache.dtype));
  HISA_CHECK(kv_cache.shape.size() == 3 && kv_cache.shape[2] == D + 4,
             "kv_cache must be [num_pages, page_size, D + 4] with D + 4 = ", D + 4, " (D = ", D,
             " as in q ", q.shape_str(), "), got ", kv_cache.shape_str());
  check_bytes(kv_cache, "kv_cache");
  const int64_t num_pages = kv_cache.shape[0], page_size = kv_cache.shape[1];
  HISA_CHECK(num_pages >= 1 && num_pages <= INT_MAX && page_size >= 1 && page_size <= INT_MAX,
             "kv_cache ", kv_cache.shape_str(),
             ": num_pages and page_size must be in [1, INT_MAX]");

  HISA_CHECK(
      block_table.shape.size() == 2 && block_table.shape[0] == N && block_table.dtype == DType::I32,
      "block_table must be [N, max_pages] I32 with N = ", N, " as in seq_lens, got ",
      block_table.shape_str(), " ", dtype_name(block_table.dtype));
  check_bytes(block_table, "block_table");
  const int64_t max_pages = block_table.shape[1];
  HISA_CHECK(max_pages >= 1 && max_pages <= INT_MAX, "block_table ", block_table.shape_str(),
             ": max_pages must be in [1, INT_MAX]");

  DecodeInputs in;
  in.batch = int(N);
  in.next_n = int(next_n);
  in.num_heads = int(H);
  in.head_dim = int(D);
  in.q_dtype = q.dtype;
  in.q = q.data<void>();
  in.w = w.data<float>();
  in.num_pages = int(num_pages);
  in.page_size = int(page_size);
  in.kv_cache = kv_cache.data<uint8_t>();
  in.max_pages = int(max_pages);
  in.block_table = block_table.data<int32_t>();
  in.seq_lens = seq_lens.data<int32_t>();

  if (pooled.empty()) {
    HISA_CHECK(pooled_block_size == 0, "pooled_block_size = ", pooled_block_size,
               " is given but there is no pooled tensor");
    return in;
  }
  HISA_CHECK(pooled.shape.size() == 3 && pooled.shape[0] == N && pooled.shape[2] == D &&
                 pooled.dtype == DType::F32,
             "pooled must be [N, max_blocks, D] F32 with N = ", N, " and D = ", D, ", got ",
             pooled.shape_str(), " ", dtype_name(pooled.dtype));
  check_bytes(pooled, "pooled");
  HISA_CHECK(pooled.shape[1] >= 1 && pooled.shape[1] <= INT_MAX, "pooled ", pooled.shape_str(),
             ": max_blocks must be in [1, INT_MAX]");
  HISA_CHECK(pooled_block_size > 0,
             "pooled keys need the block size B they were pooled with (metadata ",
             kPooledBlockSizeKey, ")");
  in.pooled = pooled.data<float>();
  in.pooled_max_blocks = int(pooled.shape[1]);
  return in;
}

void DecodeCase::pool(int block_size, Pooling how) {
  pooled = Tensor();
  pooled_block_size = 0;
  const DecodeInputs in = inputs();
  int64_t longest = 0;
  for (int b = 0; b < in.batch; ++b) longest = std::max<int64_t>(longest, in.seq_lens[b]);
  HISA_CHECK(block_size >= 1, "pool: block_size must be >= 1, got ", block_size);
  const int64_t max_blocks = std::max<int64_t>(1, longest / block_size);
  Tensor keys(DType::F32, {in.batch, max_blocks, in.head_dim});
  update_pooled_keys(in, nullptr, in.seq_lens, block_size, how, keys.data<float>(),
                     int(max_blocks));
  pooled = std::move(keys);
  pooled_block_size = block_size;
  pooling = how;
}

void DecodeCase::check_pooled(const SelectConfig& cfg) const {
  if (pooled.empty() || !cfg.has_blocks()) return;
  HISA_CHECK(pooled_block_size == cfg.block_size && pooling == cfg.pooling,
             "the case's pooled keys were pooled with B = ", pooled_block_size, " (",
             pooling_name(pooling), ") but ", method_name(cfg.method),
             " selects with B = ", cfg.block_size, " (", pooling_name(cfg.pooling),
             "): choose that block size and pooling, or write the case without pooled keys");
}

DecodeCase load_decode_case(const std::string& path) {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors = read_safetensors(path, &metadata);
  HISA_CHECK(tensors.count("kv_cache"), path,
             ": this is not a decode case file (it has no kv_cache tensor)");
  return decode_case_from_tensors(std::move(tensors), std::move(metadata), path);
}

void save_decode_case(const std::string& path, const DecodeCase& c) {
  try {
    c.inputs();
  } catch (const Error& e) {
    throw Error("save_decode_case '" + path + "': " + e.what());
  }
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const auto& [name, t] : named_decode_tensors(c)) {
    if (!t->empty()) tensors.emplace_back(name, t);
  }
  std::map<std::string, std::string> metadata = c.metadata;
  metadata.erase(kPooledBlockSizeKey);
  metadata.erase(kPoolingKey);
  if (!c.pooled.empty()) {
    metadata[kPooledBlockSizeKey] = std::to_string(c.pooled_block_size);
    metadata[kPoolingKey] = pooling_name(c.pooling);
  }
  detail::write_safetensors_views(path, tensors, metadata);
}

std::variant<Case, DecodeCase> load_any_case(const std::string& path) {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors = read_safetensors(path, &metadata);
  if (tensors.count("kv_cache"))
    return decode_case_from_tensors(std::move(tensors), std::move(metadata), path);
  return case_from_tensors(std::move(tensors), std::move(metadata), path);
}

}  // namespace hisa
