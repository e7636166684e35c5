// Injected faults, for tests of the error paths (issue 4): make the next
// device allocations, CPU JIT compiles or kernel launches fail as they would
// for real, and check that the error is clear, nothing leaks and the next
// request works. Off unless armed: each site costs one relaxed atomic load.
//
// Armed from a test (fault::arm) or from the environment for a whole process:
//   KILN_FAULT=alloc:3,jit_compile    the next 3 allocations and the next compile fail
#pragma once

#include <string_view>

namespace kiln::fault {

enum class Site {
  alloc,        // a device allocation (CpuBuffer; Vulkan's vkAllocateMemory and CUDA's cuMemAlloc report out of memory)
  jit_compile,  // a kernel compile: the CPU backend's JIT (after the module is added, before its code
                // exists), glslang on Vulkan, NVRTC on CUDA
  launch,       // a kernel launch, failing as a GPU reports a kernel that timed out
};
constexpr int kSites = 3;

std::string_view site_name(Site site);

// The next `count` calls that reach `site` fail; 0 disarms it.
void arm(Site site, int count = 1);
void disarm_all();

// True if this call at `site` must fail (and counts it). Reads KILN_FAULT on
// its first call.
bool fires(Site site);

// True if the next call at `site` would fail, without counting it. The kernel
// cache skips its disk entries while jit_compile is armed, so that the armed
// compile happens.
bool armed(Site site);

}  // namespace kiln::fault
