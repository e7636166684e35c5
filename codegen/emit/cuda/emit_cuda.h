// Kernel IR -> CUDA C for the CUDA backend. The emitter makes no optimization
// decision: it prints what the schedule left in the Kernel.
//
// The kernel has the shape of codegen/emit/gpu_nest.h: gpu_block loops are
// blockIdx and gpu_thread loops threadIdx, axis for axis; gpu_grid() gives the
// launch's grid and block sizes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/emit/gpu_nest.h"
#include "kiln/kernel.h"

namespace kiln {

// The name of the kernel's __global__ function: its name as a C identifier.
std::string cuda_entry_name(const Kernel& k);

// The kernel as a CUDA C translation unit with one function,
//   extern "C" __global__ void entry_name(float* __restrict__ buf0, ...,
//                                         long long param0, ...)
// taking the global buffers in Kernel::global_buffers() order, then the params.
// Needs no CUDA headers. Throws kiln::Error for IR that the GPU cannot run,
// "... not scheduled for the GPU ..." for a kernel not of that shape.
std::string emit_cuda(const Kernel& k, const std::string& entry_name);

// The environment switches that change what emit_cuda writes for the same
// kernel (KILN_CUDA_PRELOAD, KILN_CUDA_FACTOR, KILN_CUDA_MMA_GEMV), as text
// for the disk cache's key: a compiled kernel is not reused across them.
std::string cuda_emit_switches();

// The launch of what emit_cuda() prints: gpu_grid(), except that a kernel
// whose schedule tiles its contraction for tensor cores (array_tile) runs 256
// threads a block (8 warps sharing the block's tile), 384 where it copies by
// tensor maps (a producer warpgroup, then two that multiply).
GpuGrid cuda_grid(const Kernel& k);

// A tensor map (Hopper's Tensor Memory Accelerator) that a warpgroup tile
// with `array_tile ... wgmma tma` takes after its params, as a
// `const __grid_constant__` 128-byte argument each, in this order: a 2-D view
// of the global buffer `buffer` (an argument index: Kernel::global_buffers()
// order) of 16-bit elements, `inner` of them a row (contiguous) and `outer`
// rows, which the kernel copies in boxes of 64 x `box_outer` elements into
// the 128-byte swizzle. The caller encodes each with the buffer's address
// (cuTensorMapEncodeTiled).
struct CudaTensorMap {
  int buffer = 0;
  int64_t inner = 0, outer = 0, box_outer = 0;
};

// The tensor maps the kernel takes; empty where it copies by cp.async (no
// `tma`, or operands that are not 2-D affine views: see emit_cuda.cpp).
std::vector<CudaTensorMap> cuda_tensor_maps(const Kernel& k);

// cuda_grid() of a kernel whose cuda_tensor_maps() the caller has already
// (they take emitting the kernel to find).
GpuGrid cuda_grid(const Kernel& k, const std::vector<CudaTensorMap>& maps);

}  // namespace kiln
