// The one owner of device memory in the CUDA backend, its tests and its benchmark: a typed buffer
// that grows on demand (contents are not kept when it grows) and is freed with its owner.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "cuda/common.hpp"

namespace hisa::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { reserve(count); }
  explicit DeviceBuffer(const std::vector<T>& host) { assign(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), count_(o.count_), capacity_(o.capacity_) {
    o.ptr_ = nullptr, o.count_ = o.capacity_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      free_memory();
      ptr_ = o.ptr_, count_ = o.count_, capacity_ = o.capacity_;
      o.ptr_ = nullptr, o.count_ = o.capacity_ = 0;
    }
    return *this;
  }
  ~DeviceBuffer() { free_memory(); }

  // At least `count` elements (at least 256 bytes are allocated, so the pointer is never null);
  // previous contents are lost when it grows. Freeing synchronises the device, so a buffer that
  // grows is never in use by queued work. zero_new: new memory is zeroed.
  T* reserve(size_t count, bool zero_new = false) {
    if (count > capacity_ || !ptr_) {
      free_memory();
      const size_t bytes = std::max<size_t>(count * sizeof(T), 256);
      HISA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes));
      if (zero_new) HISA_CUDA_CHECK(cudaMemset(ptr_, 0, bytes));
      capacity_ = bytes / sizeof(T);
    }
    count_ = count;
    return ptr_;
  }
  // Copies the host vector in (synchronously).
  void assign(const std::vector<T>& host) {
    reserve(host.size());
    if (!host.empty())
      HISA_CUDA_CHECK(
          cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  // Copies `count` host elements in on `stream` (asynchronously); nullptr in, nullptr out.
  const T* upload(const T* host, size_t count, cudaStream_t stream) {
    if (!host) return nullptr;
    reserve(count);
    if (count)
      HISA_CUDA_CHECK(
          cudaMemcpyAsync(ptr_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
    return ptr_;
  }
  // Elements [offset, offset + count) back to the host (synchronously); all by default.
  std::vector<T> to_host(size_t offset = 0, size_t count = size_t(-1)) const {
    if (count == size_t(-1)) count = count_ - std::min(offset, count_);
    std::vector<T> h(count);
    if (count)
      HISA_CUDA_CHECK(
          cudaMemcpy(h.data(), ptr_ + offset, count * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void fill_bytes(int value) {
    if (ptr_) HISA_CUDA_CHECK(cudaMemset(ptr_, value, std::max<size_t>(capacity_, 1) * sizeof(T)));
  }
  // Frees the memory (synchronises the device).
  void release() {
    if (ptr_) HISA_CUDA_CHECK(cudaFree(ptr_));
    ptr_ = nullptr, count_ = capacity_ = 0;
  }

  T* data() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return capacity_ * sizeof(T); }

 private:
  void free_memory() noexcept {
    if (ptr_) cudaFree(ptr_);  // a destructor must not throw: errors here are ignored
    ptr_ = nullptr, count_ = capacity_ = 0;
  }
  T* ptr_ = nullptr;
  size_t count_ = 0, capacity_ = 0;
};

}  // namespace hisa::cuda
