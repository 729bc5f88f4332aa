// The workspace (device buffers kept between calls) and the device facts the paths consult.
#include <cuda_runtime.h>

#include <deque>
#include <mutex>
#include <vector>

#include "cuda/common.hpp"
#include "cuda/device_buffer.hpp"
#include "hisa/cuda.hpp"

namespace hisa::cuda {

struct Workspace::Impl {
  std::vector<DeviceBuffer<uint8_t>> slots;
  std::vector<DeviceBuffer<uint8_t>> kept;  // grown-out buffers kept for captured graphs
  bool keep_grown = false;
};

Workspace::Workspace() : impl_(new Impl) {}
Workspace::~Workspace() = default;
size_t Workspace::bytes() const {
  size_t n = 0;
  for (auto& b : impl_->slots) n += b.data() ? b.bytes() : 0;
  for (auto& b : impl_->kept) n += b.bytes();
  return n;
}
void Workspace::release() {
  for (auto& b : impl_->slots) b.release();
  for (auto& b : impl_->kept) b.release();
  impl_->kept.clear();
}
void Workspace::set_keep_grown(bool keep) { impl_->keep_grown = keep; }
void* Workspace::get(int slot, size_t bytes, bool zero_new) {
  if (size_t(slot) >= impl_->slots.size()) impl_->slots.resize(size_t(slot) + 1);
  DeviceBuffer<uint8_t>& b = impl_->slots[size_t(slot)];
  // (a buffer that grows is freed first: cudaFree synchronises, so nothing queued still uses it;
  // with keep_grown it is kept instead, for graphs that captured it)
  if (!b.data() || b.bytes() < bytes) {
    if (b.data() && impl_->keep_grown) impl_->kept.push_back(std::move(b));
    return b.reserve(bytes, zero_new);
  }
  return b.data();
}

const DeviceInfo& current_device() {
  static std::mutex mu;
  static std::deque<DeviceInfo> cache;  // references stay valid as devices are added
  int dev = 0;
  HISA_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  for (auto& d : cache)
    if (d.device == dev) return d;
  cudaDeviceProp prop;
  HISA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  DeviceInfo info;
  info.device = dev;
  info.sm_count = prop.multiProcessorCount;
  info.major = prop.major;
  info.minor = prop.minor;
  info.name = prop.name;
  cache.push_back(info);
  return cache.back();
}

bool device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::string device_description() {
  if (!device_present()) return "";
  const DeviceInfo& d = current_device();
  return detail::concat(d.name, " (sm_", d.major, d.minor, ", ", d.sm_count, " SMs)");
}

}  // namespace hisa::cuda
