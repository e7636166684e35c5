// The CPU backend: kernels become host machine code through LLVM's ORC JIT
// (codegen/emit/llvm) and their parallel loop runs on ThreadPool::global().
#pragma once

#include <cstdint>
#include <memory>

#include "kiln/runtime.h"

namespace kiln {

// Host memory, 64-byte aligned so that kernels can use aligned vector loads.
class CpuBuffer : public Buffer {
 public:
  explicit CpuBuffer(int64_t bytes);  // throws kiln::Error if it cannot allocate
  ~CpuBuffer() override;
  CpuBuffer(const CpuBuffer&) = delete;
  CpuBuffer& operator=(const CpuBuffer&) = delete;

  int64_t bytes() const override { return bytes_; }
  void* data() { return data_; }
  const void* data() const { return data_; }

 private:
  int64_t bytes_;
  void* data_;
};

// Launches finish before they return, so there is nothing to wait for.
class CpuStream : public Stream {
 public:
  void synchronize() override {}
};

class CpuJit;  // the LLVM side, kept out of this header

class CpuDevice : public Device {
 public:
  CpuDevice();
  ~CpuDevice() override;

  const DeviceInfo& info() const override { return info_; }
  std::shared_ptr<Buffer> allocate(int64_t bytes) override;
  void write(Buffer& dst, const void* src, int64_t bytes) override;
  void read(const Buffer& src, void* dst, int64_t bytes) override;
  void copy(const Buffer& src, int64_t src_offset, Buffer& dst, int64_t dst_offset, int64_t bytes) override;
  // Thread-safe. Executables keep the JIT alive, so they may outlive the device.
  std::shared_ptr<Executable> compile(const Kernel& k) override;
  // The artifact is the kernel's object file for this host CPU.
  std::string artifact_identity() const override;
  std::optional<std::string> compile_artifact(const Kernel& k) override;
  std::shared_ptr<Executable> load_artifact(const Kernel& k, std::string_view bytes) override;
  // The kernel's LLVM IR after the O3 pipeline.
  std::string target_source(const Kernel& k) override;
  Stream& stream() override { return stream_; }

 private:
  std::shared_ptr<CpuJit> jit_;
  DeviceInfo info_;
  CpuStream stream_;
};

std::shared_ptr<Device> make_cpu_device();

}  // namespace kiln
