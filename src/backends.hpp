// Factories of the backends (internal; users call hisa::make_indexer).
#pragma once

#include <memory>

#include "hisa/indexer.hpp"

namespace hisa {

std::unique_ptr<Indexer> make_reference_indexer();
std::unique_ptr<Indexer> make_cpu_indexer();
#ifdef HISA_WITH_CUDA
std::unique_ptr<Indexer> make_cuda_indexer();  // throws hisa::Error when no device is visible
bool cuda_device_present();
#endif

}  // namespace hisa
