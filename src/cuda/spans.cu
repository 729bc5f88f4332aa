// Launches of the row-span kernels (kernels/smxx_spans.cuh).
#include "cuda/backend.hpp"
#include "cuda/kernels/smxx_spans.cuh"

namespace hisa::cuda {

void launch_row_spans(const PrefillInputs& in, int32_t* row_ks, int32_t* row_ke,
                      cudaStream_t st) {
  smxx_row_spans_kernel<<<unsigned(ceil_div(in.num_q, 256)), 256, 0, st>>>(
      in.num_seqs, in.cu_seqlens_q, in.cu_seqlens_k, in.ks, in.ke, in.num_q, row_ks, row_ke);
  HISA_CUDA_CHECK(cudaGetLastError());
}

void launch_decode_lens(const int32_t* seq_lens, int next_n, int64_t rows, int32_t* lens,
                        cudaStream_t st) {
  smxx_decode_lens_kernel<<<unsigned(ceil_div(rows, 256)), 256, 0, st>>>(seq_lens, next_n, rows,
                                                                         lens);
  HISA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace hisa::cuda
