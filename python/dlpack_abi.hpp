// The DLPack C ABI (the structs a `__dlpack__` capsule points at), as far as the bindings read it.
// DLPack fixes these layouts and codes across versions; only the fields used here are named.
#pragma once

#include <cstdint>

namespace hisa::dlpack {

// DLDeviceType values.
constexpr int32_t kCPU = 1;
constexpr int32_t kCUDA = 2;
constexpr int32_t kCUDAHost = 3;  // pinned host memory: host-readable
constexpr int32_t kCUDAManaged = 13;

// DLDataTypeCode values.
constexpr uint8_t kInt = 0;
constexpr uint8_t kUInt = 1;
constexpr uint8_t kFloat = 2;
constexpr uint8_t kBfloat = 4;
constexpr uint8_t kBool = 6;
constexpr uint8_t kFloat8_e4m3fn = 10;

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;    // [ndim]
  int64_t* strides;  // [ndim] in elements, or nullptr for compact row-major
  uint64_t byte_offset;
};

// Capsule "dltensor" (every DLPack version).
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

// Capsule "dltensor_versioned" (DLPack 1.0 and later).
struct PackVersion {
  uint32_t major;
  uint32_t minor;
};
constexpr uint64_t kFlagReadOnly = 1;
struct ManagedTensorVersioned {
  PackVersion version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  uint64_t flags;
  Tensor dl_tensor;
};

}  // namespace hisa::dlpack
