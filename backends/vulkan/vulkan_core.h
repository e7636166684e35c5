// A VkDevice with its compute queue: what a device's buffers, pipelines and
// stream share (each holds it by shared_ptr, so any of them may outlive the
// Device). Internal to backends/vulkan.
#pragma once

#include <memory>

#include "backends/vulkan/vulkan_api.h"
#include "backends/vulkan/vulkan_instance.h"

namespace kiln::vk {

struct DeviceCore {
  std::shared_ptr<Instance> instance;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkPhysicalDeviceProperties props{};
  VkPhysicalDeviceMemoryProperties memory{};
  VkDevice device = VK_NULL_HANDLE;
  DeviceFns fn;
  uint32_t queue_family = 0;
  VkQueue queue = VK_NULL_HANDLE;
  // The queue's timestampValidBits: 0 where it has no timestamps.
  uint32_t timestamp_bits = 0;

  DeviceCore() = default;
  DeviceCore(const DeviceCore&) = delete;
  DeviceCore& operator=(const DeviceCore&) = delete;
  ~DeviceCore() {
    if (!device) return;
    fn.vkDeviceWaitIdle(device);
    fn.vkDestroyDevice(device, nullptr);
  }
};

}  // namespace kiln::vk
