// Fidelity of one selection against another (SEMANTICS.md section 8).
#include "hisa/fidelity.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "hisa/error.hpp"

namespace hisa {
namespace {

// The valid entries of one row (every entry != -1), sorted and distinct; each must be visible.
std::vector<int32_t> valid_set(const int32_t* row, int width, int64_t visible, const char* what) {
  std::vector<int32_t> v;
  for (int i = 0; i < width; ++i) {
    if (row[i] == -1) continue;
    HISA_CHECK(row[i] >= 0 && row[i] < visible, "row_fidelity: ", what, " entry ", i, " = ", row[i],
               " is outside the row's visible positions [0, ", visible, ")");
    v.push_back(row[i]);
  }
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// Nearest-rank percentile of sorted values: the ceil(q * n)-th smallest (1-based), at least the
// 1st.
double nearest_rank(const std::vector<double>& sorted, int percent) {
  const size_t n = sorted.size();
  const size_t rank = std::max<size_t>(1, (n * size_t(percent) + 99) / 100);
  return sorted[rank - 1];
}

}  // namespace

RowFidelity row_fidelity(const int32_t* a, const int32_t* b, int width, const double* scores,
                         int64_t visible, int64_t budget_tokens) {
  HISA_CHECK(width >= 0 && visible >= 0, "row_fidelity: negative width (", width, ") or visible (",
             visible, ")");
  const std::vector<int32_t> A = valid_set(a, width, visible, "a (hisa)");
  const std::vector<int32_t> B = valid_set(b, width, visible, "b (dsa)");
  std::vector<int32_t> common;
  std::set_intersection(A.begin(), A.end(), B.begin(), B.end(), std::back_inserter(common));
  const double inter = double(common.size());
  const double uni = double(A.size() + B.size()) - inter;

  RowFidelity f;
  f.can_differ = visible > budget_tokens;
  f.iou = uni > 0 ? inter / uni : 1.0;  // both empty: identical selections
  f.recall = B.empty() ? 1.0 : inter / double(B.size());
  if (!A.empty() || !B.empty()) {
    HISA_CHECK(scores != nullptr, "row_fidelity: scores are needed for the score-mass recall");
    // softmax(I) over the visible positions: its normaliser cancels in the ratio, so only the
    // shift matters, and shifting by the max over A u B (rather than over all visible positions)
    // keeps at least one term at exp(0) = 1, so the sums cannot both underflow. Sums in double.
    double mx = -INFINITY;
    for (const std::vector<int32_t>* set : {&A, &B})
      for (int32_t p : *set) {
        HISA_CHECK(std::isfinite(scores[p]), "row_fidelity: score of position ", p,
                   " is not finite");
        mx = std::max(mx, scores[p]);
      }
    auto mass = [&](const std::vector<int32_t>& set) {
      double s = 0;
      for (int32_t p : set) s += std::exp(scores[p] - mx);
      return s;
    };
    const double mass_b = mass(B);
    f.mass_recall = mass_b > 0 ? mass(A) / mass_b : (A.empty() ? 1.0 : INFINITY);
  }
  return f;
}

FidelitySummary summarize(const std::vector<RowFidelity>& rows) {
  FidelitySummary s;
  s.rows = int64_t(rows.size());
  if (rows.empty()) return s;
  std::vector<double> iou, recall, mass;
  for (const RowFidelity& r : rows) {
    iou.push_back(r.iou);
    recall.push_back(r.recall);
    mass.push_back(r.mass_recall);
  }
  auto mean = [](const std::vector<double>& v) {
    double t = 0;
    for (double x : v) t += x;
    return t / double(v.size());
  };
  s.iou_mean = mean(iou);
  s.recall_mean = mean(recall);
  s.mass_mean = mean(mass);
  std::sort(iou.begin(), iou.end());
  std::sort(recall.begin(), recall.end());
  std::sort(mass.begin(), mass.end());
  s.iou_p1 = nearest_rank(iou, 1);
  s.mass_p1 = nearest_rank(mass, 1);
  s.iou_min = iou.front();
  s.recall_min = recall.front();
  s.mass_min = mass.front();
  return s;
}

}  // namespace hisa
