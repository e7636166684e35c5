// The systolic backend: kiln::Device on the simulated accelerator. A kernel
// with a contraction runs it on the array (operands gathered, rounded to bf16
// or quantized to int8, a tiled GEMM program on the fast model) and the rest
// of the kernel on the vector unit; any other kernel runs on the vector unit.
// Buffers are host memory. Every launch adds its cycles to the device's
// report.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/systolic/fast_model.h"
#include "backends/systolic/machine.h"
#include "codegen/emit/systolic/emit_gemm.h"
#include "kiln/runtime.h"

namespace kiln::systolic {

struct LaunchRecord {
  std::string kernel;
  bool on_array = false;  // a contraction ran on the array
  int64_t m = 0, k = 0, n = 0, batch = 0;
  Stats stats;
  Program program;  // kept only when tracing
  Timeline timeline;
};

class SystolicDevice : public Device {
 public:
  // `tiling`: the GEMM tile where a kernel's schedule (its array_tile step)
  // leaves a size at 0; a 0 here too leaves it to the emitter.
  explicit SystolicDevice(SystolicConfig c, Tiling tiling = {});

  const DeviceInfo& info() const override { return info_; }
  std::shared_ptr<Buffer> allocate(int64_t bytes) override;
  void write(Buffer& dst, const void* src, int64_t bytes) override;
  void read(const Buffer& src, void* dst, int64_t bytes) override;
  std::shared_ptr<Executable> compile(const Kernel& k) override;
  // How the kernel maps onto the machine: its contraction (if any) and the
  // program for its shape when the shape is constant.
  std::string target_source(const Kernel& k) override;
  Stream& stream() override { return *stream_; }

  const SystolicConfig& config() const { return config_; }
  const Tiling& tiling() const { return tiling_; }
  // Programs and timelines are kept in the records while tracing.
  void set_tracing(bool on);
  bool tracing() const { return tracing_; }
  std::vector<LaunchRecord> records() const;
  Stats total() const;
  void reset();  // forgets the records; the clock runs on
  void record(LaunchRecord r);
  // Cycles of every launch since the device was made (the stream's simulated clock).
  int64_t cycles() const;

 private:
  SystolicConfig config_;
  Tiling tiling_;
  DeviceInfo info_;
  std::unique_ptr<Stream> stream_;  // records launches here
  mutable std::mutex mu_;
  bool tracing_ = false;
  std::vector<LaunchRecord> records_;
  int64_t cycles_ = 0;
};

// The registry's device: the default machine, with f32 contractions in
// bf16x6 passes so that results match f32 references.
std::shared_ptr<Device> make_systolic_device();

}  // namespace kiln::systolic
