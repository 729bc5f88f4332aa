// Shared-memory probe for the slim prefill kernel's math loop (sm_90a): how the wgmma operand
// reads, the epilogue's weight loads and other warps' shared-memory traffic share one SM.
//
// One CTA of 640 threads per SM, the slim kernel's shape: three math warpgroups (one m64n128k32
// fp8 wgmma batch of four k-steps per "stage", both operands in shared memory, 128-byte swizzle)
// and 256 other threads. Each mode times `iters` stages per warpgroup with clock64 and prints
// cycles per stage (all three warpgroups: 768 cycles is the tensor-core bound at 8192 fp8
// FLOP/clk/SM) and, for the load-only modes, shared-memory instructions per cycle per SM.
//
//   hisa_smem_probe [--iters N] [--json FILE]
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels/sm90_ptx.cuh"
#include "cuda/kernels/sm90_wgmma.cuh"

namespace {
using namespace hisa::cuda::sm90;

// Modes (math warpgroups | other 256 threads):
enum Mode : int {
  kMmaOnly = 0,      // wgmma batch, wait, nothing else | idle
  kMmaEpiLds = 1,    // + the production epilogue: 8 LDS.128 of w (4 lane classes), 64 FMNMX+FFMA | idle
  kMmaEpiReg = 2,    // + the same epilogue with w in registers (loaded once; no LDS) | idle
  kMmaEpiLdsBusy = 3,  // as 1 | the other threads issue broadcast LDS.128 until the math ends
  kMmaOnlyBusy = 4,  // as 0 | the other threads issue broadcast LDS.128
  kLdsBcast = 5,     // no wgmma: every thread issues LDS.128, 4 distinct 16-byte addresses per warp
  kLdsDistinct = 6,  // no wgmma: LDS.128, 32 distinct contiguous addresses per warp (512 bytes)
  kLds32 = 7,        // no wgmma: LDS.32, 32 distinct contiguous addresses
  kMma64x2Reg = 8,   // two N = 64 wgmma batches per stage, each drained and reduced with w in
                     // registers (16 per bank) | idle
  kNumModes = 9
};
const char* kModeNames[kNumModes] = {
    "mma only (3 WG, N=128)",
    "mma + epilogue, w by 8 LDS.128",
    "mma + epilogue, w in registers",
    "mma + epilogue (LDS w) + 8 warps of LDS.128",
    "mma only + 8 warps of LDS.128",
    "LDS.128, 4 addresses per warp (640 thr)",
    "LDS.128, 32 addresses per warp (640 thr)",
    "LDS.32, 32 addresses per warp (640 thr)",
    "2 x N=64 mma, each drained, w in registers",
};

constexpr int kThreads = 640;
constexpr int kOffA = 0;                       // 3 x [64 x 128 B] key tiles
constexpr int kOffB = kOffA + 3 * 64 * 128;    // [128 x 128 B] q tile
constexpr int kOffW = kOffB + 128 * 128;       // w: 4 classes x 36 floats
constexpr int kOffL = kOffW + 4 * 36 * 4;      // 8 KB of load targets
constexpr int kOffFlag = kOffL + 8192;
constexpr int kSmem = kOffFlag + 16 + 1024;

template <int kMode>
__global__ void __launch_bounds__(kThreads, 1)
    probe_kernel(int iters, float* sink, unsigned long long* cycles, unsigned long long* ops) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  for (int i = threadIdx.x; i < kOffFlag / 4; i += blockDim.x)
    reinterpret_cast<uint32_t*>(smem)[i] = i < kOffW / 4 ? 0x30303030u : 0x3F800000u;  // 0.5 / 1.0
  volatile int* done = reinterpret_cast<volatile int*>(smem + kOffFlag);
  if (threadIdx.x == 0) *done = 0;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  constexpr bool kMma = kMode <= kMmaOnlyBusy || kMode == kMma64x2Reg;
  const long long t0 = clock64();
  float keep = 0.0f;
  unsigned long long my_ops = 0;
  if (kMma && threadIdx.x < 384) {
    const int g = __shfl_sync(0xFFFFFFFFu, int(threadIdx.x / 128), 0);
    const uint64_t da0 = desc_k_major_sw128(smem + kOffA + g * 64 * 128);
    const uint64_t db0 = desc_k_major_sw128(smem + kOffB);
    const float* wr = reinterpret_cast<const float*>(smem + kOffW) + (lane % 4) * 36;
    float wreg[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) wreg[i] = wr[i] + float(i) * 1e-3f;
    if constexpr (kMode == kMma64x2Reg) {
      float acc[32];
      for (int it = 0; it < iters; ++it) {
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma unroll
        for (int b = 0; b < 2; ++b) {
#pragma unroll
          for (int i = 0; i < 32; ++i) fence_operand(acc[i]);
          wgmma_fence();
#pragma unroll
          for (int k = 0; k < 4; ++k)
            Wgmma<Fp8, 64>::mma(da0 + uint32_t(k * 32) / 16,
                                db0 + uint32_t(b * 64 * 128 + k * 32) / 16, acc, k > 0);
          wgmma_commit();
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < 32; ++i) fence_operand(acc[i]);
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            s0 = fmaf(wreg[16 * b + 2 * j], fmaxf(acc[4 * j + 0], 0.0f), s0);
            s1 = fmaf(wreg[16 * b + 2 * j + 1], fmaxf(acc[4 * j + 1], 0.0f), s1);
            s2 = fmaf(wreg[16 * b + 2 * j], fmaxf(acc[4 * j + 2], 0.0f), s2);
            s3 = fmaf(wreg[16 * b + 2 * j + 1], fmaxf(acc[4 * j + 3], 0.0f), s3);
          }
        }
        keep += (s0 + s1) + (s2 + s3);
      }
    } else {
      float acc[64];
      for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int i = 0; i < 64; ++i) fence_operand(acc[i]);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k)
          Wgmma<Fp8, 128>::mma(da0 + uint32_t(k * 32) / 16, db0 + uint32_t(k * 32) / 16, acc,
                               k > 0);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 64; ++i) fence_operand(acc[i]);
        if constexpr (kMode == kMmaEpiLds || kMode == kMmaEpiReg || kMode == kMmaEpiLdsBusy) {
          float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int m = 0; m < 8; ++m) {
            float4 wv;
            if constexpr (kMode == kMmaEpiReg) {
              // (16 registers reused for both queries: 32 spill at the 96-register bound; the
              // instruction count is that of a 32-register w)
              wv = make_float4(wreg[4 * m % 16], wreg[4 * m % 16 + 1], wreg[4 * m % 16 + 2],
                               wreg[4 * m % 16 + 3]);
            } else {
              wv = *reinterpret_cast<const float4*>(wr + 4 * m);
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int j = 2 * m + h, q = j / 8;
              const float wx = h ? wv.z : wv.x, wy = h ? wv.w : wv.y;
              s[2 * q] = fmaf(wx, fmaxf(acc[4 * j + 0], 0.0f), s[2 * q]);
              a[2 * q] = fmaf(wy, fmaxf(acc[4 * j + 1], 0.0f), a[2 * q]);
              s[2 * q + 1] = fmaf(wx, fmaxf(acc[4 * j + 2], 0.0f), s[2 * q + 1]);
              a[2 * q + 1] = fmaf(wy, fmaxf(acc[4 * j + 3], 0.0f), a[2 * q + 1]);
            }
          }
          keep += (s[0] + a[0]) + (s[1] + a[1]) + (s[2] + a[2]) + (s[3] + a[3]);
        } else {
          keep += acc[0] + acc[63];
        }
      }
    }
    named_barrier(1, 384);
    if (threadIdx.x == 0) *done = 1;
    my_ops = iters;
  } else if (kMma) {
    if constexpr (kMode == kMmaEpiLdsBusy || kMode == kMmaOnlyBusy) {
      const float4* src = reinterpret_cast<const float4*>(smem + kOffL) + (lane % 4) * 9;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      while (!*done) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          // (the index moves with the loop count, so the loads cannot be hoisted out of it:
          // run 53's numbers for modes 3 and 4 came from a loop-invariant index)
          const float4 v = src[(i * 36 + int(my_ops)) % 480];
          x.x += v.x, x.y += v.y, x.z += v.z, x.w += v.w;
        }
        my_ops += 16;
      }
      keep = x.x + x.y + x.z + x.w;
    }
  } else {
    // Load-only modes: every thread, `iters` x 16 loads.
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    const int warp = threadIdx.x / 32;
    for (int it = 0; it < iters; ++it) {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int base = ((it * 16 + i) * 7 + warp) % 14;  // 512-byte blocks in 8 KB
        if constexpr (kMode == kLdsBcast) {
          const float4 v = reinterpret_cast<const float4*>(smem + kOffL + base * 512)[(lane % 4) * 9 % 32];
          x.x += v.x, x.y += v.y, x.z += v.z, x.w += v.w;
        } else if constexpr (kMode == kLdsDistinct) {
          const float4 v = reinterpret_cast<const float4*>(smem + kOffL + base * 512)[lane];
          x.x += v.x, x.y += v.y, x.z += v.z, x.w += v.w;
        } else {
          x.x += reinterpret_cast<const float*>(smem + kOffL + base * 512)[lane];
        }
      }
    }
    keep = x.x + x.y + x.z + x.w;
    my_ops = uint64_t(iters) * 16;
  }
  const long long t1 = clock64();
  __syncthreads();
  if (keep == 12345.0f) sink[blockIdx.x] = keep;  // never true; keeps the work alive
  if (threadIdx.x == 0) cycles[blockIdx.x] = (unsigned long long)(t1 - t0);
  if (lane == 0) atomicAdd(ops + blockIdx.x, my_ops);
}

template <int kMode>
void run_mode(int iters, int sms, float* sink, unsigned long long* d_cyc, unsigned long long* d_ops,
              double* cyc_out, double* ops_out) {
  cudaFuncSetAttribute(probe_kernel<kMode>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  cudaMemset(d_ops, 0, sms * sizeof(unsigned long long));
  probe_kernel<kMode><<<sms, kThreads, kSmem>>>(iters / 10, sink, d_cyc, d_ops);  // warm-up
  cudaMemset(d_ops, 0, sms * sizeof(unsigned long long));
  probe_kernel<kMode><<<sms, kThreads, kSmem>>>(iters, sink, d_cyc, d_ops);
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "mode %d: %s\n", kMode, cudaGetErrorString(e));
    std::exit(1);
  }
  std::vector<unsigned long long> c(sms), o(sms);
  cudaMemcpy(c.data(), d_cyc, sms * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(o.data(), d_ops, sms * 8, cudaMemcpyDeviceToHost);
  double cs = 0, os = 0;
  for (int i = 0; i < sms; ++i) cs += double(c[i]), os += double(o[i]);
  *cyc_out = cs / sms;
  *ops_out = os / sms;  // per SM: warp-level stages (math) or warp instructions (loads)
}
}  // namespace

int main(int argc, char** argv) {
  int iters = 20000;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else {
      std::fprintf(stderr, "usage: hisa_smem_probe [--iters N] [--json FILE]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9) {
    std::fprintf(stderr, "hisa_smem_probe: needs an sm_90 GPU\n");
    return 1;
  }
  const int sms = prop.multiProcessorCount;
  float* sink;
  unsigned long long *d_cyc, *d_ops;
  cudaMalloc(&sink, sms * 4);
  cudaMalloc(&d_cyc, sms * 8);
  cudaMalloc(&d_ops, sms * 8);
  std::printf("device: %s (%d SMs), %d stages per math warpgroup\n", prop.name, sms, iters);
  double cyc[kNumModes], ops[kNumModes];
  run_mode<0>(iters, sms, sink, d_cyc, d_ops, &cyc[0], &ops[0]);
  run_mode<1>(iters, sms, sink, d_cyc, d_ops, &cyc[1], &ops[1]);
  run_mode<2>(iters, sms, sink, d_cyc, d_ops, &cyc[2], &ops[2]);
  run_mode<3>(iters, sms, sink, d_cyc, d_ops, &cyc[3], &ops[3]);
  run_mode<4>(iters, sms, sink, d_cyc, d_ops, &cyc[4], &ops[4]);
  run_mode<5>(iters / 4, sms, sink, d_cyc, d_ops, &cyc[5], &ops[5]);
  run_mode<6>(iters / 4, sms, sink, d_cyc, d_ops, &cyc[6], &ops[6]);
  run_mode<7>(iters / 4, sms, sink, d_cyc, d_ops, &cyc[7], &ops[7]);
  run_mode<8>(iters, sms, sink, d_cyc, d_ops, &cyc[8], &ops[8]);
  FILE* jf = json.empty() ? nullptr : std::fopen(json.c_str(), "w");
  if (jf) std::fprintf(jf, "{\"device\": \"%s\", \"iters\": %d, \"modes\": [\n", prop.name, iters);
  for (int m = 0; m < kNumModes; ++m) {
    const bool load_only = m >= kLdsBcast && m <= kLds32;
    // math modes: cycles per stage of all three warpgroups (ops = 384/32 warps x iters / 12).
    const double per_stage = load_only ? 0.0 : cyc[m] / iters;
    const double warp_ops = ops[m];  // summed per warp (lane 0 of each)
    const double per_cycle = load_only ? warp_ops / cyc[m] : 0.0;
    const double busy_ops = (m == kMmaEpiLdsBusy || m == kMmaOnlyBusy)
                                ? (warp_ops - 12.0 * iters) / cyc[m]
                                : 0.0;
    std::printf("%-46s %10.0f cycles", kModeNames[m], cyc[m]);
    if (load_only) std::printf("  %.3f warp loads/clk/SM\n", per_cycle);
    else {
      std::printf("  %7.1f cycles/stage (tensor bound 768: %4.0f%%)", per_stage,
                  100.0 * 768.0 / per_stage);
      if (busy_ops > 0) std::printf("  other warps %.3f LDS.128/clk", busy_ops);
      std::printf("\n");
    }
    if (jf)
      std::fprintf(jf,
                   "  {\"mode\": %d, \"name\": \"%s\", \"cycles\": %.0f, \"cycles_per_stage\": "
                   "%.2f, \"warp_loads_per_clk\": %.4f, \"other_lds_per_clk\": %.4f}%s\n",
                   m, kModeNames[m], cyc[m], per_stage, per_cycle, busy_ops,
                   m + 1 < kNumModes ? "," : "");
  }
  if (jf) std::fprintf(jf, "]}\n"), std::fclose(jf);
  return 0;
}
