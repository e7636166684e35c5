// GPU-scheduled kernels as GLSL 450 compute shaders, for the Vulkan backend.
//
// A kernel reaching a GPU backend is one perfect nest of bound loops at the top
// of its body: one to three gpu_block loops, then one to three gpu_thread loops
// (either group may be empty); everything inside the innermost bound loop runs
// per invocation. The innermost gpu_block loop is gl_WorkGroupID.x, the next
// outward .y, then .z; gpu_thread loops map to gl_LocalInvocationID the same
// way. A kernel with no bound loops runs as one invocation.
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
};

// How a kernel's bound loops map onto a dispatch.
struct WorkgroupGrid {
  std::array<Expr, 3> groups;                // workgroup counts x, y, z: i64 expressions of the params
  std::array<int64_t, 3> threads{1, 1, 1};  // the workgroup size, fixed in the shader
};

// Throws kiln::Error ("... not scheduled for the GPU ...") for a parallel loop
// or bound loops not in the shape above, and for a gpu_thread loop whose extent
// is not a positive constant.
WorkgroupGrid workgroup_grid(const Kernel& k);

// Throws kiln::Error for a kernel not scheduled for the GPU or malformed IR.
std::string emit_glsl(const Kernel& k, const GlslOptions& options = {});

}  // namespace kiln
