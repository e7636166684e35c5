// GPU-scheduled kernels as GLSL 450 compute shaders, for the Vulkan backend.
//
// The kernel has the shape of codegen/emit/gpu_nest.h: gpu_block loops are
// gl_WorkGroupID and gpu_thread loops gl_LocalInvocationID, axis for axis.
// gpu_grid()'s blocks are the dispatch's workgroup counts. The workgroup size
// is fixed in the shader, so gpu_thread loops need constant extents.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "kiln/kernel.h"

namespace kiln {

// What the device lets a shader use. Without 8/16-bit storage, buffers of small
// elements are uint arrays, and a store changes its element with
// atomicAnd/atomicOr on the containing uint, so neighbours written by other
// invocations never race.
struct GlslOptions {
  bool storage8 = true;   // GL_EXT_shader_8bit_storage
  bool storage16 = true;  // GL_EXT_shader_16bit_storage
  // Keep f32 subnormals, as the CPU and the interpreter do (Vulkan lets a
  // driver flush them, and NVIDIA's does): SPV_KHR_float_controls.
  bool denorm_preserve = false;
  // Keep NaN, infinities and the sign of zero through f32 arithmetic
  // (SPV_KHR_float_controls' SignedZeroInfNanPreserve): without it a driver
  // may fold x - x to 0 where x is NaN (lavapipe does, for sqrt(x) - sqrt(x)).
  bool nan_preserve = false;
  // Sums across a row of invocations along x by subgroup operations
  // (GL_KHR_shader_subgroup_arithmetic, and _clustered for rows shorter
  // than a subgroup) where the device runs compute shaders in subgroups of
  // this fixed size, consecutive in gl_LocalInvocationIndex; 0: shared memory.
  int subgroup_size = 0;
  bool subgroup_clustered = false;
  // Index arithmetic (loop variables, params, the IR's i64 values) in 32-bit
  // ints: a GPU's 64-bit integer multiplies and divisions take several
  // instructions each. The device must then bind no buffer of more than
  // INT32_MAX elements and pass no param beyond INT32_MAX. A kernel with an
  // i64 constant beyond 32 bits keeps 64-bit indices.
  bool index32 = false;
};

// Whether emit_glsl(k, options) gives `k` 32-bit indices.
bool uses_index32(const Kernel& k, const GlslOptions& options);

// The workgroup size x, y, z: the extents of the gpu_thread loops, 1 on an axis
// without one. Throws kiln::Error for a kernel not scheduled for the GPU and
// for a gpu_thread loop whose extent is not a positive constant.
std::array<int64_t, 3> workgroup_size(const Kernel& k);

// Throws kiln::Error for a kernel not scheduled for the GPU or malformed IR.
std::string emit_glsl(const Kernel& k, const GlslOptions& options = {});

}  // namespace kiln
