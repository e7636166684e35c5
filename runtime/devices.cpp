#include <mutex>

#include "backends/cpu/cpu_device.h"
#include "kiln/error.h"
#include "kiln/runtime.h"

namespace kiln {

std::vector<std::shared_ptr<Device>> devices() {
  static std::once_flag once;
  static std::vector<std::shared_ptr<Device>> found;
  std::call_once(once, [] { found.push_back(make_cpu_device()); });
  return found;
}

std::shared_ptr<Device> device(const std::string& which) {
  auto all = devices();
  for (size_t i = 0; i < all.size(); ++i)
    if (which == std::to_string(i) || which == all[i]->info().backend) return all[i];
  std::string names;
  for (size_t i = 0; i < all.size(); ++i) names += (i ? ", " : "") + all[i]->info().backend;
  throw Error("no device '" + which + "' on this machine (found: " + names + ")");
}

}  // namespace kiln
