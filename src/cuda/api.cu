// The CUDA backend's device-pointer API: input checks, workspace, path choice and launches.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "cuda/common.hpp"
#include "cuda/flat_launch.cuh"
#include "cuda/kernels/smxx_prep.cuh"
#include "cuda/kernels/smxx_simt_scores.cuh"
#include "cuda/kernels/smxx_topk.cuh"
#include "hisa/cuda.hpp"
#include "hisa/error.hpp"

namespace hisa::cuda {
namespace {

constexpr int kFusedMaxK = 2048;    // candidate lists of the fused kernel hold 3072 per query
constexpr int kTopkThreads = 1024;  // stand-alone top-k / merge: one CTA of 1024 per row
constexpr int kMergeThreads = 512;
// The most split lists either merge takes (the merge kernel's count array; the fused kernel keeps
// the lists' offsets in its histogram).
constexpr int kMaxMergeSplits = 64;

enum Slot : int {
  kSlotSpans = 0,
  kSlotPartU,
  kSlotPartPos,
  kSlotPartCnt,
  kSlotScores,
  kSlotErr,
  kSlotMergeCount,
  kSlotHelperScores,
  kSlotHelperFlags
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// ---------------------------------------------------------------- tensor maps
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
                     const char* what,
                     CUtensorMapL2promotion promo = CU_TENSOR_MAP_L2_PROMOTION_L2_256B) {
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const uint32_t elem_strides[3] = {1, 1, 1};
  const CUresult r =
      encode_fn()(&map, type, cuuint32_t(rank), const_cast<void*>(base), dims, strides, box,
                  elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                  promo, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  HISA_CHECK(r == CUDA_SUCCESS, "cuda backend: cuTensorMapEncodeTiled failed for ", what,
             " (CUresult ", int(r), ")");
  return map;
}

// [rows, 128] q or k rows, 128-byte swizzle, box of box_rows rows (fp8: 128 bytes; bf16: 64
// elements = one swizzle atom, loaded twice).
CUtensorMap map_rows(const void* base, DType t, uint64_t rows, uint32_t box_rows,
                     const char* what) {
  const bool fp8 = t == DType::F8E4M3;
  const uint64_t dims[2] = {128, std::max<uint64_t>(rows, 1)};
  const uint64_t strides[1] = {fp8 ? 128u : 256u};
  const uint32_t box[2] = {fp8 ? 128u : 64u, box_rows};
  return make_map(base, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                  dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B, what);
}

CUtensorMap map_scales(const float* base, uint64_t n, uint32_t box_n = 256) {
  const uint64_t dims[1] = {std::max<uint64_t>(n, 1)};
  const uint64_t strides[1] = {4};
  const uint32_t box[1] = {box_n};
  return make_map(base, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 1, dims, strides, box,
                  CU_TENSOR_MAP_SWIZZLE_NONE, "k_scale");
}

// The paged cache as [pages, 64 tokens, 128 bytes] with the page stride of 64 * 132 bytes. No L2
// promotion: each page is read once, and hisa_stream_probe (device run 60) streamed the cache's
// pages with these copies in 263 us without promotion (128 B: 264) against 280 us with the 256 B
// promotion that the prefill's maps use (where keys are re-read from L2).
CUtensorMap map_cache(const uint8_t* base, uint64_t pages) {
  const uint64_t dims[3] = {128, 64, pages};
  const uint64_t strides[2] = {128, 64 * 132};
  const uint32_t box[3] = {128, 64, 1};
  return make_map(base, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, dims, strides, box,
                  CU_TENSOR_MAP_SWIZZLE_128B, "kv_cache",
                  CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

// ---------------------------------------------------------------- launch tables
template <int E, bool kScores>
cudaError_t prefill_launch_heads(int heads, const FlatLaunch& l) {
  if (heads == 64) return launch_flat<E, 64, 2, false, kScores>(l);
  return launch_flat<E, 32, 2, false, kScores>(l);
}
cudaError_t prefill_launch(DType t, int heads, bool scores, const FlatLaunch& l) {
  if (t == DType::F8E4M3)
    return scores ? prefill_launch_heads<kFp8, true>(heads, l)
                  : prefill_launch_heads<kFp8, false>(heads, l);
  return scores ? prefill_launch_heads<kBf16, true>(heads, l)
                : prefill_launch_heads<kBf16, false>(heads, l);
}
template <int H>
cudaError_t decode_launch_n(int next_n, const FlatLaunch& l) {
  switch (next_n) {
    case 1:
      return launch_flat<kFp8, H, 1, true, false>(l);
    case 2:
      return launch_flat<kFp8, H, 2, true, false>(l);
    case 3:
      return launch_flat<kFp8, H, 3, true, false>(l);
    default:
      return launch_flat<kFp8, H, 4, true, false>(l);
  }
}
cudaError_t decode_launch(int heads, int next_n, const FlatLaunch& l) {
  return heads == 64 ? decode_launch_n<64>(next_n, l) : decode_launch_n<32>(next_n, l);
}
// Candidate-list capacity of the decode instance a launch runs (the in-kernel merge needs
// splits * k entries of it). The variants share production's capacity (7168).
template <int H>
int decode_cap_n(int next_n) {
  switch (next_n) {
    case 1:
      return sm90::FlatConfig<sm90::Fp8, H, 1, true, false>::kCap;
    case 2:
      return sm90::FlatConfig<sm90::Fp8, H, 2, true, false>::kCap;
    case 3:
      return sm90::FlatConfig<sm90::Fp8, H, 3, true, false>::kCap;
    default:
      return sm90::FlatConfig<sm90::Fp8, H, 4, true, false>::kCap;
  }
}
int decode_cap(int heads, int next_n, int variant) {
  if (variant == 1) return sm90::FlatConfig<sm90::Fp8, 64, 1, true, false, false, 1>::kCap;
  if (variant == 24) return sm90::FlatConfig<sm90::Fp8, 64, 1, true, false, false, 24>::kCap;
  return heads == 64 ? decode_cap_n<64>(next_n) : decode_cap_n<32>(next_n);
}
// Whether the decode instance a launch runs has the pair tail (kPairTail: the slim decode, H 64
// and next_n 1, with the CTA-wide tail; not variants 1, 16 and 17).
template <int kTune>
constexpr bool kPairTailOf = sm90::FlatConfig<sm90::Fp8, 64, 1, true, false, false, kTune>::kPairTail;
bool decode_has_pair_tail(int heads, int next_n, int variant) {
  if (heads != 64 || next_n != 1) return false;  // other instances are not slim decodes
  switch (variant) {
    case 1:
      return kPairTailOf<1>;
    case 16:
      return kPairTailOf<16>;
    case 17:
      return kPairTailOf<17>;
    default:
      return kPairTailOf<0>;
  }
}

// The measurement and A/B instances (fp8, H = 64; prefill: kNQ 2, decode: kNQ 1 paged): the
// variants profiled or plain, the production kernel profiled (src/cuda/flat_profiled.cu).
template <int kNQ, bool kPaged, int kTune>
cudaError_t launch_variant(const FlatLaunch& l, bool prof) {
  return prof ? launch_flat<kFp8, 64, kNQ, kPaged, false, true, kTune, 0>(l)
              : launch_flat<kFp8, 64, kNQ, kPaged, false, false, kTune, 0>(l);
}
template <int kNQ, bool kPaged>
cudaError_t launch_measured(const FlatLaunch& l, const Options& opt) {
  const bool prof = opt.profile || opt.debug_mode;
  if (opt.variant == 1) return launch_variant<kNQ, kPaged, 1>(l, prof);
  if constexpr (kPaged) {
    if (opt.variant == 2) return launch_flat<kFp8, 64, kNQ, kPaged, false, true, 2, 0>(l);
    if (opt.variant == 14) return launch_variant<kNQ, kPaged, 14>(l, prof);
    if (opt.variant == 15) return launch_variant<kNQ, kPaged, 15>(l, prof);
    if (opt.variant == 16) return launch_variant<kNQ, kPaged, 16>(l, prof);
    if (opt.variant == 17) return launch_variant<kNQ, kPaged, 17>(l, prof);
    if (opt.variant == 18) return launch_variant<kNQ, kPaged, 18>(l, prof);
    if (opt.variant == 19) return launch_variant<kNQ, kPaged, 19>(l, prof);
    if (opt.variant == 20) return launch_variant<kNQ, kPaged, 20>(l, prof);
    if (opt.variant == 21) return launch_variant<kNQ, kPaged, 21>(l, prof);
    if (opt.variant == 22) return launch_variant<kNQ, kPaged, 22>(l, prof);
    if (opt.variant == 24) return launch_variant<kNQ, kPaged, 24>(l, prof);
  } else {
    if (opt.variant == 9) return launch_variant<kNQ, kPaged, 9>(l, prof);
    if (opt.variant == 3) return launch_variant<kNQ, kPaged, 3>(l, prof);
    if (opt.variant == 4) return launch_variant<kNQ, kPaged, 4>(l, prof);
    if (opt.variant == 7) return launch_variant<kNQ, kPaged, 7>(l, prof);
  }
  return launch_flat<kFp8, 64, kNQ, kPaged, false, true, 0, 0>(l);
}

// Keys per stage (the key and scale TMA boxes) of the fused prefill instance a launch runs: 192
// for the slim fp8 H = 64 kernel (three math warpgroups), 256 for the others.
template <class T, int kHeads>
uint32_t block_kv_of(int variant) {
  return variant == 1 ? sm90::FlatConfig<T, kHeads, 2, false, false, false, 1, 0>::kBlockKV
                      : sm90::FlatConfig<T, kHeads, 2, false, false>::kBlockKV;
}
uint32_t prefill_block_kv(DType t, int heads, int variant) {
  if (t == DType::F8E4M3)
    return heads == 64 ? block_kv_of<sm90::Fp8, 64>(variant) : block_kv_of<sm90::Fp8, 32>(variant);
  return heads == 64 ? block_kv_of<sm90::Bf16, 64>(variant) : block_kv_of<sm90::Bf16, 32>(variant);
}

// ---------------------------------------------------------------- checks
void check_config(const SelectConfig& cfg) {
  HISA_CHECK(cfg.method == Method::Flat, "cuda backend: method '", method_name(cfg.method),
             "' is not implemented on CUDA yet; use --device cpu");
  cfg.validate();
}

void host_checks(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out) {
  check_config(cfg);
  HISA_CHECK(in.num_heads >= 1 && in.num_heads <= 128,
             "prefill: num_heads must be in [1, 128], got ", in.num_heads);
  HISA_CHECK(in.head_dim == 64 || in.head_dim == 128, "prefill: head_dim must be 128 or 64, got ",
             in.head_dim);
  HISA_CHECK(in.dtype == DType::F8E4M3 || in.dtype == DType::BF16 || in.dtype == DType::F32,
             "prefill: q/k dtype must be F8_E4M3, BF16 or F32, got ", dtype_name(in.dtype));
  HISA_CHECK(in.num_q >= 0 && in.num_k >= 0, "prefill: negative T or S (T = ", in.num_q,
             ", S = ", in.num_k, ")");
  HISA_CHECK(in.num_k < (int64_t(1) << 31), "prefill: S = ", in.num_k, " exceeds int32 positions");
  HISA_CHECK(in.num_q < (int64_t(1) << 31) / 128, "prefill: T = ", in.num_q, " is too large");
  if (in.num_q == 0) return;
  HISA_CHECK(in.q && in.w, "prefill: q and w must be given");
  HISA_CHECK(in.num_k == 0 || in.k, "prefill: k must be given");
  const bool cu = in.cu_seqlens_q || in.cu_seqlens_k;
  const bool kske = in.ks || in.ke;
  HISA_CHECK(cu != kske, "prefill: give either cu_seqlens_q/cu_seqlens_k or ks/ke (",
             cu ? "both" : "neither", " given)");
  if (cu) {
    HISA_CHECK(in.cu_seqlens_q && in.cu_seqlens_k,
               "prefill: cu_seqlens_q and cu_seqlens_k go together");
    HISA_CHECK(in.num_seqs >= 1, "prefill: num_seqs must be >= 1 with cu_seqlens, got ",
               in.num_seqs);
  } else {
    HISA_CHECK(in.ks && in.ke, "prefill: ks and ke go together");
  }
  HISA_CHECK(out.indices, "select: out.indices must be given");
}

void host_checks(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out) {
  check_config(cfg);
  HISA_CHECK(in.num_heads >= 1 && in.num_heads <= 128,
             "decode: num_heads must be in [1, 128], got ", in.num_heads);
  HISA_CHECK(in.head_dim == 64 || in.head_dim == 128, "decode: head_dim must be 128 or 64, got ",
             in.head_dim);
  HISA_CHECK(in.q_dtype == DType::F8E4M3 || in.q_dtype == DType::BF16 || in.q_dtype == DType::F32,
             "decode: q dtype must be F8_E4M3, BF16 or F32, got ", dtype_name(in.q_dtype));
  HISA_CHECK(in.batch >= 1, "decode: batch must be >= 1, got ", in.batch);
  HISA_CHECK(in.next_n >= 1 && in.next_n <= 4, "decode: next_n must be in 1..4, got ", in.next_n);
  HISA_CHECK(in.page_size >= 1, "decode: page_size must be >= 1, got ", in.page_size);
  HISA_CHECK(in.num_pages >= 1 && in.max_pages >= 1,
             "decode: num_pages and max_pages must be >= 1");
  HISA_CHECK(in.q && in.w && in.kv_cache && in.block_table && in.seq_lens,
             "decode: q, w, kv_cache, block_table and seq_lens must all be given");
  HISA_CHECK(int64_t(in.max_pages) * in.page_size < (int64_t(1) << 31),
             "decode: max_pages * page_size exceeds int32 positions");
  HISA_CHECK(out.indices, "select: out.indices must be given");
}

// Reads the check flags back and throws for the first failing check.
void raise_checks(unsigned long long* err_dev, cudaStream_t st, const char* who, int64_t S,
                  int next_n, int max_pages, int page_size, int num_pages) {
  unsigned long long err[kNumChecks];
  HISA_CUDA_CHECK(cudaMemcpyAsync(err, err_dev, sizeof(err), cudaMemcpyDeviceToHost, st));
  HISA_CUDA_CHECK(cudaStreamSynchronize(st));
  const auto bad = [&](int c) { return err[c] != ULLONG_MAX; };
  const auto at = [&](int c) { return int64_t(err[c]); };
  HISA_CHECK(!bad(kCheckCuStart), who, ": cu_seqlens must start at 0");
  HISA_CHECK(!bad(kCheckCuEnd), who,
             ": cu_seqlens_q[N] must be T and cu_seqlens_k[N] must be S = ", S);
  HISA_CHECK(!bad(kCheckCuOrder), who, ": cu_seqlens must be non-decreasing (sequence ",
             at(kCheckCuOrder), ")");
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
  HISA_CHECK(!bad(kCheckScale), who, ": a key scale is not finite and > 0 (index ", at(kCheckScale),
             ")");
}

int value_grid(int64_t n) {
  return int(std::min<int64_t>(ceil_div(std::max<int64_t>(n, 1), 256), 4096));
}

void device_checks(const PrefillInputs& in, Workspace& ws, cudaStream_t st, bool values) {
  auto* err = static_cast<unsigned long long*>(ws.get(kSlotErr, kNumChecks * 8));
  HISA_CUDA_CHECK(cudaMemsetAsync(err, 0xFF, kNumChecks * 8, st));
  const int64_t n = in.cu_seqlens_q ? in.num_seqs : in.num_q;
  smxx_check_spans_kernel<<<int(ceil_div(std::max<int64_t>(n, 1), 256)), 256, 0, st>>>(
      in.num_seqs, in.cu_seqlens_q, in.cu_seqlens_k, in.ks, in.ke, in.num_q, in.num_k, err);
  HISA_CUDA_CHECK(cudaGetLastError());
  if (values) {
    const int64_t qn = in.num_q * in.num_heads * in.head_dim, kn = in.num_k * in.head_dim;
    smxx_check_values_kernel<<<value_grid(qn), 256, 0, st>>>(in.dtype, in.q, qn, 0, 0, kCheckQ,
                                                             err);
    HISA_CUDA_CHECK(cudaGetLastError());
    if (kn) {
      smxx_check_values_kernel<<<value_grid(kn), 256, 0, st>>>(in.dtype, in.k, kn, 0, 0, kCheckK,
                                                               err);
      HISA_CUDA_CHECK(cudaGetLastError());
    }
    const int64_t wn = in.num_q * in.num_heads;
    smxx_check_values_kernel<<<value_grid(wn), 256, 0, st>>>(DType::F32, in.w, wn, 0, 0, kCheckW,
                                                             err);
    HISA_CUDA_CHECK(cudaGetLastError());
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
  const int64_t qn = rows * in.num_heads * in.head_dim, wn = rows * in.num_heads;
  smxx_check_values_kernel<<<value_grid(qn), 256, 0, st>>>(in.q_dtype, in.q, qn, 0, 0, kCheckQ,
                                                           err);
  HISA_CUDA_CHECK(cudaGetLastError());
  smxx_check_values_kernel<<<value_grid(wn), 256, 0, st>>>(DType::F32, in.w, wn, 0, 0, kCheckW,
                                                           err);
  HISA_CUDA_CHECK(cudaGetLastError());
  smxx_check_cache_kernel<<<in.batch, 256, 0, st>>>(in.batch, in.max_pages, in.page_size,
                                                    in.head_dim, in.seq_lens, in.block_table,
                                                    in.kv_cache, err);
  HISA_CUDA_CHECK(cudaGetLastError());
  raise_checks(err, st, "decode", 0, in.next_n, in.max_pages, in.page_size, in.num_pages);
}

// ---------------------------------------------------------------- paths
bool fused_applies(const PrefillInputs& in) {
  return (in.dtype == DType::F8E4M3 || in.dtype == DType::BF16) && in.head_dim == 128 &&
         (in.num_heads == 32 || in.num_heads == 64) && aligned16(in.q) && aligned16(in.k) &&
         (!in.k_scale || aligned16(in.k_scale)) && current_device().major == 9;
}
bool fused_applies(const DecodeInputs& in) {
  return in.q_dtype == DType::F8E4M3 && in.head_dim == 128 &&
         (in.num_heads == 32 || in.num_heads == 64) && in.page_size == 64 && aligned16(in.q) &&
         aligned16(in.kv_cache) && current_device().major == 9;
}

Path resolve(Path want, bool fused_ok, int k, bool decode, const char* who) {
  if (want == Path::Auto) {
    if (fused_ok && k <= kFusedMaxK) return Path::Fused;
    if (fused_ok && !decode) return Path::Scores;
    return Path::Simt;
  }
  if (want == Path::Fused) {
    HISA_CHECK(
        fused_ok, who, ": the fused path needs fp8/bf16 q and k (fp8 q and cache for decode), ",
        "D = 128, H in {32, 64}, page_size 64, 16-byte aligned pointers and an sm_90 device");
    HISA_CHECK(k <= kFusedMaxK, who, ": the fused path takes k <= ", kFusedMaxK, ", got ", k);
  }
  if (want == Path::Scores) {
    HISA_CHECK(!decode, who, ": decode has no Scores path (use Auto, Fused or Simt)");
    HISA_CHECK(fused_ok, who, ": the Scores path has the fused path's input requirements");
  }
  return want;
}

void launch_topk_rows(const ScoreRows& src, int64_t rows, int k, int32_t* out, int64_t row_offset,
                      cudaStream_t st) {
  if (rows <= 0) return;
  smxx_topk_rows_kernel<ScoreRows, kTopkThreads>
      <<<dim3(unsigned(rows)), kTopkThreads, 0, st>>>(src, rows, k, out, row_offset);
  HISA_CUDA_CHECK(cudaGetLastError());
}

// The merge as a programmatic dependent only when the fused grid leaves at least half the SMs
// free for its CTAs to wait on (run 43, same-run A/B: b1 -2 us, b8 -3 us, but b64 with 128 of 132
// SMs busy +10 us).
bool merge_pdl(const Options& opt, int grid, int sms) { return opt.merge_pdl && 2 * grid <= sms; }

void launch_merge(const PartialLists& src, int64_t rows, int k, int32_t* out, cudaStream_t st,
                  bool pdl) {
  const size_t staged = size_t(src.splits) * size_t(k) * 4;
  if (staged <= size_t(160) << 10 && src.splits <= kMaxMergeSplits) {
    HISA_CUDA_CHECK(cudaFuncSetAttribute(smxx_merge_smem_kernel<kTopkThreads>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(staged)));
    // Programmatic dependent launch (run 41): the fused kernel lets it start at once, its CTAs
    // take the SMs the fused kernel leaves free and wait in griddepcontrol.wait for the fused
    // kernel to finish, instead of a launch after it.
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(rows));
    cfg.blockDim = dim3(kTopkThreads);
    cfg.dynamicSmemBytes = staged;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    HISA_CUDA_CHECK(
        cudaLaunchKernelEx(&cfg, smxx_merge_smem_kernel<kTopkThreads>, src, rows, k, out));
  } else {
    smxx_topk_rows_kernel<PartialLists, kMergeThreads>
        <<<dim3(unsigned(rows)), kMergeThreads, 0, st>>>(src, rows, k, out, 0);
  }
  HISA_CUDA_CHECK(cudaGetLastError());
}

// Rows per score chunk: the chunk is rows x ld fp32 within the budget.
int64_t chunk_rows(int64_t rows, int64_t ld, size_t budget) {
  const int64_t by_budget = int64_t(budget / (4 * size_t(std::max<int64_t>(ld, 1))));
  return std::max<int64_t>(1, std::min<int64_t>({rows, by_budget, 65535}));
}

void simt_chunk(SimtParams sp, cudaStream_t st) {
  const size_t smem = (size_t(sp.heads) * sp.dim + sp.heads) * 4;
  if (smem > 48 * 1024) {
    HISA_CUDA_CHECK(cudaFuncSetAttribute(smxx_simt_scores_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  }
  const dim3 grid(unsigned(ceil_div(sp.ld, 128)), unsigned(sp.rows));
  smxx_simt_scores_kernel<<<grid, 128, smem, st>>>(sp);
  HISA_CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------- prefill
void prefill_fused(const PrefillInputs& in, int k, int32_t* out, const int32_t* row_ks,
                   const int32_t* row_ke, Workspace& ws, cudaStream_t st, const Options& opt) {
  const int splits_opt = opt.splits;
  const int sms = current_device().sm_count;
  const int64_t tiles = ceil_div(in.num_q, 2);
  int splits = splits_opt;
  if (splits <= 0) {
    // Enough items for two per SM when the rows are few (chunked prefill, short T); a split keeps
    // at least 4096 keys so that it cuts its candidates down.
    splits = tiles >= sms ? 1 : int(std::min<int64_t>(ceil_div(2 * sms, tiles), 64));
    splits = int(std::max<int64_t>(1, std::min<int64_t>(splits, in.num_k / 4096)));
  }
  HISA_CHECK(tiles * splits < INT_MAX, "prefill: too many work items");
  FlatLaunch l;
  l.q = map_rows(in.q, in.dtype, uint64_t(in.num_q) * in.num_heads, 2 * in.num_heads, "q");
  const uint32_t block_kv = prefill_block_kv(in.dtype, in.num_heads, opt.variant);
  l.k = map_rows(in.k, in.dtype, uint64_t(in.num_k), block_kv, "k");
  l.scale = in.k_scale ? map_scales(in.k_scale, uint64_t(in.num_k), block_kv) : l.k;
  sm90::FlatParams& p = l.p;
  p.row_begin = 0;
  p.row_end = in.num_q;
  p.num_tiles = int(tiles);
  p.splits = splits;
  p.topk = k;
  p.has_scale = in.k_scale != nullptr;
  p.row_ks = row_ks;
  p.row_ke = row_ke;
  p.w = in.w;
  p.out = out;
  p.part_stride = k;
  if (splits > 1) {
    const size_t n = size_t(in.num_q) * splits * k;
    p.part_u = static_cast<uint32_t*>(ws.get(kSlotPartU, n * 4));
    p.part_pos = static_cast<int32_t*>(ws.get(kSlotPartPos, n * 4));
    p.part_cnt = static_cast<int32_t*>(ws.get(kSlotPartCnt, size_t(in.num_q) * splits * 4));
  }
  l.grid = int(std::min<int64_t>(tiles * splits, sms));
  l.stream = st;
  HISA_CHECK(opt.variant == 0 || opt.variant == 1 || opt.variant == 3 || opt.variant == 4 ||
                 opt.variant == 7 || opt.variant == 9,
             "prefill: variant must be 0, 1, 3, 4, 7 or 9");
  if (opt.profile || opt.debug_mode || opt.variant) {
    HISA_CHECK(in.dtype == DType::F8E4M3 && in.num_heads == 64,
               "prefill: the measurement hooks and variants exist for fp8, H = 64 only");
    p.prof = opt.profile;
    p.timeline = opt.timeline;
    p.debug_mode = opt.debug_mode;
    HISA_CUDA_CHECK((launch_measured<2, false>(l, opt)));
  } else {
    HISA_CUDA_CHECK(prefill_launch(in.dtype, in.num_heads, false, l));
  }
  if (splits > 1)
    launch_merge(PartialLists{p.part_u, p.part_pos, p.part_cnt, splits, k}, in.num_q, k, out, st,
                 merge_pdl(opt, l.grid, sms));
}

// Scores of rows [r0, r0 + rows) into scores (ld per row), by the wgmma kernel or the SIMT one.
void prefill_scores(const PrefillInputs& in, const int32_t* row_ks, const int32_t* row_ke,
                    int64_t r0, int64_t rows, float* scores, int64_t ld, Path path,
                    cudaStream_t st) {
  if (path == Path::Scores) {
    FlatLaunch l;
    l.q = map_rows(in.q, in.dtype, uint64_t(in.num_q) * in.num_heads, 2 * in.num_heads, "q");
    l.k = map_rows(in.k, in.dtype, uint64_t(in.num_k), 256, "k");
    l.scale = in.k_scale ? map_scales(in.k_scale, uint64_t(in.num_k)) : l.k;
    sm90::FlatParams& p = l.p;
    p.row_begin = r0;
    p.row_end = r0 + rows;
    p.num_tiles = int(ceil_div(rows, 2));
    p.splits = 1;
    p.has_scale = in.k_scale != nullptr;
    p.row_ks = row_ks;
    p.row_ke = row_ke;
    p.w = in.w;
    p.scores = scores;
    p.scores_ld = ld;
    l.grid = int(std::min<int64_t>(p.num_tiles, current_device().sm_count));
    l.stream = st;
    HISA_CUDA_CHECK(prefill_launch(in.dtype, in.num_heads, true, l));
  } else {
    SimtParams sp;
    sp.row_begin = r0;
    sp.rows = rows;
    sp.heads = in.num_heads;
    sp.dim = in.head_dim;
    sp.q_dtype = sp.k_dtype = in.dtype;
    sp.q = in.q;
    sp.w = in.w;
    sp.k = in.k;
    sp.k_scale = in.k_scale;
    sp.row_ks = row_ks;
    sp.row_ke = row_ke;
    sp.scores = scores;
    sp.ld = ld;
    simt_chunk(sp, st);
  }
}

void prefill_chunks(const PrefillInputs& in, int k, int32_t* out, const int32_t* row_ks,
                    const int32_t* row_ke, Workspace& ws, cudaStream_t st, Path path,
                    size_t budget) {
  const int64_t ld = std::max<int64_t>(in.num_k, 1);
  const int64_t R = chunk_rows(in.num_q, ld, budget);
  float* scores = static_cast<float*>(ws.get(kSlotScores, size_t(R) * ld * 4));
  for (int64_t r0 = 0; r0 < in.num_q; r0 += R) {
    const int64_t rows = std::min(R, in.num_q - r0);
    prefill_scores(in, row_ks, row_ke, r0, rows, scores, ld, path, st);
    ScoreRows src;
    src.scores = scores;
    src.ld = ld;
    src.lens = row_ke + r0;
    src.lens_begin = row_ks + r0;
    launch_topk_rows(src, rows, k, out, r0, st);
  }
}

// ---------------------------------------------------------------- decode
// Pages a pair with helpers moves from its split 1 to its split 0: split 1 appends the helper's
// segment after its own stream.
constexpr int kHelperShift = 6;
// The helpers' share of the pages in sixteenths of a pair CTA's (FlatParams::helper_frac).
constexpr int kHelperWeight = 15;
// The shortest helper segment (pages) that Options::helpers = -1 uses helpers for (decode b64:
// 58 at 128K, measured faster in runs 88-91; 14 at 32K, slower in run 91).
constexpr int kAutoHelperPages = 40;
// ... and the longest: split 1 appends the segment after its stream (1.8 us for 58 pages, run
// 89); far longer segments (b40 at 128K: 653 pages, 40 helpers) are correct but their end is
// unmeasured, so the default leaves them out.
constexpr int kAutoHelperPagesMax = 128;

// Splits per request: minimise (rounds of items over the SMs) x (pages per split) x (time per page
// per CTA, selection included) + the merge (one CTA per row over splits x k entries). Constants
// fitted to the run-3 sweep on the H200 (docs/kernels.md: b1 and b8 at 128K best at 16 splits,
// b64 at 2); a forced Options::splits overrides.
int decode_splits(const DecodeInputs& in, int k) {
  const int sms = current_device().sm_count;
  const double us_per_page = 0.46, us_per_merged_entry = 0.0025;
  double best = 1e30;
  int best_s = 1;
  for (int s = 1; s <= 64; ++s) {
    const int64_t pps = ceil_div(in.max_pages, s);
    if (s > 1 && pps < 16) break;
    const double rounds = double(ceil_div(int64_t(in.batch) * s, sms));
    const double scoring = rounds * pps * us_per_page;
    const double merge = s > 1 ? 3.0 + double(s) * k * us_per_merged_entry : 0.0;
    if (scoring + merge < best * 0.97) best = scoring + merge, best_s = s;
  }
  return best_s;
}

void decode_fused(const DecodeInputs& in, int k, int32_t* out, Workspace& ws, cudaStream_t st,
                  const Options& opt) {
  const int splits_opt = opt.splits;
  const int sms = current_device().sm_count;
  const int splits = splits_opt > 0 ? std::min(splits_opt, in.max_pages) : decode_splits(in, k);
  const int64_t rows = int64_t(in.batch) * in.next_n;
  FlatLaunch l;
  l.q = map_rows(in.q, DType::F8E4M3, uint64_t(rows) * in.num_heads,
                 uint32_t(in.next_n * in.num_heads), "q");
  l.k = map_cache(in.kv_cache, uint64_t(in.num_pages));
  l.scale = l.k;
  sm90::FlatParams& p = l.p;
  p.row_begin = 0;
  p.row_end = rows;
  p.num_tiles = in.batch;
  p.splits = splits;
  p.topk = k;
  p.has_scale = 1;
  p.next_n = in.next_n;
  p.max_pages = in.max_pages;
  p.pages_per_split = int(ceil_div(in.max_pages, splits));
  p.block_table = in.block_table;
  p.seq_lens = in.seq_lens;
  p.kv_cache = in.kv_cache;
  p.w = in.w;
  p.out = out;
  HISA_CHECK((opt.variant >= 0 && opt.variant <= 2) ||
                 (opt.variant >= 14 && opt.variant <= 22) || opt.variant == 24,
             "decode: variant must be 0, 1, 2, 14 to 22 or 24");
  // The merge by the tile's last split (no merge kernel) where the union of the partial lists
  // fits the kernel's candidate list. Variant 20 publishes lists uncut up to cap / splits entries.
  const int cap = decode_cap(in.num_heads, in.next_n, opt.variant);
  // The pair tail (Options::pair_tail): a request's two splits as one 2-CTA cluster that cuts the
  // union of their lists (one item per CTA: no partial lists, no merge).
  const bool pair = opt.pair_tail && splits == 2 && int64_t(in.batch) * 2 <= sms &&
                    decode_has_pair_tail(in.num_heads, in.next_n, opt.variant);
  p.pair_tail = pair ? 1 : 0;
  const bool merge_in_kernel =
      !pair && splits > 1 && splits <= kMaxMergeSplits && opt.merge_in_kernel &&
      int64_t(splits) * k <= cap;
  p.part_stride = merge_in_kernel && opt.variant == 20 ? std::max(k, cap / splits) : k;
  if (splits > 1 && !pair) {
    const size_t n = size_t(rows) * splits * p.part_stride;
    p.part_u = static_cast<uint32_t*>(ws.get(kSlotPartU, n * 4));
    p.part_pos = static_cast<int32_t*>(ws.get(kSlotPartPos, n * 4));
    p.part_cnt = static_cast<int32_t*>(ws.get(kSlotPartCnt, size_t(rows) * splits * 4));
  }
  l.grid = int(std::min<int64_t>(int64_t(in.batch) * splits, sms));
  l.cluster = pair ? 2 : 1;
  // Helpers (Options::helpers): the SMs the pairs leave idle score the requests' last pages
  // (an even count: the launch is 2-CTA clusters; at most one per request; the launcher lowers
  // it where fewer clusters fit the device at once). By default only where a segment has at
  // least kAutoHelperPages and at most kAutoHelperPagesMax pages (a helper's item pays a
  // start-up: run 91, b64 at 32K with 14-page segments, 96.3 us against 86.0 without); a forced
  // count (Options::helpers > 0) wherever a segment has a key stage of three pages.
  if (pair && opt.helpers != 0) {
    int helpers = int(std::min<int64_t>(sms - 2 * int64_t(in.batch), in.batch)) & ~1;
    if (opt.helpers > 0) helpers = std::min(helpers, opt.helpers & ~1);
    const int weight = opt.helper_weight > 0 ? std::min(opt.helper_weight, 16) : kHelperWeight;
    // (helper_pages: the kernel's split of the pages, bit for bit)
    p.helper_frac = helpers > 0 ? uint32_t((uint64_t(weight * helpers) << 32) /
                                           uint64_t(weight * helpers + 32 * in.batch))
                                : 0u;
    const int seg_max = p.helper_pages(in.max_pages);
    const bool auto_ok = seg_max >= kAutoHelperPages && seg_max <= kAutoHelperPagesMax;
    if (helpers > 0 && (opt.helpers > 0 ? seg_max >= 3 : auto_ok)) {
      p.helpers = helpers;
      p.helper_shift = opt.helper_shift >= 0 ? opt.helper_shift : kHelperShift;
      p.helper_stride = seg_max * 64;
      p.helper_scores = static_cast<float*>(
          ws.get(kSlotHelperScores, size_t(in.batch) * size_t(p.helper_stride) * 4));
      p.helper_flags = static_cast<int*>(
          ws.get(kSlotHelperFlags, size_t(in.batch) * sizeof(int), /*zero_new=*/true));
      l.grid = 2 * in.batch + helpers;
    }
  }
  l.stream = st;
  if (merge_in_kernel)
    p.merge_count = static_cast<int*>(
        ws.get(kSlotMergeCount, size_t(in.batch) * sizeof(int), /*zero_new=*/true));
  if (opt.debug_mode == 2) {
    // Measurement: the merge kernel alone, over the partial lists the previous call left.
    HISA_CHECK(splits > 1 && !merge_in_kernel && !pair,
               "decode: debug_mode 2 times the merge kernel of a split call");
    launch_merge(PartialLists{p.part_u, p.part_pos, p.part_cnt, splits, k}, rows, k, out, st,
                 false);
    return;
  }
  if (opt.profile || opt.debug_mode || opt.variant) {
    HISA_CHECK(in.num_heads == 64 && in.next_n == 1,
               "decode: the measurement hooks and variants exist for H = 64, next_n = 1 only");
    p.prof = opt.profile;
    p.timeline = opt.timeline;
    p.debug_mode = opt.debug_mode;
    HISA_CUDA_CHECK((launch_measured<1, true>(l, opt)));
  } else {
    HISA_CUDA_CHECK(decode_launch(in.num_heads, in.next_n, l));
  }
  if (splits > 1 && !merge_in_kernel && !pair)
    launch_merge(PartialLists{p.part_u, p.part_pos, p.part_cnt, splits, k}, rows, k, out, st,
                 merge_pdl(opt, l.grid, sms));
}

void decode_simt(const DecodeInputs& in, int k, int32_t* out, Workspace& ws, cudaStream_t st,
                 size_t budget) {
  const int64_t rows = int64_t(in.batch) * in.next_n;
  const int64_t ld = int64_t(in.max_pages) * in.page_size;
  const int64_t R = chunk_rows(rows, ld, budget);
  float* scores = static_cast<float*>(ws.get(kSlotScores, size_t(R) * ld * 4));
  // Row lengths: visible = seq_len - next_n + j + 1, built once per call.
  int32_t* lens = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(rows) * 4));
  smxx_decode_lens_kernel<<<unsigned(ceil_div(rows, 256)), 256, 0, st>>>(in.seq_lens, in.next_n,
                                                                         rows, lens);
  HISA_CUDA_CHECK(cudaGetLastError());
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int64_t n = std::min(R, rows - r0);
    SimtParams sp;
    sp.row_begin = r0;
    sp.rows = n;
    sp.heads = in.num_heads;
    sp.dim = in.head_dim;
    sp.q_dtype = in.q_dtype;
    sp.k_dtype = DType::F8E4M3;
    sp.q = in.q;
    sp.w = in.w;
    sp.paged = 1;
    sp.next_n = in.next_n;
    sp.page_size = in.page_size;
    sp.max_pages = in.max_pages;
    sp.kv_cache = in.kv_cache;
    sp.block_table = in.block_table;
    sp.seq_lens = in.seq_lens;
    sp.scores = scores;
    sp.ld = ld;
    simt_chunk(sp, st);
    ScoreRows src;
    src.scores = scores;
    src.ld = ld;
    src.lens = lens + r0;
    launch_topk_rows(src, n, k, out, r0, st);
  }
}

}  // namespace

// ---------------------------------------------------------------- Workspace
struct Workspace::Impl {
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  std::vector<Buffer> slots;
};

Workspace::Workspace() : impl_(new Impl) {}
Workspace::~Workspace() {
  for (auto& b : impl_->slots)
    if (b.ptr) cudaFree(b.ptr);  // errors ignored: a destructor must not throw
}
size_t Workspace::bytes() const {
  size_t n = 0;
  for (auto& b : impl_->slots) n += b.bytes;
  return n;
}
void Workspace::release() {
  for (auto& b : impl_->slots) {
    if (b.ptr) HISA_CUDA_CHECK(cudaFree(b.ptr));
    b = Impl::Buffer{};
  }
}
void* Workspace::get(int slot, size_t bytes, bool zero_new) {
  if (size_t(slot) >= impl_->slots.size()) impl_->slots.resize(size_t(slot) + 1);
  Impl::Buffer& b = impl_->slots[size_t(slot)];
  bytes = std::max<size_t>(bytes, 256);
  if (b.bytes < bytes) {
    if (b.ptr) HISA_CUDA_CHECK(cudaFree(b.ptr));  // synchronises: nothing in flight uses it
    b = Impl::Buffer{};
    HISA_CUDA_CHECK(cudaMalloc(&b.ptr, bytes));
    if (zero_new) HISA_CUDA_CHECK(cudaMemset(b.ptr, 0, bytes));
    b.bytes = bytes;
  }
  return b.ptr;
}

// ---------------------------------------------------------------- device facts
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

std::string path_name(Path p) {
  switch (p) {
    case Path::Auto:
      return "auto";
    case Path::Fused:
      return "fused";
    case Path::Scores:
      return "scores";
    case Path::Simt:
      return "simt";
  }
  return "?";
}

Path chosen_path(const PrefillInputs& in, const SelectConfig& cfg) {
  return resolve(Path::Auto, fused_applies(in), cfg.topk, false, "prefill");
}
Path chosen_path(const DecodeInputs& in, const SelectConfig& cfg) {
  return resolve(Path::Auto, fused_applies(in), cfg.topk, true, "decode");
}

// ---------------------------------------------------------------- entry points
void score_prefill(const PrefillInputs& in, int64_t row_begin, int64_t rows, float* scores,
                   int64_t ld, Path path, Workspace& ws, void* stream) {
  SelectConfig cfg;
  cfg.method = Method::Flat;
  cfg.topk = 1;
  SelectOutputs fake;
  fake.indices = reinterpret_cast<int32_t*>(scores);
  host_checks(in, cfg, fake);
  HISA_CHECK(
      row_begin >= 0 && rows >= 0 && row_begin + rows <= in.num_q && scores && ld >= in.num_k,
      "score_prefill: bad row range or ld");
  HISA_CHECK(path == Path::Scores || path == Path::Simt,
             "score_prefill: path must be Scores or Simt");
  HISA_CHECK(path == Path::Simt || fused_applies(in),
             "score_prefill: the Scores path needs fp8/bf16, ",
             "D = 128, H in {32, 64}, aligned pointers and an sm_90 device");
  if (rows == 0 || in.num_k == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int32_t* spans = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(in.num_q) * 8));
  smxx_row_spans_kernel<<<unsigned(ceil_div(in.num_q, 256)), 256, 0, st>>>(
      in.num_seqs, in.cu_seqlens_q, in.cu_seqlens_k, in.ks, in.ke, in.num_q, spans,
      spans + in.num_q);
  HISA_CUDA_CHECK(cudaGetLastError());
  prefill_scores(in, spans, spans + in.num_q, row_begin, rows, scores, ld, path, st);
}

void select_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                    Workspace& ws, void* stream, const Options& opt) {
  host_checks(in, cfg, out);
  if (in.num_q == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int k = cfg.topk;
  if (opt.validate || opt.check_values) device_checks(in, ws, st, opt.check_values);
  if (in.num_k == 0) {  // every row sees nothing
    HISA_CUDA_CHECK(cudaMemsetAsync(out.indices, 0xFF, size_t(in.num_q) * k * 4, st));
    return;
  }
  int32_t* spans = static_cast<int32_t*>(ws.get(kSlotSpans, size_t(in.num_q) * 8));
  int32_t* row_ks = spans;
  int32_t* row_ke = spans + in.num_q;
  smxx_row_spans_kernel<<<unsigned(ceil_div(in.num_q, 256)), 256, 0, st>>>(
      in.num_seqs, in.cu_seqlens_q, in.cu_seqlens_k, in.ks, in.ke, in.num_q, row_ks, row_ke);
  HISA_CUDA_CHECK(cudaGetLastError());
  const Path path = resolve(opt.path, fused_applies(in), k, false, "prefill");
  if (path == Path::Fused) {
    prefill_fused(in, k, out.indices, row_ks, row_ke, ws, st, opt);
  } else {
    prefill_chunks(in, k, out.indices, row_ks, row_ke, ws, st, path, opt.max_chunk_bytes);
  }
}

void select_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out,
                   Workspace& ws, void* stream, const Options& opt) {
  host_checks(in, cfg, out);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (opt.validate || opt.check_values) device_checks(in, ws, st, opt.check_values);
  const Path path = resolve(opt.path, fused_applies(in), cfg.topk, true, "decode");
  if (path == Path::Fused) {
    decode_fused(in, cfg.topk, out.indices, ws, st, opt);
  } else {
    decode_simt(in, cfg.topk, out.indices, ws, st, opt.max_chunk_bytes);
  }
}

void topk_rows(const float* scores, int64_t rows, int64_t ld, const int32_t* row_len, int64_t len,
               int k, int32_t* out, void* stream) {
  HISA_CHECK(k >= 1 && k <= 65536, "topk_rows: k must be in [1, 65536], got ", k);
  HISA_CHECK(rows >= 0 && ld >= 0 && len >= 0 && (row_len || len <= ld),
             "topk_rows: bad shape (rows ", rows, ", ld ", ld, ", len ", len, ")");
  HISA_CHECK(rows == 0 || (scores && out), "topk_rows: scores and out must be given");
  ScoreRows src;
  src.scores = scores;
  src.ld = ld;
  src.lens = row_len;
  src.len = len;
  launch_topk_rows(src, rows, k, out, 0, static_cast<cudaStream_t>(stream));
}

}  // namespace hisa::cuda
