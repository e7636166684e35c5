#include "runtime/kernel_cache.h"

namespace kiln {

KernelCache& KernelCache::global() {
  // Never destroyed, like the device list: executables must not outlive drivers.
  static KernelCache& cache = *new KernelCache();
  return cache;
}

namespace {

// The kernel's text with its name and buffer names left out: kernels that
// differ only in those (one per layer of a model) compile to the same code,
// since buffers are passed by position.
std::string structural_text(const Kernel& k) {
  Kernel c = k;
  c.name = "kernel";
  for (size_t i = 0; i < c.buffers.size(); ++i) c.buffers[i].name = "b" + std::to_string(i);
  return print(c);
}

}  // namespace

std::shared_ptr<Executable> KernelCache::get_or_compile(Device& dev, const Kernel& k) {
  std::string key = dev.info().backend + "\n" + dev.info().name + "\n" + structural_text(k);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      ++hits_;
      return it->second;
    }
  }
  // Compile outside the lock so kernels compile in parallel; if two threads
  // race on one kernel, the first to finish wins.
  std::shared_ptr<Executable> exe = dev.compile(k);
  std::lock_guard<std::mutex> lock(mu_);
  ++misses_;
  return entries_.emplace(key, exe).first->second;
}

int64_t KernelCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

int64_t KernelCache::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}

}  // namespace kiln
