// In-memory cache of compiled kernels, keyed by the device and the kernel's
// text form (its name and buffer names aside), so a graph compiled twice, or
// two graphs (or layers) sharing a kernel, compiles
// each kernel once. The on-disk cache is issue 8's.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kiln/runtime.h"

namespace kiln {

class KernelCache {
 public:
  static KernelCache& global();

  std::shared_ptr<Executable> get_or_compile(Device& dev, const Kernel& k);
  int64_t hits() const;
  int64_t misses() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Executable>> entries_;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace kiln
