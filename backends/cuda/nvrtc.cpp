#include "backends/cuda/nvrtc.h"

#include <algorithm>

#include "backends/cuda/cuda_api.h"
#include "codegen/emit/cuda/emit_cuda.h"
#include "kiln/error.h"

namespace kiln {

namespace {

// Destroys the program however compilation ends.
class Program {
 public:
  Program(const cuda::Nvrtc& api, nvrtcProgram p) : api_(api), p_(p) {}
  ~Program() { api_.destroy_program(&p_); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  nvrtcProgram get() const { return p_; }

 private:
  const cuda::Nvrtc& api_;
  nvrtcProgram p_;
};

std::string numbered(const std::string& source) {
  std::string out;
  int n = 1;
  size_t start = 0;
  while (start < source.size()) {
    size_t end = source.find('\n', start);
    if (end == std::string::npos) end = source.size();
    std::string no = std::to_string(n++);
    out += std::string(no.size() < 4 ? 4 - no.size() : 0, ' ') + no + " | " + source.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

// An output of the program: `size_fn` and `get_fn` are a pair such as
// nvrtcGetPTXSize / nvrtcGetPTX. Empty if there is none.
template <typename SizeFn, typename GetFn>
std::string output_of(nvrtcProgram p, SizeFn size_fn, GetFn get_fn) {
  size_t size = 0;
  if (size_fn(p, &size) != NVRTC_SUCCESS || size == 0) return "";
  std::string out(size, '\0');
  if (get_fn(p, out.data()) != NVRTC_SUCCESS) return "";
  return out;
}

// Text outputs (the log, PTX) end with a NUL.
std::string text(std::string s) {
  s.resize(std::min(s.size(), s.find('\0')));
  return s;
}

}  // namespace

NvrtcOutput nvrtc_compile(const std::string& source, const std::string& kernel_name, const std::string& arch) {
  const cuda::Nvrtc& api = cuda::nvrtc();
  std::string what = "cuda backend: NVRTC cannot compile kernel '" + kernel_name + "' for " + arch + ": ";
  nvrtcProgram raw = nullptr;
  if (nvrtcResult r = api.create_program(&raw, source.c_str(), "kiln_kernel.cu", 0, nullptr, nullptr);
      r != NVRTC_SUCCESS)
    throw Error(what + "nvrtcCreateProgram failed: " + api.get_error_string(r));
  Program program(api, raw);
  std::string option = "--gpu-architecture=" + arch;
  const char* options[] = {option.c_str()};
  if (nvrtcResult r = api.compile_program(raw, 1, options); r != NVRTC_SUCCESS) {
    std::string log = text(output_of(raw, api.get_program_log_size, api.get_program_log));
    throw Error(what + "nvrtcCompileProgram failed: " + api.get_error_string(r) + "\n" + log + "\n--- source ---\n" +
                numbered(source));
  }
  NvrtcOutput out;
  out.ptx = text(output_of(raw, api.get_ptx_size, api.get_ptx));
  if (arch.rfind("sm_", 0) == 0) out.cubin = output_of(raw, api.get_cubin_size, api.get_cubin);
  if (out.ptx.empty() && out.cubin.empty()) throw Error(what + "NVRTC produced no code");
  return out;
}

std::string nvrtc_version() {
  int major = 0, minor = 0;
  if (cuda::nvrtc().version(&major, &minor) != NVRTC_SUCCESS) throw Error("cuda backend: nvrtcVersion failed");
  return "nvrtc " + std::to_string(major) + "." + std::to_string(minor);
}

namespace {
// cuda_artifact's layout: this tag, the entry name, NUL, then the image.
constexpr std::string_view kArtifactTag("kiln-cuda\0", 10);

// Warpgroup tiles (wgmma) exist on sm_90 only, and only in its
// architecture-specific variant, sm_90a.
std::string kernel_arch(const Kernel& k, const std::string& arch) {
  if (!k.array_tile.warpgroup) return arch;
  if (arch != "sm_90" && arch != "compute_90")
    throw Error("cuda backend: kernel '" + k.name + "' has a wgmma tile, which needs an sm_90 GPU (this one compiles for " +
                arch + ")");
  return arch + "a";
}
}  // namespace

std::string cuda_artifact(const Kernel& k, const std::string& arch) {
  std::string entry = cuda_entry_name(k);
  NvrtcOutput code = nvrtc_compile(emit_cuda(k, entry), k.name, kernel_arch(k, arch));
  std::string out(kArtifactTag);
  out += entry;
  out += '\0';
  out += code.cubin.empty() ? code.ptx : code.cubin;
  return out;
}

CudaImage parse_cuda_artifact(std::string_view bytes) {
  size_t end = bytes.find('\0', kArtifactTag.size());
  if (bytes.substr(0, kArtifactTag.size()) != kArtifactTag || end == std::string_view::npos ||
      end == kArtifactTag.size() || end + 1 == bytes.size())
    throw Error("cuda backend: the bytes to load are not a compiled kernel");
  return {std::string(bytes.substr(kArtifactTag.size(), end - kArtifactTag.size())),
          std::string(bytes.substr(end + 1))};
}

std::string compile_cuda_to_ptx(const Kernel& k, const std::string& arch) {
  return nvrtc_compile(emit_cuda(k, cuda_entry_name(k)), k.name, kernel_arch(k, arch)).ptx;
}

std::vector<int> nvrtc_architectures() {
  const cuda::Nvrtc& api = cuda::nvrtc();
  int n = 0;
  if (api.get_num_supported_archs(&n) != NVRTC_SUCCESS || n <= 0) return {};
  std::vector<int> archs(n);
  if (api.get_supported_archs(archs.data()) != NVRTC_SUCCESS) return {};
  std::sort(archs.begin(), archs.end());
  return archs;
}

}  // namespace kiln
