// hisa: a small owning host tensor, for files, workloads and front ends (the backends take raw
// pointers through params.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hisa/dtype.hpp"
#include "hisa/error.hpp"

namespace hisa {

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // row-major, little-endian

  Tensor() = default;
  Tensor(DType t, std::vector<int64_t> s);  // zero-filled
  int64_t numel() const;
  bool empty() const { return shape.empty() && bytes.empty(); }
  std::string shape_str() const;  // "[T, H, D]" style: "[4, 64, 128]"
  template <typename T>
  T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <typename T>
  const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
};

}  // namespace hisa
