// Kernel IR -> CUDA C for the CUDA backend. The emitter makes no optimization
// decision: it prints what the schedule left in the Kernel.
//
// What a GPU kernel must look like: its body is one perfect nest of bound loops
// at the top, up to three gpu_block loops and then up to three gpu_thread
// loops. The innermost gpu_block loop is blockIdx.x, the one outside it .y,
// then .z; gpu_thread loops map to threadIdx the same way. Their extents are
// computed from the kernel's params alone and become the launch's grid and
// block sizes. Everything inside the innermost bound loop runs per thread. A
// kernel without bound loops runs as one thread.
#pragma once

#include <array>
#include <string>

#include "kiln/kernel.h"

namespace kiln {

// The bound loops' extents as x, y, z; null where the kernel has no such loop
// (a size of 1).
struct GpuGrid {
  std::array<Expr, 3> blocks;
  std::array<Expr, 3> threads;
};

// Throws kiln::Error ("... not scheduled for the GPU ...") unless `k` has the
// shape above and no parallel loop.
GpuGrid gpu_grid(const Kernel& k);

// The name of the kernel's __global__ function: its name as a C identifier.
std::string cuda_entry_name(const Kernel& k);

// The kernel as a CUDA C translation unit with one function,
//   extern "C" __global__ void entry_name(float* __restrict__ buf0, ...,
//                                         long long param0, ...)
// taking the global buffers in Kernel::global_buffers() order, then the params.
// Needs no CUDA headers. Throws kiln::Error for IR that the GPU cannot run.
std::string emit_cuda(const Kernel& k, const std::string& entry_name);

}  // namespace kiln
