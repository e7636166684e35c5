// The Vulkan entry points kiln calls, looked up at run time from the loader
// (libvulkan.so.1, opened with dlopen), so that one binary runs on machines
// with and without Vulkan. Internal to backends/vulkan.
#pragma once

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include <string>

namespace kiln::vk {

#define KILN_VK_GLOBAL_FUNCTIONS(X) \
  X(vkCreateInstance)               \
  X(vkEnumerateInstanceVersion)     \
  X(vkEnumerateInstanceLayerProperties) \
  X(vkEnumerateInstanceExtensionProperties)

#define KILN_VK_INSTANCE_FUNCTIONS(X)          \
  X(vkDestroyInstance)                         \
  X(vkEnumeratePhysicalDevices)                \
  X(vkGetPhysicalDeviceProperties)             \
  X(vkGetPhysicalDeviceProperties2)            \
  X(vkGetPhysicalDeviceFeatures2)              \
  X(vkGetPhysicalDeviceQueueFamilyProperties)  \
  X(vkGetPhysicalDeviceMemoryProperties)       \
  X(vkEnumerateDeviceExtensionProperties)      \
  X(vkCreateDevice)                            \
  X(vkGetDeviceProcAddr)

// Only there when the instance enabled VK_EXT_debug_utils.
#define KILN_VK_DEBUG_FUNCTIONS(X)   \
  X(vkCreateDebugUtilsMessengerEXT)  \
  X(vkDestroyDebugUtilsMessengerEXT)

#define KILN_VK_DEVICE_FUNCTIONS(X)   \
  X(vkDestroyDevice)                  \
  X(vkDeviceWaitIdle)                 \
  X(vkGetDeviceQueue)                 \
  X(vkQueueSubmit)                    \
  X(vkCreateBuffer)                   \
  X(vkDestroyBuffer)                  \
  X(vkGetBufferMemoryRequirements)    \
  X(vkAllocateMemory)                 \
  X(vkFreeMemory)                     \
  X(vkBindBufferMemory)               \
  X(vkMapMemory)                      \
  X(vkInvalidateMappedMemoryRanges)   \
  X(vkFlushMappedMemoryRanges)        \
  X(vkCreateShaderModule)             \
  X(vkDestroyShaderModule)            \
  X(vkCreatePipelineCache)            \
  X(vkDestroyPipelineCache)           \
  X(vkCreateDescriptorSetLayout)      \
  X(vkDestroyDescriptorSetLayout)     \
  X(vkCreatePipelineLayout)           \
  X(vkDestroyPipelineLayout)          \
  X(vkCreateComputePipelines)         \
  X(vkDestroyPipeline)                \
  X(vkCreateDescriptorPool)           \
  X(vkDestroyDescriptorPool)          \
  X(vkAllocateDescriptorSets)         \
  X(vkUpdateDescriptorSets)           \
  X(vkCreateCommandPool)              \
  X(vkDestroyCommandPool)             \
  X(vkAllocateCommandBuffers)         \
  X(vkResetCommandBuffer)             \
  X(vkBeginCommandBuffer)             \
  X(vkEndCommandBuffer)               \
  X(vkCmdPipelineBarrier)             \
  X(vkCmdCopyBuffer)                  \
  X(vkCmdBindPipeline)                \
  X(vkCmdBindDescriptorSets)          \
  X(vkCmdPushConstants)               \
  X(vkCmdDispatchBase)                \
  X(vkCreateFence)                    \
  X(vkDestroyFence)                   \
  X(vkResetFences)                    \
  X(vkGetFenceStatus)                 \
  X(vkWaitForFences)                 \
  X(vkCreateQueryPool)                \
  X(vkDestroyQueryPool)               \
  X(vkCmdResetQueryPool)              \
  X(vkCmdWriteTimestamp)              \
  X(vkGetQueryPoolResults)

#define KILN_VK_MEMBER(name) PFN_##name name = nullptr;

struct InstanceFns {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  KILN_VK_GLOBAL_FUNCTIONS(KILN_VK_MEMBER)
  KILN_VK_INSTANCE_FUNCTIONS(KILN_VK_MEMBER)
  KILN_VK_DEBUG_FUNCTIONS(KILN_VK_MEMBER)
};

struct DeviceFns {
  KILN_VK_DEVICE_FUNCTIONS(KILN_VK_MEMBER)
};

#undef KILN_VK_MEMBER

// Opens the loader and fills in the global functions; false when there is no
// loader (or it lacks Vulkan 1.1).
bool load_global_functions(InstanceFns& fns);
// The instance and debug functions of `instance` (debug ones may stay null).
void load_instance_functions(InstanceFns& fns, VkInstance instance);
// Throws kiln::Error naming a function the driver does not have.
DeviceFns load_device_functions(const InstanceFns& fns, VkDevice device);

// A zeroed Vulkan struct with its sType set.
template <typename T>
T init(VkStructureType type) {
  T v{};
  v.sType = type;
  return v;
}

// "VK_ERROR_DEVICE_LOST", ...
std::string result_name(VkResult r);

// Throws kiln::Error("vulkan backend: <call> failed with <result>: <context>")
// unless `r` is VK_SUCCESS.
void check(VkResult r, const char* call, const std::string& context);

}  // namespace kiln::vk
