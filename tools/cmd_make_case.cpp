// hisa make-case: a case file from a generated workload (docs/workloads.md): a prefill case, or
// with --decode a paged decode case, for `hisa select` and `hisa eval` (docs/case-files.md).
#include <cstdio>

#include "common.hpp"
#include "hisa/error.hpp"

namespace hisa::cli {
namespace {

struct MakeCaseArgs {
  std::string output;
  WorkloadArgs workload;
  bool decode = false;
  int batch = 2, next_n = 1;
  std::vector<int64_t> seq_lens;
  int pooled_block_size = 0;
  std::string pooling = "mean";
};

void run_make_case(const MakeCaseArgs& a) {
  check_writable(a.output, "--output");
  if (!a.decode) {
    const Case c = make_workload(to_spec(a.workload));
    save_case(a.output, c);
    const PrefillInputs in = c.inputs();
    std::fprintf(stderr, "hisa make-case: prefill %s T=%lld S=%lld H=%d %s seed=%llu -> %s\n",
                 a.workload.kind.c_str(), (long long)in.num_q, (long long)in.num_k, in.num_heads,
                 dtype_name(in.dtype).c_str(), (unsigned long long)a.workload.seed,
                 a.output.c_str());
    return;
  }
  std::vector<int64_t> lens = a.seq_lens;
  if (lens.empty()) {
    HISA_CHECK(a.batch >= 1, "--batch must be >= 1, got ", a.batch);
    HISA_CHECK(a.workload.context >= 1, "--context must be >= 1, got ", a.workload.context);
    lens.assign(size_t(a.batch), a.workload.context);
  }
  const WorkloadSpec spec = to_spec(a.workload);
  DecodeCase c = make_decode_workload(spec.kind, lens, a.next_n, spec.num_heads, 128, spec.dtype,
                                      spec.seed, spec.scale_rule);
  if (a.pooled_block_size != 0) {
    const int B = a.pooled_block_size;
    HISA_CHECK(B >= 64 && B <= 256 && (B & (B - 1)) == 0,
               "--pooled-block-size must be 0 (none) or a block size B of the selection: a power "
               "of two in [64, 256], got ",
               B);
    c.pool(a.pooled_block_size, pooling_from_name(a.pooling));
  }
  save_decode_case(a.output, c);
  const DecodeInputs in = c.inputs();
  std::string pooled = "no pooled keys";
  if (in.pooled)
    pooled = "pooled keys B=" + std::to_string(c.pooled_block_size) + " " + pooling_name(c.pooling);
  std::fprintf(
      stderr,
      "hisa make-case: decode %s seq_lens=%s next_n=%d H=%d q %s, %d shuffled pages of %d, "
      "%s, seed=%llu -> %s\n",
      a.workload.kind.c_str(), c.metadata.at("seq_lens").c_str(), in.next_n, in.num_heads,
      dtype_name(in.q_dtype).c_str(), in.num_pages, in.page_size, pooled.c_str(),
      (unsigned long long)a.workload.seed, a.output.c_str());
}

}  // namespace

void add_make_case_command(CLI::App& app) {
  auto args = std::make_shared<MakeCaseArgs>();
  CLI::App* cmd = app.add_subcommand(
      "make-case",
      "Write a case file from a generated workload: a prefill case (the last --queries tokens "
      "of a --context-token sequence), or with --decode a paged decode case (requests of "
      "--seq-lens tokens, or --batch requests of --context tokens, next_n queries each, pages in "
      "shuffled order, optional pooled keys). docs/case-files.md describes the format.");
  cmd->add_option("--output,-o", args->output, "case file to write (.safetensors)")->required();
  add_workload_options(*cmd, args->workload);
  CLI::Option* decode = cmd->add_flag("--decode", args->decode, "write a paged decode case");
  cmd->get_option("--queries")->excludes(decode);
  CLI::Option* lens = cmd->add_option("--seq-lens", args->seq_lens,
                                      "decode: tokens in each request's cache (comma separated)")
                          ->delimiter(',')
                          ->needs(decode);
  lens->excludes(cmd->get_option("--context"));
  cmd->add_option("--batch", args->batch, "decode: requests of --context tokens each")
      ->needs(decode)
      ->excludes(lens)
      ->capture_default_str();
  cmd->add_option("--next-n", args->next_n, "decode: query tokens per request (1..4)")
      ->needs(decode)
      ->capture_default_str();
  cmd->add_option("--pooled-block-size", args->pooled_block_size,
                  "decode: also write the pooled keys of this block size B (0: none; `select` "
                  "pools a case without them itself)")
      ->needs(decode)
      ->capture_default_str();
  cmd->add_option("--pooling", args->pooling, "decode: pooling of the written pooled keys")
      ->check(CLI::IsMember({"mean", "max"}))
      ->needs(decode)
      ->capture_default_str();
  cmd->callback([args] { run_make_case(*args); });
}

}  // namespace hisa::cli
