// Cache of compiled kernels, keyed by the device and the kernel's text form
// (its name and buffer names aside), so a graph compiled twice, or two graphs
// (or layers) sharing a kernel, compiles each kernel once. Two levels: memory,
// then the disk (runtime/disk_cache.h), where a device that makes artifacts
// keeps them for the next process.
#pragma once

#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "kiln/runtime.h"
#include "runtime/disk_cache.h"

namespace kiln {

class KernelCache {
 public:
  // The disk cache from the environment (DiskCache::from_environment()).
  KernelCache();
  explicit KernelCache(DiskCache disk);
  static KernelCache& global();

  // Memory, then disk, then compile (and store to disk). A failed compile is
  // kept nowhere; a disk entry that does not load is deleted and recompiled.
  std::shared_ptr<Executable> get_or_compile(Device& dev, const Kernel& k);

  // Memory: hits (a caller that waited for another's compile of the same
  // kernel counts as one), and misses (kernels compiled or loaded from disk).
  int64_t hits() const;
  int64_t misses() const;
  // Disk, counted on memory misses for devices with artifacts: entries
  // loaded, entries not found (compiled), and entries found bad (deleted,
  // then compiled and counted as misses too).
  int64_t disk_hits() const;
  int64_t disk_misses() const;
  int64_t disk_bad() const;

  // Forgets the compiled kernels held in memory (not the disk entries).
  void clear_memory();
  const DiskCache& disk() const { return disk_; }

  // The kernel's text with its name, buffer, param and loop variable names
  // made canonical: kernels that differ only in those compile to the same code.
  static std::string structural_text(const Kernel& k);

 private:
  std::shared_ptr<Executable> compile_through_disk(Device& dev, const Kernel& k, const std::string& text);

  DiskCache disk_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Executable>> entries_;
  // Kernels being compiled now, for the callers that want them meanwhile.
  std::unordered_map<std::string, std::shared_future<std::shared_ptr<Executable>>> in_flight_;
  int64_t hits_ = 0, misses_ = 0;
  int64_t disk_hits_ = 0, disk_misses_ = 0, disk_bad_ = 0;
};

}  // namespace kiln
