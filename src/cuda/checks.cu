// Input checks of the device-pointer API: the shape checks every backend shares (validate.hpp) on
// the host, the index arrays (and optionally the values) on the device.
#include <algorithm>
#include <climits>
#include <vector>

#include "cuda/backend.hpp"
#include "cuda/kernels/smxx_checks.cuh"
#include "hisa/error.hpp"
#include "hisa/validate.hpp"

namespace hisa::cuda {
namespace {

// Reads the check flags back and throws for the first failing check.
void raise_checks(unsigned long long* err_dev, cudaStream_t st, const char* who, int64_t S,
                  int next_n, int max_pages, int page_size, int num_pages) {
  unsigned long long err[kNumChecks];
  HISA_CUDA_CHECK(cudaMemcpyAsync(err, err_dev, sizeof(err), cudaMemcpyDeviceToHost, st));
  HISA_CUDA_CHECK(cudaStreamSynchronize(st));
  const auto bad = [&](int c) { return err[c] != ULLONG_MAX; };
  const auto at = [&](int c) { return int64_t(err[c]); };
  HISA_CHECK(!bad(kCheckCuStart), who, ": cu_seqlens must start at 0");
  HISA_CHECK(!bad(kCheckCuOrder), who, ": cu_seqlens must be non-decreasing (sequence ",
             at(kCheckCuOrder), ")");
  HISA_CHECK(!bad(kCheckCuEnd), who,
             ": cu_seqlens_q[N] must be T and cu_seqlens_k[N] must be S = ", S);
  HISA_CHECK(!bad(kCheckCausal), who, ": sequence ", at(kCheckCausal),
             " has more queries than keys (causality needs T_b <= S_b)");
  HISA_CHECK(!bad(kCheckKsKe), who, ": row ", at(kCheckKsKe),
             " has ks/ke out of range (need 0 <= ks <= ke <= S = ", S, ")");
  HISA_CHECK(!bad(kCheckSeqLen), who, ": seq_lens[", at(kCheckSeqLen),
             "] must be in [next_n = ", next_n,
             ", max_pages * page_size = ", int64_t(max_pages) * page_size, "]");
  if (bad(kCheckBlockTable)) {
    const int64_t i = at(kCheckBlockTable);
    throw Error(detail::concat(who, ": block_table[", i / max_pages, ", ", i % max_pages,
                               "] is out of range [0, ", num_pages, ")"));
  }
  HISA_CHECK(!bad(kCheckQ), who, ": q has a non-finite value at flat index ", at(kCheckQ));
  HISA_CHECK(!bad(kCheckW), who, ": w has a non-finite value at flat index ", at(kCheckW));
  HISA_CHECK(!bad(kCheckK), who, ": k (or a cache value) has a non-finite value at index ",
             at(kCheckK));
  HISA_CHECK(!bad(kCheckScale), who, ": a key scale is not finite and > 0 (index ",
             at(kCheckScale), ")");
}

int value_grid(int64_t n) {
  return int(std::min<int64_t>(ceil_div(std::max<int64_t>(n, 1), 256), 4096));
}

void check_values(DType t, const void* data, int64_t n, int code, unsigned long long* err,
                  cudaStream_t st) {
  if (n <= 0) return;
  smxx_check_values_kernel<<<value_grid(n), 256, 0, st>>>(t, data, n, 0, 0, code, err);
  HISA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void host_checks(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out) {
  validate_prefill_shapes(in, cfg);
  // (the q tile's TMA row coordinate, row * H, is an int32)
  HISA_CHECK(in.num_q < (int64_t(1) << 31) / 128, "prefill: T = ", in.num_q,
             " is too large for the cuda backend (T * H must stay below 2^31)");
  HISA_CHECK(in.num_q == 0 || out.indices, "select_prefill: out.indices must be given");
}

void host_checks(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out) {
  validate_decode_shapes(in, cfg);
  HISA_CHECK(out.indices, "select_decode: out.indices must be given");
}

void device_checks(const PrefillInputs& in, Workspace& ws, cudaStream_t st, bool values) {
  auto* err = static_cast<unsigned long long*>(ws.get(kSlotErr, kNumChecks * 8));
  HISA_CUDA_CHECK(cudaMemsetAsync(err, 0xFF, kNumChecks * 8, st));
  const int64_t n = in.cu_seqlens_q ? in.num_seqs : in.num_q;
  smxx_check_spans_kernel<<<int(ceil_div(std::max<int64_t>(n, 1), 256)), 256, 0, st>>>(
      in.num_seqs, in.cu_seqlens_q, in.cu_seqlens_k, in.ks, in.ke, in.num_q, in.num_k, err);
  HISA_CUDA_CHECK(cudaGetLastError());
  if (values) {
    check_values(in.dtype, in.q, in.num_q * in.num_heads * in.head_dim, kCheckQ, err, st);
    check_values(in.dtype, in.k, in.num_k * in.head_dim, kCheckK, err, st);
    check_values(DType::F32, in.w, in.num_q * in.num_heads, kCheckW, err, st);
    if (in.k_scale && in.num_k) {
      smxx_check_scales_kernel<<<value_grid(in.num_k), 256, 0, st>>>(in.k_scale, in.num_k, err);
      HISA_CUDA_CHECK(cudaGetLastError());
    }
  }
  raise_checks(err, st, "prefill", in.num_k, 0, 1, 1, 0);
}

void device_checks(const DecodeInputs& in, Workspace& ws, cudaStream_t st, bool values) {
  auto* err = static_cast<unsigned long long*>(ws.get(kSlotErr, kNumChecks * 8));
  HISA_CUDA_CHECK(cudaMemsetAsync(err, 0xFF, kNumChecks * 8, st));
  smxx_check_decode_kernel<<<in.batch, 256, 0, st>>>(in.batch, in.next_n, in.max_pages,
                                                     in.page_size, in.num_pages, in.seq_lens,
                                                     in.block_table, err);
  HISA_CUDA_CHECK(cudaGetLastError());
  raise_checks(err, st, "decode", 0, in.next_n, in.max_pages, in.page_size, in.num_pages);
  if (!values) return;
  const int64_t rows = int64_t(in.batch) * in.next_n;
  check_values(in.q_dtype, in.q, rows * in.num_heads * in.head_dim, kCheckQ, err, st);
  check_values(DType::F32, in.w, rows * in.num_heads, kCheckW, err, st);
  smxx_check_cache_kernel<<<in.batch, 256, 0, st>>>(in.batch, in.max_pages, in.page_size,
                                                    in.head_dim, in.seq_lens, in.block_table,
                                                    in.kv_cache, err);
  HISA_CUDA_CHECK(cudaGetLastError());
  raise_checks(err, st, "decode", 0, in.next_n, in.max_pages, in.page_size, in.num_pages);
}

void check_given_blocks(const char* what, const int32_t* given, int64_t rows,
                        const SelectConfig& cfg, const int32_t* row_ks, const int32_t* row_ke,
                        const int32_t* seq_lens, int next_n, Workspace& ws, cudaStream_t st) {
  if (rows == 0) return;
  auto* err = static_cast<unsigned long long*>(ws.get(kSlotErr, kNumChecks * 8));
  HISA_CUDA_CHECK(cudaMemsetAsync(err + kCheckGiven, 0xFF, 8, st));
  smxx_check_given_kernel<<<unsigned(ceil_div(rows, 256)), 256, 0, st>>>(
      rows, cfg.top_blocks, cfg.block_size, given, row_ks, row_ke, seq_lens, next_n, err);
  HISA_CUDA_CHECK(cudaGetLastError());
  unsigned long long at = 0;
  HISA_CUDA_CHECK(cudaMemcpyAsync(&at, err + kCheckGiven, 8, cudaMemcpyDeviceToHost, st));
  HISA_CUDA_CHECK(cudaStreamSynchronize(st));
  if (at == ULLONG_MAX) return;
  // The bad row back on the host, for the message every backend gives.
  const int64_t r = int64_t(at) / cfg.top_blocks;
  std::vector<int32_t> row(size_t(cfg.top_blocks));
  int32_t span[2] = {0, 0};
  HISA_CUDA_CHECK(cudaMemcpy(row.data(), given + r * cfg.top_blocks, row.size() * 4,
                             cudaMemcpyDeviceToHost));
  if (row_ks) {
    HISA_CUDA_CHECK(cudaMemcpy(span, row_ks + r, 4, cudaMemcpyDeviceToHost));
    HISA_CUDA_CHECK(cudaMemcpy(span + 1, row_ke + r, 4, cudaMemcpyDeviceToHost));
  } else {
    HISA_CUDA_CHECK(cudaMemcpy(span + 1, seq_lens + r / next_n, 4, cudaMemcpyDeviceToHost));
    span[1] += -next_n + int(r % next_n) + 1;
  }
  check_given_blocks_row(what, r, row.data(), cfg.top_blocks, int64_t(span[1]) - span[0],
                         cfg.block_size);
  throw Error(detail::concat(what, ": given_blocks row ", r, " breaks its rules"));
}

}  // namespace hisa::cuda
