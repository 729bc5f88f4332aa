#include "cuda/tensor_maps.hpp"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  static cudaError_t err = cudaSuccess;
  static cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSuccess;
  std::call_once(once, [] {
    void* p = nullptr;
    err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                           &status);
    fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  HISA_CHECK(err == cudaSuccess && status == cudaDriverEntryPointSuccess && fn,
             "cuda backend: the driver has no cuTensorMapEncodeTiled (", cudaGetErrorName(err),
             ", status ", int(status), ")");
  return fn;
}

// dims/strides: innermost first; strides (bytes) for dims 1..rank-1.
CUtensorMap make_map(const void* base, CUtensorMapDataType type, int rank, const uint64_t* dims,
                     const uint64_t* strides, const uint32_t* box, CUtensorMapSwizzle swizzle,
                     const char* what, CUtensorMapL2promotion promo) {
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const uint32_t elem_strides[3] = {1, 1, 1};
  const CUresult r = encode_fn()(&map, type, cuuint32_t(rank), const_cast<void*>(base), dims,
                                 strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 swizzle, promo, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  HISA_CHECK(r == CUDA_SUCCESS, "cuda backend: cuTensorMapEncodeTiled failed for ", what,
             " (CUresult ", int(r), ")");
  return map;
}

}  // namespace

CUtensorMap map_rows(const void* base, DType t, uint64_t rows, uint32_t box_rows,
                     const char* what) {
  const bool fp8 = t == DType::F8E4M3;
  const uint64_t dims[2] = {128, std::max<uint64_t>(rows, 1)};
  const uint64_t strides[1] = {fp8 ? 128u : 256u};
  const uint32_t box[2] = {fp8 ? 128u : 64u, box_rows};
  return make_map(base, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                  dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B, what,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

CUtensorMap map_scales(const float* base, uint64_t n, uint32_t box_n) {
  const uint64_t dims[1] = {std::max<uint64_t>(n, 1)};
  const uint64_t strides[1] = {4};
  const uint32_t box[1] = {box_n};
  return make_map(base, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 1, dims, strides, box,
                  CU_TENSOR_MAP_SWIZZLE_NONE, "k_scale", CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

CUtensorMap map_cache(const uint8_t* base, uint64_t pages) {
  const uint64_t dims[3] = {128, 64, pages};
  const uint64_t strides[2] = {128, 64 * 132};
  const uint32_t box[3] = {128, 64, 1};
  return make_map(base, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, dims, strides, box,
                  CU_TENSOR_MAP_SWIZZLE_128B, "kv_cache", CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

}  // namespace hisa::cuda
