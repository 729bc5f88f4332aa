// hisa: fidelity of one selection against another on the same inputs (SEMANTICS.md section 8).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hisa {

struct RowFidelity {
  double iou = 1;         // |A n B| / |A u B|
  double recall = 1;      // |A n B| / |B|   (B = the DSA selection)
  double mass_recall = 1; // softmax mass of A over that of B (softmax over the row's visible keys)
  bool can_differ = false;  // e > m * B
};

// a, b: one row each, valid entries then -1 (any order). scores: I(t, p) for p < e (float64 or the
// backend's fp32 scores, as given), used for the softmax mass.
RowFidelity row_fidelity(const int32_t* a, const int32_t* b, int width, const double* scores,
                         int64_t visible, int64_t budget_tokens);

struct FidelitySummary {
  int64_t rows = 0;
  double iou_mean = 1, iou_p1 = 1, iou_min = 1;
  double recall_mean = 1, recall_min = 1;
  double mass_mean = 1, mass_p1 = 1, mass_min = 1;
};
// Over the rows given (callers pass all rows and the rows with can_differ separately).
FidelitySummary summarize(const std::vector<RowFidelity>& rows);

}  // namespace hisa
