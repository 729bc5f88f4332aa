// The CUDA backend behind the host-pointer Indexer interface: validates on the host (the same
// checks as the CPU backends), stages the inputs on the device, runs the device API, copies the
// indices (and chosen blocks) back. Staging buffers are kept between calls.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends.hpp"
#include "cuda/common.hpp"
#include "cuda/device_buffer.hpp"
#include "hisa/cuda.hpp"
#include "hisa/error.hpp"
#include "hisa/validate.hpp"

namespace hisa {
namespace {

using cuda::DeviceBuffer;

class CudaIndexer final : public Indexer {
 public:
  CudaIndexer() { HISA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~CudaIndexer() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda"; }

  void select_prefill(const PrefillInputs& in, const SelectConfig& cfg,
                      const SelectOutputs& out) override {
    validate_prefill(in, cfg, true);
    if (in.num_q == 0) return;  // an empty batch: nothing to write
    HISA_CHECK(out.indices, "select_prefill: out.indices must be given");
    const size_t esz = dtype_size(in.dtype);
    const int64_t T = in.num_q, S = in.num_k;
    const auto* q = static_cast<const uint8_t*>(in.q);
    const auto* k = static_cast<const uint8_t*>(in.k);
    PrefillInputs d = in;
    d.q = q_.upload(q, size_t(T) * in.num_heads * in.head_dim * esz, stream_);
    d.k = k_.upload(k, size_t(S) * in.head_dim * esz, stream_);
    d.k_scale = k_scale_.upload(in.k_scale, size_t(S), stream_);
    d.w = w_.upload(in.w, size_t(T) * in.num_heads, stream_);
    const size_t nseq = in.cu_seqlens_q ? size_t(in.num_seqs) + 1 : 0;
    d.cu_seqlens_q = index_[0].upload(in.cu_seqlens_q, nseq, stream_);
    d.cu_seqlens_k = index_[1].upload(in.cu_seqlens_k, nseq, stream_);
    d.ks = index_[2].upload(in.ks, in.ks ? size_t(T) : 0, stream_);
    d.ke = index_[3].upload(in.ke, in.ke ? size_t(T) : 0, stream_);
    d.given_blocks = given_.upload(in.given_blocks,
                                   in.given_blocks ? size_t(T) * cfg.top_blocks : 0, stream_);
    SelectOutputs dout;
    const size_t out_count = size_t(T) * cfg.out_width();
    dout.indices = indices_.reserve(out_count);
    const bool blocks = out.blocks && cfg.has_blocks();
    const size_t block_count = size_t(T) * cfg.top_blocks;
    if (blocks) dout.blocks = blocks_.reserve(block_count);
    cuda::Options opt;
    opt.validate = false;  // validated on the host above
    cuda::select_prefill(d, cfg, dout, ws_, stream_, opt);
    HISA_CUDA_CHECK(
        cudaMemcpyAsync(out.indices, dout.indices, out_count * 4, cudaMemcpyDeviceToHost, stream_));
    if (blocks)
      HISA_CUDA_CHECK(cudaMemcpyAsync(out.blocks, dout.blocks, block_count * 4,
                                      cudaMemcpyDeviceToHost, stream_));
    HISA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void select_decode(const DecodeInputs& in, const SelectConfig& cfg,
                     const SelectOutputs& out) override {
    validate_decode(in, cfg, true);
    HISA_CHECK(out.indices, "select_decode: out.indices must be given");
    const int64_t rows = int64_t(in.batch) * in.next_n;
    const size_t qsz = dtype_size(in.q_dtype);
    DecodeInputs d = in;
    d.q = q_.upload(static_cast<const uint8_t*>(in.q),
                    size_t(rows) * in.num_heads * in.head_dim * qsz, stream_);
    d.w = w_.upload(in.w, size_t(rows) * in.num_heads, stream_);
    d.kv_cache = k_.upload(in.kv_cache,
                           size_t(in.num_pages) * page_bytes(in.page_size, in.head_dim), stream_);
    d.block_table = index_[0].upload(in.block_table, size_t(in.batch) * in.max_pages, stream_);
    d.seq_lens = index_[1].upload(in.seq_lens, size_t(in.batch), stream_);
    d.pooled = nullptr;  // (the device pools from the cache itself, below)
    d.given_blocks = given_.upload(in.given_blocks,
                                   in.given_blocks ? size_t(rows) * cfg.top_blocks : 0, stream_);
    SelectOutputs dout;
    const size_t out_count = size_t(rows) * cfg.out_width();
    dout.indices = indices_.reserve(out_count);
    const size_t block_count = size_t(rows) * cfg.top_blocks;
    const bool blocks = out.blocks && cfg.has_blocks();
    if (blocks) dout.blocks = blocks_.reserve(block_count);
    cuda::Options opt;
    opt.validate = false;
    cuda::PooledCache pc;
    if (cfg.has_blocks() && !in.given_blocks) {
      // Every complete block pooled from the staged cache, as an engine's update calls keep it.
      pc.batch = in.batch;
      pc.block_size = cfg.block_size;
      pc.max_blocks =
          int((int64_t(in.max_pages) * in.page_size + cfg.block_size - 1) / cfg.block_size);
      pc.keys = pooled_keys_.reserve(size_t(pc.batch) * pc.max_blocks * 128);
      pc.scales = pooled_scales_.reserve(size_t(pc.batch) * pc.max_blocks);
      cuda::update_pooled_cache(d, nullptr, d.seq_lens, pc, stream_);
    }
    cuda::select_decode(d, cfg, dout, ws_, stream_, opt,
                        cfg.has_blocks() && !in.given_blocks ? &pc : nullptr);
    HISA_CUDA_CHECK(
        cudaMemcpyAsync(out.indices, dout.indices, out_count * 4, cudaMemcpyDeviceToHost, stream_));
    if (blocks)
      HISA_CUDA_CHECK(cudaMemcpyAsync(out.blocks, dout.blocks, block_count * 4,
                                      cudaMemcpyDeviceToHost, stream_));
    HISA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  cudaStream_t stream_ = nullptr;
  cuda::Workspace ws_;
  // Staging buffers, kept between calls.
  DeviceBuffer<uint8_t> q_, k_;
  DeviceBuffer<float> k_scale_, w_;
  DeviceBuffer<int32_t> index_[4], given_, indices_, blocks_;
  DeviceBuffer<uint8_t> pooled_keys_;
  DeviceBuffer<float> pooled_scales_;
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
