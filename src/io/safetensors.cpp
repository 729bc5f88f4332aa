// hisa: safetensors reader and writer.
//
// Layout (huggingface/safetensors): u64 little-endian header size N, N bytes of JSON header, then
// the data region. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (byte offsets relative to the start of the data region) and may hold "__metadata__", a
// string-to-string map. The reader copies each tensor into its own Tensor (no mmap: case files are
// read once, and owning tensors keep the API simple).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "hisa/error.hpp"
#include "hisa/io.hpp"
#include "io/safetensors_views.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "hisa's file formats are little-endian and read straight into memory");

namespace hisa {
namespace {

using Json = nlohmann::json;

// The reference reader refuses larger headers; a header this large means a corrupt size field.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Rank in the reference implementation's Dtype enum (increasing alignment). The writer orders data
// by descending rank, then by name, as the reference does, so that files are byte-identical to
// Python's and every tensor's data is aligned to its element size (the header is padded to 8).
int alignment_rank(DType t) {
  switch (t) {
    case DType::U8:
      return 0;
    case DType::F8E4M3:
      return 1;
    case DType::BF16:
      return 2;
    case DType::I32:
      return 3;
    case DType::F32:
      return 4;
    case DType::F64:
      return 5;
    case DType::I64:
      return 6;
  }
  return 0;
}

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  Tensor t;
  t.shape = shape;
  return t.shape_str();
}

// Bytes of `shape` in `dtype`, refusing sizes that overflow (a corrupt header).
uint64_t byte_size(const std::vector<int64_t>& shape, DType dtype, const std::string& where) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    HISA_CHECK(d == 0 || n <= std::numeric_limits<uint64_t>::max() / uint64_t(d), where, ": shape ",
               shape_text(shape), " overflows 64-bit byte counts");
    n *= uint64_t(d);
  }
  return n;
}

Entry parse_entry(const std::string& name, const Json& v, uint64_t data_size,
                  const std::string& file) {
  const std::string at = file + ": tensor '" + name + "'";
  HISA_CHECK(v.is_object(), at,
             ": header entry must be an object with dtype, shape and data_offsets, got ", v.dump());
  Entry e;
  e.name = name;

  auto dt = v.find("dtype");
  HISA_CHECK(dt != v.end() && dt->is_string(), at, ": missing or non-string \"dtype\"");
  try {
    e.dtype = dtype_from_name(dt->get<std::string>());
  } catch (const Error& err) {
    throw Error(at + ": " + err.what());
  }

  auto sh = v.find("shape");
  HISA_CHECK(sh != v.end() && sh->is_array(), at, ": missing \"shape\" (an array of dimensions)");
  for (const Json& d : *sh) {
    HISA_CHECK(d.is_number_integer(), at, ": shape ", sh->dump(), " must hold integers");
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      HISA_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), at, ": dimension ", u,
                 " is too large");
      e.shape.push_back(int64_t(u));
    } else {
      const int64_t s = d.get<int64_t>();
      HISA_CHECK(s >= 0, at, ": negative dimension ", s, " in shape ", sh->dump());
      e.shape.push_back(s);
    }
  }

  auto off = v.find("data_offsets");
  HISA_CHECK(off != v.end() && off->is_array() && off->size() == 2 &&
                 (*off)[0].is_number_unsigned() && (*off)[1].is_number_unsigned(),
             at, ": \"data_offsets\" must be [begin, end] with non-negative integers, got ",
             off == v.end() ? std::string("nothing") : off->dump());
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  HISA_CHECK(e.begin <= e.end, at, ": data_offsets [", e.begin, ", ", e.end, "] are reversed");
  HISA_CHECK(e.end <= data_size, at, ": data_offsets [", e.begin, ", ", e.end,
             "] run past the end of the data region (", data_size, " bytes): truncated file?");
  const uint64_t need = byte_size(e.shape, e.dtype, at);
  HISA_CHECK(e.end - e.begin == need, at, ": data_offsets [", e.begin, ", ", e.end, "] hold ",
             e.end - e.begin, " bytes but shape ", shape_text(e.shape), " of ", dtype_name(e.dtype),
             " needs ", need);
  return e;
}

}  // namespace

std::map<std::string, Tensor> read_safetensors(const std::string& path,
                                               std::map<std::string, std::string>* metadata) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  HISA_CHECK(fs::exists(st), "cannot open safetensors file '", path,
             "': ", ec ? ec.message() : std::string("no such file"));
  HISA_CHECK(fs::is_regular_file(st), "cannot read safetensors file '", path,
             "': not a regular file");
  const uint64_t file_size = fs::file_size(path, ec);
  HISA_CHECK(!ec, "cannot read safetensors file '", path, "': ", ec.message());
  std::ifstream f(path, std::ios::binary);
  HISA_CHECK(f, "cannot open safetensors file '", path, "': ", std::strerror(errno));

  HISA_CHECK(file_size >= 8, path, ": truncated safetensors file: ", file_size,
             " bytes, fewer than the 8-byte header size field");
  uint8_t size_le[8];
  f.read(reinterpret_cast<char*>(size_le), 8);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | size_le[i];
  HISA_CHECK(header_size <= file_size - 8, path, ": header size ", header_size,
             " is larger than the rest of the file (", file_size - 8,
             " bytes): truncated, or not a safetensors file");
  HISA_CHECK(header_size <= kMaxHeaderBytes, path, ": header size ", header_size,
             " exceeds the 100 MB limit of the format");

  std::string header(header_size, '\0');
  f.read(header.data(), std::streamsize(header_size));
  HISA_CHECK(f, path, ": could not read the ", header_size, "-byte header");
  Json j;
  try {
    j = Json::parse(header);
  } catch (const Json::exception& e) {
    throw Error(path + ": safetensors header is not valid JSON (" + e.what() + ")");
  }
  HISA_CHECK(j.is_object(), path, ": safetensors header must be a JSON object, got ",
             j.type_name());

  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = file_size - data_start;
  std::vector<Entry> entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      HISA_CHECK(it->is_object(), path, ": \"__metadata__\" must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        HISA_CHECK(m->is_string(), path, ": \"__metadata__\" value of '", m.key(),
                   "' must be a string, got ", m->dump());
        if (metadata) (*metadata)[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), *it, data_size, path));
  }

  // Tensors may not share bytes. Gaps are tolerated (the reference writer never leaves one, but
  // reading a file with one is harmless).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Entry* last = nullptr;  // the non-empty entry reaching furthest so far
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (last) {
      HISA_CHECK(e.begin >= last->end, path, ": tensors '", last->name, "' [", last->begin, ", ",
                 last->end, ") and '", e.name, "' [", e.begin, ", ", e.end, ") overlap");
    }
    if (!last || e.end > last->end) last = &e;
  }

  std::map<std::string, Tensor> out;
  for (Entry& e : entries) {
    Tensor t;
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.bytes.resize(size_t(e.end - e.begin));
    if (!t.bytes.empty()) {
      f.seekg(std::streamoff(data_start + e.begin));
      f.read(reinterpret_cast<char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
      HISA_CHECK(f, path, ": tensor '", e.name, "': could not read its ", t.bytes.size(), " bytes");
    }
    out.emplace(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, const Tensor*>> views;
  for (const auto& [name, t] : tensors) views.emplace_back(name, &t);
  detail::write_safetensors_views(path, views, metadata);
}

void detail::write_safetensors_views(
    const std::string& path, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<const std::string*, const Tensor*>> order;
  for (const auto& [name, tp] : tensors) {
    const Tensor& t = *tp;
    HISA_CHECK(!name.empty() && name != "__metadata__", "write_safetensors '", path,
               "': invalid tensor name '", name, "'");
    for (int64_t d : t.shape) {
      HISA_CHECK(d >= 0, "write_safetensors '", path, "': tensor '", name,
                 "' has negative dimension in ", t.shape_str());
    }
    const uint64_t need =
        byte_size(t.shape, t.dtype, "write_safetensors '" + path + "': tensor '" + name + "'");
    HISA_CHECK(t.bytes.size() == need, "write_safetensors '", path, "': tensor '", name, "' ",
               t.shape_str(), " ", dtype_name(t.dtype), " needs ", need, " bytes but holds ",
               t.bytes.size());
    order.emplace_back(&name, &t);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    const int ra = alignment_rank(a.second->dtype), rb = alignment_rank(b.second->dtype);
    return ra != rb ? ra > rb : *a.first < *b.first;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    HISA_CHECK(*order[i - 1].first != *order[i].first, "write_safetensors '", path,
               "': tensor name '", *order[i].first, "' given twice");
  }

  // ordered_json keeps insertion order: __metadata__ first, then tensors in data order, each with
  // dtype, shape, data_offsets, as the reference serialises them.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : order) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = dtype_name(t->dtype);
    e["shape"] = t->shape;
    e["data_offsets"] = {offset, offset + t->bytes.size()};
    offset += t->bytes.size();
    header[*name] = std::move(e);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("write_safetensors '" + path + "': cannot encode the header (" + e.what() +
                "); names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  HISA_CHECK(f, "cannot create safetensors file '", path, "': ", std::strerror(errno));
  uint8_t size_le[8];
  for (int i = 0; i < 8; ++i) size_le[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(size_le), 8);
  f.write(text.data(), std::streamsize(text.size()));
  for (const auto& [name, t] : order) {
    f.write(reinterpret_cast<const char*>(t->bytes.data()), std::streamsize(t->bytes.size()));
  }
  f.close();
  HISA_CHECK(f, "error writing safetensors file '", path, "': ", std::strerror(errno));
}

}  // namespace hisa
