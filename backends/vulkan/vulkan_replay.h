// Launches recorded from a VulkanStream into one command buffer and submitted
// again as one unit. Internal to backends/vulkan.
#pragma once

#include <memory>
#include <string>

#include "backends/vulkan/vulkan_stream.h"

namespace kiln::vk {

// The command buffer of a capture and what its commands use (pipelines,
// descriptor sets, buffers). It has a command pool of its own, so the
// capturing thread records without the stream's lock; it lives as long as the
// Replay and every submission of it still in flight.
class Recording {
 public:
  explicit Recording(std::shared_ptr<DeviceCore> core);  // begins recording
  ~Recording();
  Recording(const Recording&) = delete;
  Recording& operator=(const Recording&) = delete;

  // Appends a launch's commands; they start with a barrier on earlier work.
  void add(const std::function<void(VkCommandBuffer)>& record, VulkanStream::Keep keep, const std::string& what);
  void end();

  VkCommandBuffer cmd() const { return cmd_; }
  const std::string& what() const { return what_; }

 private:
  std::shared_ptr<DeviceCore> core_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VulkanStream::Keep keep_;
  int launches_ = 0;
  std::string what_;  // "a replay of 50 launches"
};

class VulkanReplay : public Replay {
 public:
  VulkanReplay(VulkanStream& stream, std::shared_ptr<Recording> recording)
      : stream_(stream), recording_(std::move(recording)) {}
  void replay() override { stream_.submit_recording(recording_); }

 private:
  VulkanStream& stream_;
  std::shared_ptr<Recording> recording_;
};

}  // namespace kiln::vk
