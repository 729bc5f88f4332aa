// The `hisa` command: select, eval, bench, demo.
#include <cstdio>

#include "common.hpp"
#include "hisa/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "hisa: the sparse-attention indexer (flat DSA and hierarchical HISA top-k selection), CPU and CUDA"};
  app.require_subcommand(1);
  hisa::cli::add_select_command(app);
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
