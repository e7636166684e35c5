#include "backends/vulkan/vulkan_stream.h"

#include <cstdint>

namespace kiln::vk {

void barrier(const DeviceCore& core, VkCommandBuffer cmd, VkPipelineStageFlags src_stages,
             VkAccessFlags src_access, VkPipelineStageFlags dst_stages, VkAccessFlags dst_access) {
  auto b = vk::init<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
  b.srcAccessMask = src_access;
  b.dstAccessMask = dst_access;
  core.fn.vkCmdPipelineBarrier(cmd, src_stages, dst_stages, 0, 1, &b, 0, nullptr, 0, nullptr);
}

VulkanStream::VulkanStream(std::shared_ptr<DeviceCore> core) : core_(std::move(core)) {
  auto info = vk::init<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
  info.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  info.queueFamilyIndex = core_->queue_family;
  check(core_->fn.vkCreateCommandPool(core_->device, &info, nullptr, &pool_), "vkCreateCommandPool", "");
}

VulkanStream::~VulkanStream() {
  const DeviceFns& fn = core_->fn;
  fn.vkDeviceWaitIdle(core_->device);  // a lost device reports nothing more to wait for
  for (const InFlight& f : in_flight_) fn.vkDestroyFence(core_->device, f.fence, nullptr);
  in_flight_.clear();
  for (VkFence f : free_fences_) fn.vkDestroyFence(core_->device, f, nullptr);
  fn.vkDestroyCommandPool(core_->device, pool_, nullptr);  // frees its command buffers
}

void VulkanStream::synchronize() {
  std::lock_guard<std::mutex> lock(mutex_);
  retire(true);
}

void VulkanStream::check_wait(VkResult r) { check(r, "vkWaitForFences", "after " + last_); }

void VulkanStream::retire(bool wait) {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  if (wait && !in_flight_.empty()) {
    std::vector<VkFence> fences;
    for (const InFlight& f : in_flight_) fences.push_back(f.fence);
    check_wait(fn.vkWaitForFences(dev, uint32_t(fences.size()), fences.data(), VK_TRUE, UINT64_MAX));
  }
  while (!in_flight_.empty()) {
    InFlight& f = in_flight_.front();
    VkResult status = fn.vkGetFenceStatus(dev, f.fence);
    if (status == VK_NOT_READY) break;
    check_wait(status);
    check(fn.vkResetFences(dev, 1, &f.fence), "vkResetFences", "");
    check(fn.vkResetCommandBuffer(f.cmd, 0), "vkResetCommandBuffer", "");
    free_fences_.push_back(f.fence);
    free_cmds_.push_back(f.cmd);
    in_flight_.pop_front();
  }
}

void VulkanStream::submit(const std::function<void(VkCommandBuffer)>& record, Keep keep, const std::string& what,
                          bool wait) {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  std::lock_guard<std::mutex> lock(mutex_);
  retire(false);

  if (free_cmds_.empty()) {
    auto info = vk::init<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
    info.commandPool = pool_;
    info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    info.commandBufferCount = 1;
    VkCommandBuffer cmd;
    check(fn.vkAllocateCommandBuffers(dev, &info, &cmd), "vkAllocateCommandBuffers", what);
    free_cmds_.push_back(cmd);
  }
  if (free_fences_.empty()) {
    auto info = vk::init<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
    VkFence fence;
    check(fn.vkCreateFence(dev, &info, nullptr, &fence), "vkCreateFence", what);
    free_fences_.push_back(fence);
  }
  VkCommandBuffer cmd = free_cmds_.back();
  VkFence fence = free_fences_.back();

  auto begin = vk::init<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(fn.vkBeginCommandBuffer(cmd, &begin), "vkBeginCommandBuffer", what);
  record(cmd);
  check(fn.vkEndCommandBuffer(cmd), "vkEndCommandBuffer", what);
  auto info = vk::init<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
  info.commandBufferCount = 1;
  info.pCommandBuffers = &cmd;
  VkResult r = fn.vkQueueSubmit(core_->queue, 1, &info, fence);
  if (r != VK_SUCCESS) fn.vkResetCommandBuffer(cmd, 0);
  check(r, "vkQueueSubmit", what);

  free_cmds_.pop_back();
  free_fences_.pop_back();
  in_flight_.push_back({cmd, fence, std::move(keep)});
  last_ = what;
  if (!wait) return;
  check_wait(fn.vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX));
  retire(false);
}

}  // namespace kiln::vk
