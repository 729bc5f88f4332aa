// Launch of the CUDA-core scoring kernel (kernels/smxx_simt_scores.cuh).
#include "cuda/backend.hpp"
#include "cuda/kernels/smxx_simt_scores.cuh"

namespace hisa::cuda {

void simt_scores(const SimtParams& sp, cudaStream_t st) {
  const size_t smem = (size_t(sp.heads) * sp.dim + sp.heads) * 4;
  if (smem > 48 * 1024) {
    HISA_CUDA_CHECK(cudaFuncSetAttribute(smxx_simt_scores_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  }
  const dim3 grid(unsigned(ceil_div(sp.ld, 128)), unsigned(sp.rows));
  smxx_simt_scores_kernel<<<grid, 128, smem, st>>>(sp);
  HISA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace hisa::cuda
