// The Vulkan device the tests run on, with the validation layers on, and a
// fixture that fails a test for any validation message it caused.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "backends/vulkan/vulkan_device.h"
#include "kiln/kiln.h"
#include "tests/testing.h"

namespace kiln::testing {

// The registry's first Vulkan device, or null. The instance reads
// KILN_VULKAN_VALIDATION once, when the first device is made, so it is set here
// before anything asks for a device.
inline std::shared_ptr<Device> vulkan_device() {
  static std::shared_ptr<Device> dev = [] {
    setenv("KILN_VULKAN_VALIDATION", "1", 1);
    for (const auto& d : devices())
      if (d->info().backend == "vulkan") return d;
    return std::shared_ptr<Device>();
  }();
  return dev;
}

// The same physical device without the 8/16-bit storage extensions (small
// elements go through atomics on their containing uint), without subgroup
// operations (allreduce sums through shared memory) and with 64-bit indices.
inline std::shared_ptr<Device> vulkan_device_without_small_storage() {
  static std::shared_ptr<Device> dev = [] {
    if (!vulkan_device()) return std::shared_ptr<Device>();
    auto all = make_vulkan_devices(VulkanOptions{false, false, false, false});
    return all.empty() ? nullptr : all[0];
  }();
  return dev;
}

class VulkanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dev_ = vulkan_device();
    if (!dev_) GTEST_SKIP() << "no Vulkan device on this machine";
    if (!vulkan_validation_enabled()) std::cerr << "note: the Vulkan validation layer is not installed\n";
  }

  // Messages from before the first test (making the device) count against it.
  void TearDown() override {
    if (!dev_) return;
    dev_->stream().synchronize();
    for (const std::string& m : vulkan_validation_messages()) ADD_FAILURE() << "Vulkan validation: " << m;
    clear_vulkan_validation_messages();
  }

  Device& dev() { return *dev_; }

  std::shared_ptr<Device> dev_;
};

// Runs `g` on `dev` through CompiledGraph (lowering, the default schedule, the
// kernel cache) and on the interpreter, and expects the same outputs.
inline void expect_matches_interpreter_on(const std::shared_ptr<Device>& dev, const Graph& g,
                                          const Bindings& symbols = {}, double scale = 1, uint64_t seed = 7) {
  auto inputs = inputs_for(g, symbols, seed, scale);
  std::vector<HostTensor> want = interpret(g, inputs, symbols);
  CompiledGraph cg(g, dev);
  std::vector<HostTensor> got = cg.run(inputs, symbols);
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    std::string diff = compare(want[o], got[o], tolerance_for(want[o].dtype));
    EXPECT_TRUE(diff.empty()) << "output " << o << ": " << diff << "\n" << print(g);
  }
}

}  // namespace kiln::testing
