// Internal helpers of the CUDA backend (host side): checked CUDA calls, device facts.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "hisa/error.hpp"

// Throws hisa::Error naming the call, the CUDA error and the place. Library code never exits.
#define HISA_CUDA_CHECK(call)                                                      \
  do {                                                                             \
    const cudaError_t hisa_err_ = (call);                                          \
    if (hisa_err_ != cudaSuccess) {                                                \
      throw ::hisa::Error(::hisa::detail::concat(                                  \
          "cuda backend: ", #call, " failed: ", cudaGetErrorName(hisa_err_), " (", \
          cudaGetErrorString(hisa_err_), ") at ", __FILE__, ":", __LINE__));       \
    }                                                                              \
  } while (0)

// After a kernel launch: the launch error, if any.
#define HISA_CUDA_CHECK_LAUNCH(what) HISA_CUDA_CHECK((static_cast<void>(what), cudaGetLastError()))

namespace hisa::cuda {

// Raises `kernel`'s dynamic shared-memory limit to `bytes` once per device: a driver call per
// launch is host time in every decode step. `done` is the call site's record for this kernel
// (devices 0-63 tracked; others are set every time).
template <class Kernel>
cudaError_t opt_in_dynamic_smem(Kernel kernel, int bytes, std::atomic<unsigned long long>& done) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const unsigned long long bit = dev < 64 ? 1ull << dev : 0ull;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) done.fetch_or(bit, std::memory_order_acq_rel);
  return e;
}

struct DeviceInfo {
  int device = 0;
  int sm_count = 0;
  int major = 0, minor = 0;
  std::string name;
};
// Facts of the current device (cached per device id).
const DeviceInfo& current_device();

}  // namespace hisa::cuda
