// Buffers and their memory, pooled. Internal to backends/vulkan.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "backends/vulkan/vulkan_core.h"

namespace kiln::vk {

// One VkBuffer bound to its own VkDeviceMemory.
struct Allocation {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  void* mapped = nullptr;  // staging memory only: host-visible, coherent, mapped for good
};

// Allocations of one kind of memory, kept for reuse when released: sizes are
// rounded up to one of four classes per power of two (at most 25% waste), and
// a released allocation serves the next request of its class. Creating Vulkan
// memory is slow, and an executor frees and allocates the same sizes again and
// again.
class MemoryPool : public std::enable_shared_from_this<MemoryPool> {
 public:
  enum class Kind { DeviceLocal, Staging };

  MemoryPool(std::shared_ptr<DeviceCore> core, Kind kind) : core_(std::move(core)), kind_(kind) {}
  ~MemoryPool();
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  // Goes back to the pool when the last reference drops. Throws kiln::Error
  // (with the VkResult) when the device cannot provide it.
  std::shared_ptr<Allocation> allocate(int64_t bytes);

 private:
  Allocation create(VkDeviceSize size);
  uint32_t memory_type(uint32_t allowed) const;
  void destroy(const Allocation& a);
  void release(const Allocation& a);
  void trim();  // frees every cached allocation; needs mutex_

  std::shared_ptr<DeviceCore> core_;
  Kind kind_;
  std::mutex mutex_;
  std::multimap<VkDeviceSize, Allocation> free_;  // by size class
  VkDeviceSize free_bytes_ = 0;
};

}  // namespace kiln::vk
