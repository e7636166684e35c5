#include "backends/vulkan/vulkan_stream.h"

#include <algorithm>
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

namespace {
constexpr uint32_t kTimedPerPool = 256;  // launches; two queries each
}  // namespace

VulkanStream::~VulkanStream() {
  const DeviceFns& fn = core_->fn;
  fn.vkDeviceWaitIdle(core_->device);  // a lost device reports nothing more to wait for
  for (VkQueryPool p : timer_pools_) fn.vkDestroyQueryPool(core_->device, p, nullptr);
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

void VulkanStream::start_timing() {
  if (!can_time()) throw Error("vulkan backend: " + std::string(core_->props.deviceName) + " has no timestamps");
  std::lock_guard<std::mutex> lock(mutex_);
  if (timing_ != std::thread::id()) throw Error("vulkan backend: the stream is timing launches already");
  timing_ = std::this_thread::get_id();
  timed_ = 0;
}

size_t VulkanStream::timed_launches() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return timing_ == std::this_thread::get_id() ? timed_ : 0;
}

std::pair<VkQueryPool, uint32_t> VulkanStream::next_timer(const std::string& what) {
  size_t pool = timed_ / kTimedPerPool;
  if (pool == timer_pools_.size()) {
    auto info = vk::init<VkQueryPoolCreateInfo>(VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO);
    info.queryType = VK_QUERY_TYPE_TIMESTAMP;
    info.queryCount = 2 * kTimedPerPool;
    VkQueryPool p;
    check(core_->fn.vkCreateQueryPool(core_->device, &info, nullptr, &p), "vkCreateQueryPool", what);
    timer_pools_.push_back(p);
  }
  return {timer_pools_[pool], uint32_t(timed_ % kTimedPerPool) * 2};
}

std::vector<double> VulkanStream::stop_timing() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (timing_ != std::this_thread::get_id()) throw Error("vulkan backend: stop_timing() without start_timing()");
  size_t n = timed_;
  timing_ = {};
  timed_ = 0;
  check_not_capturing("stop_timing()");
  retire(true);
  uint32_t bits = core_->timestamp_bits;
  uint64_t mask = bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
  double tick = double(core_->props.limits.timestampPeriod) * 1e-9;
  std::vector<double> seconds;
  std::vector<uint64_t> ticks(2 * kTimedPerPool);
  for (size_t first = 0; first < n; first += kTimedPerPool) {
    uint32_t count = uint32_t(std::min<size_t>(n - first, kTimedPerPool));
    check(core_->fn.vkGetQueryPoolResults(core_->device, timer_pools_[first / kTimedPerPool], 0, 2 * count,
                                          ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
          "vkGetQueryPoolResults", "timed launches");
    for (uint32_t i = 0; i < count; ++i) seconds.push_back(double((ticks[2 * i + 1] - ticks[2 * i]) & mask) * tick);
  }
  return seconds;
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
                          bool wait, bool timed) {
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
  timed = timed && timing_ == std::this_thread::get_id();
  std::pair<VkQueryPool, uint32_t> timer{};
  if (timed) timer = next_timer(what);
  VkFence fence = take_fence(what);
  VkCommandBuffer cmd = free_cmds_.back();

  auto begin = vk::init<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  const char* call = "vkBeginCommandBuffer";
  VkResult r = fn.vkBeginCommandBuffer(cmd, &begin);
  if (r == VK_SUCCESS) {
    if (timed) {
      fn.vkCmdResetQueryPool(cmd, timer.first, timer.second, 2);
      fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timer.first, timer.second);
    }
    record(cmd);
    if (timed) fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timer.first, timer.second + 1);
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
  if (timed) ++timed_;  // only once queued: stop_timing() waits for every timed launch's queries
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
  if (!recording) return submit(record, std::move(keep), what, false, true);
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
