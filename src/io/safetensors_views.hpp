// hisa (internal): the safetensors writer over borrowed tensors, so that save_case need not copy
// a case (q alone can be gigabytes) into the std::map that write_safetensors takes.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "hisa/tensor.hpp"

namespace hisa::detail {

void write_safetensors_views(const std::string& path,
                             const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                             const std::map<std::string, std::string>& metadata);

}  // namespace hisa::detail
