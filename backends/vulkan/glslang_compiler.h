// GLSL -> SPIR-V in process with glslang, for Vulkan 1.1 (SPIR-V 1.3).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

// Thread-safe. Throws kiln::Error with glslang's log, naming `what` (the
// kernel), when the source does not compile.
std::vector<uint32_t> compile_glsl_to_spirv(const std::string& glsl, const std::string& what);

}  // namespace kiln
