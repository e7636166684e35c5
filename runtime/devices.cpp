#include <mutex>

#ifdef KILN_WITH_LLVM
#include "backends/cpu/cpu_device.h"
#endif
#ifdef KILN_WITH_CUDA
#include "backends/cuda/cuda_device.h"
#endif
#ifdef KILN_WITH_VULKAN
#include "backends/vulkan/vulkan_device.h"
#endif
#include "kiln/error.h"
#include "kiln/runtime.h"

namespace kiln {

std::vector<std::shared_ptr<Device>> devices() {
  static std::once_flag once;
  // Never destroyed: at exit, GPU drivers may already be unloaded, and tearing
  // down their devices then crashes (seen with the NVIDIA Vulkan driver).
  static auto& found = *new std::vector<std::shared_ptr<Device>>();
  // GPU backends that find no device (or no driver) add nothing.
  std::call_once(once, [] {
#ifdef KILN_WITH_LLVM
    found.push_back(make_cpu_device());
#endif
#ifdef KILN_WITH_CUDA
    for (auto& d : make_cuda_devices()) found.push_back(d);
#endif
#ifdef KILN_WITH_VULKAN
    for (auto& d : make_vulkan_devices()) found.push_back(d);
#endif
  });
  return found;
}

std::shared_ptr<Device> device(const std::string& which) {
  auto all = devices();
  for (size_t i = 0; i < all.size(); ++i)
    if (which == std::to_string(i) || which == all[i]->info().backend || which == all[i]->info().name)
      return all[i];
  std::string names;
  for (size_t i = 0; i < all.size(); ++i) names += (i ? ", " : "") + all[i]->info().backend;
  throw Error("no device '" + which + "' on this machine (found: " + (names.empty() ? "none" : names) + ")");
}

}  // namespace kiln
