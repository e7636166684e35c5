#include "backends/cuda/cuda_device.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <type_traits>

#include "backends/cuda/cuda_api.h"
#include "backends/cuda/nvrtc.h"
#include "codegen/emit/cuda/emit_cuda.h"
#include "codegen/emit/gpu_nest.h"
#include "kiln/error.h"
#include "runtime/fault.h"

namespace kiln {

namespace {

using cuda::Driver;

// One GPU's primary context (the one the CUDA runtime uses too, so kiln can
// share memory with it) and the driver that drives it. Whatever holds device
// resources (buffers, streams, modules) keeps it alive.
class Gpu {
 public:
  Gpu(std::shared_ptr<const Driver> driver, int ordinal) : driver_(std::move(driver)), ordinal_(ordinal) {
    check(driver_->device_get(&device_, ordinal), "cuDeviceGet");
    check(driver_->primary_ctx_retain(&ctx_, device_), "cuDevicePrimaryCtxRetain");
  }
  ~Gpu() { driver_->primary_ctx_release(device_); }
  Gpu(const Gpu&) = delete;
  Gpu& operator=(const Gpu&) = delete;

  const Driver& api() const { return *driver_; }
  CUdevice device() const { return device_; }
  int ordinal() const { return ordinal_; }

  // Throws kiln::Error naming the call, and the kernel if there is one.
  void check(CUresult r, const char* call, const std::string& kernel = "") const {
    if (r == CUDA_SUCCESS) return;
    std::string where = kernel.empty() ? "" : " for kernel '" + kernel + "'";
    throw Error("cuda backend: " + std::string(call) + " failed" + where + ": " + cuda::error_text(*driver_, r));
  }

  // Driver calls act on the calling thread's current context; any thread may
  // call kiln, so every entry point sets it.
  CUresult set_current() const noexcept { return driver_->ctx_set_current(ctx_); }
  void make_current() const { check(set_current(), "cuCtxSetCurrent"); }

  int attribute(CUdevice_attribute a, const char* what) const {
    int v = 0;
    check(driver_->device_get_attribute(&v, a, device_), what);
    return v;
  }

 private:
  std::shared_ptr<const Driver> driver_;
  int ordinal_;
  CUdevice device_ = 0;
  CUcontext ctx_ = nullptr;
};

// 256-byte steps up to 2 KiB, then eight sizes per power of two, so a block
// is at most 1/8 larger than asked for.
int64_t bucket(int64_t bytes) {
  if (bytes <= 256) return 256;
  int64_t step = std::max<int64_t>(256, int64_t(std::bit_ceil(uint64_t(bytes))) / 8);
  return (bytes + step - 1) / step * step;
}

// Freed blocks wait in their size bucket for the next allocation of that
// bucket, so the executor's reallocations (a new value of a symbolic dim) skip
// cuMemAlloc and cuMemFree, which synchronize the device. Reuse needs no
// fence: launches run in stream order, and the synchronous copies wait for
// earlier launches (see CudaStream).
class MemoryPool {
 public:
  explicit MemoryPool(std::shared_ptr<Gpu> gpu) : gpu_(std::move(gpu)) {}
  ~MemoryPool() { release_cached(); }
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  // A block of bucket(bytes) bytes.
  CUdeviceptr take(int64_t bytes) {
    int64_t size = bucket(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<CUdeviceptr>& blocks = free_[size];
      if (!blocks.empty()) {
        CUdeviceptr p = blocks.back();
        blocks.pop_back();
        return p;
      }
    }
    gpu_->make_current();
    CUdeviceptr p = 0;
    auto alloc = [&] {
      return fault::fires(fault::Site::alloc) ? CUDA_ERROR_OUT_OF_MEMORY : gpu_->api().mem_alloc(&p, size_t(size));
    };
    CUresult r = alloc();
    if (r == CUDA_ERROR_OUT_OF_MEMORY) {  // the cached blocks may make room
      release_cached();
      r = alloc();
    }
    gpu_->check(r, ("cuMemAlloc of " + std::to_string(bytes) + " bytes").c_str());
    return p;
  }

  void give(CUdeviceptr p, int64_t bytes) noexcept {
    try {
      std::lock_guard<std::mutex> lock(mu_);
      free_[bucket(bytes)].push_back(p);
    } catch (...) {
      gpu_->api().mem_free(p);
    }
  }

 private:
  void release_cached() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (gpu_->set_current() == CUDA_SUCCESS)
      for (auto& [size, blocks] : free_)
        for (CUdeviceptr p : blocks) gpu_->api().mem_free(p);
    free_.clear();
  }

  std::shared_ptr<Gpu> gpu_;
  std::mutex mu_;
  std::map<int64_t, std::vector<CUdeviceptr>> free_;
};

class CudaBuffer : public Buffer {
 public:
  CudaBuffer(std::shared_ptr<MemoryPool> pool, int64_t bytes)
      : pool_(std::move(pool)), bytes_(bytes), ptr_(pool_->take(bytes)) {}
  ~CudaBuffer() override { pool_->give(ptr_, bytes_); }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;

  int64_t bytes() const override { return bytes_; }
  CUdeviceptr ptr() const { return ptr_; }
  const MemoryPool* pool() const { return pool_.get(); }  // which device it is on

 private:
  std::shared_ptr<MemoryPool> pool_;
  int64_t bytes_;
  CUdeviceptr ptr_;
};

// A captured CUDA graph, instantiated once and launched as one unit on the
// stream it was captured from.
class CudaReplay : public Replay {
 public:
  // Takes `graph`: the executable graph is a copy of it, so it goes at once.
  CudaReplay(std::shared_ptr<Gpu> gpu, CUstream stream, CUgraph graph) : gpu_(std::move(gpu)), stream_(stream) {
    gpu_->make_current();
    CUresult r = gpu_->api().graph_instantiate(&exec_, graph, 0);
    gpu_->api().graph_destroy(graph);
    gpu_->check(r, "cuGraphInstantiateWithFlags");
  }
  ~CudaReplay() override {
    if (gpu_->set_current() == CUDA_SUCCESS) gpu_->api().graph_exec_destroy(exec_);
  }
  CudaReplay(const CudaReplay&) = delete;
  CudaReplay& operator=(const CudaReplay&) = delete;

  void replay() override {
    gpu_->make_current();
    gpu_->check(gpu_->api().graph_launch(exec_, stream_), "cuGraphLaunch");
  }

  // Makes this the executable of `graph` (the same launches with other params
  // or buffers) without instantiating anew; false where the driver cannot.
  bool update(CUgraph graph) {
    if (!gpu_->api().graph_exec_update) return false;
    gpu_->make_current();
    CUgraphExecUpdateResultInfo info{};
    return gpu_->api().graph_exec_update(exec_, graph, &info) == CUDA_SUCCESS;
  }

 private:
  std::shared_ptr<Gpu> gpu_;
  CUstream stream_;
  CUgraphExec exec_ = nullptr;
};

// Blocking with respect to the legacy default stream, on which the synchronous
// cuMemcpyHtoD / DtoH run: a copy waits for the launches before it, and a
// launch for the copies before it.
class CudaStream : public Stream {
 public:
  explicit CudaStream(std::shared_ptr<Gpu> gpu) : gpu_(std::move(gpu)) {
    gpu_->make_current();
    gpu_->check(gpu_->api().stream_create(&stream_, CU_STREAM_DEFAULT), "cuStreamCreate");
  }
  ~CudaStream() override {
    if (gpu_->set_current() == CUDA_SUCCESS) gpu_->api().stream_destroy(stream_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  // A kernel that faulted reports here.
  void synchronize() override {
    gpu_->make_current();
    gpu_->check(gpu_->api().stream_synchronize(stream_), "cuStreamSynchronize");
  }

  bool can_capture() const override { return true; }

  // Thread-local mode: only this thread is barred from calls that would break
  // the capture; others may go on compiling and allocating meanwhile.
  std::unique_ptr<Replay> capture(const std::function<void()>& record) override {
    return std::make_unique<CudaReplay>(gpu_, stream_, record_graph(record));
  }

  // The new recording updates the old executable where the driver can (a
  // decode step's cache length changed: same kernels, other params).
  std::unique_ptr<Replay> recapture(std::unique_ptr<Replay> old, const std::function<void()>& record) override {
    CUgraph graph = record_graph(record);
    auto* mine = dynamic_cast<CudaReplay*>(old.get());
    if (mine && mine->update(graph)) {
      gpu_->api().graph_destroy(graph);
      return old;
    }
    old.reset();
    return std::make_unique<CudaReplay>(gpu_, stream_, graph);
  }

  CUstream handle() const { return stream_; }
  const Gpu* gpu() const { return gpu_.get(); }

 private:
  // Records `record`'s launches on this stream as a graph (the caller owns it).
  CUgraph record_graph(const std::function<void()>& record) {
    const Driver& api = gpu_->api();
    gpu_->make_current();
    gpu_->check(api.stream_begin_capture(stream_, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    try {
      record();
    } catch (...) {
      drop_capture();
      throw;
    }
    CUgraph graph = nullptr;
    gpu_->make_current();  // `record` may have made another context current
    gpu_->check(api.stream_end_capture(stream_, &graph), "cuStreamEndCapture");
    return graph;
  }

  // Ends a capture whose recording failed, so the stream runs work again.
  void drop_capture() noexcept {
    CUgraph graph = nullptr;
    if (gpu_->set_current() == CUDA_SUCCESS && gpu_->api().stream_end_capture(stream_, &graph) == CUDA_SUCCESS &&
        graph)
      gpu_->api().graph_destroy(graph);
  }

  std::shared_ptr<Gpu> gpu_;
  CUstream stream_ = nullptr;
};

// The device's largest grid and block, per axis x, y, z.
struct Limits {
  std::array<int64_t, 3> grid{}, block{};
  // Programmatic dependent launch (sm_90 and a driver with cuLaunchKernelEx;
  // KILN_CUDA_PDL=0 turns it off): each kernel may start while the one before
  // it finishes, and waits for it (griddepcontrol.wait, emit/cuda) before it
  // touches memory, so launch latency overlaps the previous kernel's tail.
  bool dependent_launch = false;
};

std::string dims_str(const std::array<int64_t, 3>& d) {
  return std::to_string(d[0]) + "x" + std::to_string(d[1]) + "x" + std::to_string(d[2]);
}

class CudaExecutable : public Executable {
 public:
  CudaExecutable(const Kernel& k, std::shared_ptr<Gpu> gpu, std::shared_ptr<MemoryPool> pool, const Limits& limits)
      : name_(k.name), params_(k.params), num_buffers_(k.global_buffers().size()),
        maps_(cuda_tensor_maps(k)), grid_(cuda_grid(k, maps_)), gpu_(std::move(gpu)), pool_(std::move(pool)),
        limits_(limits), tensor_cores_(k.array_tile.any()) {}
  ~CudaExecutable() override {
    if (module_ && gpu_->set_current() == CUDA_SUCCESS) gpu_->api().module_unload(module_);
  }
  CudaExecutable(const CudaExecutable&) = delete;
  CudaExecutable& operator=(const CudaExecutable&) = delete;

  // Loads a cubin or PTX image and finds its entry point.
  void load(const std::string& image, const std::string& entry) {
    const Driver& api = gpu_->api();
    gpu_->make_current();
    gpu_->check(api.module_load_data(&module_, image.c_str()), "cuModuleLoadData", name_);
    gpu_->check(api.module_get_function(&fn_, module_, entry.c_str()), "cuModuleGetFunction", name_);
    gpu_->check(api.func_get_attribute(&max_threads_, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn_),
                "cuFuncGetAttribute", name_);
    // Shared memory sized at launch past 48 KiB must be allowed first.
    if (grid_.dynamic_shared_bytes > 48 * 1024)
      gpu_->check(api.func_set_attribute(fn_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                         int(grid_.dynamic_shared_bytes)),
                  "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", name_);
  }

  const std::string& name() const override { return name_; }

  void launch(Stream& stream, const std::vector<Buffer*>& args, const std::vector<int64_t>& params) override {
    if (args.size() != num_buffers_ || params.size() != params_.size())
      throw Error("cuda backend: kernel '" + name_ + "' takes " + std::to_string(num_buffers_) + " buffers and " +
                  std::to_string(params_.size()) + " params, got " + std::to_string(args.size()) + " and " +
                  std::to_string(params.size()));
    auto* cuda_stream = dynamic_cast<CudaStream*>(&stream);
    if (!cuda_stream || cuda_stream->gpu() != gpu_.get())
      throw Error("cuda backend: kernel '" + name_ + "' launched on a stream of another device");
    if (fault::fires(fault::Site::launch)) throw Error("cuda backend: kernel '" + name_ + "' timed out (injected fault)");
    std::vector<CUdeviceptr> ptrs;
    for (Buffer* b : args) ptrs.push_back(device_pointer(b));
    std::vector<long long> values(params.begin(), params.end());

    std::map<std::string, int64_t> vars;
    for (size_t j = 0; j < params.size(); ++j) vars.emplace(params_[j], params[j]);
    std::array<int64_t, 3> grid = sizes(grid_.blocks, vars), block = sizes(grid_.threads, vars);
    if (!fits(grid, block)) return;  // an empty range: nothing to run

    std::vector<void*> kernel_args;
    for (CUdeviceptr& p : ptrs) kernel_args.push_back(&p);
    for (long long& v : values) kernel_args.push_back(&v);
    std::vector<CUtensorMap> maps(maps_.size());
    for (size_t m = 0; m < maps_.size(); ++m) {
      encode(maps_[m], ptrs[maps_[m].buffer], &maps[m]);
      kernel_args.push_back(&maps[m]);
    }
    gpu_->make_current();
    if (limits_.dependent_launch && !tensor_cores_) {
      CUlaunchAttribute attr{};
      attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
      attr.value.programmaticStreamSerializationAllowed = 1;
      CUlaunchConfig config{};
      config.gridDimX = unsigned(grid[0]), config.gridDimY = unsigned(grid[1]), config.gridDimZ = unsigned(grid[2]);
      config.blockDimX = unsigned(block[0]), config.blockDimY = unsigned(block[1]), config.blockDimZ = unsigned(block[2]);
      config.sharedMemBytes = unsigned(grid_.dynamic_shared_bytes);
      config.hStream = cuda_stream->handle();
      config.attrs = &attr;
      config.numAttrs = 1;
      gpu_->check(gpu_->api().launch_kernel_ex(&config, fn_, kernel_args.data(), nullptr), "cuLaunchKernelEx", name_);
      return;
    }
    gpu_->check(gpu_->api().launch_kernel(fn_, unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2]),
                                          unsigned(block[0]), unsigned(block[1]), unsigned(block[2]),
                                          unsigned(grid_.dynamic_shared_bytes),
                                          cuda_stream->handle(), kernel_args.data(), nullptr),
                "cuLaunchKernel", name_);
  }

 private:
  CUdeviceptr device_pointer(Buffer* b) const {
    auto* buf = dynamic_cast<CudaBuffer*>(b);
    if (!buf || buf->pool() != pool_.get())
      throw Error("cuda backend: kernel '" + name_ + "' was given a buffer that is not on its device");
    return buf->ptr();
  }

  // The tensor map of a buffer at `ptr` (emit_cuda.h: CudaTensorMap): 16-bit
  // elements, 128-byte swizzled boxes of 64 x box_outer.
  void encode(const CudaTensorMap& m, CUdeviceptr ptr, CUtensorMap* out) const {
    const Driver& api = gpu_->api();
    if (!api.tensor_map_encode_tiled)
      throw Error("cuda backend: kernel '" + name_ +
                  "' copies by tensor maps, which this driver lacks (no cuTensorMapEncodeTiled)");
    if (ptr % 16)
      throw Error("cuda backend: kernel '" + name_ + "' copies by tensor maps from a buffer that is not 16-byte aligned");
    cuuint64_t dims[2] = {cuuint64_t(m.inner), cuuint64_t(m.outer)}, strides[1] = {cuuint64_t(m.inner) * 2};
    cuuint32_t box[2] = {64, cuuint32_t(m.box_outer)}, steps[2] = {1, 1};
    gpu_->check(api.tensor_map_encode_tiled(out, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, reinterpret_cast<void*>(ptr), dims,
                                            strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                "cuTensorMapEncodeTiled", name_);
  }

  static std::array<int64_t, 3> sizes(const std::array<Expr, 3>& extents, const std::map<std::string, int64_t>& vars) {
    std::array<int64_t, 3> out;
    for (size_t i = 0; i < 3; ++i) out[i] = evaluate_index(extents[i], vars);
    return out;
  }

  // False when a size is 0 or less (the bound loops run no iteration); throws
  // when the launch is larger than the device allows.
  bool fits(const std::array<int64_t, 3>& grid, const std::array<int64_t, 3>& block) const {
    for (size_t i = 0; i < 3; ++i)
      if (grid[i] <= 0 || block[i] <= 0) return false;
    std::string what = "cuda backend: kernel '" + name_ + "' needs ";
    for (size_t i = 0; i < 3; ++i) {
      if (grid[i] > limits_.grid[i])
        throw Error(what + "a grid of " + dims_str(grid) + " blocks; the device allows " + dims_str(limits_.grid));
      if (block[i] > limits_.block[i])
        throw Error(what + "blocks of " + dims_str(block) + " threads; the device allows " + dims_str(limits_.block));
    }
    if (block[0] * block[1] * block[2] > max_threads_)
      throw Error(what + std::to_string(block[0] * block[1] * block[2]) + " threads per block; it can have " +
                  std::to_string(max_threads_) + " on this device");
    return true;
  }

  std::string name_;
  std::vector<std::string> params_;
  size_t num_buffers_;
  std::vector<CudaTensorMap> maps_;  // passed after the params, encoded at each launch
  GpuGrid grid_;                     // after maps_: a kernel that takes maps runs more threads
  std::shared_ptr<Gpu> gpu_;
  std::shared_ptr<MemoryPool> pool_;
  Limits limits_;
  bool tensor_cores_ = false;  // launched without dependent launch (see emit/cuda)
  CUmodule module_ = nullptr;
  CUfunction fn_ = nullptr;
  int max_threads_ = 0;  // per block, for this kernel's register use
};

DeviceInfo query_info(const Gpu& gpu) {
  char name[256] = {};
  gpu.check(gpu.api().device_get_name(name, sizeof name - 1, gpu.device()), "cuDeviceGetName");
  size_t memory = 0;
  gpu.check(gpu.api().device_total_mem(&memory, gpu.device()), "cuDeviceTotalMem");
  DeviceInfo info;
  // The ordinal keeps the names of identical GPUs apart (caches key on them).
  info.name = "cuda " + std::to_string(gpu.ordinal()) + ": " + name;
  info.backend = "cuda";
  info.cores = gpu.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
  int major = gpu.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "cuDeviceGetAttribute(COMPUTE_CAPABILITY)");
  int minor = gpu.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "cuDeviceGetAttribute(COMPUTE_CAPABILITY)");
  info.features = "sm_" + std::to_string(major * 10 + minor);
  info.memory_bytes = int64_t(memory);
  info.warp_size = gpu.attribute(CU_DEVICE_ATTRIBUTE_WARP_SIZE, "cuDeviceGetAttribute(WARP_SIZE)");
  info.max_threads = gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "cuDeviceGetAttribute(MAX_THREADS)");
  // Static __shared__ arrays get this much; more needs an opt-in per kernel.
  info.shared_bytes = gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK,
                                    "cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK)");
  return info;
}

Limits query_limits(const Gpu& gpu) {
  const char* what = "cuDeviceGetAttribute(MAX_GRID_DIM / MAX_BLOCK_DIM)";
  Limits l;
  l.grid = {gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, what),
            gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, what),
            gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, what)};
  l.block = {gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, what),
             gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y, what),
             gpu.attribute(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, what)};
  const char* pdl = std::getenv("KILN_CUDA_PDL");
  l.dependent_launch = gpu.api().launch_kernel_ex && gpu.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, what) >= 9 &&
                       !(pdl && std::string(pdl) == "0");
  return l;
}

// The device's own sm_XY when this NVRTC knows it: a cubin, loaded without a
// JIT step. Otherwise PTX for the newest older architecture NVRTC knows, which
// the driver compiles at load time.
std::string nvrtc_arch_for(const std::string& features) {
  int cc = std::stoi(features.substr(3));
  std::vector<int> known = nvrtc_architectures();
  if (std::find(known.begin(), known.end(), cc) != known.end()) return "sm_" + std::to_string(cc);
  int older = 0;
  for (int a : known)
    if (a < cc) older = a;
  if (!older) throw Error("cuda backend: this NVRTC cannot compile for " + features + " or any older architecture");
  return "compute_" + std::to_string(older);
}

template <typename B>
auto& cuda_buffer(B& b, const MemoryPool* pool, const char* what) {
  using Cuda = std::conditional_t<std::is_const_v<B>, const CudaBuffer, CudaBuffer>;
  auto* cuda = dynamic_cast<Cuda*>(&b);
  if (!cuda || cuda->pool() != pool) throw Error(std::string("cuda backend: ") + what + " a buffer of another device");
  return *cuda;
}

void check_size(int64_t bytes, const Buffer& b, const char* what) {
  if (bytes < 0 || bytes > b.bytes())
    throw Error("cuda backend: " + std::string(what) + " " + std::to_string(bytes) + " bytes of a " +
                std::to_string(b.bytes()) + "-byte buffer");
}

class CudaDevice : public Device {
 public:
  explicit CudaDevice(const std::shared_ptr<Gpu>& gpu)
      : gpu_(gpu), info_(query_info(*gpu)), limits_(query_limits(*gpu)),
        pool_(std::make_shared<MemoryPool>(gpu)), stream_(gpu) {
    const Driver& api = gpu_->api();
    no_staging_ = !api.mem_alloc_host || !api.mem_free_host || !api.memcpy_htod_async || !api.memcpy_dtoh_async;
  }

  const DeviceInfo& info() const override { return info_; }

  std::shared_ptr<Buffer> allocate(int64_t bytes) override {
    if (bytes < 0 || bytes > (int64_t(1) << 50))
      throw Error("cuda backend: cannot allocate " + std::to_string(bytes) + " bytes");
    return std::make_shared<CudaBuffer>(pool_, bytes);
  }

  ~CudaDevice() override {
    if (pinned_ && gpu_->set_current() == CUDA_SUCCESS) {
      gpu_->api().stream_synchronize(CU_STREAM_LEGACY);  // no staged copy still reads the ring
      gpu_->api().mem_free_host(pinned_);
    }
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  // Transfers of up to kStaged bytes go through a pinned staging ring by the
  // driver's async copies on the legacy stream, ordered as the synchronous
  // ones are with every launch: a write returns once its bytes are in the
  // ring (cuMemcpyHtoD from pageable memory first waits for the GPU, then
  // stages), a read waits for the GPU and its own copy. A decode step's
  // inputs and logits are such transfers (H100: 61 + 50 us a step before).
  // Larger ones, or a driver without these entry points: the synchronous copies.
  void write(Buffer& dst, const void* src, int64_t bytes) override {
    CudaBuffer& buf = cuda_buffer(dst, pool_.get(), "cannot write");
    check_size(bytes, buf, "cannot write");
    if (bytes == 0) return;
    gpu_->make_current();
    std::lock_guard<std::mutex> lock(staging_mu_);
    if (char* ring = staging(bytes)) {
      std::memcpy(ring, src, size_t(bytes));
      gpu_->check(gpu_->api().memcpy_htod_async(buf.ptr(), ring, size_t(bytes), CU_STREAM_LEGACY), "cuMemcpyHtoDAsync");
      return;
    }
    gpu_->check(gpu_->api().memcpy_htod(buf.ptr(), src, size_t(bytes)), "cuMemcpyHtoD");
  }

  void read(const Buffer& src, void* dst, int64_t bytes) override {
    const CudaBuffer& buf = cuda_buffer(src, pool_.get(), "cannot read");
    check_size(bytes, buf, "cannot read");
    if (bytes == 0) return;
    gpu_->make_current();
    std::lock_guard<std::mutex> lock(staging_mu_);
    if (char* ring = staging(bytes)) {
      gpu_->check(gpu_->api().memcpy_dtoh_async(ring, buf.ptr(), size_t(bytes), CU_STREAM_LEGACY), "cuMemcpyDtoHAsync");
      gpu_->check(gpu_->api().stream_synchronize(CU_STREAM_LEGACY), "cuStreamSynchronize");
      pinned_used_ = 0;  // every staged copy is done
      std::memcpy(dst, ring, size_t(bytes));
      return;
    }
    gpu_->check(gpu_->api().memcpy_dtoh(dst, buf.ptr(), size_t(bytes)), "cuMemcpyDtoH");
  }

  // On the legacy default stream, like write and read: ordered with the launches.
  void copy(const Buffer& src, int64_t src_offset, Buffer& dst, int64_t dst_offset, int64_t bytes) override {
    check_copy_range(src, src_offset, dst, dst_offset, bytes);
    const CudaBuffer& s = cuda_buffer(src, pool_.get(), "cannot copy from");
    CudaBuffer& d = cuda_buffer(dst, pool_.get(), "cannot copy to");
    if (bytes == 0) return;
    gpu_->make_current();
    gpu_->check(gpu_->api().memcpy_dtod(d.ptr() + CUdeviceptr(dst_offset), s.ptr() + CUdeviceptr(src_offset),
                                        size_t(bytes)),
                "cuMemcpyDtoD");
  }

  // Thread-safe: every step works on its own objects.
  std::shared_ptr<Executable> compile(const Kernel& k) override { return load_artifact(k, *compile_artifact(k)); }

  // The artifact: the entry name and the cubin for this GPU (PTX when NVRTC
  // does not know its architecture).
  std::string artifact_identity() const override {
    try {
      int driver = 0;
      gpu_->api().driver_get_version(&driver);
      return nvrtc_version() + "; arch " + nvrtc_arch_for(info_.features) + "; driver " + std::to_string(driver) +
             "; " + cuda_emit_switches();
    } catch (const Error&) {
      return "";  // no NVRTC: compile() says so
    }
  }

  std::optional<std::string> compile_artifact(const Kernel& k) override {
    gpu_grid(k, "cuda backend");  // checks the kernel's shape before NVRTC does
    if (fault::fires(fault::Site::jit_compile))
      throw Error("cuda backend: cannot compile kernel '" + k.name + "': injected fault (jit_compile)");
    return cuda_artifact(k, nvrtc_arch_for(info_.features));
  }

  std::shared_ptr<Executable> load_artifact(const Kernel& k, std::string_view bytes) override {
    auto exe = std::make_shared<CudaExecutable>(k, gpu_, pool_, limits_);
    CudaImage image = parse_cuda_artifact(bytes);
    exe->load(image.image, image.entry);
    return exe;
  }

  std::string target_source(const Kernel& k) override { return emit_cuda(k, cuda_entry_name(k)); }

  Stream& stream() override { return stream_; }

 private:
  static constexpr int64_t kStaged = int64_t(256) << 10, kRing = int64_t(4) << 20;

  // Room for `bytes` in the staging ring (allocated at first use; a full ring
  // is reused once its copies are done), or null for the synchronous path.
  // Holds staging_mu_.
  char* staging(int64_t bytes) {
    if (bytes > kStaged || no_staging_) return nullptr;
    const Driver& api = gpu_->api();
    if (!pinned_ && api.mem_alloc_host(&pinned_, size_t(kRing)) != CUDA_SUCCESS) {
      pinned_ = nullptr;
      no_staging_ = true;  // no pinned memory to be had: the synchronous copies
      return nullptr;
    }
    if (pinned_used_ + bytes > kRing) {
      gpu_->check(api.stream_synchronize(CU_STREAM_LEGACY), "cuStreamSynchronize");
      pinned_used_ = 0;
    }
    char* at = static_cast<char*>(pinned_) + pinned_used_;
    pinned_used_ += (bytes + 255) / 256 * 256;
    return at;
  }

  std::shared_ptr<Gpu> gpu_;
  DeviceInfo info_;
  Limits limits_;
  std::shared_ptr<MemoryPool> pool_;
  CudaStream stream_;
  std::mutex staging_mu_;
  void* pinned_ = nullptr;
  int64_t pinned_used_ = 0;
  bool no_staging_ = false;  // the driver lacks an entry point, or pinned memory could not be had
};

}  // namespace

std::vector<std::shared_ptr<Device>> make_cuda_devices(const std::string& libcuda, std::string* why) {
  std::vector<std::shared_ptr<Device>> found;
  std::string reason;
  try {
    std::shared_ptr<const Driver> driver = cuda::load_driver(libcuda, &reason);
    int count = 0;
    if (driver) {
      if (CUresult r = driver->device_get_count(&count); r != CUDA_SUCCESS)
        reason = "cuDeviceGetCount failed: " + cuda::error_text(*driver, r);
      else if (count == 0)
        reason = "the driver finds no GPU";
    }
    for (int i = 0; i < count; ++i) {
      try {
        found.push_back(std::make_shared<CudaDevice>(std::make_shared<Gpu>(driver, i)));
      } catch (const std::exception& e) {
        reason += std::string(reason.empty() ? "" : "; ") + "GPU " + std::to_string(i) + ": " + e.what();
      }
    }
  } catch (const std::exception& e) {
    reason = e.what();
  } catch (...) {
    reason = "unknown error";
  }
  if (why) *why = reason;
  return found;
}

}  // namespace kiln
