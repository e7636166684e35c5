#include "backends/cpu/cpu_device.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <type_traits>

#include <llvm/ADT/SmallVector.h>
#include <llvm/ADT/StringMap.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/MC/SubtargetFeature.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>

#include "codegen/emit/llvm/emit_llvm.h"
#include "kiln/error.h"
#include "runtime/fault.h"
#include "runtime/thread_pool.h"

namespace kiln {

namespace {

// kiln's CPU kernel ABI (see emit_llvm.h).
using KernelFn = void (*)(void* const* bufs, const int64_t* params, int64_t begin, int64_t end);

void initialize_llvm() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
  });
}

template <typename T>
T unwrap(llvm::Expected<T> value, const std::string& what) {
  if (!value) throw Error("cpu backend: " + what + ": " + llvm::toString(value.takeError()));
  return std::move(*value);
}

// The function of a kernel's object file. Each object is linked into a
// JITDylib of its own, so the name need not be unique.
constexpr const char* kObjectSymbol = "kiln_kernel";

// Kernel names are free text; symbols get only identifier characters.
std::string symbol_name(const std::string& kernel, uint64_t serial) {
  std::string s = kernel.empty() ? "kernel" : kernel;
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  return s + "_" + std::to_string(serial);
}

// CpuBuffer& or const CpuBuffer&, as `b` is.
template <typename B>
auto& cpu_buffer(B& b, const char* what) {
  using Cpu = std::conditional_t<std::is_const_v<B>, const CpuBuffer, CpuBuffer>;
  auto* cpu = dynamic_cast<Cpu*>(&b);
  if (!cpu) throw Error(std::string("cpu backend: ") + what + " a buffer of another device");
  return *cpu;
}

void check_size(int64_t bytes, const Buffer& b, const char* what) {
  if (bytes < 0 || bytes > b.bytes())
    throw Error("cpu backend: " + std::string(what) + " " + std::to_string(bytes) + " bytes of a " +
                std::to_string(b.bytes()) + "-byte buffer");
}

}  // namespace

// The LLJIT of one device and the host TargetMachine that its O3 pipeline
// optimizes for.
class CpuJit : public std::enable_shared_from_this<CpuJit> {
 public:
  CpuJit() {
    initialize_llvm();
    llvm::sys::getHostCPUFeatures(host_features_);
    cpu_ = llvm::sys::getHostCPUName().str();
    llvm::SubtargetFeatures features;
    for (const auto& f : host_features_) features.AddFeature(f.first(), f.second);
    features_ = features.getString();

    builder_ = unwrap(llvm::orc::JITTargetMachineBuilder::detectHost(), "cannot detect the host");
    builder_->setCPU(cpu_).setFeatures(features_).setCodeGenOptLevel(llvm::CodeGenOpt::Aggressive);
    idle_.push_back(unwrap(builder_->createTargetMachine(), "cannot create a target machine for the host"));
    jit_ = unwrap(llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(*builder_).create(),
                  "cannot start the JIT");
    // Kernels call libm (exp2f, sinf) and the C library (memset).
    char prefix = jit_->getDataLayout().getGlobalPrefix();
    jit_->getMainJITDylib().addGenerator(
        unwrap(llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(prefix),
               "cannot search the process for symbols"));
  }

  const llvm::StringMap<bool>& host_features() const { return host_features_; }
  const std::string& cpu_name() const { return cpu_; }

  // The kernel as a relocatable object file for this host (the artifact of
  // CpuDevice::compile_artifact), and its loading.
  std::string compile_object(const Kernel& k);
  std::shared_ptr<Executable> load_object(const Kernel& k, std::string_view object);

  // LLVM's version and the exact target the code is made for.
  std::string identity() const {
    return "llvm " LLVM_VERSION_STRING "; " + jit_->getTargetTriple().str() + "; " + cpu_ + "; " + features_;
  }

  // The kernel's LLVM IR after the O3 pipeline.
  std::string optimized_ir(const Kernel& k);

  void remove(llvm::orc::JITDylib& dylib) {
    llvm::consumeError(jit_->getExecutionSession().removeJITDylib(dylib));
  }

 private:
  // Calls fn(tm) with a TargetMachine of its own. They are not thread-safe,
  // so each compile borrows one; kernels then compile in parallel.
  template <typename Fn>
  auto with_target_machine(Fn&& fn) {
    std::unique_ptr<llvm::TargetMachine> tm;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_.empty()) {
        tm = unwrap(builder_->createTargetMachine(), "cannot create a target machine for the host");
      } else {
        tm = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    auto result = fn(*tm);
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(std::move(tm));
    return result;
  }

  // Emits, verifies and optimizes one kernel.
  std::unique_ptr<llvm::Module> build(const Kernel& k, const std::string& symbol, llvm::LLVMContext& ctx,
                                      llvm::TargetMachine& tm) {
    std::unique_ptr<llvm::Module> m = emit_llvm(k, symbol, ctx);
    m->setDataLayout(jit_->getDataLayout());
    m->setTargetTriple(jit_->getTargetTriple().str());
    for (llvm::Function& f : *m) {
      if (f.isDeclaration()) continue;
      f.addFnAttr("target-cpu", cpu_);
      f.addFnAttr("target-features", features_);
    }
    std::string errors;
    llvm::raw_string_ostream os(errors);
    if (llvm::verifyModule(*m, &os))
      throw Error("cpu backend: LLVM rejected kernel '" + k.name + "': " + os.str());
    optimize(*m, tm);
    return m;
  }

  void optimize(llvm::Module& m, llvm::TargetMachine& tm) {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PipelineTuningOptions options;
    options.LoopVectorization = true;
    options.SLPVectorization = true;
    llvm::PassBuilder pb(&tm, options);
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3).run(m, mam);
  }

  llvm::StringMap<bool> host_features_;
  std::string cpu_;
  std::string features_;  // "+avx2,-avx512f,..."
  std::optional<llvm::orc::JITTargetMachineBuilder> builder_;
  std::mutex mutex_;  // guards builder_ and idle_
  std::vector<std::unique_ptr<llvm::TargetMachine>> idle_;  // not in use by a compile
  std::unique_ptr<llvm::orc::LLJIT> jit_;
  std::atomic<uint64_t> serial_{0};  // kernel names repeat; symbols must not
  std::atomic<uint64_t> dylibs_{0};  // names of the JITDylibs of loaded objects
};

namespace {

class CpuExecutable : public Executable {
 public:
  CpuExecutable(const Kernel& k, KernelFn fn, std::shared_ptr<CpuJit> jit, llvm::orc::JITDylib& dylib)
      : name_(k.name), params_(k.params), num_buffers_(k.global_buffers().size()), fn_(fn),
        jit_(std::move(jit)), dylib_(dylib) {
    if (const StmtNode* loop = top_level_parallel_loop(k)) parallel_extent_ = loop->extent;
  }

  // Frees the machine code.
  ~CpuExecutable() override { jit_->remove(dylib_); }

  const std::string& name() const override { return name_; }

  void launch(Stream&, const std::vector<Buffer*>& args, const std::vector<int64_t>& params) override {
    if (args.size() != num_buffers_ || params.size() != params_.size())
      throw Error("cpu backend: kernel '" + name_ + "' takes " + std::to_string(num_buffers_) +
                  " buffers and " + std::to_string(params_.size()) + " params, got " +
                  std::to_string(args.size()) + " and " + std::to_string(params.size()));
    if (fault::fires(fault::Site::launch))
      throw Error("cpu backend: kernel '" + name_ + "' timed out (injected fault)");
    std::vector<void*> ptrs;
    for (Buffer* b : args) {
      if (!b) throw Error("cpu backend: kernel '" + name_ + "' was given a null buffer");
      ptrs.push_back(cpu_buffer(*b, "kernel launch with").data());
    }
    if (!parallel_extent_) {
      fn_(ptrs.data(), params.data(), 0, 1);
      return;
    }
    std::map<std::string, int64_t> vars;
    for (size_t j = 0; j < params.size(); ++j) vars[params_[j]] = params[j];
    int64_t extent = evaluate_index(parallel_extent_, vars);
    ThreadPool::global().parallel_for(0, extent, [&](int64_t begin, int64_t end) {
      fn_(ptrs.data(), params.data(), begin, end);
    });
  }

 private:
  std::string name_;
  std::vector<std::string> params_;
  size_t num_buffers_;
  Expr parallel_extent_;  // null without a parallel loop
  KernelFn fn_;
  std::shared_ptr<CpuJit> jit_;  // owns the code behind fn_
  llvm::orc::JITDylib& dylib_;    // holds that code
};

}  // namespace

std::string CpuJit::optimized_ir(const Kernel& k) {
  llvm::LLVMContext ctx;
  std::unique_ptr<llvm::Module> m =
      with_target_machine([&](llvm::TargetMachine& tm) { return build(k, symbol_name(k.name, serial_++), ctx, tm); });
  std::string text;
  llvm::raw_string_ostream os(text);
  m->print(os, nullptr);
  return os.str();
}

std::string CpuJit::compile_object(const Kernel& k) {
  return with_target_machine([&](llvm::TargetMachine& tm) {
    llvm::LLVMContext ctx;
    std::unique_ptr<llvm::Module> m = build(k, kObjectSymbol, ctx, tm);
    std::string what = "cpu backend: cannot compile kernel '" + k.name + "': ";
    if (fault::fires(fault::Site::jit_compile)) throw Error(what + "injected fault (jit_compile)");
    llvm::SmallVector<char, 0> object;
    llvm::raw_svector_ostream os(object);
    llvm::legacy::PassManager codegen;
    if (tm.addPassesToEmitFile(codegen, os, nullptr, llvm::CGFT_ObjectFile))
      throw Error(what + "this target cannot emit object files");
    codegen.run(*m);
    return std::string(object.begin(), object.end());
  });
}

std::shared_ptr<Executable> CpuJit::load_object(const Kernel& k, std::string_view object) {
  std::string what = "cannot load kernel '" + k.name + "'";
  llvm::Expected<llvm::orc::JITDylib&> created = jit_->createJITDylib("kiln_kernel_" + std::to_string(dylibs_++));
  if (!created) throw Error("cpu backend: " + what + ": " + llvm::toString(created.takeError()));
  llvm::orc::JITDylib& dylib = *created;
  // libm and libc, through the main JITDylib's generator.
  dylib.addToLinkOrder(jit_->getMainJITDylib());
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(llvm::StringRef(object.data(), object.size()), k.name);
  // The object is linked here, at its first lookup. If that fails, drop it.
  llvm::Error added = jit_->addObjectFile(dylib, std::move(buffer));
  llvm::Expected<llvm::orc::ExecutorAddr> addr =
      added ? llvm::Expected<llvm::orc::ExecutorAddr>(std::move(added)) : jit_->lookup(dylib, kObjectSymbol);
  if (!addr) {
    std::string message = llvm::toString(addr.takeError());
    remove(dylib);
    throw Error("cpu backend: " + what + ": " + message);
  }
  return std::make_shared<CpuExecutable>(k, addr->toPtr<KernelFn>(), shared_from_this(), dylib);
}

CpuBuffer::CpuBuffer(int64_t bytes) : bytes_(bytes) {
  if (bytes < 0) throw Error("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes");
  try {
    if (fault::fires(fault::Site::alloc)) throw std::bad_alloc();
    // operator new returns a unique pointer even for 0 bytes.
    data_ = ::operator new(static_cast<size_t>(bytes), std::align_val_t{64});
  } catch (const std::bad_alloc&) {
    throw Error("cpu backend: out of memory allocating " + std::to_string(bytes) + " bytes");
  }
}

CpuBuffer::~CpuBuffer() { ::operator delete(data_, std::align_val_t{64}); }

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    size_t start = line.find_first_not_of(" \t", line.find(':') + 1);
    if (start != std::string::npos) return line.substr(start);
  }
  return "";
}

DeviceInfo host_info(const CpuJit& jit) {
  const llvm::StringMap<bool>& on = jit.host_features();
  auto has = [&](const char* f) { return on.lookup(f); };
  DeviceInfo info;
  std::string model = cpu_model_name();
  info.name = "cpu: " + (model.empty() ? jit.cpu_name() : model);
  info.backend = "cpu";
  info.cores = ThreadPool::global().size();
  info.vector_bits = has("avx512f") ? 512 : has("avx2") || has("avx") ? 256 : 128;
  for (const char* f : {"sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                        "avx512vnni", "avx512bf16", "avx512fp16", "amx-tile", "amx-bf16", "amx-int8",
                        "neon", "fullfp16", "bf16", "sve", "sve2"}) {
    if (!has(f)) continue;
    if (!info.features.empty()) info.features += ",";
    info.features += f;
  }
  info.memory_bytes = int64_t(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  return info;
}

}  // namespace

CpuDevice::CpuDevice() : jit_(std::make_shared<CpuJit>()), info_(host_info(*jit_)) {}

CpuDevice::~CpuDevice() = default;

std::shared_ptr<Buffer> CpuDevice::allocate(int64_t bytes) { return std::make_shared<CpuBuffer>(bytes); }

void CpuDevice::write(Buffer& dst, const void* src, int64_t bytes) {
  CpuBuffer& buf = cpu_buffer(dst, "cannot write");
  check_size(bytes, buf, "cannot write");
  if (bytes > 0) std::memcpy(buf.data(), src, bytes);
}

void CpuDevice::read(const Buffer& src, void* dst, int64_t bytes) {
  const CpuBuffer& buf = cpu_buffer(src, "cannot read");
  check_size(bytes, buf, "cannot read");
  if (bytes > 0) std::memcpy(dst, buf.data(), bytes);
}

void CpuDevice::copy(const Buffer& src, int64_t src_offset, Buffer& dst, int64_t dst_offset, int64_t bytes) {
  check_copy_range(src, src_offset, dst, dst_offset, bytes);
  const CpuBuffer& s = cpu_buffer(src, "cannot copy from");
  CpuBuffer& d = cpu_buffer(dst, "cannot copy to");
  if (bytes > 0) std::memmove(static_cast<char*>(d.data()) + dst_offset, static_cast<const char*>(s.data()) + src_offset, bytes);
}

std::shared_ptr<Executable> CpuDevice::compile(const Kernel& k) { return jit_->load_object(k, jit_->compile_object(k)); }

std::string CpuDevice::artifact_identity() const { return jit_->identity(); }

std::optional<std::string> CpuDevice::compile_artifact(const Kernel& k) { return jit_->compile_object(k); }

std::shared_ptr<Executable> CpuDevice::load_artifact(const Kernel& k, std::string_view bytes) {
  return jit_->load_object(k, bytes);
}

std::string CpuDevice::target_source(const Kernel& k) { return jit_->optimized_ir(k); }

std::shared_ptr<Device> make_cpu_device() { return std::make_shared<CpuDevice>(); }

}  // namespace kiln
