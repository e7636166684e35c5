// A device's queue as a kiln Stream. Internal to backends/vulkan.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/vulkan/vulkan_core.h"
#include "kiln/runtime.h"

namespace kiln::vk {

class Recording;

// Each submission is one command buffer with a fence. Commands run in
// submission order: every submission starts with a barrier on all earlier
// work. What a submission uses (buffers, pipelines, descriptor sets) is kept
// alive until its fence signals, so a Buffer may be dropped right after a
// launch that reads it.
//
// Capture is per thread (like CUDA's thread-local mode): while `record` runs,
// the capturing thread's launches go into one command buffer of a Replay, and
// other threads' work is submitted as usual.
class VulkanStream : public Stream {
 public:
  using Keep = std::vector<std::shared_ptr<const void>>;

  explicit VulkanStream(std::shared_ptr<DeviceCore> core);
  ~VulkanStream() override;
  VulkanStream(const VulkanStream&) = delete;
  VulkanStream& operator=(const VulkanStream&) = delete;

  // Waits for every submission; throws kiln::Error naming the VkResult and the
  // last work submitted (device lost, ...).
  void synchronize() override;

  bool can_capture() const override { return true; }
  std::unique_ptr<Replay> capture(const std::function<void()>& record) override;

  // Timestamp queries: a timed launch's command buffer writes the device's
  // clock before its commands (once all earlier work is done) and after them.
  bool can_time() const override { return core_->timestamp_bits > 0; }
  void start_timing() override;
  size_t timed_launches() const override;
  std::vector<double> stop_timing() override;

  // Records commands with `record` (which must not throw) and submits them.
  // With `wait`, returns once they have finished. `what` names the work in
  // errors ("kernel 'k0_add'"). Copies and waits are errors while this thread
  // captures.
  void submit(const std::function<void(VkCommandBuffer)>& record, Keep keep, const std::string& what,
              bool wait, bool timed = false);
  // A kernel launch: recorded into this thread's capture, or else submitted
  // without waiting.
  void launch(const std::function<void(VkCommandBuffer)>& record, Keep keep, const std::string& what);
  // Queues a captured command buffer; what it uses stays alive until it finishes.
  void submit_recording(const std::shared_ptr<Recording>& recording);

  const DeviceCore* core() const { return core_.get(); }

 private:
  struct InFlight {
    VkCommandBuffer cmd;  // null for a Recording's, which is not ours to reuse
    VkFence fence;
    Keep keep;
  };

  void retire(bool wait);  // needs mutex_
  VkFence take_fence(const std::string& what);  // needs mutex_
  VkResult queue(VkCommandBuffer cmd, VkFence fence);  // needs mutex_; gives `fence` back on failure
  void check_not_capturing(const std::string& what);  // needs mutex_
  void check_wait(VkResult r);
  void wait_for(const std::vector<VkFence>& fences);  // all of them; needs mutex_
  // The pool and first query of the next timed launch's two timestamps; needs mutex_.
  std::pair<VkQueryPool, uint32_t> next_timer(const std::string& what);

  std::shared_ptr<DeviceCore> core_;
  mutable std::mutex mutex_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  std::deque<InFlight> in_flight_;  // oldest first
  std::vector<VkCommandBuffer> free_cmds_;
  std::vector<VkFence> free_fences_;
  std::string last_;  // what the newest submission was
  std::thread::id capturing_;  // the thread that captures, if any
  std::shared_ptr<Recording> recording_;
  std::thread::id timing_;  // the thread whose launches are timed, if any
  size_t timed_ = 0;  // launches timed since start_timing()
  std::vector<VkQueryPool> timer_pools_;  // kTimedPerPool launches each, kept for the next timing
};

// A memory barrier from all earlier work in `src` stages to `dst`.
void barrier(const DeviceCore& core, VkCommandBuffer cmd, VkPipelineStageFlags src_stages,
             VkAccessFlags src_access, VkPipelineStageFlags dst_stages, VkAccessFlags dst_access);

}  // namespace kiln::vk
