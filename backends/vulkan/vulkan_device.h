// The Vulkan backend: kernels scheduled for the GPU become GLSL compute shaders
// (codegen/emit/glsl), SPIR-V through glslang in process, and Vulkan compute
// pipelines. Tensors live in device-local buffers; write() and read() go
// through host-visible staging buffers. The loader is opened at run time, so a
// machine without Vulkan simply has no Vulkan devices.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/runtime.h"

namespace kiln {

struct VulkanOptions {
  // Use GL_EXT_shader_8bit_storage / 16bit_storage where the device has them;
  // false forces the fallback (atomics on the containing uint), for tests.
  bool storage8 = true;
  bool storage16 = true;
  // Allreduce sums by subgroup operations where the device has them; false
  // forces shared memory, for tests.
  bool subgroups = true;
  // Index arithmetic in 32-bit ints (GlslOptions::index32); false keeps the
  // 64-bit ints, for tests.
  bool index32 = true;
};

// One Device per physical device that has a compute queue, Vulkan 1.1 and
// shaderInt64. Empty when there is no loader or no such device; never throws.
std::vector<std::shared_ptr<Device>> make_vulkan_devices();
std::vector<std::shared_ptr<Device>> make_vulkan_devices(const VulkanOptions& options);

// Validation (KILN_VULKAN_VALIDATION=1 in the environment before the first
// Vulkan device is made). Every warning or error that the validation layer
// reports is printed to stderr and kept until cleared.
bool vulkan_validation_enabled();
int64_t vulkan_validation_message_count();
std::vector<std::string> vulkan_validation_messages();
void clear_vulkan_validation_messages();

}  // namespace kiln
