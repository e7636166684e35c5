// NVRTC: CUDA C -> PTX (and, for a real architecture, a cubin). It needs no
// GPU, so codegen tests and `kiln dump` compile kernels on any machine.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kiln/kernel.h"

namespace kiln {

struct NvrtcOutput {
  std::string ptx;
  std::string cubin;  // machine code; empty when `arch` is virtual (compute_XY)
};

// Compiles `source` for `arch` ("sm_90" or "compute_90") with NVRTC's default
// (IEEE-exact) float options. `kernel_name` is for messages. Throws kiln::Error
// with NVRTC's log and the numbered source if it does not compile, or if NVRTC
// cannot be loaded.
NvrtcOutput nvrtc_compile(const std::string& source, const std::string& kernel_name, const std::string& arch);

// emit_cuda() then nvrtc_compile(): the kernel's PTX for `arch`.
std::string compile_cuda_to_ptx(const Kernel& k, const std::string& arch);

// The real architectures this NVRTC compiles for (90 for sm_90), ascending.
std::vector<int> nvrtc_architectures();

// "nvrtc 13.0"; throws kiln::Error if NVRTC cannot be loaded.
std::string nvrtc_version();

// The CUDA backend's compiled kernel as bytes (for the disk cache): the entry
// point's name and NVRTC's cubin for `arch`, or its PTX for a virtual arch.
struct CudaImage {
  std::string entry;
  std::string image;
};
std::string cuda_artifact(const Kernel& k, const std::string& arch);
// The inverse; throws kiln::Error for bytes that cuda_artifact did not make.
CudaImage parse_cuda_artifact(std::string_view bytes);

}  // namespace kiln
