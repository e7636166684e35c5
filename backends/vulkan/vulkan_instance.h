// The process's one VkInstance. With KILN_VULKAN_VALIDATION=1 in the
// environment when it is made, it enables VK_LAYER_KHRONOS_validation and a
// debug-utils messenger that records every validation message (see
// vulkan_validation_messages() in vulkan_device.h). Internal to backends/vulkan.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/vulkan/vulkan_api.h"

namespace kiln::vk {

class Instance {
 public:
  // Null when there is no loader or no Vulkan 1.1 instance; never throws.
  static std::shared_ptr<Instance> get();

  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  VkInstance handle() const { return instance_; }
  const InstanceFns& fn() const { return fns_; }
  uint32_t api_version() const { return api_version_; }
  bool validation() const { return messenger_ != VK_NULL_HANDLE; }

 private:
  Instance() = default;
  bool create();

  InstanceFns fns_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  uint32_t api_version_ = 0;
};

}  // namespace kiln::vk
