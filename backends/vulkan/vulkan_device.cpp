#include "backends/vulkan/vulkan_device.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <iostream>
#include <map>
#include <type_traits>

#include <glslang/build_info.h>

#include "backends/vulkan/glslang_compiler.h"
#include "backends/vulkan/vulkan_memory.h"
#include "backends/vulkan/vulkan_program.h"
#include "backends/vulkan/vulkan_stream.h"
#include "codegen/emit/glsl/emit_glsl.h"
#include "codegen/emit/gpu_nest.h"
#include "kiln/error.h"
#include "runtime/fault.h"

namespace kiln {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("vulkan backend: " + what); }

class VulkanBuffer : public Buffer {
 public:
  VulkanBuffer(std::shared_ptr<vk::Allocation> a, int64_t bytes, const vk::DeviceCore* core)
      : alloc_(std::move(a)), bytes_(bytes), core_(core) {}

  int64_t bytes() const override { return bytes_; }
  const std::shared_ptr<vk::Allocation>& allocation() const { return alloc_; }
  const vk::DeviceCore* core() const { return core_; }

 private:
  std::shared_ptr<vk::Allocation> alloc_;
  int64_t bytes_;
  const vk::DeviceCore* core_;
};

// VulkanBuffer& or const VulkanBuffer&, as `b` is; a buffer of another device
// is an error.
template <typename B>
auto& vulkan_buffer(B& b, const vk::DeviceCore* core, const std::string& what) {
  using Vk = std::conditional_t<std::is_const_v<B>, const VulkanBuffer, VulkanBuffer>;
  auto* vb = dynamic_cast<Vk*>(&b);
  if (!vb || vb->core() != core) fail(what + " a buffer of another device");
  return *vb;
}

void check_size(int64_t bytes, const Buffer& b, const char* what) {
  if (bytes < 0 || bytes > b.bytes())
    fail(std::string(what) + " " + std::to_string(bytes) + " bytes of a " + std::to_string(b.bytes()) +
         "-byte buffer");
}

// Kernels read what earlier kernels and copies wrote, and must not overwrite
// what earlier ones still read.
constexpr VkPipelineStageFlags kWork = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkAccessFlags kWrites = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;

class VulkanExecutable : public Executable {
 public:
  VulkanExecutable(const Kernel& k, std::array<Expr, 3> groups, std::shared_ptr<vk::Program> program,
                   std::shared_ptr<vk::DeviceCore> core, bool index32)
      : name_(k.name), params_(k.params), num_buffers_(k.global_buffers().size()), groups_(std::move(groups)),
        program_(std::move(program)), core_(std::move(core)), index32_(index32) {
    for (const BufferDecl& b : k.buffers)
      if (b.scope == MemScope::Global) element_bytes_.push_back(dtype_size(b.dtype));
  }

  const std::string& name() const override { return name_; }

  void launch(Stream& s, const std::vector<Buffer*>& args, const std::vector<int64_t>& params) override {
    if (args.size() != num_buffers_ || params.size() != params_.size())
      fail("kernel '" + name_ + "' takes " + std::to_string(num_buffers_) + " buffers and " +
           std::to_string(params_.size()) + " params, got " + std::to_string(args.size()) + " and " +
           std::to_string(params.size()));
    auto* stream = dynamic_cast<vk::VulkanStream*>(&s);
    if (!stream || stream->core() != core_.get()) fail("kernel '" + name_ + "' launched on another device's stream");
    if (fault::fires(fault::Site::launch)) fail("kernel '" + name_ + "' timed out (injected fault)");
    if (index32_)  // the shader's indices are 32-bit ints
      for (int64_t p : params)
        if (p > INT32_MAX || p < INT32_MIN)
          fail("kernel '" + name_ + "' has 32-bit indices and was given the param " + std::to_string(p));
    std::array<int64_t, 3> groups = group_counts(params);
    if (groups[0] == 0 || groups[1] == 0 || groups[2] == 0) return;

    vk::VulkanStream::Keep keep{program_};
    std::vector<VkDescriptorBufferInfo> infos;
    for (size_t i = 0; i < args.size(); ++i) {
      Buffer* b = args[i];
      if (!b) fail("kernel '" + name_ + "' was given a null buffer");
      const VulkanBuffer& vb = vulkan_buffer(*b, core_.get(), "kernel '" + name_ + "' launched with");
      if (index32_ && vb.bytes() / element_bytes_.at(i) > INT32_MAX)
        fail("kernel '" + name_ + "' has 32-bit indices and was given a buffer of " +
             std::to_string(vb.bytes() / element_bytes_[i]) + " elements");
      infos.push_back(descriptor(vb));
      keep.push_back(vb.allocation());
    }
    VkDescriptorSet set = VK_NULL_HANDLE;
    if (!infos.empty()) {
      keep.push_back(program_->acquire_set(&set));
      write_descriptors(set, infos);
    }
    stream->launch([&](VkCommandBuffer cmd) { record(cmd, set, params, groups); }, std::move(keep),
                   "kernel '" + name_ + "'");
  }

 private:
  std::array<int64_t, 3> group_counts(const std::vector<int64_t>& params) const {
    std::map<std::string, int64_t> vars;
    for (size_t j = 0; j < params.size(); ++j) vars[params_[j]] = params[j];
    std::array<int64_t, 3> groups;
    for (int i = 0; i < 3; ++i) {
      // A loop of negative extent runs no times; gl_WorkGroupID is a uint.
      groups[i] = std::max<int64_t>(evaluate_index(groups_[i], vars), 0);
      if (groups[i] > int64_t(UINT32_MAX))
        fail("kernel '" + name_ + "' needs " + std::to_string(groups[i]) + " workgroups along " + "xyz"[i]);
    }
    return groups;
  }

  VkDescriptorBufferInfo descriptor(const VulkanBuffer& b) const {
    VkDeviceSize limit = core_->props.limits.maxStorageBufferRange;
    if (VkDeviceSize(b.bytes()) > limit)
      fail("kernel '" + name_ + "' was given a " + std::to_string(b.bytes()) +
           "-byte buffer; this device binds at most " + std::to_string(limit) + " bytes");
    return {b.allocation()->buffer, 0, std::min(b.allocation()->size, limit)};
  }

  void write_descriptors(VkDescriptorSet set, const std::vector<VkDescriptorBufferInfo>& infos) const {
    std::vector<VkWriteDescriptorSet> writes(infos.size());
    for (size_t i = 0; i < infos.size(); ++i) {
      writes[i] = vk::init<VkWriteDescriptorSet>(VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET);
      writes[i].dstSet = set;
      writes[i].dstBinding = uint32_t(i);
      writes[i].descriptorCount = 1;
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
    }
    core_->fn.vkUpdateDescriptorSets(core_->device, uint32_t(writes.size()), writes.data(), 0, nullptr);
  }

  // Grids larger than a dispatch allows go out as several, each offset by a
  // base that gl_WorkGroupID includes.
  void record(VkCommandBuffer cmd, VkDescriptorSet set, const std::vector<int64_t>& params,
              const std::array<int64_t, 3>& groups) const {
    const vk::DeviceFns& fn = core_->fn;
    vk::barrier(*core_, cmd, kWork, kWrites, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    fn.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, program_->pipeline());
    if (set) fn.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, program_->layout(), 0, 1, &set, 0, nullptr);
    if (!params.empty())
      fn.vkCmdPushConstants(cmd, program_->layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0,
                            uint32_t(params.size() * sizeof(int64_t)), params.data());
    const uint32_t* most = core_->props.limits.maxComputeWorkGroupCount;
    for (int64_t z = 0; z < groups[2]; z += most[2])
      for (int64_t y = 0; y < groups[1]; y += most[1])
        for (int64_t x = 0; x < groups[0]; x += most[0])
          fn.vkCmdDispatchBase(cmd, uint32_t(x), uint32_t(y), uint32_t(z),
                               uint32_t(std::min<int64_t>(most[0], groups[0] - x)),
                               uint32_t(std::min<int64_t>(most[1], groups[1] - y)),
                               uint32_t(std::min<int64_t>(most[2], groups[2] - z)));
  }

  std::string name_;
  std::vector<std::string> params_;
  size_t num_buffers_;
  std::array<Expr, 3> groups_;  // workgroup counts x, y, z
  std::shared_ptr<vk::Program> program_;
  std::shared_ptr<vk::DeviceCore> core_;
  bool index32_;
  std::vector<int64_t> element_bytes_;  // per global buffer
};

class VulkanDevice : public Device {
 public:
  VulkanDevice(std::shared_ptr<vk::DeviceCore> core, DeviceInfo info, GlslOptions glsl)
      : core_(std::move(core)), info_(std::move(info)), glsl_(glsl),
        tensors_(std::make_shared<vk::MemoryPool>(core_, vk::MemoryPool::Kind::DeviceLocal)),
        staging_(std::make_shared<vk::MemoryPool>(core_, vk::MemoryPool::Kind::Staging)), stream_(core_) {
    auto cache = vk::init<VkPipelineCacheCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO);
    vk::check(core_->fn.vkCreatePipelineCache(core_->device, &cache, nullptr, &cache_), "vkCreatePipelineCache",
              info_.name);
  }

  ~VulkanDevice() override { core_->fn.vkDestroyPipelineCache(core_->device, cache_, nullptr); }

  const DeviceInfo& info() const override { return info_; }

  std::shared_ptr<Buffer> allocate(int64_t bytes) override {
    return std::make_shared<VulkanBuffer>(tensors_->allocate(bytes), bytes, core_.get());
  }

  void write(Buffer& dst, const void* src, int64_t bytes) override {
    VulkanBuffer& buf = vulkan_buffer(dst, core_.get(), "cannot write");
    check_size(bytes, buf, "cannot write");
    if (bytes == 0) return;
    std::shared_ptr<vk::Allocation> staging = staging_->allocate(bytes);
    std::memcpy(staging->mapped, src, size_t(bytes));
    VkBufferCopy region{0, 0, VkDeviceSize(bytes)};
    stream_.submit(
        [&](VkCommandBuffer cmd) {
          vk::barrier(*core_, cmd, kWork, kWrites | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT,
                      VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
          core_->fn.vkCmdCopyBuffer(cmd, staging->buffer, buf.allocation()->buffer, 1, &region);
        },
        {staging, buf.allocation()}, "a write of " + std::to_string(bytes) + " bytes", false);
  }

  void read(const Buffer& src, void* dst, int64_t bytes) override {
    const VulkanBuffer& buf = vulkan_buffer(src, core_.get(), "cannot read");
    check_size(bytes, buf, "cannot read");
    if (bytes == 0) return;
    std::shared_ptr<vk::Allocation> staging = staging_->allocate(bytes);
    VkBufferCopy region{0, 0, VkDeviceSize(bytes)};
    stream_.submit(
        [&](VkCommandBuffer cmd) {
          vk::barrier(*core_, cmd, kWork, kWrites, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
          core_->fn.vkCmdCopyBuffer(cmd, buf.allocation()->buffer, staging->buffer, 1, &region);
          vk::barrier(*core_, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        },
        {staging, buf.allocation()}, "a read of " + std::to_string(bytes) + " bytes", true);
    std::memcpy(dst, staging->mapped, size_t(bytes));
  }

  std::shared_ptr<Executable> compile(const Kernel& k) override { return load_artifact(k, *compile_artifact(k)); }

  // The artifact is the kernel's SPIR-V; the driver's own code for it stays
  // in the driver's (in-memory) pipeline cache.
  std::string artifact_identity() const override {
    const VkPhysicalDeviceProperties& p = core_->props;
    return "glslang " + std::to_string(GLSLANG_VERSION_MAJOR) + "." + std::to_string(GLSLANG_VERSION_MINOR) + "." +
           std::to_string(GLSLANG_VERSION_PATCH) + GLSLANG_VERSION_FLAVOR + "; vulkan " +
           std::to_string(p.apiVersion) + "; driver " + std::to_string(p.driverVersion) + "; ids " +
           std::to_string(p.vendorID) + ":" + std::to_string(p.deviceID) + "; glsl " +
           std::to_string(glsl_.storage8) + std::to_string(glsl_.storage16) + std::to_string(glsl_.denorm_preserve) +
           std::to_string(glsl_.nan_preserve) +
           (glsl_.index32 ? " index32" : "");
  }

  std::optional<std::string> compile_artifact(const Kernel& k) override {
    gpu_grid(k, "vulkan backend");  // checks the kernel's shape
    check_limits(k, workgroup_size(k));
    if (fault::fires(fault::Site::jit_compile)) fail("cannot compile kernel '" + k.name + "': injected fault (jit_compile)");
    std::vector<uint32_t> spirv = compile_glsl_to_spirv(emit_glsl(k, glsl_), "kernel '" + k.name + "'");
    return std::string(reinterpret_cast<const char*>(spirv.data()), spirv.size() * sizeof(uint32_t));
  }

  std::shared_ptr<Executable> load_artifact(const Kernel& k, std::string_view bytes) override {
    GpuGrid grid = gpu_grid(k, "vulkan backend");
    check_limits(k, workgroup_size(k));
    std::vector<uint32_t> spirv(bytes.size() / sizeof(uint32_t));
    if (!bytes.empty()) std::memcpy(spirv.data(), bytes.data(), spirv.size() * sizeof(uint32_t));
    constexpr uint32_t kSpirvMagic = 0x07230203;
    if (bytes.size() % sizeof(uint32_t) != 0 || spirv.size() < 5 || spirv[0] != kSpirvMagic)
      fail("kernel '" + k.name + "': the bytes to load are not SPIR-V");
    auto program = std::make_shared<vk::Program>(core_, cache_, spirv, int(k.global_buffers().size()),
                                                 int(k.params.size()), k.name);
    return std::make_shared<VulkanExecutable>(k, std::move(grid.blocks), std::move(program), core_,
                                              uses_index32(k, glsl_));
  }

  std::string target_source(const Kernel& k) override { return emit_glsl(k, glsl_); }

  Stream& stream() override { return stream_; }

 private:
  void check_limits(const Kernel& k, const std::array<int64_t, 3>& size) const {
    const VkPhysicalDeviceLimits& limits = core_->props.limits;
    std::string what = "kernel '" + k.name + "' ";
    int64_t threads = size[0] * size[1] * size[2];
    for (int i = 0; i < 3; ++i)
      if (size[i] > int64_t(limits.maxComputeWorkGroupSize[i])) threads = INT64_MAX;
    if (threads > int64_t(limits.maxComputeWorkGroupInvocations))
      fail(what + "has workgroups of " + std::to_string(size[0]) + " x " + std::to_string(size[1]) + " x " +
           std::to_string(size[2]) + " invocations, more than " + info_.name + " allows");
    if (k.params.size() * sizeof(int64_t) > limits.maxPushConstantsSize)
      fail(what + "has " + std::to_string(k.params.size()) + " params; push constants hold " +
           std::to_string(limits.maxPushConstantsSize / sizeof(int64_t)));
    if (k.global_buffers().size() > limits.maxPerStageDescriptorStorageBuffers)
      fail(what + "binds " + std::to_string(k.global_buffers().size()) + " buffers, more than " + info_.name +
           " allows");
    int64_t shared = 0;
    for (const BufferDecl& b : k.buffers)
      if (b.scope == MemScope::Shared) shared += std::max<int64_t>(b.size, 1) * 4;  // compute types, 4 bytes
    if (shared > int64_t(limits.maxComputeSharedMemorySize))
      fail(what + "uses " + std::to_string(shared) + " bytes of shared memory, more than " + info_.name + " has");
  }

  std::shared_ptr<vk::DeviceCore> core_;
  DeviceInfo info_;
  GlslOptions glsl_;
  std::shared_ptr<vk::MemoryPool> tensors_, staging_;
  VkPipelineCache cache_ = VK_NULL_HANDLE;
  vk::VulkanStream stream_;  // last: destroyed first, once the work in flight is done
};

// --- Finding and opening devices ---

bool has_extension(const std::vector<VkExtensionProperties>& exts, const char* name) {
  for (const VkExtensionProperties& e : exts)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

std::vector<VkExtensionProperties> device_extensions(const vk::Instance& inst, VkPhysicalDevice pd) {
  uint32_t n = 0;
  inst.fn().vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  inst.fn().vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data());
  exts.resize(n);
  return exts;
}

// What kiln needs to know of a physical device before opening it.
struct Capabilities {
  VkPhysicalDeviceProperties props{};
  uint32_t api = 0;
  uint32_t queue_family = 0;
  uint32_t timestamp_bits = 0;  // 0: no timestamps on the queue
  uint32_t subgroup_size = 0;
  bool subgroup_arithmetic = false, subgroup_clustered = false;  // in compute shaders
  int compute_units = 1;
  int64_t memory_bytes = 0;
  bool storage16 = false, storage8 = false, float16 = false, int8 = false, denorm_preserve = false;
  bool nan_preserve = false;
  bool needs_8bit_extension = false;  // 8-bit storage is core only from Vulkan 1.2
  bool needs_float_controls_extension = false;  // so are float controls
};

// The first queue family with compute, and its timestamps' valid bits.
bool find_compute_queue(const vk::Instance& inst, VkPhysicalDevice pd, uint32_t* family, uint32_t* timestamp_bits) {
  uint32_t n = 0;
  inst.fn().vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  inst.fn().vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families.data());
  for (uint32_t i = 0; i < n; ++i)
    if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
      *family = i;
      *timestamp_bits = families[i].timestampValidBits;
      return true;
    }
  return false;
}

void query_properties(const vk::Instance& inst, VkPhysicalDevice pd, const std::vector<VkExtensionProperties>& exts,
                      Capabilities& c) {
  auto subgroup = vk::init<VkPhysicalDeviceSubgroupProperties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
  auto nv = vk::init<VkPhysicalDeviceShaderSMBuiltinsPropertiesNV>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV);
  auto amd = vk::init<VkPhysicalDeviceShaderCorePropertiesAMD>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD);
  auto controls = vk::init<VkPhysicalDeviceFloatControlsProperties>(
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FLOAT_CONTROLS_PROPERTIES);
  auto props = vk::init<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
  props.pNext = &subgroup;
  bool has_controls =
      c.api >= VK_API_VERSION_1_2 || has_extension(exts, VK_KHR_SHADER_FLOAT_CONTROLS_EXTENSION_NAME);
  if (has_controls) {
    controls.pNext = props.pNext;
    props.pNext = &controls;
  }
  bool has_nv = has_extension(exts, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME);
  bool has_amd = has_extension(exts, VK_AMD_SHADER_CORE_PROPERTIES_EXTENSION_NAME);
  if (has_nv) {
    nv.pNext = props.pNext;
    props.pNext = &nv;
  }
  if (has_amd) {
    amd.pNext = props.pNext;
    props.pNext = &amd;
  }
  inst.fn().vkGetPhysicalDeviceProperties2(pd, &props);
  c.subgroup_size = subgroup.subgroupSize;
  bool compute = subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT;
  c.subgroup_arithmetic = compute && (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  c.subgroup_clustered = c.subgroup_arithmetic && (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_CLUSTERED_BIT);
  c.denorm_preserve = has_controls && controls.shaderDenormPreserveFloat32;
  c.nan_preserve = has_controls && controls.shaderSignedZeroInfNanPreserveFloat32;
  c.needs_float_controls_extension = (c.denorm_preserve || c.nan_preserve) && c.api < VK_API_VERSION_1_2;
  if (has_nv) c.compute_units = int(nv.shaderSMCount);
  if (has_amd)
    c.compute_units = int(amd.shaderEngineCount * amd.shaderArraysPerEngineCount * amd.computeUnitsPerShaderArray);

  VkPhysicalDeviceMemoryProperties memory;
  inst.fn().vkGetPhysicalDeviceMemoryProperties(pd, &memory);
  for (uint32_t i = 0; i < memory.memoryHeapCount; ++i)
    if (memory.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      c.memory_bytes = std::max(c.memory_bytes, int64_t(memory.memoryHeaps[i].size));
}

// False for a device that cannot run kiln's shaders (no i64).
bool query_features(const vk::Instance& inst, VkPhysicalDevice pd, const std::vector<VkExtensionProperties>& exts,
                    Capabilities& c) {
  bool core12 = c.api >= VK_API_VERSION_1_2;
  bool has8 = core12 || has_extension(exts, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
  bool has_f16 = core12 || has_extension(exts, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  auto s16 = vk::init<VkPhysicalDevice16BitStorageFeatures>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES);
  auto s8 = vk::init<VkPhysicalDevice8BitStorageFeatures>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES);
  auto f16 = vk::init<VkPhysicalDeviceShaderFloat16Int8Features>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES);
  auto features = vk::init<VkPhysicalDeviceFeatures2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2);
  features.pNext = &s16;
  if (has8) {
    s8.pNext = features.pNext;
    features.pNext = &s8;
  }
  if (has_f16) {
    f16.pNext = features.pNext;
    features.pNext = &f16;
  }
  inst.fn().vkGetPhysicalDeviceFeatures2(pd, &features);
  c.storage16 = s16.storageBuffer16BitAccess;
  c.storage8 = has8 && s8.storageBuffer8BitAccess;
  c.needs_8bit_extension = c.storage8 && !core12;
  c.float16 = has_f16 && f16.shaderFloat16;
  c.int8 = has_f16 && f16.shaderInt8;
  return features.features.shaderInt64;
}

std::string feature_list(const Capabilities& c) {
  std::string s = "vulkan " + std::to_string(VK_API_VERSION_MAJOR(c.api)) + "." +
                  std::to_string(VK_API_VERSION_MINOR(c.api)) + ",subgroup_size=" + std::to_string(c.subgroup_size) +
                  ",int64";
  if (c.float16) s += ",float16";
  if (c.int8) s += ",int8";
  if (c.storage16) s += ",storage16";
  if (c.storage8) s += ",storage8";
  if (c.denorm_preserve) s += ",denorm_preserve";
  if (c.nan_preserve) s += ",nan_preserve";
  if (c.subgroup_arithmetic) s += c.subgroup_clustered ? ",subgroup_clustered" : ",subgroup_arithmetic";
  return s;
}

std::shared_ptr<vk::DeviceCore> open_device(const std::shared_ptr<vk::Instance>& inst, VkPhysicalDevice pd,
                                            const Capabilities& c, const GlslOptions& glsl) {
  float priority = 1.0f;
  auto queue = vk::init<VkDeviceQueueCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO);
  queue.queueFamilyIndex = c.queue_family;
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;

  auto s16 = vk::init<VkPhysicalDevice16BitStorageFeatures>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES);
  s16.storageBuffer16BitAccess = glsl.storage16;
  auto s8 = vk::init<VkPhysicalDevice8BitStorageFeatures>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES);
  s8.storageBuffer8BitAccess = VK_TRUE;
  auto features = vk::init<VkPhysicalDeviceFeatures2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2);
  features.features.shaderInt64 = VK_TRUE;
  features.pNext = &s16;
  std::vector<const char*> extensions;
  if (glsl.storage8) {
    s16.pNext = &s8;
    if (c.needs_8bit_extension) extensions.push_back(VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
  }
  if (c.needs_float_controls_extension) extensions.push_back(VK_KHR_SHADER_FLOAT_CONTROLS_EXTENSION_NAME);

  auto info = vk::init<VkDeviceCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO);
  info.pNext = &features;
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue;
  info.enabledExtensionCount = uint32_t(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();

  auto core = std::make_shared<vk::DeviceCore>();
  core->instance = inst;
  core->physical = pd;
  core->props = c.props;
  inst->fn().vkGetPhysicalDeviceMemoryProperties(pd, &core->memory);
  core->queue_family = c.queue_family;
  core->timestamp_bits = c.props.limits.timestampPeriod > 0 ? c.timestamp_bits : 0;
  vk::check(inst->fn().vkCreateDevice(pd, &info, nullptr, &core->device), "vkCreateDevice", c.props.deviceName);
  core->fn = vk::load_device_functions(inst->fn(), core->device);
  core->fn.vkGetDeviceQueue(core->device, c.queue_family, 0, &core->queue);
  return core;
}

// Null for a device kiln cannot use.
std::shared_ptr<Device> make_device(const std::shared_ptr<vk::Instance>& inst, VkPhysicalDevice pd,
                                    const VulkanOptions& options) {
  Capabilities c;
  inst->fn().vkGetPhysicalDeviceProperties(pd, &c.props);
  c.api = std::min(c.props.apiVersion, inst->api_version());
  if (c.api < VK_API_VERSION_1_1 || !find_compute_queue(*inst, pd, &c.queue_family, &c.timestamp_bits)) return nullptr;
  std::vector<VkExtensionProperties> exts = device_extensions(*inst, pd);
  if (!query_features(*inst, pd, exts, c)) return nullptr;
  query_properties(*inst, pd, exts, c);

  GlslOptions glsl;
  glsl.storage16 = c.storage16 && options.storage16;
  glsl.storage8 = c.storage8 && options.storage8;
  glsl.denorm_preserve = c.denorm_preserve;
  glsl.nan_preserve = c.nan_preserve;
  glsl.index32 = options.index32;
  if (options.subgroups && c.subgroup_arithmetic) {
    glsl.subgroup_size = int(c.subgroup_size);
    glsl.subgroup_clustered = c.subgroup_clustered;
  }
  auto core = open_device(inst, pd, c, glsl);

  DeviceInfo info;
  info.name = c.props.deviceName;
  // Caches key kernels by device name; this device compiles them differently.
  if (glsl.storage16 != c.storage16 || glsl.storage8 != c.storage8) info.name += " (8/16-bit storage off)";
  if (c.subgroup_arithmetic && !options.subgroups) info.name += " (subgroup operations off)";
  if (!options.index32) info.name += " (64-bit indices)";
  info.backend = "vulkan";
  info.cores = c.compute_units;
  info.features = feature_list(c);
  info.memory_bytes = c.memory_bytes;
  info.warp_size = int(c.subgroup_size);
  info.max_threads = int(c.props.limits.maxComputeWorkGroupInvocations);
  info.shared_bytes = int64_t(c.props.limits.maxComputeSharedMemorySize);
  return std::make_shared<VulkanDevice>(std::move(core), std::move(info), glsl);
}

}  // namespace

std::vector<std::shared_ptr<Device>> make_vulkan_devices(const VulkanOptions& options) {
  std::vector<std::shared_ptr<Device>> found;
  try {
    std::shared_ptr<vk::Instance> inst = vk::Instance::get();
    if (!inst) return found;
    uint32_t n = 0;
    if (inst->fn().vkEnumeratePhysicalDevices(inst->handle(), &n, nullptr) != VK_SUCCESS) return found;
    std::vector<VkPhysicalDevice> pds(n);
    if (inst->fn().vkEnumeratePhysicalDevices(inst->handle(), &n, pds.data()) != VK_SUCCESS) return found;
    for (VkPhysicalDevice pd : pds) {
      try {
        if (auto d = make_device(inst, pd, options)) found.push_back(std::move(d));
      } catch (const std::exception& e) {
        std::cerr << "kiln: skipping a Vulkan device: " << e.what() << "\n";
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "kiln: no Vulkan devices: " << e.what() << "\n";
  }
  return found;
}

std::vector<std::shared_ptr<Device>> make_vulkan_devices() { return make_vulkan_devices(VulkanOptions{}); }

}  // namespace kiln
