#include "backends/vulkan/vulkan_stream.h"

#include <chrono>
#include <cstdint>
#include <thread>

#include "backends/vulkan/vulkan_replay.h"

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
  check_not_capturing("synchronize()");
  retire(true);
}

void VulkanStream::check_not_capturing(const std::string& what) {
  if (recording_ && capturing_ == std::this_thread::get_id())
    throw Error("vulkan backend: " + what + " while the stream captures launches");
}

std::unique_ptr<Replay> VulkanStream::capture(const std::function<void()>& record) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (recording_) throw Error("vulkan backend: the stream is capturing already");
    recording_ = std::make_shared<Recording>(core_);
    capturing_ = std::this_thread::get_id();
  }
  auto stop = [this] {
    std::lock_guard<std::mutex> lock(mutex_);
    std::shared_ptr<Recording> r = std::move(recording_);
    capturing_ = {};
    return r;
  };
  try {
    record();
  } catch (...) {
    stop();
    throw;
  }
  std::shared_ptr<Recording> recording = stop();
  recording->end();
  return std::make_unique<VulkanReplay>(*this, std::move(recording));
}

void VulkanStream::check_wait(VkResult r) { check(r, "vkWaitForFences", "after " + last_); }

// A blocking wait wakes the thread tens of microseconds after the GPU is done
// (a decode step waits for its logits every token: 0.2 ms a token through
// Vulkan on the H100 against CUDA's 0.05), so on a GPU the newest fence is
// polled first, yielding the core, for up to kSpin. Not on a CPU device
// (lavapipe), whose work runs on the cores a poll would take.
void VulkanStream::wait_for(const std::vector<VkFence>& fences) {
  constexpr auto kSpin = std::chrono::milliseconds(20);
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  if (core_->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU) {
    auto until = std::chrono::steady_clock::now() + kSpin;
    while (fn.vkGetFenceStatus(dev, fences.back()) == VK_NOT_READY && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
  }
  check_wait(fn.vkWaitForFences(dev, uint32_t(fences.size()), fences.data(), VK_TRUE, UINT64_MAX));
}

void VulkanStream::retire(bool wait) {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  if (wait && !in_flight_.empty()) {
    std::vector<VkFence> fences;
    for (const InFlight& f : in_flight_) fences.push_back(f.fence);
    wait_for(fences);
  }
  while (!in_flight_.empty()) {
    InFlight& f = in_flight_.front();
    VkResult status = fn.vkGetFenceStatus(dev, f.fence);
    if (status == VK_NOT_READY) break;
    check_wait(status);
    check(fn.vkResetFences(dev, 1, &f.fence), "vkResetFences", "");
    free_fences_.push_back(f.fence);
    if (f.cmd) {
      check(fn.vkResetCommandBuffer(f.cmd, 0), "vkResetCommandBuffer", "");
      free_cmds_.push_back(f.cmd);
    }
    in_flight_.pop_front();
  }
}

VkFence VulkanStream::take_fence(const std::string& what) {
  if (free_fences_.empty()) {
    auto info = vk::init<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
    VkFence fence;
    check(core_->fn.vkCreateFence(core_->device, &info, nullptr, &fence), "vkCreateFence", what);
    free_fences_.push_back(fence);
  }
  VkFence fence = free_fences_.back();
  free_fences_.pop_back();
  return fence;
}

VkResult VulkanStream::queue(VkCommandBuffer cmd, VkFence fence) {
  auto info = vk::init<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
  info.commandBufferCount = 1;
  info.pCommandBuffers = &cmd;
  VkResult r = core_->fn.vkQueueSubmit(core_->queue, 1, &info, fence);
  if (r != VK_SUCCESS) free_fences_.push_back(fence);
  return r;
}

void VulkanStream::submit(const std::function<void(VkCommandBuffer)>& record, Keep keep, const std::string& what,
                          bool wait) {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  std::lock_guard<std::mutex> lock(mutex_);
  check_not_capturing(what);
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
  VkFence fence = take_fence(what);
  VkCommandBuffer cmd = free_cmds_.back();

  auto begin = vk::init<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  const char* call = "vkBeginCommandBuffer";
  VkResult r = fn.vkBeginCommandBuffer(cmd, &begin);
  if (r == VK_SUCCESS) {
    record(cmd);
    call = "vkEndCommandBuffer";
    r = fn.vkEndCommandBuffer(cmd);
  }
  if (r != VK_SUCCESS) free_fences_.push_back(fence);
  if (r == VK_SUCCESS) {
    call = "vkQueueSubmit";
    r = queue(cmd, fence);
  }
  if (r != VK_SUCCESS) fn.vkResetCommandBuffer(cmd, 0);
  check(r, call, what);
  last_ = what;
  free_cmds_.pop_back();
  in_flight_.push_back({cmd, fence, std::move(keep)});
  if (!wait) return;
  wait_for({fence});
  retire(false);
}

void VulkanStream::launch(const std::function<void(VkCommandBuffer)>& record, Keep keep, const std::string& what) {
  std::shared_ptr<Recording> recording;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (recording_ && capturing_ == std::this_thread::get_id()) recording = recording_;
  }
  if (!recording) return submit(record, std::move(keep), what, false);
  recording->add(record, std::move(keep), what);  // its own pool: no lock needed
}

void VulkanStream::submit_recording(const std::shared_ptr<Recording>& recording) {
  std::lock_guard<std::mutex> lock(mutex_);
  check_not_capturing("replay()");
  retire(false);
  VkFence fence = take_fence(recording->what());
  check(queue(recording->cmd(), fence), "vkQueueSubmit", recording->what());
  last_ = recording->what();
  in_flight_.push_back({VK_NULL_HANDLE, fence, {recording}});
}

}  // namespace kiln::vk
