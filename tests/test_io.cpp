// safetensors and .npy files, and prefill and decode case files (hisa/io.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/error.hpp"
#include "hisa/io.hpp"
#include "hisa/pooled.hpp"
#include "hisa/validate.hpp"
#include "hisa/workloads.hpp"

namespace hisa {
namespace {

// A file name unique to this test and process (ctest runs tests in parallel processes).
std::string temp_path(const std::string& suffix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "hisa_io_" + info->test_suite_name() + "_" + info->name() + "_" +
         std::to_string(getpid()) + "_" + suffix;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from a header text and a data region.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

template <typename T>
std::string raw(std::initializer_list<T> values) {
  std::string s(values.size() * sizeof(T), '\0');
  std::memcpy(s.data(), values.begin(), s.size());
  return s;
}

// Runs f, which must throw hisa::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no hisa::Error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) {
      EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nlacks: " << p;
    }
  }
}
#define EXPECT_HISA_ERROR(stmt, ...)            \
  do {                                          \
    SCOPED_TRACE(#stmt);                        \
    expect_error([&] { stmt; }, {__VA_ARGS__}); \
  } while (0)

Tensor random_tensor(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng) {
  Tensor t(dtype, std::move(shape));
  for (uint8_t& b : t.bytes) b = uint8_t(rng());
  return t;
}

void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  EXPECT_EQ(a.dtype, b.dtype) << what;
  EXPECT_EQ(a.shape, b.shape) << what;
  EXPECT_TRUE(a.bytes == b.bytes) << what << ": bytes differ";
}

const DType kAllDtypes[] = {DType::F32, DType::BF16, DType::F8E4M3, DType::I32,
                            DType::U8,  DType::F64,  DType::I64};

// ---------------------------------------------------------------------------------------------
// safetensors

TEST(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  const uint64_t seed = 11;
  std::cout << "[ seed ] " << seed << "\n";
  std::mt19937_64 rng(seed);
  std::map<std::string, Tensor> tensors;
  const std::vector<std::vector<int64_t>> shapes = {{3}, {2, 3}, {}, {0, 4}, {2, 1, 5}};
  for (DType dt : kAllDtypes) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      tensors[dtype_name(dt) + "_" + std::to_string(i)] = random_tensor(dt, shapes[i], rng);
    }
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"workload", "topical seed=3"}};
  const std::string path = temp_path("all.safetensors");
  write_safetensors(path, tensors, meta);

  std::map<std::string, std::string> meta_back;
  const auto back = read_safetensors(path, &meta_back);
  EXPECT_EQ(meta_back, meta);
  ASSERT_EQ(back.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(back.count(name)) << name;
    expect_same(back.at(name), t, name);
  }
  EXPECT_EQ(read_safetensors(path).size(), tensors.size());  // metadata not asked for

  // Layout as the reference writes it: header padded to 8 with spaces, data ordered by alignment
  // (8-byte dtypes first) then name, contiguous, each tensor aligned to its element size.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' ') + 1, header.find_last_of('}') + 1);
  const auto j = nlohmann::ordered_json::parse(header);
  EXPECT_EQ(j.begin().key(), "__metadata__");
  uint64_t expect_begin = 0;
  int prev_size = 8;
  for (auto it = std::next(j.begin()); it != j.end(); ++it) {
    const uint64_t b = it->at("data_offsets").at(0).get<uint64_t>();
    const uint64_t e = it->at("data_offsets").at(1).get<uint64_t>();
    const int size = int(dtype_size(dtype_from_name(it->at("dtype").get<std::string>())));
    EXPECT_EQ(b, expect_begin) << it.key();
    EXPECT_LE(size, prev_size) << it.key() << ": larger alignment after smaller";
    EXPECT_EQ((8 + n + b) % uint64_t(size), 0u) << it.key() << " is misaligned";
    expect_begin = e;
    prev_size = size;
  }
  EXPECT_EQ(8 + n + expect_begin, bytes.size());

  // Deterministic: the same tensors give the same bytes.
  const std::string path2 = temp_path("again.safetensors");
  write_safetensors(path2, tensors, meta);
  EXPECT_TRUE(read_bytes(path2) == bytes);
}

TEST(Safetensors, WriterIsByteIdenticalToTheReferenceImplementation) {
  // Outputs of huggingface/safetensors' serialize() for the same inputs (its own unit tests).
  const std::string path = temp_path("ref.safetensors");
  Tensor t(DType::F32, {1, 1, 2, 3});
  for (int i = 0; i < 6; ++i) t.data<float>()[i] = float(i);
  write_safetensors(path, {{"attn0", t}});
  const std::string header = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 65u);
  EXPECT_EQ(read_bytes(path),
            safetensors_bytes(header + std::string(7, ' '), raw<float>({0, 1, 2, 3, 4, 5})));

  write_safetensors(path, {});
  EXPECT_EQ(read_bytes(path), le64(8) + "{}      ");
  write_safetensors(path, {}, {{"framework", "pt"}});
  EXPECT_EQ(read_bytes(path), le64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  EXPECT_TRUE(read_safetensors(path).empty());
}

TEST(Safetensors, ParsesAHandWrittenFile) {
  // Entries out of offset order, whitespace and newlines, a scalar, an empty tensor, metadata.
  const std::string header = R"({
    "b": {"dtype": "I32", "shape": [2], "data_offsets": [8, 16]},
    "__metadata__": {"source": "hand", "n": "4"},
    "a": {"data_offsets": [0, 8], "shape": [2, 2], "dtype": "BF16"},
    "s": {"dtype": "F8_E4M3", "shape": [], "data_offsets": [16, 17]},
    "z": {"dtype": "F64", "shape": [0, 4], "data_offsets": [17, 17]}
  })";
  const std::string data = raw<uint16_t>({0x3f80, 0xc000, 0x3f00, 0x43e0}) + raw<int32_t>({7, -1}) +
                           std::string(1, '\x7e');
  const std::string path = temp_path("hand.safetensors");
  write_bytes(path, safetensors_bytes(header, data));

  std::map<std::string, std::string> meta;
  const auto t = read_safetensors(path, &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"source", "hand"}, {"n", "4"}}));
  ASSERT_EQ(t.size(), 4u);
  const Tensor& a = t.at("a");
  EXPECT_EQ(a.dtype, DType::BF16);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(bf16_to_float(a.data<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(bf16_to_float(a.data<uint16_t>()[1]), -2.0f);
  EXPECT_EQ(bf16_to_float(a.data<uint16_t>()[2]), 0.5f);
  EXPECT_EQ(bf16_to_float(a.data<uint16_t>()[3]), 448.0f);
  const Tensor& b = t.at("b");
  EXPECT_EQ(b.dtype, DType::I32);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(b.data<int32_t>()[0], 7);
  EXPECT_EQ(b.data<int32_t>()[1], -1);
  const Tensor& s = t.at("s");
  EXPECT_EQ(s.dtype, DType::F8E4M3);
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(fp8e4m3_to_float(s.data<uint8_t>()[0]), 448.0f);
  const Tensor& z = t.at("z");
  EXPECT_EQ(z.dtype, DType::F64);
  EXPECT_EQ(z.shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(z.bytes.empty());
}

TEST(Safetensors, ReadErrorsNameTheFileAndTensor) {
  const std::string path = temp_path("bad.safetensors");
  auto file_with = [&](const std::string& header, const std::string& data) {
    write_bytes(path, safetensors_bytes(header, data));
  };
  const std::string f32x2 = raw<float>({1, 2});

  EXPECT_HISA_ERROR(read_safetensors(path + ".missing"), "cannot open", path + ".missing");
  EXPECT_HISA_ERROR(read_safetensors(::testing::TempDir()), "not a regular file");

  write_bytes(path, "abc");
  EXPECT_HISA_ERROR(read_safetensors(path), path, "truncated");

  write_bytes(path, le64(1000) + R"({"x":{}})");
  EXPECT_HISA_ERROR(read_safetensors(path), path, "header size 1000",
                    "larger than the rest of the file");

  file_with(R"({"x": {"dtype": "F32", )", "");
  EXPECT_HISA_ERROR(read_safetensors(path), path, "not valid JSON");

  file_with(R"([1, 2])", "");
  EXPECT_HISA_ERROR(read_safetensors(path), path, "must be a JSON object");

  file_with(R"({"x": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})",
            raw<uint16_t>({1, 2}));
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "unknown dtype 'F16'");

  file_with(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "data_offsets [0, 12]",
                    "past the end of the data region (8 bytes)");

  file_with(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "hold 8 bytes", "needs 12");

  file_with(R"({"x": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 8]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "negative dimension -2");

  file_with(R"({"x": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "must hold integers");

  file_with(R"({"x": {"dtype": "F32", "shape": [2]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "data_offsets");

  file_with(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "non-negative");

  file_with(R"({"x": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "reversed");

  file_with(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
            f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "'x' [0, 8)", "'y' [4, 8)", "overlap");

  file_with(R"({"x": [0, 8]})", f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "tensor 'x'", "must be an object");

  file_with(
      R"({"__metadata__": {"n": 4}, "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
      f32x2);
  EXPECT_HISA_ERROR(read_safetensors(path), path, "__metadata__", "'n' must be a string");

  // A good file cut short: the last tensor runs past the end.
  Tensor t(DType::F32, {4, 4});
  write_safetensors(path, {{"a", t}, {"b", t}});
  std::string good = read_bytes(path);
  write_bytes(path, good.substr(0, good.size() - 5));
  EXPECT_HISA_ERROR(read_safetensors(path), path, "past the end", "truncated");
  // ... or cut inside the header.
  write_bytes(path, good.substr(0, 20));
  EXPECT_HISA_ERROR(read_safetensors(path), path, "header size");
}

TEST(Safetensors, WriteErrors) {
  const std::string path = temp_path("w.safetensors");
  Tensor bad(DType::F32, {2, 3});
  bad.bytes.resize(20);
  EXPECT_HISA_ERROR(write_safetensors(path, {{"x", bad}}), path, "tensor 'x'",
                    "needs 24 bytes but holds 20");
  EXPECT_HISA_ERROR(write_safetensors(path, {{"__metadata__", Tensor(DType::F32, {1})}}),
                    "invalid tensor name");
  EXPECT_HISA_ERROR(write_safetensors(path, {{"", Tensor(DType::F32, {1})}}),
                    "invalid tensor name");
  const std::string nowhere = ::testing::TempDir() + "no_such_dir_hisa/x.safetensors";
  EXPECT_HISA_ERROR(write_safetensors(nowhere, {{"x", Tensor(DType::F32, {1})}}), "cannot create",
                    nowhere);
}

// ---------------------------------------------------------------------------------------------
// .npy

std::string npy_v1(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  return std::string("\x93NUMPY\x01\x00", 8) + char(header.size() & 0xff) +
         char(header.size() >> 8) + header + data;
}

std::string npy_v2(const std::string& dict, const std::string& data) {
  std::string header = dict + "\n";
  const uint32_t n = uint32_t(header.size());
  return std::string("\x93NUMPY\x02\x00", 8) + char(n & 0xff) + char((n >> 8) & 0xff) +
         char((n >> 16) & 0xff) + char(n >> 24) + header + data;
}

TEST(Npy, RoundTripsEveryDtype) {
  const uint64_t seed = 5;
  std::cout << "[ seed ] " << seed << "\n";
  std::mt19937_64 rng(seed);
  const std::string path = temp_path("rt.npy");
  for (DType dt : kAllDtypes) {
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{}, {5}, {2, 3}, {0, 3}, {2, 3, 4}}) {
      const Tensor t = random_tensor(dt, shape, rng);
      write_npy(path, t);
      const bool opaque = dt == DType::BF16 || dt == DType::F8E4M3;
      const Tensor back = opaque ? read_npy(path, dt) : read_npy(path);
      expect_same(back, t, dtype_name(dt) + " " + t.shape_str());

      const std::string bytes = read_bytes(path);
      ASSERT_GE(bytes.size(), 10u);
      EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));  // version 1.0
      const size_t hlen = uint8_t(bytes[8]) | size_t(uint8_t(bytes[9])) << 8;
      EXPECT_EQ((10 + hlen) % 64, 0u) << "data must start 64-byte aligned";
      EXPECT_EQ(bytes[10 + hlen - 1], '\n');
      EXPECT_EQ(bytes.size(), 10 + hlen + t.bytes.size());
    }
  }
  write_npy(path, Tensor(DType::F32, {5}));
  EXPECT_NE(read_bytes(path).find("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"),
            std::string::npos);
  write_npy(path, Tensor(DType::BF16, {2, 3}));
  EXPECT_NE(read_bytes(path).find("'descr': '<V2'"), std::string::npos);
  write_npy(path, Tensor(DType::U8, {}));
  EXPECT_NE(read_bytes(path).find("'shape': ()"), std::string::npos);
}

TEST(Npy, ParsesHandWrittenHeaders) {
  const std::string path = temp_path("hand.npy");
  write_bytes(path, npy_v1("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
                           raw<int32_t>({1, 2, 3, 4, 5, -6})));
  Tensor t = read_npy(path);
  EXPECT_EQ(t.dtype, DType::I32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.data<int32_t>()[5], -6);

  write_bytes(path, npy_v2("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                           raw<double>({0.5, -1})));
  t = read_npy(path);
  EXPECT_EQ(t.dtype, DType::F64);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(t.data<double>()[1], -1.0);

  // numpy 1.x under Python 2 wrote long integers; double quotes and key order do not matter.
  write_bytes(path, npy_v1("{\"shape\": (2L, 1L), \"fortran_order\": False, \"descr\": \"<f4\"}",
                           raw<float>({1.5f, 2.5f})));
  t = read_npy(path);
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(t.data<float>()[1], 2.5f);

  for (const char* u8 : {"|u1", "<u1"}) {
    write_bytes(path, npy_v1(std::string("{'descr': '") + u8 +
                                 "', 'fortran_order': False, 'shape': (3,), }",
                             "\x01\x02\xff"));
    t = read_npy(path);
    EXPECT_EQ(t.dtype, DType::U8) << u8;
    EXPECT_EQ(t.data<uint8_t>()[2], 255) << u8;
  }

  // bf16 saved as a uint16 view; trailing bytes (a second array in the stream) are ignored.
  write_bytes(path, npy_v1("{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }",
                           raw<uint16_t>({0x3f80, 0xc000}) + "trailing"));
  t = read_npy(path, DType::BF16);
  EXPECT_EQ(t.dtype, DType::BF16);
  EXPECT_EQ(bf16_to_float(t.data<uint16_t>()[1]), -2.0f);
}

TEST(Npy, ErrorsAreClear) {
  const std::string path = temp_path("bad.npy");
  const std::string f32x2 = raw<float>({1, 2});
  auto dict = [](const std::string& descr, const std::string& fortran, const std::string& shape) {
    return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  };

  EXPECT_HISA_ERROR(read_npy(path + ".missing"), "cannot open", path + ".missing");

  write_bytes(path, std::string("PK\x03\x04 not an npy file at all"));
  EXPECT_HISA_ERROR(read_npy(path), path, "not a .npy file");

  std::string v4 = npy_v1(dict("<f4", "False", "(2,)"), f32x2);
  v4[6] = 4;
  write_bytes(path, v4);
  EXPECT_HISA_ERROR(read_npy(path), path, "unsupported .npy version 4.0");

  write_bytes(path, npy_v1(dict("<f4", "True", "(2,)"), f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "Fortran order");

  write_bytes(path, npy_v1(dict(">f4", "False", "(2,)"), f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "'>f4'", "big-endian");

  write_bytes(path, npy_v1(dict("<f2", "False", "(4,)"), f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "unsupported .npy descr '<f2'");

  write_bytes(path, npy_v1(dict("<V2", "False", "(4,)"), f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "'<V2'", "dtype_override");
  EXPECT_HISA_ERROR(read_npy(path, DType::F8E4M3), path, "'<V2'", "1-byte items", "F8_E4M3");

  write_bytes(path, npy_v1(dict("<f4", "False", "(3,)"), f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "truncated .npy data", "needs 12 bytes", "has 8");

  write_bytes(path, npy_v1(dict("<f4", "False", "(2, -1)"), f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "negative dimension -1");

  write_bytes(
      path,
      npy_v1("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
             f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "structured");

  write_bytes(path, npy_v1("{'descr': '<f4', 'fortran_order': False, }", f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "no 'shape'");

  write_bytes(path, npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", f32x2));
  EXPECT_HISA_ERROR(read_npy(path), path, "malformed .npy header");

  std::string long_header = npy_v1(dict("<f4", "False", "(2,)"), f32x2);
  long_header[8] = '\xff';
  long_header[9] = '\x7f';
  write_bytes(path, long_header);
  EXPECT_HISA_ERROR(read_npy(path), path, "header length", "past the end");

  Tensor bad(DType::F32, {2});
  bad.bytes.resize(3);
  EXPECT_HISA_ERROR(write_npy(path, bad), path, "needs 8 bytes but holds 3");
}

// ---------------------------------------------------------------------------------------------
// Cases

// A one-sequence case: q [T, H, D], k [S, D] in `dtype`, k_scale [S], w [T, H].
Case make_case(int64_t T, int64_t H, int64_t D, int64_t S, DType dtype = DType::F32) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal;
  Case c;
  c.q = Tensor(dtype, {T, H, D});
  c.k = Tensor(dtype, {S, D});
  for (Tensor* t : {&c.q, &c.k}) {
    for (int64_t i = 0; i < t->numel(); ++i) {
      const float v = normal(rng);
      if (dtype == DType::F32) t->data<float>()[i] = v;
      if (dtype == DType::BF16) t->data<uint16_t>()[i] = float_to_bf16(v);
      if (dtype == DType::F8E4M3) t->data<uint8_t>()[i] = float_to_fp8e4m3(v);
    }
  }
  c.k_scale = Tensor(DType::F32, {S});
  for (int64_t i = 0; i < S; ++i) c.k_scale.data<float>()[i] = 0.5f + 0.01f * float(i);
  c.w = Tensor(DType::F32, {T, H});
  for (int64_t i = 0; i < T * H; ++i) c.w.data<float>()[i] = normal(rng);
  return c;
}

Tensor i32(std::initializer_list<int32_t> v) {
  Tensor t(DType::I32, {int64_t(v.size())});
  std::memcpy(t.bytes.data(), v.begin(), t.bytes.size());
  return t;
}

TEST(Case, InputsOfOneSequencePointIntoTheCase) {
  const Case c = make_case(4, 64, 128, 300, DType::F8E4M3);
  const PrefillInputs in = c.inputs();
  EXPECT_EQ(in.num_q, 4);
  EXPECT_EQ(in.num_k, 300);
  EXPECT_EQ(in.num_heads, 64);
  EXPECT_EQ(in.head_dim, 128);
  EXPECT_EQ(in.dtype, DType::F8E4M3);
  EXPECT_EQ(in.q, c.q.bytes.data());
  EXPECT_EQ(in.k, c.k.bytes.data());
  EXPECT_EQ(in.k_scale, c.k_scale.data<float>());
  EXPECT_EQ(in.w, c.w.data<float>());
  ASSERT_EQ(in.num_seqs, 1);
  ASSERT_NE(in.cu_seqlens_q, nullptr);
  ASSERT_NE(in.cu_seqlens_k, nullptr);
  EXPECT_EQ(in.cu_seqlens_q[0], 0);
  EXPECT_EQ(in.cu_seqlens_q[1], 4);
  EXPECT_EQ(in.cu_seqlens_k[0], 0);
  EXPECT_EQ(in.cu_seqlens_k[1], 300);
  EXPECT_EQ(in.ks, nullptr);
  EXPECT_EQ(in.ke, nullptr);
  SelectConfig cfg;
  cfg.method = Method::Flat;
  cfg.topk = 64;
  EXPECT_NO_THROW(validate_prefill(in, cfg));

  // A copy answers with its own tensors and its own synthesised cu_seqlens.
  const Case copy = c;
  const PrefillInputs in2 = copy.inputs();
  EXPECT_EQ(in2.q, copy.q.bytes.data());
  EXPECT_NE(in2.cu_seqlens_q, in.cu_seqlens_q);
  EXPECT_EQ(in2.cu_seqlens_k[1], 300);

  Case no_scale = make_case(2, 32, 64, 10, DType::BF16);
  no_scale.k_scale = Tensor();
  EXPECT_EQ(no_scale.inputs().k_scale, nullptr);
  EXPECT_EQ(no_scale.inputs().dtype, DType::BF16);
}

TEST(Case, InputsWithCuSeqlensOrKsKe) {
  Case c = make_case(6, 32, 128, 20);
  c.cu_seqlens_q = i32({0, 2, 6});
  c.cu_seqlens_k = i32({0, 8, 20});
  PrefillInputs in = c.inputs();
  EXPECT_EQ(in.num_seqs, 2);
  EXPECT_EQ(in.cu_seqlens_q, c.cu_seqlens_q.data<int32_t>());
  EXPECT_EQ(in.cu_seqlens_k, c.cu_seqlens_k.data<int32_t>());
  EXPECT_EQ(in.ks, nullptr);
  SelectConfig cfg;
  cfg.method = Method::Flat;
  cfg.topk = 4;
  EXPECT_NO_THROW(validate_prefill(in, cfg));

  c.cu_seqlens_q = Tensor();
  c.cu_seqlens_k = Tensor();
  c.ks = i32({0, 0, 8, 8, 8, 8});
  c.ke = i32({7, 8, 17, 18, 19, 20});
  in = c.inputs();
  EXPECT_EQ(in.num_seqs, 0);
  EXPECT_EQ(in.cu_seqlens_q, nullptr);
  EXPECT_EQ(in.ks, c.ks.data<int32_t>());
  EXPECT_EQ(in.ke, c.ke.data<int32_t>());
  EXPECT_NO_THROW(validate_prefill(in, cfg));
}

TEST(Case, InputsShapeAndDtypeErrors) {
  const Case good = make_case(4, 64, 128, 50);
  Case c;

  c = good;
  c.w = Tensor(DType::F32, {4, 32});
  EXPECT_HISA_ERROR(c.inputs(), "w must be [T, H] = [4, 64], got [4, 32]");
  c.w = Tensor(DType::BF16, {4, 64});
  EXPECT_HISA_ERROR(c.inputs(), "w must be F32, got BF16");
  c.w = Tensor();
  EXPECT_HISA_ERROR(c.inputs(), "w is missing");

  c = good;
  c.q = Tensor(DType::F32, {4, 8192});
  EXPECT_HISA_ERROR(c.inputs(), "q must be [T, H, D], got [4, 8192]");
  c.q = Tensor(DType::I32, {4, 64, 128});
  EXPECT_HISA_ERROR(c.inputs(), "q must be F32, BF16 or F8_E4M3, got I32");
  c.q = Tensor();
  EXPECT_HISA_ERROR(c.inputs(), "q is missing");

  c = good;
  c.k = Tensor(DType::F32, {50, 64});
  EXPECT_HISA_ERROR(c.inputs(), "k must be [S, D] with D = 128 as in q [4, 64, 128], got [50, 64]");
  c.k = Tensor(DType::F32, {50});
  EXPECT_HISA_ERROR(c.inputs(), "k must be [S, D]", "got [50]");
  c.k = Tensor(DType::BF16, {50, 128});
  EXPECT_HISA_ERROR(c.inputs(), "k must have q's dtype F32, got BF16");
  c.k = Tensor();
  EXPECT_HISA_ERROR(c.inputs(), "k is missing");

  c = good;
  c.k_scale = Tensor(DType::F32, {49});
  EXPECT_HISA_ERROR(c.inputs(), "k_scale must be [S] = [50], got [49]");
  c.k_scale = Tensor(DType::BF16, {50});
  EXPECT_HISA_ERROR(c.inputs(), "k_scale must be F32, got BF16");

  c = good;
  c.cu_seqlens_q = i32({0, 4});
  EXPECT_HISA_ERROR(c.inputs(), "cu_seqlens_q and cu_seqlens_k go together", "only cu_seqlens_q");
  c.cu_seqlens_k = i32({0, 20, 50});
  EXPECT_HISA_ERROR(c.inputs(), "cu_seqlens_q [2] and cu_seqlens_k [3] must both be [N + 1]");
  c.cu_seqlens_k = Tensor(DType::I64, {2});
  EXPECT_HISA_ERROR(c.inputs(), "cu_seqlens_k must be [N + 1] I32", "got [2] I64");
  c.cu_seqlens_q = i32({0});
  c.cu_seqlens_k = i32({0});
  EXPECT_HISA_ERROR(c.inputs(), "cu_seqlens_q must be [N + 1] I32 with N >= 1", "got [1] I32");

  c = good;
  c.ks = i32({0, 0, 0, 0});
  EXPECT_HISA_ERROR(c.inputs(), "ks and ke go together", "only ks");
  c.ke = i32({47, 48, 49});
  EXPECT_HISA_ERROR(c.inputs(), "ke must be [T] = [4] I32, got [3] I32");
  c.ke = i32({47, 48, 49, 50});
  EXPECT_NO_THROW(c.inputs());
  c.cu_seqlens_q = i32({0, 4});
  c.cu_seqlens_k = i32({0, 50});
  EXPECT_HISA_ERROR(c.inputs(), "either cu_seqlens_q/cu_seqlens_k or ks/ke, not both");

  c = good;
  c.w.bytes.pop_back();
  EXPECT_HISA_ERROR(c.inputs(), "w [4, 64] F32 needs 1024 bytes but holds 1023");
}

TEST(Case, SaveAndLoadRoundTrip) {
  Case c = make_case(6, 32, 64, 20, DType::F8E4M3);
  c.cu_seqlens_q = i32({0, 2, 6});
  c.cu_seqlens_k = i32({0, 8, 20});
  c.metadata = {{"workload", "needles"}, {"seed", "9"}};
  const std::string path = temp_path("case.safetensors");
  save_case(path, c);
  const Case back = load_case(path);
  expect_same(back.q, c.q, "q");
  expect_same(back.k, c.k, "k");
  expect_same(back.k_scale, c.k_scale, "k_scale");
  expect_same(back.w, c.w, "w");
  expect_same(back.cu_seqlens_q, c.cu_seqlens_q, "cu_seqlens_q");
  expect_same(back.cu_seqlens_k, c.cu_seqlens_k, "cu_seqlens_k");
  EXPECT_TRUE(back.ks.empty() && back.ke.empty());
  EXPECT_EQ(back.metadata, c.metadata);
  EXPECT_EQ(read_safetensors(path).size(), 6u);  // absent tensors are not written

  // One sequence, no k_scale, ks/ke absent: still loads and gets its synthesised cu_seqlens.
  Case one = make_case(3, 32, 128, 9, DType::BF16);
  one.k_scale = Tensor();
  save_case(path, one);
  const Case one_back = load_case(path);
  EXPECT_TRUE(one_back.k_scale.empty());
  EXPECT_EQ(one_back.inputs().num_seqs, 1);
  EXPECT_EQ(one_back.inputs().cu_seqlens_k[1], 9);
}

TEST(Case, LoadAndSaveErrors) {
  const Case good = make_case(2, 32, 64, 10);
  const std::string path = temp_path("case_bad.safetensors");

  // A misspelt optional tensor would silently change the selection: refused.
  write_safetensors(path, {{"q", good.q}, {"k", good.k}, {"w", good.w}, {"K_scale", good.k_scale}});
  EXPECT_HISA_ERROR(load_case(path), path, "unknown tensor 'K_scale'");

  // Shape errors name the file.
  write_safetensors(path, {{"q", good.q}, {"k", good.k}, {"w", Tensor(DType::F32, {2, 16})}});
  EXPECT_HISA_ERROR(load_case(path), path, "w must be [T, H] = [2, 32], got [2, 16]");

  // save_case refuses an invalid case before writing anything.
  Case bad = good;
  bad.k_scale = Tensor(DType::F32, {3});
  const std::string fresh = temp_path("never_written.safetensors");
  EXPECT_HISA_ERROR(save_case(fresh, bad), fresh, "k_scale must be [S] = [10], got [3]");
  EXPECT_FALSE(std::ifstream(fresh).good());
}

// ---------------------------------------------------------------------------------------------
// Decode case files

// A small generated decode case: 3 requests of different lengths, next_n 2, shuffled pages.
DecodeCase small_decode_case(uint64_t seed = 5) {
  return make_decode_workload(WorkloadKind::Gaussian, {300, 70, 129}, 2, 4, 64, DType::F8E4M3,
                              seed);
}

TEST(DecodeCaseFile, SaveAndLoadRoundTrip) {
  for (const bool with_pooled : {false, true}) {
    SCOPED_TRACE(with_pooled ? "with pooled keys" : "without pooled keys");
    DecodeCase c = small_decode_case();
    if (with_pooled) c.pool(128, Pooling::Max);
    c.metadata["note"] = "a hand-made entry";
    const std::string path = temp_path("decode.safetensors");
    save_decode_case(path, c);
    const DecodeCase back = load_decode_case(path);
    expect_same(back.q, c.q, "q");
    expect_same(back.w, c.w, "w");
    expect_same(back.kv_cache, c.kv_cache, "kv_cache");
    expect_same(back.block_table, c.block_table, "block_table");
    expect_same(back.seq_lens, c.seq_lens, "seq_lens");
    expect_same(back.pooled, c.pooled, "pooled");
    EXPECT_EQ(back.pooled_block_size, with_pooled ? 128 : 0);
    EXPECT_EQ(back.pooling, with_pooled ? Pooling::Max : Pooling::Mean);
    EXPECT_EQ(back.metadata, c.metadata);  // the pooled-key entries live in the fields
    std::map<std::string, std::string> file_meta;
    EXPECT_EQ(read_safetensors(path, &file_meta).size(), with_pooled ? 6u : 5u);
    EXPECT_EQ(file_meta.count("pooled_block_size"), with_pooled ? 1u : 0u);

    const DecodeInputs in = back.inputs();
    EXPECT_EQ(in.batch, 3);
    EXPECT_EQ(in.next_n, 2);
    EXPECT_EQ(in.num_heads, 4);
    EXPECT_EQ(in.head_dim, 64);
    EXPECT_EQ(in.page_size, 64);
    EXPECT_EQ(in.num_pages, int(c.kv_cache.shape[0]));
    EXPECT_EQ(in.max_pages, 5);
    EXPECT_EQ(in.pooled != nullptr, with_pooled);
    EXPECT_EQ(in.pooled_max_blocks, with_pooled ? 2 : 0);  // 300 / 128

    // load_any_case tells the kinds apart; each single-kind loader refuses the other kind.
    EXPECT_TRUE(std::holds_alternative<DecodeCase>(load_any_case(path)));
    EXPECT_HISA_ERROR(load_case(path), path, "this is a decode case file");
  }
  const std::string prefill = temp_path("prefill.safetensors");
  save_case(prefill, make_case(2, 32, 64, 10));
  EXPECT_TRUE(std::holds_alternative<Case>(load_any_case(prefill)));
  EXPECT_HISA_ERROR(load_decode_case(prefill), prefill, "not a decode case file");
}

TEST(DecodeCaseFile, PoolMatchesIncrementalPooledKeys) {
  DecodeCase c = small_decode_case(6);
  c.pool(64, Pooling::Mean);
  const DecodeInputs in = c.inputs();
  ASSERT_EQ(in.pooled_max_blocks, 4);  // 300 / 64
  // Pool the same blocks in two steps, as an engine appending tokens does.
  std::vector<float> keys(size_t(3) * 4 * 64, 0.0f);
  const std::vector<int32_t> half = {150, 35, 64}, full = {300, 70, 129};
  update_pooled_keys(in, nullptr, half.data(), 64, Pooling::Mean, keys.data(), 4);
  update_pooled_keys(in, half.data(), full.data(), 64, Pooling::Mean, keys.data(), 4);
  const float* pooled = c.pooled.data<float>();
  for (size_t i = 0; i < keys.size(); ++i) ASSERT_EQ(pooled[i], keys[i]) << "entry " << i;
  // Blocks that are not complete stay zero; complete ones are not.
  EXPECT_EQ(pooled[(1 * 4 + 1) * 64], 0.0f);  // request 1 (70 tokens) has one complete block
  double norm = 0;
  for (int d = 0; d < 64; ++d) norm += std::fabs(pooled[(2 * 4 + 1) * 64 + d]);
  EXPECT_GT(norm, 0.0);
}

TEST(DecodeCaseFile, ShapeAndDtypeErrorsNameTheTensor) {
  const DecodeCase good = small_decode_case();
  ASSERT_NO_THROW(good.inputs());
  DecodeCase c = good;

  c.seq_lens = Tensor();
  EXPECT_HISA_ERROR(c.inputs(), "a decode case needs q, w, kv_cache, block_table and seq_lens",
                    "missing: seq_lens");
  c = good;
  c.seq_lens = Tensor(DType::I64, {3});
  EXPECT_HISA_ERROR(c.inputs(), "seq_lens must be [N] I32, got [3] I64");

  c = good;
  c.q = Tensor(DType::F8E4M3, {5, 4, 64});
  EXPECT_HISA_ERROR(c.inputs(), "q has 5 rows, not a positive multiple of the batch N = 3");
  c.q = Tensor(DType::F8E4M3, {15, 4, 64});
  EXPECT_HISA_ERROR(c.inputs(), "next_n = 5 but must be in 1..4");
  c.q = Tensor(DType::I32, {6, 4, 64});
  EXPECT_HISA_ERROR(c.inputs(), "q must be F32, BF16 or F8_E4M3, got I32");
  c.q = Tensor(DType::F8E4M3, {6, 256});
  EXPECT_HISA_ERROR(c.inputs(), "q must be [N * next_n, H, D], got [6, 256]");

  c = good;
  c.w = Tensor(DType::F32, {3, 4});
  EXPECT_HISA_ERROR(c.inputs(), "w must be [N * next_n, H] = [6, 4], got [3, 4]");
  c.w = Tensor(DType::BF16, {6, 4});
  EXPECT_HISA_ERROR(c.inputs(), "w must be F32, got BF16");

  c = good;
  c.kv_cache = Tensor(DType::F8E4M3, {good.kv_cache.shape[0], 64, 68});
  EXPECT_HISA_ERROR(c.inputs(), "kv_cache must be U8", "got F8_E4M3");
  c.kv_cache = Tensor(DType::U8, {good.kv_cache.shape[0], 64, 132});
  EXPECT_HISA_ERROR(c.inputs(), "kv_cache must be [num_pages, page_size, D + 4] with D + 4 = 68",
                    "got [", ", 64, 132]");
  c = good;
  c.kv_cache.bytes.pop_back();
  EXPECT_HISA_ERROR(c.inputs(), "kv_cache", "bytes but holds");

  c = good;
  c.block_table = Tensor(DType::I32, {2, 5});
  EXPECT_HISA_ERROR(c.inputs(), "block_table must be [N, max_pages] I32 with N = 3",
                    "got [2, 5] I32");
  c.block_table = Tensor(DType::F32, {3, 5});
  EXPECT_HISA_ERROR(c.inputs(), "block_table must be [N, max_pages] I32", "got [3, 5] F32");

  c = good;
  c.pooled = Tensor(DType::F32, {3, 2, 64});
  EXPECT_HISA_ERROR(c.inputs(), "pooled keys need the block size B they were pooled with");
  c.pooled_block_size = 128;
  EXPECT_NO_THROW(c.inputs());
  c.pooled = Tensor(DType::F32, {3, 2, 128});
  EXPECT_HISA_ERROR(c.inputs(), "pooled must be [N, max_blocks, D] F32 with N = 3 and D = 64",
                    "got [3, 2, 128] F32");
  c.pooled = Tensor();
  EXPECT_HISA_ERROR(c.inputs(), "pooled_block_size = 128 is given but there is no pooled tensor");

  // save_decode_case refuses an invalid case before writing anything.
  c = good;
  c.w = Tensor(DType::F32, {6, 3});
  const std::string fresh = temp_path("never_written.safetensors");
  EXPECT_HISA_ERROR(save_decode_case(fresh, c), fresh, "w must be [N * next_n, H] = [6, 4]");
  EXPECT_FALSE(std::ifstream(fresh).good());
}

TEST(DecodeCaseFile, LoadErrorsNameTheFile) {
  const DecodeCase good = small_decode_case();
  const std::string path = temp_path("decode_bad.safetensors");
  const std::map<std::string, Tensor> tensors = {{"q", good.q},
                                                 {"w", good.w},
                                                 {"kv_cache", good.kv_cache},
                                                 {"block_table", good.block_table},
                                                 {"seq_lens", good.seq_lens}};
  auto with = [&](const std::string& name, const Tensor& t) {
    std::map<std::string, Tensor> m = tensors;
    m[name] = t;
    return m;
  };
  // A misspelt tensor is refused.
  write_safetensors(path, with("seq_len", good.seq_lens));
  EXPECT_HISA_ERROR(load_decode_case(path), path, "unknown tensor 'seq_len' in a decode case file");
  // Pooled keys without their block size, or with an unreadable one.
  const Tensor pooled(DType::F32, {3, 2, 64});
  write_safetensors(path, with("pooled", pooled));
  EXPECT_HISA_ERROR(load_decode_case(path), path, "pooled keys need the block size B");
  write_safetensors(path, with("pooled", pooled), {{"pooled_block_size", "12x"}});
  EXPECT_HISA_ERROR(load_decode_case(path), path,
                    "metadata pooled_block_size = '12x' is not a positive integer");
  write_safetensors(path, with("pooled", pooled),
                    {{"pooled_block_size", "128"}, {"pooling", "median"}});
  EXPECT_HISA_ERROR(load_decode_case(path), path, "unknown pooling 'median'");
  write_safetensors(path, tensors, {{"pooled_block_size", "128"}});
  EXPECT_HISA_ERROR(load_decode_case(path), path, "there is no pooled tensor");
  write_safetensors(path, with("pooled", pooled),
                    {{"pooled_block_size", "128"}, {"pooling", "max"}});
  const DecodeCase back = load_decode_case(path);
  EXPECT_EQ(back.pooled_block_size, 128);
  EXPECT_EQ(back.pooling, Pooling::Max);
  EXPECT_TRUE(back.metadata.empty());
}

TEST(DecodeCaseFile, PooledKeysMustMatchTheSelection) {
  DecodeCase c = small_decode_case();
  SelectConfig cfg;                      // hisa B = 128, mean
  EXPECT_NO_THROW(c.check_pooled(cfg));  // no pooled keys: nothing to match
  c.pool(128, Pooling::Mean);
  EXPECT_NO_THROW(c.check_pooled(cfg));
  cfg.block_size = 64;
  EXPECT_HISA_ERROR(c.check_pooled(cfg),
                    "pooled with B = 128 (mean) but hisa selects with B = 64 (mean)");
  cfg.block_size = 128;
  cfg.pooling = Pooling::Max;
  EXPECT_HISA_ERROR(c.check_pooled(cfg), "B = 128 (mean) but hisa selects with B = 128 (max)");
  cfg.method = Method::Flat;  // flat reads no pooled keys
  EXPECT_NO_THROW(c.check_pooled(cfg));
}

// validate_decode, the checks every backend runs, on the inputs of a decode case: each bad value
// is named with its index.
TEST(DecodeCaseFile, ValidateNamesTheOffendingEntry) {
  const DecodeCase good = small_decode_case();
  SelectConfig cfg;
  cfg.block_size = 64;
  cfg.top_blocks = 4;
  cfg.topk = 128;
  ASSERT_NO_THROW(validate_decode(good.inputs(), cfg));
  const int max_pages = int(good.block_table.shape[1]);
  const int num_pages = int(good.kv_cache.shape[0]);

  DecodeCase c = good;
  c.block_table.data<int32_t>()[1 * max_pages + 1] = num_pages;
  EXPECT_HISA_ERROR(validate_decode(c.inputs(), cfg),
                    "block_table[1, 1] = " + std::to_string(num_pages) + " is out of range [0, " +
                        std::to_string(num_pages) + ")");
  c.block_table.data<int32_t>()[1 * max_pages + 1] = -1;
  EXPECT_HISA_ERROR(validate_decode(c.inputs(), cfg), "block_table[1, 1] = -1 is out of range");
  // Entries past a request's last page are not read (request 1 uses 2 of 5 pages).
  c = good;
  c.block_table.data<int32_t>()[1 * max_pages + 2] = num_pages + 7;
  EXPECT_NO_THROW(validate_decode(c.inputs(), cfg));

  c = good;
  c.seq_lens.data<int32_t>()[2] = 1;  // next_n = 2
  EXPECT_HISA_ERROR(validate_decode(c.inputs(), cfg), "seq_lens[2] = 1 is shorter than next_n = 2");
  c.seq_lens.data<int32_t>()[2] = 5 * 64 + 1;
  EXPECT_HISA_ERROR(
      validate_decode(c.inputs(), cfg),
      "seq_lens[2] = 321 runs past the block table: max_pages * page_size = 5 * 64 = 320");

  c = good;
  c.q.data<uint8_t>()[(3 * 4 + 2) * 64 + 9] = 0x7f;  // fp8 e4m3 NaN at row 3, head 2, dim 9
  EXPECT_HISA_ERROR(validate_decode(c.inputs(), cfg),
                    "q has a non-finite value at row 3, head 2, dim 9");
  c = good;
  c.w.data<float>()[5 * 4 + 1] = std::numeric_limits<float>::infinity();
  EXPECT_HISA_ERROR(validate_decode(c.inputs(), cfg), "w has a non-finite value at row 5, head 1");

  // B must be a multiple of the page size for the methods that choose blocks.
  c = good;
  c.kv_cache = Tensor(DType::U8, {num_pages / 2, 128, 68});
  EXPECT_HISA_ERROR(validate_decode(c.inputs(), cfg),
                    "block_size (64) must be a multiple of page_size (128)");
}

}  // namespace
}  // namespace hisa
