#include "backends/cuda/cuda_api.h"

#include <dlfcn.h>

#include <optional>

#include "kiln/error.h"

// The symbol a CUDA API name stands for after cuda.h's macros (cuMemAlloc ->
// "cuMemAlloc_v2"): expand first, then stringize.
#define KILN_SYMBOL_NAME(name) KILN_STRINGIZE(name)
#define KILN_STRINGIZE(name) #name

namespace kiln::cuda {

namespace {

// Fills `*fn` with `symbol` from `lib`; false if it is not there.
template <typename Fn>
bool find(void* lib, const char* symbol, Fn* fn, std::string* missing) {
  *fn = reinterpret_cast<Fn>(dlsym(lib, symbol));
  if (!*fn && missing->empty()) *missing = symbol;
  return *fn != nullptr;
}

std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

#define KILN_FIND(lib, table, member, name) find(lib, KILN_SYMBOL_NAME(name), &(table).member, &missing)

// The name of the first symbol missing, or empty.
std::string find_driver_symbols(void* lib, Driver& d) {
  std::string missing;
  KILN_FIND(lib, d, init, cuInit);
  KILN_FIND(lib, d, driver_get_version, cuDriverGetVersion);
  KILN_FIND(lib, d, get_error_name, cuGetErrorName);
  KILN_FIND(lib, d, get_error_string, cuGetErrorString);
  KILN_FIND(lib, d, device_get_count, cuDeviceGetCount);
  KILN_FIND(lib, d, device_get, cuDeviceGet);
  KILN_FIND(lib, d, device_get_name, cuDeviceGetName);
  KILN_FIND(lib, d, device_get_attribute, cuDeviceGetAttribute);
  KILN_FIND(lib, d, device_total_mem, cuDeviceTotalMem);
  KILN_FIND(lib, d, primary_ctx_retain, cuDevicePrimaryCtxRetain);
  KILN_FIND(lib, d, primary_ctx_release, cuDevicePrimaryCtxRelease);
  KILN_FIND(lib, d, ctx_set_current, cuCtxSetCurrent);
  KILN_FIND(lib, d, mem_alloc, cuMemAlloc);
  KILN_FIND(lib, d, mem_free, cuMemFree);
  KILN_FIND(lib, d, memcpy_htod, cuMemcpyHtoD);
  KILN_FIND(lib, d, memcpy_dtoh, cuMemcpyDtoH);
  KILN_FIND(lib, d, memcpy_dtod, cuMemcpyDtoD);
  KILN_FIND(lib, d, stream_create, cuStreamCreate);
  KILN_FIND(lib, d, stream_destroy, cuStreamDestroy);
  KILN_FIND(lib, d, stream_synchronize, cuStreamSynchronize);
  KILN_FIND(lib, d, module_load_data, cuModuleLoadData);
  KILN_FIND(lib, d, module_unload, cuModuleUnload);
  KILN_FIND(lib, d, module_get_function, cuModuleGetFunction);
  KILN_FIND(lib, d, func_get_attribute, cuFuncGetAttribute);
  KILN_FIND(lib, d, func_set_attribute, cuFuncSetAttribute);
  KILN_FIND(lib, d, launch_kernel, cuLaunchKernel);
  KILN_FIND(lib, d, stream_begin_capture, cuStreamBeginCapture);
  KILN_FIND(lib, d, stream_end_capture, cuStreamEndCapture);
  KILN_FIND(lib, d, graph_instantiate, cuGraphInstantiateWithFlags);
  KILN_FIND(lib, d, graph_launch, cuGraphLaunch);
  KILN_FIND(lib, d, graph_exec_destroy, cuGraphExecDestroy);
  KILN_FIND(lib, d, graph_destroy, cuGraphDestroy);
  d.graph_exec_update = reinterpret_cast<decltype(d.graph_exec_update)>(dlsym(lib, KILN_SYMBOL_NAME(cuGraphExecUpdate)));
  d.launch_kernel_ex = reinterpret_cast<decltype(d.launch_kernel_ex)>(dlsym(lib, KILN_SYMBOL_NAME(cuLaunchKernelEx)));
  d.mem_alloc_host = reinterpret_cast<decltype(d.mem_alloc_host)>(dlsym(lib, KILN_SYMBOL_NAME(cuMemAllocHost)));
  d.mem_free_host = reinterpret_cast<decltype(d.mem_free_host)>(dlsym(lib, KILN_SYMBOL_NAME(cuMemFreeHost)));
  d.memcpy_htod_async = reinterpret_cast<decltype(d.memcpy_htod_async)>(dlsym(lib, KILN_SYMBOL_NAME(cuMemcpyHtoDAsync)));
  d.memcpy_dtoh_async = reinterpret_cast<decltype(d.memcpy_dtoh_async)>(dlsym(lib, KILN_SYMBOL_NAME(cuMemcpyDtoHAsync)));
  d.tensor_map_encode_tiled =
      reinterpret_cast<decltype(d.tensor_map_encode_tiled)>(dlsym(lib, KILN_SYMBOL_NAME(cuTensorMapEncodeTiled)));
  return missing;
}

std::string find_nvrtc_symbols(void* lib, Nvrtc& n) {
  std::string missing;
  KILN_FIND(lib, n, get_error_string, nvrtcGetErrorString);
  KILN_FIND(lib, n, version, nvrtcVersion);
  KILN_FIND(lib, n, get_num_supported_archs, nvrtcGetNumSupportedArchs);
  KILN_FIND(lib, n, get_supported_archs, nvrtcGetSupportedArchs);
  KILN_FIND(lib, n, create_program, nvrtcCreateProgram);
  KILN_FIND(lib, n, destroy_program, nvrtcDestroyProgram);
  KILN_FIND(lib, n, compile_program, nvrtcCompileProgram);
  KILN_FIND(lib, n, get_program_log_size, nvrtcGetProgramLogSize);
  KILN_FIND(lib, n, get_program_log, nvrtcGetProgramLog);
  KILN_FIND(lib, n, get_ptx_size, nvrtcGetPTXSize);
  KILN_FIND(lib, n, get_ptx, nvrtcGetPTX);
  KILN_FIND(lib, n, get_cubin_size, nvrtcGetCUBINSize);
  KILN_FIND(lib, n, get_cubin, nvrtcGetCUBIN);
  return missing;
}

#undef KILN_FIND

// NVRTC, or why it could not be opened.
struct LoadedNvrtc {
  std::optional<Nvrtc> table;
  std::string error;
};

LoadedNvrtc load_nvrtc() {
  std::string tried;
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      tried += std::string(tried.empty() ? "" : "; ") + dl_error();
      continue;
    }
    Nvrtc n;
    std::string missing = find_nvrtc_symbols(lib, n);
    if (missing.empty()) return {n, ""};
    tried += std::string(tried.empty() ? "" : "; ") + name + " has no " + missing;
    dlclose(lib);
  }
  return {std::nullopt, "cuda backend: cannot load NVRTC (" + tried + ")"};
}

}  // namespace

std::shared_ptr<const Driver> load_driver(const std::string& library, std::string* why) {
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    *why = "cannot open " + library + ": " + dl_error();
    return nullptr;
  }
  auto d = std::make_shared<Driver>();
  std::string missing = find_driver_symbols(lib, *d);
  if (!missing.empty()) {
    *why = library + " has no " + missing;
    dlclose(lib);
    return nullptr;
  }
  if (CUresult r = d->init(0); r != CUDA_SUCCESS) {
    *why = "cuInit failed: " + error_text(*d, r);
    return nullptr;
  }
  return d;
}

std::string error_text(const Driver& d, CUresult r) {
  const char* name = nullptr;
  const char* text = nullptr;
  d.get_error_name(r, &name);
  d.get_error_string(r, &text);
  std::string out = name ? name : "CUresult " + std::to_string(int(r));
  return text ? out + " (" + text + ")" : out;
}

const Nvrtc& nvrtc() {
  static const LoadedNvrtc loaded = load_nvrtc();
  if (!loaded.table) throw Error(loaded.error);
  return *loaded.table;
}

}  // namespace kiln::cuda
