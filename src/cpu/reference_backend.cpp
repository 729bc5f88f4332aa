// The reference as an Indexer: float64, row by row (rows in parallel; each row is plain loops).
#include "backends.hpp"
#include "hisa/error.hpp"
#include "hisa/reference.hpp"
#include "hisa/validate.hpp"

namespace hisa {
namespace {

class ReferenceIndexer final : public Indexer {
 public:
  std::string name() const override { return "reference"; }

  void select_prefill(const PrefillInputs& in, const SelectConfig& cfg, const SelectOutputs& out) override {
    validate_prefill(in, cfg);
    run(reference::prefill_rows(in, cfg.top_blocks), cfg, out);
  }

  void select_decode(const DecodeInputs& in, const SelectConfig& cfg, const SelectOutputs& out) override {
    validate_decode(in, cfg);
    run(reference::decode_rows(in, cfg.top_blocks), cfg, out);
  }

 private:
  static void run(const std::vector<reference::Row>& rows, const SelectConfig& cfg,
                  const SelectOutputs& out) {
    const int64_t n = int64_t(rows.size());
    if (n == 0) return;  // an empty batch: nothing to write
    HISA_CHECK(out.indices, "select: out.indices must be given");
    const int width = cfg.out_width();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < n; ++t) {
      reference::select_row(rows[size_t(t)], cfg, out.indices + t * width,
                            (out.blocks && cfg.has_blocks()) ? out.blocks + t * cfg.top_blocks : nullptr);
    }
  }
};

}  // namespace

std::unique_ptr<Indexer> make_reference_indexer() { return std::make_unique<ReferenceIndexer>(); }

}  // namespace hisa
