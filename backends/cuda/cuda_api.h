// The CUDA driver and NVRTC, opened with dlopen at run time so that one kiln
// binary runs on machines with and without them. cuda.h and nvrtc.h give the
// types only; nothing links against the libraries. Include this from the
// backend's .cpp files only: the CUDA headers are not on other targets' paths.
#pragma once

#include <cuda.h>
#include <nvrtc.h>

#include <memory>
#include <string>

namespace kiln::cuda {

// The driver entry points the backend calls. Each is looked up by the symbol
// that cuda.h maps its plain name to (cuMemAlloc is cuMemAlloc_v2).
struct Driver {
  decltype(&::cuInit) init = nullptr;
  decltype(&::cuDriverGetVersion) driver_get_version = nullptr;
  decltype(&::cuGetErrorName) get_error_name = nullptr;
  decltype(&::cuGetErrorString) get_error_string = nullptr;
  decltype(&::cuDeviceGetCount) device_get_count = nullptr;
  decltype(&::cuDeviceGet) device_get = nullptr;
  decltype(&::cuDeviceGetName) device_get_name = nullptr;
  decltype(&::cuDeviceGetAttribute) device_get_attribute = nullptr;
  decltype(&::cuDeviceTotalMem) device_total_mem = nullptr;
  decltype(&::cuDevicePrimaryCtxRetain) primary_ctx_retain = nullptr;
  decltype(&::cuDevicePrimaryCtxRelease) primary_ctx_release = nullptr;
  decltype(&::cuCtxSetCurrent) ctx_set_current = nullptr;
  decltype(&::cuMemAlloc) mem_alloc = nullptr;
  decltype(&::cuMemFree) mem_free = nullptr;
  decltype(&::cuMemcpyHtoD) memcpy_htod = nullptr;
  decltype(&::cuMemcpyDtoH) memcpy_dtoh = nullptr;
  decltype(&::cuMemcpyDtoD) memcpy_dtod = nullptr;
  decltype(&::cuStreamCreate) stream_create = nullptr;
  decltype(&::cuStreamDestroy) stream_destroy = nullptr;
  decltype(&::cuStreamSynchronize) stream_synchronize = nullptr;
  decltype(&::cuModuleLoadData) module_load_data = nullptr;
  decltype(&::cuModuleUnload) module_unload = nullptr;
  decltype(&::cuModuleGetFunction) module_get_function = nullptr;
  decltype(&::cuFuncGetAttribute) func_get_attribute = nullptr;
  decltype(&::cuFuncSetAttribute) func_set_attribute = nullptr;
  decltype(&::cuLaunchKernel) launch_kernel = nullptr;
  // Graph capture and replay (CudaStream::capture).
  decltype(&::cuStreamBeginCapture) stream_begin_capture = nullptr;
  decltype(&::cuStreamEndCapture) stream_end_capture = nullptr;
  decltype(&::cuGraphInstantiateWithFlags) graph_instantiate = nullptr;
  decltype(&::cuGraphLaunch) graph_launch = nullptr;
  decltype(&::cuGraphExecDestroy) graph_exec_destroy = nullptr;
  decltype(&::cuGraphDestroy) graph_destroy = nullptr;
  // Optional (null where the driver lacks it): CudaStream::recapture.
  decltype(&::cuGraphExecUpdate) graph_exec_update = nullptr;
  // Optional: launches that let the next kernel start early (sm_90).
  decltype(&::cuLaunchKernelEx) launch_kernel_ex = nullptr;
  // Optional: small transfers through pinned memory (CudaDevice::write/read).
  decltype(&::cuMemAllocHost) mem_alloc_host = nullptr;
  decltype(&::cuMemFreeHost) mem_free_host = nullptr;
  decltype(&::cuMemcpyHtoDAsync) memcpy_htod_async = nullptr;
  decltype(&::cuMemcpyDtoHAsync) memcpy_dtoh_async = nullptr;
  // Optional: tensor maps for kernels that copy by the Tensor Memory Accelerator (sm_90).
  decltype(&::cuTensorMapEncodeTiled) tensor_map_encode_tiled = nullptr;
};

// Opens `library` (dlopen name) and calls cuInit. Null, with the reason in
// `*why`, if it cannot be opened, lacks an entry point, or cuInit fails (no
// GPU, no working driver). The library stays loaded for the process's life,
// since objects destroyed at exit still call into it.
std::shared_ptr<const Driver> load_driver(const std::string& library, std::string* why);

// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
std::string error_text(const Driver& d, CUresult r);

struct Nvrtc {
  decltype(&::nvrtcGetErrorString) get_error_string = nullptr;
  decltype(&::nvrtcVersion) version = nullptr;
  decltype(&::nvrtcGetNumSupportedArchs) get_num_supported_archs = nullptr;
  decltype(&::nvrtcGetSupportedArchs) get_supported_archs = nullptr;
  decltype(&::nvrtcCreateProgram) create_program = nullptr;
  decltype(&::nvrtcDestroyProgram) destroy_program = nullptr;
  decltype(&::nvrtcCompileProgram) compile_program = nullptr;
  decltype(&::nvrtcGetProgramLogSize) get_program_log_size = nullptr;
  decltype(&::nvrtcGetProgramLog) get_program_log = nullptr;
  decltype(&::nvrtcGetPTXSize) get_ptx_size = nullptr;
  decltype(&::nvrtcGetPTX) get_ptx = nullptr;
  decltype(&::nvrtcGetCUBINSize) get_cubin_size = nullptr;
  decltype(&::nvrtcGetCUBIN) get_cubin = nullptr;
};

// NVRTC (libnvrtc.so.13, else .so.12, else .so), opened on first use. Throws
// kiln::Error naming the libraries tried if none opens.
const Nvrtc& nvrtc();

}  // namespace kiln::cuda
