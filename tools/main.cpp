// The `hisa` command: select, make-case, eval, bench, demo.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common.hpp"
#include "hisa/error.hpp"

namespace {

// OpenMP workers that spin between parallel regions (libgomp's default) compete for the CPU with
// any other busy process: a worker whose core is taken runs only at that core's next time slice,
// and every call waits for it (a 0.3 ms decode took 4 ms with one of two cores busy). Passive
// workers sleep and are woken at once; on an idle machine they cost nothing measurable (decode at
// 4K and 128K, prefill at 16K). libgomp reads OMP_WAIT_POLICY once, when it is loaded, so the
// command sets it by running itself again; a policy (or GOMP_SPINCOUNT) the user set is kept.
void prefer_passive_openmp_workers(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run with libgomp's default
  ::unsetenv("OMP_WAIT_POLICY");
}

}  // namespace

int main(int argc, char** argv) {
  prefer_passive_openmp_workers(argv);
  CLI::App app{
      "hisa: the sparse-attention indexer (flat DSA and hierarchical HISA top-k selection), CPU and CUDA"};
  app.require_subcommand(1);
  hisa::cli::add_select_command(app);
  hisa::cli::add_make_case_command(app);
  hisa::cli::add_eval_command(app);
  hisa::cli::add_bench_command(app);
  hisa::cli::add_demo_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const hisa::Error& e) {
    std::fprintf(stderr, "hisa: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hisa: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
