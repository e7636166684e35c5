// One compiled kernel: a compute pipeline and the descriptor sets its launches
// bind. Internal to backends/vulkan.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/vulkan/vulkan_core.h"

namespace kiln::vk {

// The pipeline layout is `buffers` storage buffers at bindings 0.. of set 0 and
// `params` i64 push constants.
class Program : public std::enable_shared_from_this<Program> {
 public:
  // Throws kiln::Error naming the Vulkan call, its VkResult and `name`.
  Program(std::shared_ptr<DeviceCore> core, VkPipelineCache cache, const std::vector<uint32_t>& spirv,
          int buffers, int params, const std::string& name);
  ~Program();
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  VkPipeline pipeline() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }

  // A descriptor set that no launch in flight uses, and a lease that gives it
  // back when dropped (keep the lease until the launch has finished).
  std::shared_ptr<const void> acquire_set(VkDescriptorSet* set);

 private:
  void add_descriptor_pool();
  void destroy_handles();

  std::shared_ptr<DeviceCore> core_;
  std::string name_;
  int buffers_;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  std::mutex mutex_;
  std::vector<VkDescriptorPool> pools_;
  std::vector<VkDescriptorSet> free_sets_;
};

}  // namespace kiln::vk
