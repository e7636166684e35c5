// The device interface that every backend implements (after IREE's HAL): a
// Device allocates Buffers, compiles Kernels into Executables and launches them
// on Streams. Nothing above this interface knows which device it talks to.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.h"
#include "kiln/kernel.h"

namespace kiln {

struct DeviceInfo {
  std::string name;      // "cpu: Intel Xeon ..." or the GPU's name
  std::string backend;   // "cpu", "cuda", "vulkan", "systolic"
  int cores = 1;         // CPU threads or GPU multiprocessors
  int vector_bits = 0;   // widest SIMD register
  std::string features;  // "avx2,fma,avx512f" or compute capability
  int64_t memory_bytes = 0;
  // What schedules need to know of a GPU (0 on the CPU).
  int warp_size = 0;           // threads that run in lockstep (32 on NVIDIA)
  int max_threads = 0;         // per block / workgroup
  int64_t shared_bytes = 0;    // shared memory per block / workgroup
  // What schedules need to know of a matrix unit that runs contractions in
  // whole tiles (the systolic array; 0 elsewhere): the largest tile it takes
  // along the output's rows (m), the reduction (k) and the output's columns (n).
  int64_t matrix_tile_m = 0, matrix_tile_k = 0, matrix_tile_n = 0;
};

class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual int64_t bytes() const = 0;

  // Set on a buffer that a compiled graph's kernels write (an output or an
  // intermediate): such a buffer cannot be bound to an immutable input.
  std::atomic<bool> written_by_kernels{false};
};

// Work recorded from a Stream (after IREE's command buffers), queued again as
// one unit without the host's cost per launch. It holds the buffers and params
// it was recorded with: replay it only while they and the stream live, and
// record anew when any of them changes.
class Replay {
 public:
  virtual ~Replay() = default;
  // Queues the recorded work on the stream it was recorded from; does not wait.
  virtual void replay() = 0;
};

class Stream {
 public:
  virtual ~Stream() = default;
  virtual void synchronize() = 0;

  // Capture is optional: a backend that cannot record work leaves these as
  // they are, and callers launch one by one instead.
  virtual bool can_capture() const { return false; }
  // Calls `record`, whose launches on this stream are recorded instead of run,
  // and returns them as a Replay. Nothing may wait on the device meanwhile (no
  // synchronize(), read or write). If `record` throws, the recording is
  // dropped, the stream runs work again, and the exception passes on.
  virtual std::unique_ptr<Replay> capture(const std::function<void()>& record) {
    (void)record;
    throw Error("this device's stream cannot capture launches");
  }
  // As capture(), given an earlier recording of this stream that is out of
  // date (the same launches with other params or buffers): a backend may
  // update it in place, cheaper than making a new one. `old` is never
  // replayed as it was.
  virtual std::unique_ptr<Replay> recapture(std::unique_ptr<Replay> old, const std::function<void()>& record) {
    old.reset();
    return capture(record);
  }

  // Device timers, for launch times without the host's share: where
  // can_time(), start_timing() has each later launch from this thread (not
  // one into a capture) timed by the device's own clock, from when the work
  // queued before it is done to when it is done. timed_launches() counts them
  // so far (a launch with nothing to run adds none); stop_timing() waits for
  // them and returns each one's seconds in launch order. Devices without
  // timers leave these as they are, and callers time launches on the host.
  virtual bool can_time() const { return false; }
  virtual void start_timing() { throw Error("this device's stream has no timers"); }
  virtual size_t timed_launches() const { return 0; }
  virtual std::vector<double> stop_timing() { throw Error("this device's stream has no timers"); }

  // A simulated device's clock: the modeled seconds that the work launched on
  // this stream has taken so far. It is deterministic, so the autotuner takes
  // a launch's cost from it rather than from the host's clock. nullopt on real
  // hardware.
  virtual std::optional<double> simulated_seconds() const { return std::nullopt; }
};

class Executable {
 public:
  virtual ~Executable() = default;
  virtual const std::string& name() const = 0;
  // args: the kernel's global buffers in argument order; params: its i64 params.
  virtual void launch(Stream& stream, const std::vector<Buffer*>& args,
                      const std::vector<int64_t>& params) = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const DeviceInfo& info() const = 0;
  virtual std::shared_ptr<Buffer> allocate(int64_t bytes) = 0;
  virtual void write(Buffer& dst, const void* src, int64_t bytes) = 0;
  virtual void read(const Buffer& src, void* dst, int64_t bytes) = 0;
  // Copies `bytes` from src at `src_offset` to dst at `dst_offset`, in order
  // with the launches queued before it. Both ranges must lie in their buffers.
  // This default goes through the host (two reads and a write); backends with
  // a device-side copy override it.
  virtual void copy(const Buffer& src, int64_t src_offset, Buffer& dst, int64_t dst_offset, int64_t bytes);
  // Compiles one kernel; throws kiln::Error with the compiler's message on failure.
  virtual std::shared_ptr<Executable> compile(const Kernel& k) = 0;
  // Compiled kernels as bytes, for the disk cache (runtime/disk_cache.h). A
  // backend that can keep them overrides all three; compile(k) is then
  // load_artifact(k, *compile_artifact(k)). The defaults keep nothing.
  // What an artifact depends on besides the kernel and info(): compiler and
  // driver versions. Empty: this device has no artifacts.
  virtual std::string artifact_identity() const { return ""; }
  // The compiled kernel (object file, cubin, SPIR-V, ...); throws kiln::Error
  // as compile() does; nullopt if this device has no artifacts.
  virtual std::optional<std::string> compile_artifact(const Kernel& k) {
    (void)k;
    return std::nullopt;
  }
  // An Executable from bytes that compile_artifact(k) made, here or in an
  // earlier process; `k` gives the launch layout. Throws kiln::Error if the
  // bytes do not load.
  virtual std::shared_ptr<Executable> load_artifact(const Kernel& k, std::string_view bytes) {
    (void)k, (void)bytes;
    throw Error(info().backend + " backend: has no compiled artifacts to load");
  }
  // The kernel in the target's own language (LLVM IR, CUDA C, GLSL, ...).
  virtual std::string target_source(const Kernel& k) = 0;
  virtual Stream& stream() = 0;
};

// Throws kiln::Error unless [offset, offset + bytes) lies in each buffer.
void check_copy_range(const Buffer& src, int64_t src_offset, const Buffer& dst, int64_t dst_offset, int64_t bytes);

// Every device found on this machine (the CPU whenever kiln is built with its
// LLVM backend), and one by its backend name, full name or list index ("cpu",
// "cuda", "0"); throws kiln::Error if none matches.
std::vector<std::shared_ptr<Device>> devices();
std::shared_ptr<Device> device(const std::string& which = "cpu");

}  // namespace kiln
