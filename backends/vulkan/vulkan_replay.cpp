#include "backends/vulkan/vulkan_replay.h"

namespace kiln::vk {

Recording::Recording(std::shared_ptr<DeviceCore> core) : core_(std::move(core)), what_("an empty replay") {
  const DeviceFns& fn = core_->fn;
  auto pool_info = vk::init<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
  pool_info.queueFamilyIndex = core_->queue_family;
  check(fn.vkCreateCommandPool(core_->device, &pool_info, nullptr, &pool_), "vkCreateCommandPool", "a capture");
  auto info = vk::init<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
  info.commandPool = pool_;
  info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  info.commandBufferCount = 1;
  auto begin = vk::init<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
  // replay() may queue it again before the previous submission has finished.
  begin.flags = VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT;
  VkResult r = fn.vkAllocateCommandBuffers(core_->device, &info, &cmd_);
  if (r == VK_SUCCESS) r = fn.vkBeginCommandBuffer(cmd_, &begin);
  if (r != VK_SUCCESS) fn.vkDestroyCommandPool(core_->device, pool_, nullptr);  // no destructor after a throw
  check(r, "vkBeginCommandBuffer", "a capture");
}

Recording::~Recording() { core_->fn.vkDestroyCommandPool(core_->device, pool_, nullptr); }

void Recording::add(const std::function<void(VkCommandBuffer)>& record, VulkanStream::Keep keep,
                    const std::string& what) {
  record(cmd_);
  keep_.insert(keep_.end(), std::make_move_iterator(keep.begin()), std::make_move_iterator(keep.end()));
  ++launches_;
  what_ = "a replay of " + std::to_string(launches_) + " launches (the last " + what + ")";
}

void Recording::end() { check(core_->fn.vkEndCommandBuffer(cmd_), "vkEndCommandBuffer", what_); }

}  // namespace kiln::vk
