// TEMPORARY: replaced by the fast CPU backend.
#include "cpu/backends.hpp"
#include "hisa/error.hpp"
namespace hisa {
std::unique_ptr<Indexer> make_cpu_indexer() { throw Error("cpu backend: not built yet"); }
}  // namespace hisa
