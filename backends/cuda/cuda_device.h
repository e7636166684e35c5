// The CUDA backend: kernels become CUDA C (codegen/emit/cuda), NVRTC compiles
// them for the device's own architecture, and the driver API loads and
// launches them. libcuda and libnvrtc are opened at run time, so a binary with
// this backend runs on machines without either.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/runtime.h"

namespace kiln {

// One Device per GPU that the driver `libcuda` (a dlopen name) finds. Empty,
// never an exception, when the library cannot be opened, has no GPU or fails
// in any way; `why`, if given, then says what happened.
std::vector<std::shared_ptr<Device>> make_cuda_devices(const std::string& libcuda = "libcuda.so.1",
                                                       std::string* why = nullptr);

}  // namespace kiln
