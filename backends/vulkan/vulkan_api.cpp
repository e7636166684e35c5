#include "backends/vulkan/vulkan_api.h"

#include <dlfcn.h>

#include "kiln/error.h"

namespace kiln::vk {

bool load_global_functions(InstanceFns& fns) {
  // Never closed: Vulkan objects live until the process exits.
  static void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return false;
  fns.vkGetInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
  if (!fns.vkGetInstanceProcAddr) return false;
#define KILN_VK_LOAD(name) fns.name = reinterpret_cast<PFN_##name>(fns.vkGetInstanceProcAddr(nullptr, #name));
  KILN_VK_GLOBAL_FUNCTIONS(KILN_VK_LOAD)
#undef KILN_VK_LOAD
  // vkEnumerateInstanceVersion is new in Vulkan 1.1; kiln needs 1.1.
  return fns.vkCreateInstance && fns.vkEnumerateInstanceVersion && fns.vkEnumerateInstanceLayerProperties &&
         fns.vkEnumerateInstanceExtensionProperties;
}

void load_instance_functions(InstanceFns& fns, VkInstance instance) {
#define KILN_VK_LOAD(name) fns.name = reinterpret_cast<PFN_##name>(fns.vkGetInstanceProcAddr(instance, #name));
  KILN_VK_INSTANCE_FUNCTIONS(KILN_VK_LOAD)
  KILN_VK_DEBUG_FUNCTIONS(KILN_VK_LOAD)
#undef KILN_VK_LOAD
}

DeviceFns load_device_functions(const InstanceFns& fns, VkDevice device) {
  DeviceFns d;
#define KILN_VK_LOAD(name)                                                                     \
  d.name = reinterpret_cast<PFN_##name>(fns.vkGetDeviceProcAddr(device, #name));               \
  if (!d.name) throw Error("vulkan backend: the driver has no " #name);
  KILN_VK_DEVICE_FUNCTIONS(KILN_VK_LOAD)
#undef KILN_VK_LOAD
  return d;
}

std::string result_name(VkResult r) {
  switch (r) {
#define KILN_VK_RESULT(name) case name: return #name;
    KILN_VK_RESULT(VK_SUCCESS)
    KILN_VK_RESULT(VK_NOT_READY)
    KILN_VK_RESULT(VK_TIMEOUT)
    KILN_VK_RESULT(VK_INCOMPLETE)
    KILN_VK_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    KILN_VK_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    KILN_VK_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    KILN_VK_RESULT(VK_ERROR_DEVICE_LOST)
    KILN_VK_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    KILN_VK_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    KILN_VK_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    KILN_VK_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    KILN_VK_RESULT(VK_ERROR_INCOMPATIBLE_DRIVER)
    KILN_VK_RESULT(VK_ERROR_TOO_MANY_OBJECTS)
    KILN_VK_RESULT(VK_ERROR_FORMAT_NOT_SUPPORTED)
    KILN_VK_RESULT(VK_ERROR_FRAGMENTED_POOL)
    KILN_VK_RESULT(VK_ERROR_UNKNOWN)
    KILN_VK_RESULT(VK_ERROR_OUT_OF_POOL_MEMORY)
    KILN_VK_RESULT(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    KILN_VK_RESULT(VK_ERROR_FRAGMENTATION)
    KILN_VK_RESULT(VK_ERROR_INVALID_SHADER_NV)
#undef KILN_VK_RESULT
    default: return "VkResult " + std::to_string(int(r));
  }
}

void check(VkResult r, const char* call, const std::string& context) {
  if (r == VK_SUCCESS) return;
  throw Error(std::string("vulkan backend: ") + call + " failed with " + result_name(r) +
              (context.empty() ? "" : ": " + context));
}

}  // namespace kiln::vk
