#include "backends/vulkan/glslang_compiler.h"

#include <mutex>

#include <glslang/Public/ResourceLimits.h>
#include <glslang/Public/ShaderLang.h>
#include <glslang/SPIRV/GlslangToSpv.h>

#include "kiln/error.h"

namespace kiln {

std::vector<uint32_t> compile_glsl_to_spirv(const std::string& glsl, const std::string& what) {
  // glslang keeps process-wide state (its symbol tables) that is not safe to
  // build from two threads at once.
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  static bool initialized = glslang::InitializeProcess();
  if (!initialized) throw Error("vulkan backend: glslang failed to initialize");

  const char* text = glsl.c_str();
  glslang::TShader shader(EShLangCompute);
  shader.setStrings(&text, 1);
  shader.setEnvInput(glslang::EShSourceGlsl, EShLangCompute, glslang::EShClientVulkan, 100);
  shader.setEnvClient(glslang::EShClientVulkan, glslang::EShTargetVulkan_1_1);
  shader.setEnvTarget(glslang::EShTargetSpv, glslang::EShTargetSpv_1_3);
  auto messages = static_cast<EShMessages>(EShMsgSpvRules | EShMsgVulkanRules);
  if (!shader.parse(GetDefaultResources(), 450, false, messages))
    throw Error("vulkan backend: glslang cannot compile " + what + ":\n" + shader.getInfoLog());

  glslang::TProgram program;
  program.addShader(&shader);
  if (!program.link(messages))
    throw Error("vulkan backend: glslang cannot link " + what + ":\n" + program.getInfoLog());

  std::vector<uint32_t> spirv;
  spv::SpvBuildLogger logger;
  glslang::SpvOptions options;
  glslang::GlslangToSpv(*program.getIntermediate(EShLangCompute), spirv, &logger, &options);
  if (spirv.empty())
    throw Error("vulkan backend: glslang made no SPIR-V for " + what + ":\n" + logger.getAllMessages());
  return spirv;
}

}  // namespace kiln
