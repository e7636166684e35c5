#include "backends/vulkan/vulkan_instance.h"

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "backends/vulkan/vulkan_device.h"

namespace kiln {

namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

// Never destroyed: the layer may still report while the process exits.
struct ValidationLog {
  std::mutex mutex;
  std::vector<std::string> messages;
};

ValidationLog& validation_log() {
  static auto* log = new ValidationLog;
  return *log;
}

VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                          VkDebugUtilsMessageTypeFlagsEXT type,
                                          const VkDebugUtilsMessengerCallbackDataEXT* data, void*) {
  std::string text = data && data->pMessage ? data->pMessage : "(no message)";
  bool error = severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  std::cerr << "kiln vulkan " << (error ? "validation error: " : "validation warning: ") << text << "\n";
  // The loader's own notes (general messages) are not validation findings.
  if (type & (VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT)) {
    ValidationLog& log = validation_log();
    std::lock_guard<std::mutex> lock(log.mutex);
    log.messages.push_back(std::move(text));
  }
  return VK_FALSE;
}

VkDebugUtilsMessengerCreateInfoEXT messenger_info() {
  auto info = vk::init<VkDebugUtilsMessengerCreateInfoEXT>(VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT);
  info.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
  info.pfnUserCallback = on_message;
  return info;
}

bool has_layer(const vk::InstanceFns& fn, const char* name) {
  uint32_t n = 0;
  if (fn.vkEnumerateInstanceLayerProperties(&n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkLayerProperties> layers(n);
  if (fn.vkEnumerateInstanceLayerProperties(&n, layers.data()) != VK_SUCCESS) return false;
  for (const VkLayerProperties& l : layers)
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

bool has_instance_extension(const vk::InstanceFns& fn, const char* layer, const char* name) {
  uint32_t n = 0;
  if (fn.vkEnumerateInstanceExtensionProperties(layer, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkExtensionProperties> exts(n);
  if (fn.vkEnumerateInstanceExtensionProperties(layer, &n, exts.data()) != VK_SUCCESS) return false;
  for (const VkExtensionProperties& e : exts)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

bool validation_requested() {
  const char* v = std::getenv("KILN_VULKAN_VALIDATION");
  return v && std::strcmp(v, "1") == 0;
}

}  // namespace

namespace vk {

std::shared_ptr<Instance> Instance::get() {
  static std::shared_ptr<Instance> instance = [] {
    std::shared_ptr<Instance> i(new Instance);
    return i->create() ? i : nullptr;
  }();
  return instance;
}

bool Instance::create() {
  if (!load_global_functions(fns_)) return false;
  uint32_t loader_version = 0;
  if (fns_.vkEnumerateInstanceVersion(&loader_version) != VK_SUCCESS || loader_version < VK_API_VERSION_1_1)
    return false;
  api_version_ = loader_version >= VK_API_VERSION_1_2 ? VK_API_VERSION_1_2 : VK_API_VERSION_1_1;

  bool validate = validation_requested() && has_layer(fns_, kValidationLayer);
  if (validation_requested() && !validate)
    std::cerr << "kiln vulkan: KILN_VULKAN_VALIDATION=1 but " << kValidationLayer << " is not installed\n";
  std::vector<const char*> layers, extensions;
  if (validate) {
    layers.push_back(kValidationLayer);
    if (has_instance_extension(fns_, nullptr, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) ||
        has_instance_extension(fns_, kValidationLayer, VK_EXT_DEBUG_UTILS_EXTENSION_NAME))
      extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
  }
  bool debug = !extensions.empty();

  auto app = vk::init<VkApplicationInfo>(VK_STRUCTURE_TYPE_APPLICATION_INFO);
  app.pApplicationName = "kiln";
  app.pEngineName = "kiln";
  app.apiVersion = api_version_;
  VkDebugUtilsMessengerCreateInfoEXT messenger = messenger_info();
  auto info = vk::init<VkInstanceCreateInfo>(VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO);
  info.pNext = debug ? &messenger : nullptr;  // also reports on vkCreateInstance itself
  info.pApplicationInfo = &app;
  info.enabledLayerCount = uint32_t(layers.size());
  info.ppEnabledLayerNames = layers.data();
  info.enabledExtensionCount = uint32_t(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();
  if (fns_.vkCreateInstance(&info, nullptr, &instance_) != VK_SUCCESS) return false;
  load_instance_functions(fns_, instance_);
  if (debug && fns_.vkCreateDebugUtilsMessengerEXT)
    fns_.vkCreateDebugUtilsMessengerEXT(instance_, &messenger, nullptr, &messenger_);
  return true;
}

Instance::~Instance() {
  if (!instance_) return;
  if (messenger_) fns_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
  fns_.vkDestroyInstance(instance_, nullptr);
}

}  // namespace vk

bool vulkan_validation_enabled() {
  auto instance = vk::Instance::get();
  return instance && instance->validation();
}

int64_t vulkan_validation_message_count() {
  ValidationLog& log = validation_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  return int64_t(log.messages.size());
}

std::vector<std::string> vulkan_validation_messages() {
  ValidationLog& log = validation_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  return log.messages;
}

void clear_vulkan_validation_messages() {
  ValidationLog& log = validation_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  log.messages.clear();
}

}  // namespace kiln
