// The CUDA backend behind the host-pointer Indexer interface: validates on the host (the same
// checks as the CPU backends), stages the inputs on the device, runs the device API, copies the
// indices back. Staging buffers are kept between calls.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends.hpp"
#include "cuda/common.hpp"
#include "hisa/cuda.hpp"
#include "hisa/error.hpp"
#include "hisa/validate.hpp"

namespace hisa {
namespace {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* reserve(size_t bytes) {
    if (bytes > bytes_) {
      if (ptr_) HISA_CUDA_CHECK(cudaFree(ptr_));
      ptr_ = nullptr;
      bytes_ = 0;
      HISA_CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(bytes, 256)));
      bytes_ = std::max<size_t>(bytes, 256);
    }
    return ptr_;
  }
  // Copies n bytes of host data in (nullptr stays nullptr).
  template <typename T>
  const T* upload(const T* host, size_t count, cudaStream_t st) {
    if (!host) return nullptr;
    void* d = reserve(count * sizeof(T));
    if (count)
      HISA_CUDA_CHECK(cudaMemcpyAsync(d, host, count * sizeof(T), cudaMemcpyHostToDevice, st));
    return static_cast<const T*>(d);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class CudaIndexer final : public Indexer {
 public:
  CudaIndexer() { HISA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~CudaIndexer() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda"; }

  void select_prefill(const PrefillInputs& in, const SelectConfig& cfg,
                      const SelectOutputs& out) override {
    check_method(cfg);
    validate_prefill(in, cfg, true);
    if (in.num_q == 0) return;  // an empty batch: nothing to write
    HISA_CHECK(out.indices, "select: out.indices must be given");
    const size_t esz = dtype_size(in.dtype);
    const int64_t T = in.num_q, S = in.num_k;
    PrefillInputs d = in;
    d.q = buf_[0].upload(static_cast<const uint8_t*>(in.q),
                         size_t(T) * in.num_heads * in.head_dim * esz, stream_);
    d.k = buf_[1].upload(static_cast<const uint8_t*>(in.k), size_t(S) * in.head_dim * esz, stream_);
    d.k_scale = buf_[2].upload(in.k_scale, size_t(S), stream_);
    d.w = buf_[3].upload(in.w, size_t(T) * in.num_heads, stream_);
    const size_t nseq = in.cu_seqlens_q ? size_t(in.num_seqs) + 1 : 0;
    d.cu_seqlens_q = buf_[4].upload(in.cu_seqlens_q, nseq, stream_);
    d.cu_seqlens_k = buf_[5].upload(in.cu_seqlens_k, nseq, stream_);
    d.ks = buf_[6].upload(in.ks, in.ks ? size_t(T) : 0, stream_);
    d.ke = buf_[7].upload(in.ke, in.ke ? size_t(T) : 0, stream_);
    SelectOutputs dout;
    const size_t out_bytes = size_t(T) * cfg.topk * 4;
    dout.indices = static_cast<int32_t*>(buf_[8].reserve(out_bytes));
    cuda::Options opt;
    opt.validate = false;  // validated on the host above
    cuda::select_prefill(d, cfg, dout, ws_, stream_, opt);
    HISA_CUDA_CHECK(
        cudaMemcpyAsync(out.indices, dout.indices, out_bytes, cudaMemcpyDeviceToHost, stream_));
    HISA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void select_decode(const DecodeInputs& in, const SelectConfig& cfg,
                     const SelectOutputs& out) override {
    check_method(cfg);
    validate_decode(in, cfg, true);
    HISA_CHECK(out.indices, "select: out.indices must be given");
    const int64_t rows = int64_t(in.batch) * in.next_n;
    const size_t qsz = dtype_size(in.q_dtype);
    DecodeInputs d = in;
    d.q = buf_[0].upload(static_cast<const uint8_t*>(in.q),
                         size_t(rows) * in.num_heads * in.head_dim * qsz, stream_);
    d.w = buf_[3].upload(in.w, size_t(rows) * in.num_heads, stream_);
    d.kv_cache = buf_[1].upload(
        in.kv_cache, size_t(in.num_pages) * page_bytes(in.page_size, in.head_dim), stream_);
    d.block_table = buf_[4].upload(in.block_table, size_t(in.batch) * in.max_pages, stream_);
    d.seq_lens = buf_[5].upload(in.seq_lens, size_t(in.batch), stream_);
    d.pooled = nullptr;
    SelectOutputs dout;
    const size_t out_bytes = size_t(rows) * cfg.topk * 4;
    dout.indices = static_cast<int32_t*>(buf_[8].reserve(out_bytes));
    cuda::Options opt;
    opt.validate = false;
    cuda::select_decode(d, cfg, dout, ws_, stream_, opt);
    HISA_CUDA_CHECK(
        cudaMemcpyAsync(out.indices, dout.indices, out_bytes, cudaMemcpyDeviceToHost, stream_));
    HISA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  static void check_method(const SelectConfig& cfg) {
    HISA_CHECK(cfg.method == Method::Flat, "cuda backend: method '", method_name(cfg.method),
               "' is not implemented on CUDA yet; use --device cpu");
  }

  cudaStream_t stream_ = nullptr;
  cuda::Workspace ws_;
  DeviceBuffer buf_[9];
};

}  // namespace

bool cuda_device_present() { return cuda::device_present(); }

std::unique_ptr<Indexer> make_cuda_indexer() {
  HISA_CHECK(
      cuda::device_present(),
      "device 'cuda': no CUDA device is visible (use --device cpu, or run on a GPU machine)");
  return std::make_unique<CudaIndexer>();
}

}  // namespace hisa
