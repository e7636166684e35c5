#include "backends/vulkan/vulkan_program.h"

#include <algorithm>

namespace kiln::vk {

namespace {

constexpr uint32_t kSetsPerPool = 16;

}  // namespace

Program::Program(std::shared_ptr<DeviceCore> core, VkPipelineCache cache, const std::vector<uint32_t>& spirv,
                 int buffers, int params, const std::string& name)
    : core_(std::move(core)), name_(name), buffers_(buffers) {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  std::string what = "kernel '" + name + "'";
  // The destructor does not run for a constructor that throws.
  auto cleanup_on_error = [&](VkResult r, const char* call) {
    if (r == VK_SUCCESS) return;
    destroy_handles();
    check(r, call, what);
  };

  std::vector<VkDescriptorSetLayoutBinding> bindings(buffers);
  for (int i = 0; i < buffers; ++i) {
    bindings[i].binding = uint32_t(i);
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  auto set_info = vk::init<VkDescriptorSetLayoutCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO);
  set_info.bindingCount = uint32_t(buffers);
  set_info.pBindings = bindings.data();
  cleanup_on_error(fn.vkCreateDescriptorSetLayout(dev, &set_info, nullptr, &set_layout_),
                   "vkCreateDescriptorSetLayout");

  VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, uint32_t(params * sizeof(int64_t))};
  auto layout_info = vk::init<VkPipelineLayoutCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO);
  layout_info.setLayoutCount = 1;
  layout_info.pSetLayouts = &set_layout_;
  layout_info.pushConstantRangeCount = params > 0 ? 1 : 0;
  layout_info.pPushConstantRanges = &push;
  cleanup_on_error(fn.vkCreatePipelineLayout(dev, &layout_info, nullptr, &layout_), "vkCreatePipelineLayout");

  auto module_info = vk::init<VkShaderModuleCreateInfo>(VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO);
  module_info.codeSize = spirv.size() * sizeof(uint32_t);
  module_info.pCode = spirv.data();
  VkShaderModule module;
  cleanup_on_error(fn.vkCreateShaderModule(dev, &module_info, nullptr, &module), "vkCreateShaderModule");

  auto info = vk::init<VkComputePipelineCreateInfo>(VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO);
  info.flags = VK_PIPELINE_CREATE_DISPATCH_BASE_BIT;  // grids larger than one dispatch allows
  info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = "main";
  info.layout = layout_;
  VkResult r = fn.vkCreateComputePipelines(dev, cache, 1, &info, nullptr, &pipeline_);
  fn.vkDestroyShaderModule(dev, module, nullptr);
  cleanup_on_error(r, "vkCreateComputePipelines");
}

Program::~Program() { destroy_handles(); }

void Program::destroy_handles() {
  const DeviceFns& fn = core_->fn;
  VkDevice dev = core_->device;
  for (VkDescriptorPool p : pools_) fn.vkDestroyDescriptorPool(dev, p, nullptr);
  if (pipeline_) fn.vkDestroyPipeline(dev, pipeline_, nullptr);
  if (layout_) fn.vkDestroyPipelineLayout(dev, layout_, nullptr);
  if (set_layout_) fn.vkDestroyDescriptorSetLayout(dev, set_layout_, nullptr);
  pools_.clear();
  pipeline_ = VK_NULL_HANDLE;
  layout_ = VK_NULL_HANDLE;
  set_layout_ = VK_NULL_HANDLE;
}

void Program::add_descriptor_pool() {
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * uint32_t(std::max(buffers_, 1))};
  auto info = vk::init<VkDescriptorPoolCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO);
  info.maxSets = kSetsPerPool;
  info.poolSizeCount = 1;
  info.pPoolSizes = &size;
  VkDescriptorPool pool;
  check(core_->fn.vkCreateDescriptorPool(core_->device, &info, nullptr, &pool), "vkCreateDescriptorPool",
        "kernel '" + name_ + "'");
  pools_.push_back(pool);

  std::vector<VkDescriptorSetLayout> layouts(kSetsPerPool, set_layout_);
  std::vector<VkDescriptorSet> sets(kSetsPerPool);
  auto alloc = vk::init<VkDescriptorSetAllocateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO);
  alloc.descriptorPool = pool;
  alloc.descriptorSetCount = kSetsPerPool;
  alloc.pSetLayouts = layouts.data();
  check(core_->fn.vkAllocateDescriptorSets(core_->device, &alloc, sets.data()), "vkAllocateDescriptorSets",
        "kernel '" + name_ + "'");
  free_sets_.insert(free_sets_.end(), sets.begin(), sets.end());
}

std::shared_ptr<const void> Program::acquire_set(VkDescriptorSet* set) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_sets_.empty()) add_descriptor_pool();
  *set = free_sets_.back();
  free_sets_.pop_back();
  auto self = shared_from_this();
  VkDescriptorSet s = *set;
  return std::shared_ptr<const void>(nullptr, [self, s](const void*) {
    std::lock_guard<std::mutex> lock(self->mutex_);
    self->free_sets_.push_back(s);
  });
}

}  // namespace kiln::vk
