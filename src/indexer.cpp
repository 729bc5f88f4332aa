#include "hisa/indexer.hpp"

#include "backends.hpp"
#include "hisa/error.hpp"

namespace hisa {

bool cuda_available() {
#ifdef HISA_WITH_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

std::vector<std::string> backend_names() {
  std::vector<std::string> names = {"reference", "cpu"};
#ifdef HISA_WITH_CUDA
  names.push_back("cuda");
#endif
  return names;
}

std::unique_ptr<Indexer> make_indexer(const std::string& device) {
  if (device == "reference") return make_reference_indexer();
  if (device == "cpu") return make_cpu_indexer();
  if (device == "cuda") {
#ifdef HISA_WITH_CUDA
    return make_cuda_indexer();
#else
    throw Error("device 'cuda': this build of hisa has no CUDA backend (configure with nvcc present)");
#endif
  }
  if (device == "auto") return cuda_available() ? make_indexer("cuda") : make_cpu_indexer();
  throw Error("unknown device '" + device + "' (expected reference, cpu, cuda or auto)");
}

}  // namespace hisa
