#include "backends/vulkan/vulkan_memory.h"

#include <algorithm>
#include <bit>
#include <string>

#include "kiln/error.h"
#include "runtime/fault.h"

namespace kiln::vk {

namespace {

// Released allocations beyond this many bytes are freed, not kept.
constexpr VkDeviceSize kMaxCachedBytes = VkDeviceSize(1) << 30;

// 256, then four classes per power of two: 5/8, 6/8, 7/8 and 8/8 of it.
VkDeviceSize size_class(int64_t bytes) {
  uint64_t n = std::max<uint64_t>(uint64_t(bytes), 256);
  uint64_t step = uint64_t(1) << (std::bit_width(n - 1) - 3);
  return (n + step - 1) / step * step;
}

}  // namespace

MemoryPool::~MemoryPool() { trim(); }

std::shared_ptr<Allocation> MemoryPool::allocate(int64_t bytes) {
  if (bytes < 0) throw Error("vulkan backend: cannot allocate " + std::to_string(bytes) + " bytes");
  VkDeviceSize size = size_class(bytes);
  Allocation a;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(size);
    if (it != free_.end()) {
      a = it->second;
      free_.erase(it);
      free_bytes_ -= size;
    } else {
      try {
        a = create(size);
      } catch (const Error&) {
        trim();  // the cache may hold the memory this needs
        a = create(size);
      }
    }
  }
  auto pool = shared_from_this();
  return std::shared_ptr<Allocation>(new Allocation(a), [pool](Allocation* p) {
    pool->release(*p);
    delete p;
  });
}

uint32_t MemoryPool::memory_type(uint32_t allowed) const {
  const VkPhysicalDeviceMemoryProperties& m = core_->memory;
  VkMemoryPropertyFlags need = 0, want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  if (kind_ == Kind::Staging) {
    need = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    want = need | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;  // reads back fast
  }
  for (VkMemoryPropertyFlags flags : {want, need})
    for (uint32_t i = 0; i < m.memoryTypeCount; ++i)
      if ((allowed & (1u << i)) && (m.memoryTypes[i].propertyFlags & flags) == flags) return i;
  throw Error("vulkan backend: the device has no suitable memory type for " +
              std::string(kind_ == Kind::Staging ? "staging buffers" : "tensors"));
}

Allocation MemoryPool::create(VkDeviceSize size) {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  std::string what = std::to_string(size) + " bytes";
  Allocation a;
  a.size = size;
  auto info = vk::init<VkBufferCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO);
  info.size = size;
  info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  if (kind_ == Kind::DeviceLocal) info.usage |= VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(fn.vkCreateBuffer(dev, &info, nullptr, &a.buffer), "vkCreateBuffer", what);
  try {
    VkMemoryRequirements req;
    fn.vkGetBufferMemoryRequirements(dev, a.buffer, &req);
    auto alloc = vk::init<VkMemoryAllocateInfo>(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO);
    alloc.allocationSize = req.size;
    alloc.memoryTypeIndex = memory_type(req.memoryTypeBits);
    VkResult r = fault::fires(fault::Site::alloc) ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                                  : fn.vkAllocateMemory(dev, &alloc, nullptr, &a.memory);
    check(r, "vkAllocateMemory", what);
    check(fn.vkBindBufferMemory(dev, a.buffer, a.memory, 0), "vkBindBufferMemory", what);
    if (kind_ == Kind::Staging)
      check(fn.vkMapMemory(dev, a.memory, 0, VK_WHOLE_SIZE, 0, &a.mapped), "vkMapMemory", what);
  } catch (...) {
    destroy(a);
    throw;
  }
  return a;
}

void MemoryPool::destroy(const Allocation& a) {
  // Freeing memory unmaps it.
  if (a.buffer) core_->fn.vkDestroyBuffer(core_->device, a.buffer, nullptr);
  if (a.memory) core_->fn.vkFreeMemory(core_->device, a.memory, nullptr);
}

void MemoryPool::release(const Allocation& a) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_bytes_ + a.size > kMaxCachedBytes) return destroy(a);
  free_.emplace(a.size, a);
  free_bytes_ += a.size;
}

void MemoryPool::trim() {
  for (auto& [size, a] : free_) destroy(a);
  free_.clear();
  free_bytes_ = 0;
}

}  // namespace kiln::vk
