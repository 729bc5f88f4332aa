// hisa: the one backend interface. The reference, the fast CPU backend and the CUDA backend all
// implement it, so a test, the command line and a benchmark pick a backend with one string.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "hisa/config.hpp"
#include "hisa/params.hpp"

namespace hisa {

class Indexer {
 public:
  virtual ~Indexer() = default;
  // "reference", "cpu" or "cuda".
  virtual std::string name() const = 0;

  // Ragged prefill: fills out.indices [T, cfg.out_width()] and, when non-null and cfg.has_blocks(),
  // out.blocks [T, cfg.top_blocks]. Host pointers. Throws hisa::Error on bad input.
  virtual void select_prefill(const PrefillInputs& in, const SelectConfig& cfg,
                              const SelectOutputs& out) = 0;

  // Paged decode: rows are N * next_n, in request-major order. Host pointers.
  virtual void select_decode(const DecodeInputs& in, const SelectConfig& cfg,
                             const SelectOutputs& out) = 0;
};

// "reference" (float64 oracle), "cpu" (fast, OpenMP), "cuda", or "auto" (cuda when a device is
// present, else cpu). Throws hisa::Error for an unknown name or for cuda without a device/build.
std::unique_ptr<Indexer> make_indexer(const std::string& device);

// True when this build has the CUDA backend and a CUDA device is visible.
bool cuda_available();
// Names accepted by make_indexer in this build ("reference", "cpu" and, if built, "cuda").
std::vector<std::string> backend_names();

}  // namespace hisa
