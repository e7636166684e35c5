#include <cstring>
#include <mutex>
#include <vector>

#ifdef KILN_WITH_LLVM
#include "backends/cpu/cpu_device.h"
#endif
#ifdef KILN_WITH_CUDA
#include "backends/cuda/cuda_device.h"
#endif
#ifdef KILN_WITH_VULKAN
#include "backends/vulkan/vulkan_device.h"
#endif
#include "backends/systolic/systolic_device.h"
#include "kiln/error.h"
#include "kiln/runtime.h"

namespace kiln {

void check_copy_range(const Buffer& src, int64_t src_offset, const Buffer& dst, int64_t dst_offset, int64_t bytes) {
  auto fits = [&](const Buffer& b, int64_t off) { return off >= 0 && off <= b.bytes() && bytes <= b.bytes() - off; };
  if (bytes < 0 || !fits(src, src_offset) || !fits(dst, dst_offset))
    throw Error("copy of " + std::to_string(bytes) + " bytes from offset " + std::to_string(src_offset) + " of a " +
                std::to_string(src.bytes()) + "-byte buffer to offset " + std::to_string(dst_offset) + " of a " +
                std::to_string(dst.bytes()) + "-byte buffer is out of range");
}

void Device::copy(const Buffer& src, int64_t src_offset, Buffer& dst, int64_t dst_offset, int64_t bytes) {
  check_copy_range(src, src_offset, dst, dst_offset, bytes);
  if (bytes == 0) return;
  std::vector<uint8_t> s(size_t(src.bytes())), d(size_t(dst.bytes()));
  read(src, s.data(), src.bytes());
  read(dst, d.data(), dst.bytes());
  std::memcpy(d.data() + dst_offset, s.data() + src_offset, size_t(bytes));
  write(dst, d.data(), dst.bytes());
}

std::vector<std::shared_ptr<Device>> devices() {
  static std::once_flag once;
  // Never destroyed: at exit, GPU drivers may already be unloaded, and tearing
  // down their devices then crashes (seen with the NVIDIA Vulkan driver).
  static auto& found = *new std::vector<std::shared_ptr<Device>>();
  // GPU backends that find no device (or no driver) add nothing.
  std::call_once(once, [] {
#ifdef KILN_WITH_LLVM
    found.push_back(make_cpu_device());
#endif
#ifdef KILN_WITH_CUDA
    for (auto& d : make_cuda_devices()) found.push_back(d);
#endif
#ifdef KILN_WITH_VULKAN
    for (auto& d : make_vulkan_devices()) found.push_back(d);
#endif
    // Simulated, so always there; last, so never a default.
    found.push_back(systolic::make_systolic_device());
  });
  return found;
}

std::shared_ptr<Device> device(const std::string& which) {
  auto all = devices();
  for (size_t i = 0; i < all.size(); ++i)
    if (which == std::to_string(i) || which == all[i]->info().backend || which == all[i]->info().name)
      return all[i];
  std::string names;
  for (size_t i = 0; i < all.size(); ++i) names += (i ? ", " : "") + all[i]->info().backend;
  throw Error("no device '" + which + "' on this machine (found: " + (names.empty() ? "none" : names) + ")");
}

}  // namespace kiln
