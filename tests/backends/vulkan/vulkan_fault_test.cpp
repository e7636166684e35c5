// Injected faults on Vulkan (tests/fault_testing.h): glslang failing, device
// memory running out, a kernel timing out; each an error, then the next
// request works, with no validation message.
#include <gtest/gtest.h>

#include "tests/backends/vulkan/vulkan_testing.h"
#include "tests/fault_testing.h"

namespace kiln {
namespace {

class VulkanFault : public testing::VulkanTest {
 protected:
  void TearDown() override {
    fault::disarm_all();
    VulkanTest::TearDown();
  }
};

TEST_F(VulkanFault, CompileFailsThenTheSameKernelCompiles) { testing::expect_compile_fault_recovers(dev_, 1.375); }

// 28 MB: a size class (24-28 MiB) that no other Vulkan test allocates.
TEST_F(VulkanFault, DeviceMemoryRunsOutThenTheSameGraphRuns) {
  testing::expect_alloc_fault_recovers(dev_, 2.625, 28000000, "VK_ERROR_OUT_OF_DEVICE_MEMORY");
}

TEST_F(VulkanFault, KernelTimesOutThenTheGraphRunsAgain) { testing::expect_launch_fault_recovers(dev_, 4.875); }

}  // namespace
}  // namespace kiln
