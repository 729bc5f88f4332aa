// hisa: .npy reader and writer (numpy's NEP 1 format).
//
// Layout: "\x93NUMPY", major, minor, header length (u16 for 1.0, u32 for 2.0/3.0), then the header,
// a Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded
// with spaces and ended by '\n', then the raw data in C order.
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <vector>

#include "hisa/error.hpp"
#include "hisa/io.hpp"

namespace hisa {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;  // numpy aligns the data start to 64 bytes

// One value of the header dict: a string, True/False/None, or a tuple of integers.
struct PyValue {
  enum Kind { Str, Bool, None, Tuple } kind = None;
  std::string str;
  bool flag = false;
  std::vector<int64_t> ints;
};

// Recursive-descent parser for the small Python-literal subset numpy writes (and numpy 1.x/py2
// files: 'L' suffixes on integers, double quotes). Anything else is an error naming the file.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  std::map<std::string, PyValue> parse_dict() {
    std::map<std::string, PyValue> out;
    skip_ws();
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      out[key] = parse_value(key);
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip_ws();
      if (peek() != '}') fail("expected ',' or '}'");
    }
    ++i_;
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": malformed .npy header (" + what + " at offset " + std::to_string(i_) +
                "): " + s_);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string parse_string() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) {
      if (s_[i_] == '\\' && i_ + 1 < s_.size()) ++i_;
      out += s_[i_++];
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
  int64_t parse_int() {
    bool neg = false;
    if (peek() == '-') {
      neg = true;
      ++i_;
    }
    if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("expected an integer");
    int64_t v = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
      const int digit = s_[i_++] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) fail("integer too large");
      v = v * 10 + digit;
    }
    if (peek() == 'L' || peek() == 'l') ++i_;  // Python 2 long
    return neg ? -v : v;
  }
  PyValue parse_value(const std::string& key) {
    PyValue v;
    const char c = peek();
    if (c == '\'' || c == '"') {
      v.kind = PyValue::Str;
      v.str = parse_string();
    } else if (c == '(') {
      v.kind = PyValue::Tuple;
      ++i_;
      while (true) {
        skip_ws();
        if (peek() == ')') break;
        v.ints.push_back(parse_int());
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        if (peek() != ')') fail("expected ',' or ')' in a tuple");
      }
      ++i_;
    } else if (c == '[') {
      throw Error(path_ + ": .npy '" + key +
                  "' is a list: structured (record) dtypes are not supported, only plain arrays");
    } else if (s_.compare(i_, 4, "True") == 0) {
      v.kind = PyValue::Bool;
      v.flag = true;
      i_ += 4;
    } else if (s_.compare(i_, 5, "False") == 0) {
      v.kind = PyValue::Bool;
      i_ += 5;
    } else if (s_.compare(i_, 4, "None") == 0) {
      i_ += 4;
    } else {
      fail("unsupported value for '" + key + "'");
    }
    return v;
  }

  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
};

// Maps a plain descr to a dtype. Returns false for opaque ('V') types, which need an override.
bool descr_dtype(const std::string& descr, DType* out) {
  static const std::map<std::string, DType> kKnown = {
      {"<f4", DType::F32}, {"<f8", DType::F64}, {"<i4", DType::I32}, {"<i8", DType::I64},
      {"|u1", DType::U8},  {"<u1", DType::U8},  {"=u1", DType::U8},
  };
  auto it = kKnown.find(descr);
  if (it == kKnown.end()) return false;
  *out = it->second;
  return true;
}

std::string npy_descr(DType t) {
  switch (t) {
    case DType::F32:
      return "<f4";
    case DType::F64:
      return "<f8";
    case DType::I32:
      return "<i4";
    case DType::I64:
      return "<i8";
    case DType::U8:
      return "|u1";
    case DType::BF16:
      return "<V2";  // what np.save writes for ml_dtypes.bfloat16
    case DType::F8E4M3:
      return "|V1";  // and for ml_dtypes.float8_e4m3fn
  }
  return "?";
}

}  // namespace

Tensor read_npy(const std::string& path, std::optional<DType> dtype_override) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  HISA_CHECK(fs::exists(st), "cannot open .npy file '", path,
             "': ", ec ? ec.message() : std::string("no such file"));
  HISA_CHECK(fs::is_regular_file(st), "cannot read .npy file '", path, "': not a regular file");
  const uint64_t file_size = fs::file_size(path, ec);
  HISA_CHECK(!ec, "cannot read .npy file '", path, "': ", ec.message());
  std::ifstream f(path, std::ios::binary);
  HISA_CHECK(f, "cannot open .npy file '", path, "': ", std::strerror(errno));

  HISA_CHECK(file_size >= kMagicLen + 4, path, ": truncated .npy file (", file_size, " bytes)");
  char pre[kMagicLen + 2];
  f.read(pre, sizeof(pre));
  HISA_CHECK(std::memcmp(pre, kMagic, kMagicLen) == 0, path,
             ": not a .npy file (the magic string \\x93NUMPY is missing)");
  const int major = static_cast<unsigned char>(pre[6]), minor = static_cast<unsigned char>(pre[7]);
  HISA_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, path,
             ": unsupported .npy version ", major, ".", minor, " (expected 1.0, 2.0 or 3.0)");
  const size_t len_bytes = major == 1 ? 2 : 4;
  uint8_t len_le[4] = {0, 0, 0, 0};
  f.read(reinterpret_cast<char*>(len_le), std::streamsize(len_bytes));
  HISA_CHECK(f, path, ": truncated .npy header");
  const uint64_t header_len = uint64_t(len_le[0]) | uint64_t(len_le[1]) << 8 |
                              uint64_t(len_le[2]) << 16 | uint64_t(len_le[3]) << 24;
  const uint64_t data_start = kMagicLen + 2 + len_bytes + header_len;
  HISA_CHECK(data_start <= file_size, path, ": .npy header length ", header_len,
             " runs past the end of the file (", file_size, " bytes)");
  std::string header(header_len, '\0');
  f.read(header.data(), std::streamsize(header_len));
  HISA_CHECK(f, path, ": could not read the .npy header");

  const std::map<std::string, PyValue> dict = HeaderParser(header, path).parse_dict();
  for (const char* key : {"descr", "fortran_order", "shape"}) {
    HISA_CHECK(dict.count(key), path, ": .npy header has no '", key, "': ", header);
  }
  const PyValue& descr = dict.at("descr");
  const PyValue& fortran = dict.at("fortran_order");
  const PyValue& shape = dict.at("shape");
  HISA_CHECK(descr.kind == PyValue::Str, path, ": .npy 'descr' must be a string");
  HISA_CHECK(fortran.kind == PyValue::Bool, path, ": .npy 'fortran_order' must be True or False");
  HISA_CHECK(
      !fortran.flag, path,
      ": .npy array is in Fortran order; hisa reads C order only (save np.ascontiguousarray(a))");
  HISA_CHECK(shape.kind == PyValue::Tuple, path, ": .npy 'shape' must be a tuple of integers");
  for (int64_t d : shape.ints) {
    HISA_CHECK(d >= 0, path, ": .npy shape has a negative dimension ", d);
  }

  const std::string& d = descr.str;
  HISA_CHECK(d.size() >= 3 && d[0] != '>', path, ": .npy descr '", d,
             "' is big-endian or malformed; hisa reads little-endian data (save "
             "a.astype(a.dtype.newbyteorder('<')))");
  Tensor t;
  if (dtype_override) {
    // The override names what the items are; the file only has to agree on their size.
    const std::string digits = d.substr(2);
    const bool numeric = !digits.empty() && digits.size() <= 6 &&
                         digits.find_first_not_of("0123456789") == std::string::npos;
    HISA_CHECK(numeric && std::stoul(digits) == dtype_size(*dtype_override), path, ": .npy descr '",
               d, "' does not have the ", dtype_size(*dtype_override),
               "-byte items of the override dtype ", dtype_name(*dtype_override));
    t.dtype = *dtype_override;
  } else if (!descr_dtype(d, &t.dtype)) {
    HISA_CHECK(d[1] != 'V', path, ": .npy descr '", d, "' is an opaque ", d.substr(2),
               "-byte type (numpy writes bf16 / fp8 from ml_dtypes this way): pass dtype_override "
               "(BF16 for '<V2', F8_E4M3 for '|V1')");
    throw Error(path + ": unsupported .npy descr '" + d +
                "' (supported: '<f4', '<f8', '<i4', '<i8', '|u1'; others via dtype_override)");
  }
  t.shape = shape.ints;
  uint64_t need = dtype_size(t.dtype);
  for (int64_t dim : t.shape) {
    HISA_CHECK(dim == 0 || need <= std::numeric_limits<uint64_t>::max() / uint64_t(dim), path,
               ": .npy shape ", t.shape_str(), " overflows 64-bit byte counts");
    need *= uint64_t(dim);
  }
  // Trailing bytes are allowed (as np.load does: several arrays may be saved into one stream).
  HISA_CHECK(need <= file_size - data_start, path, ": truncated .npy data: shape ", t.shape_str(),
             " of ", dtype_name(t.dtype), " needs ", need, " bytes, the file has ",
             file_size - data_start);
  t.bytes.resize(size_t(need));
  f.read(reinterpret_cast<char*>(t.bytes.data()), std::streamsize(need));
  HISA_CHECK(f, path, ": could not read ", need, " bytes of .npy data");
  return t;
}

void write_npy(const std::string& path, const Tensor& t) {
  for (int64_t d : t.shape) {
    HISA_CHECK(d >= 0, "write_npy '", path, "': negative dimension in ", t.shape_str());
  }
  const size_t need = size_t(t.numel()) * dtype_size(t.dtype);
  HISA_CHECK(t.bytes.size() == need, "write_npy '", path, "': tensor ", t.shape_str(), " ",
             dtype_name(t.dtype), " needs ", need, " bytes but holds ", t.bytes.size());

  std::string header = "{'descr': '" + npy_descr(t.dtype) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.shape.size(); ++i)
    header += (i ? ", " : "") + std::to_string(t.shape[i]);
  if (t.shape.size() == 1) header += ",";  // a 1-tuple needs its comma
  header += "), }";
  // Version 1.0 holds up to 65535 header bytes; a longer header (a shape of thousands of
  // dimensions) needs 2.0.
  int major = 1;
  size_t prefix = kMagicLen + 2 + 2;
  if (header.size() + 1 + prefix + kAlign > 65535) {
    major = 2;
    prefix = kMagicLen + 2 + 4;
  }
  header.append((kAlign - (prefix + header.size() + 1) % kAlign) % kAlign, ' ');
  header += '\n';

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  HISA_CHECK(f, "cannot create .npy file '", path, "': ", std::strerror(errno));
  f.write(kMagic, kMagicLen);
  const char version[2] = {char(major), 0};
  f.write(version, 2);
  const uint32_t len = uint32_t(header.size());
  const char len_le[4] = {char(len & 0xff), char((len >> 8) & 0xff), char((len >> 16) & 0xff),
                          char((len >> 24) & 0xff)};
  f.write(len_le, major == 1 ? 2 : 4);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
  f.close();
  HISA_CHECK(f, "error writing .npy file '", path, "': ", std::strerror(errno));
}

}  // namespace hisa
