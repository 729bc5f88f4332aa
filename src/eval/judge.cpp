// Judging an output row against the float64 reference (SEMANTICS.md section 7).
#include "hisa/judge.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace hisa {
namespace {

double row_eps(const std::vector<double>& r, double rel) {
  double mx = 0;
  for (double v : r)
    if (std::isfinite(v)) mx = std::max(mx, std::fabs(v));
  return rel * mx;
}

// Checks the valid-prefix form of one output row; returns the valid entries (sorted) or an error.
std::string read_row(const int32_t* row, int width, size_t expect, const std::set<int32_t>& allowed,
                     const char* what, std::vector<int32_t>* valid) {
  std::ostringstream err;
  size_t n = 0;
  while (n < size_t(width) && row[n] != -1) ++n;
  for (size_t i = n; i < size_t(width); ++i) {
    if (row[i] != -1) {
      err << what << ": entry " << i << " = " << row[i] << " follows -1 padding";
      return err.str();
    }
  }
  if (n != expect) {
    err << what << ": " << n << " valid entries, expected " << expect;
    return err.str();
  }
  valid->assign(row, row + n);
  std::sort(valid->begin(), valid->end());
  for (size_t i = 0; i < n; ++i) {
    if (i && (*valid)[i] == (*valid)[i - 1]) {
      err << what << ": duplicate entry " << (*valid)[i];
      return err.str();
    }
    if (!allowed.count((*valid)[i])) {
      err << what << ": entry " << (*valid)[i] << " is not in the candidate set";
      return err.str();
    }
  }
  return "";
}

// min over chosen >= max over the rest - eps; or, exact, the same set as the reference.
std::string judge_topk(const std::vector<double>& score, const std::vector<int32_t>& cand,
                       const std::vector<int32_t>& chosen, const std::vector<int32_t>& ref, double eps,
                       bool exact, const char* what) {
  std::ostringstream err;
  if (exact) {
    if (chosen != ref) {
      std::vector<int32_t> extra, missing;
      std::set_difference(chosen.begin(), chosen.end(), ref.begin(), ref.end(), std::back_inserter(extra));
      std::set_difference(ref.begin(), ref.end(), chosen.begin(), chosen.end(), std::back_inserter(missing));
      err << what << ": exact case differs from the reference: " << extra.size() << " extra (first "
          << (extra.empty() ? -1 : extra[0]) << "), " << missing.size() << " missing (first "
          << (missing.empty() ? -1 : missing[0]) << ")";
      return err.str();
    }
    return "";
  }
  const std::set<int32_t> in(chosen.begin(), chosen.end());
  double min_in = INFINITY, max_out = -INFINITY;
  int32_t arg_in = -1, arg_out = -1;
  for (int32_t c : cand) {
    const double s = score[size_t(c)];
    if (in.count(c)) {
      if (s < min_in) min_in = s, arg_in = c;
    } else if (s > max_out) {
      max_out = s, arg_out = c;
    }
  }
  if (arg_in >= 0 && arg_out >= 0 && min_in < max_out - eps) {
    err.precision(12);
    err << what << ": selected " << arg_in << " scores " << min_in << " but unselected " << arg_out << " scores "
        << max_out << " (eps " << eps << ")";
    return err.str();
  }
  return "";
}

}  // namespace

double judge_rel_eps(DType dtype) { return dtype == DType::F32 ? 1e-5 : 1e-3; }

std::string judge_row(const reference::Row& row, const SelectConfig& cfg, const int32_t* indices,
                      const int32_t* blocks, double rel_eps, bool exact, PooledRounding rounding) {
  std::vector<int32_t> chosen_blocks;
  if (cfg.method != Method::Flat) {
    if (!blocks) return "judge_row: hisa/block outputs need their chosen blocks";
    const std::vector<int32_t> ref_blocks = reference::choose_blocks(row, cfg, rounding);
    const int64_t J = (row.visible + cfg.block_size - 1) / cfg.block_size;
    std::set<int32_t> eligible;
    for (int64_t j = 0; j < J; ++j) eligible.insert(int32_t(j));
    std::string e = read_row(blocks, cfg.top_blocks, ref_blocks.size(), eligible, "blocks", &chosen_blocks);
    if (!e.empty()) return e;
    if (row.has_given) {
      // Given blocks (cross-layer reuse): repeated exactly, in order.
      if (chosen_blocks != row.given) return "blocks: the output differs from the given blocks";
    } else if (J > cfg.top_blocks) {
      // Forced blocks must be there; the others are judged on the block scores.
      std::set<int32_t> have(chosen_blocks.begin(), chosen_blocks.end());
      for (int j = 0; j < cfg.sink_blocks; ++j)
        if (!have.count(j)) return "blocks: sink block " + std::to_string(j) + " missing";
      for (int64_t j = J - cfg.local_blocks; j < J; ++j)
        if (!have.count(int32_t(j))) return "blocks: local block " + std::to_string(j) + " missing";
      const std::vector<double> bs = reference::block_scores(row, cfg.block_size, cfg.pooling, rounding);
      std::vector<int32_t> free_cand, free_chosen, free_ref;
      for (int64_t j = cfg.sink_blocks; j < J - cfg.local_blocks; ++j) free_cand.push_back(int32_t(j));
      for (int32_t j : chosen_blocks)
        if (j >= cfg.sink_blocks && j < J - cfg.local_blocks) free_chosen.push_back(j);
      for (int32_t j : ref_blocks)
        if (j >= cfg.sink_blocks && j < J - cfg.local_blocks) free_ref.push_back(j);
      e = judge_topk(bs, free_cand, free_chosen, free_ref, row_eps(bs, rel_eps), exact, "blocks");
      if (!e.empty()) return e;
    }
  }
  const std::vector<int32_t> cand = reference::candidates(row, cfg, chosen_blocks);
  const std::set<int32_t> cand_set(cand.begin(), cand.end());
  const size_t n = cfg.method == Method::Block ? cand.size() : std::min(size_t(cfg.topk), cand.size());
  std::vector<int32_t> chosen;
  std::string e = read_row(indices, cfg.out_width(), n, cand_set, "indices", &chosen);
  if (!e.empty() || cfg.method == Method::Block) return e;
  const std::vector<double> score = reference::token_scores(row);
  const std::vector<int32_t> ref = reference::select_topk(score, cand, cfg.topk);
  return judge_topk(score, cand, chosen, ref, row_eps(score, rel_eps), exact, "indices");
}

}  // namespace hisa
