#include "hisa/tensor.hpp"

#include <sstream>

namespace hisa {

Tensor::Tensor(DType t, std::vector<int64_t> s) : dtype(t), shape(std::move(s)) {
  for (int64_t d : shape) HISA_CHECK(d >= 0, "Tensor: negative dimension in ", shape_str());
  bytes.assign(size_t(numel()) * dtype_size(dtype), 0);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

}  // namespace hisa
