// A Graph compiled for one device: its kernels, and the buffers to run them
// on. Run it as often as you like with new inputs and new values of its
// symbolic dims; nothing recompiles.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "codegen/lower.h"
#include "codegen/schedule.h"
#include "kiln/host_tensor.h"
#include "kiln/runtime.h"

namespace kiln {

// How CompiledGraph::execute() runs the launches; it always waits for them.
struct ExecuteOptions {
  // Record every launch once (Stream::capture) and replay the recording, so
  // that launch overhead does not dominate small kernels. Recorded at the
  // first execute after set_inputs(); recorded again after set_inputs()
  // changes a symbol's value or a buffer. Devices that cannot capture launch
  // one by one.
  bool replay = false;
  // When launching one by one: time each launch (fills kernel_seconds()), by
  // the device's timers where its stream has them (Stream::can_time), else by
  // waiting after each launch. Off, the launches are queued back to back and
  // waited for once at the end, so timing adds no overhead.
  bool timing = true;
  // Queues more launches on the device's stream after the graph's own (a
  // decode step's appends to its KV cache): run and waited for with them, and
  // recorded into the replay with them. Under replay it is called only when
  // recording, so it must queue the same work on every call until set_inputs()
  // changes a buffer or a symbol: values that change from call to call come
  // from device buffers (input_buffer()), not launch params. Give it on every
  // execute() or on none.
  std::function<void()> after;
};

// `b` with each symbolic dim it lacks bound from the first input that has it.
Bindings bind_symbols(const Graph& g, const std::map<std::string, HostTensor>& inputs, Bindings b);

class CompiledGraph {
 public:
  // Lowers the graph, schedules each kernel for the device (the default
  // schedule unless `schedules` gives one per kernel) and compiles them all
  // through the kernel cache.
  CompiledGraph(const Graph& g, std::shared_ptr<Device> dev, const std::vector<Schedule>& schedules = {});

  // Inputs by name. Symbolic dims not in `symbols` take their values from the
  // inputs' sizes. Throws kiln::Error for a missing, mis-typed or mis-sized
  // input, or a symbol out of its bounds.
  std::vector<HostTensor> run(const std::map<std::string, HostTensor>& inputs, const Bindings& symbols = {});

  // The same in steps, so that a benchmark can time the kernels alone. Inputs
  // bound to device buffers (bind_input) are not given here; then symbols
  // that only they have must be given in `symbols`.
  void set_inputs(const std::map<std::string, HostTensor>& inputs, const Bindings& symbols = {});
  // Input `name` reads `buf` from now on, which is not copied: weights that
  // several graphs share, a KV cache that grows in place. `buf` may be larger
  // than the input (a tensor whose outermost dim is symbolic reads its first
  // rows); set_inputs() checks that it is large enough.
  void bind_input(const std::string& name, std::shared_ptr<Buffer> buf);
  // The device buffer of the i-th output after execute(), for device-side
  // copies (Device::copy) without a trip through the host.
  std::shared_ptr<Buffer> output_buffer(size_t i) const;
  // Where in output_buffer(i) the output starts, in bytes: non-zero for an
  // output that is a run of a larger result (a slice of it), which no kernel
  // copies out.
  int64_t output_offset(size_t i) const;
  // The device buffer that input `name` reads after set_inputs(): the one
  // bind_input() gave, or the graph's own copy of the host data.
  std::shared_ptr<Buffer> input_buffer(const std::string& name) const;
  void execute(const ExecuteOptions& opt = {});  // launches every kernel and waits
  std::vector<HostTensor> outputs();
  HostTensor output(size_t i);  // the i-th output alone

  const Program& program() const { return program_; }
  // The schedule each kernel got, and the kernel after it (what was compiled).
  const std::vector<Schedule>& schedules() const { return schedules_; }
  const std::vector<Kernel>& scheduled_kernels() const { return scheduled_; }
  Device& device() { return *dev_; }
  double compile_seconds() const { return compile_seconds_; }
  // Each launch's time in the last execute(), in launch order: the device's
  // own clock where the stream has timers, else the host's around a wait.
  // Empty unless it launched one by one with `timing` (a replay has no
  // per-kernel times).
  const std::vector<double>& kernel_seconds() const { return kernel_seconds_; }
  // Each launch's time as a replay of the whole graph sees it: the launch
  // recorded `reps` times in a row, the recording replayed, the best of three
  // replays divided by `reps`. In launch order; empty where the device cannot
  // capture. Runs kernels again on the current buffers (an in-place kernel
  // changes its output), so read outputs first.
  std::vector<double> replayed_kernel_seconds(int reps = 10);
  // How many times execute() has recorded the launches for replay.
  int captures() const { return captures_; }

 private:
  Buffer& buffer(int node);
  void launch(size_t i);  // the i-th launch, on the device's stream
  void launch_one_by_one(bool timing, const std::function<void()>& after);

  Program program_;
  std::vector<int> input_nodes_;  // the graph's inputs (a decode step's set_inputs scans no other node)
  std::map<std::string, int> input_ids_;  // by name
  std::vector<int> host_inputs_;  // those not bound to a device buffer, as of the last full set_inputs
  std::shared_ptr<Device> dev_;
  std::vector<Schedule> schedules_;
  std::vector<Kernel> scheduled_;
  std::vector<std::shared_ptr<Executable>> exes_;
  Bindings bound_;
  std::map<int, std::shared_ptr<Buffer>> buffers_;
  std::map<int, std::shared_ptr<Buffer>> bound_inputs_;  // input node -> buffer given by bind_input
  std::map<int, int64_t> buffer_bytes_;
  double compile_seconds_ = 0;
  std::vector<double> kernel_seconds_;
  // The recorded launches; refers to buffers_ and bound_ as they were, so
  // cleared whenever either changes. Declared after dev_: destroyed first.
  std::unique_ptr<Replay> replay_;
  std::unique_ptr<Replay> retired_;  // the last recording, out of date: a template for the next
  void retire_replay();
  int captures_ = 0;
  bool replay_has_after_ = false;  // replay_ holds ExecuteOptions::after's launches
  bool ready_ = false;
};

}  // namespace kiln
