// Descriptions of devices that need not be present: what the schedules are
// made for when `kiln dump --device h100` shows a GPU's code on a machine
// without one, and what the codegen tests schedule for.
#pragma once

#include <cstdint>

#include "kiln/kiln.h"

namespace kiln {

// An NVIDIA H100 (SXM, 80 GB) as the CUDA backend describes it.
inline DeviceInfo h100_description() {
  DeviceInfo info;
  info.name = "NVIDIA H100 (a description; no GPU needed)";
  info.backend = "cuda";
  info.cores = 132;
  info.features = "sm_90";
  info.memory_bytes = int64_t(80) << 30;
  info.warp_size = 32;
  info.max_threads = 1024;
  info.shared_bytes = 48 << 10;
  return info;
}

}  // namespace kiln
