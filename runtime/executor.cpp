#include <algorithm>
#include <chrono>
#include <set>

#include "kiln/compiled_graph.h"
#include "kiln/error.h"
#include "runtime/kernel_cache.h"
#include "runtime/thread_pool.h"
#include "runtime/tuning_db.h"

namespace kiln {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string sizes_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The symbols the inputs given fix, by input name (set_inputs keeps the map).
Bindings bind_symbols(const Graph& g, const std::map<std::string, int>& input_ids,
                      const std::map<std::string, HostTensor>& inputs, Bindings b) {
  std::vector<std::pair<int, const HostTensor*>> given;  // in the graph's order: its first input fixes a symbol
  for (const auto& [name, t] : inputs)
    if (auto id = input_ids.find(name); id != input_ids.end()) given.emplace_back(id->second, &t);
  std::sort(given.begin(), given.end());
  for (const auto& [id, t] : given) {
    const Node& n = g.nodes[id];
    if (t->sizes.size() != n.shape.size()) continue;
    for (size_t i = 0; i < n.shape.size(); ++i)
      if (!n.shape[i].is_const()) b.emplace(n.shape[i].sym, t->sizes[i]);
  }
  return b;
}

}  // namespace

Bindings bind_symbols(const Graph& g, const std::map<std::string, HostTensor>& inputs, Bindings b) {
  std::map<std::string, int> ids;
  for (int id : g.input_nodes()) ids.emplace(g.nodes[id].name, id);
  return bind_symbols(g, ids, inputs, std::move(b));
}

CompiledGraph::CompiledGraph(const Graph& g, std::shared_ptr<Device> dev, const std::vector<Schedule>& schedules)
    : dev_(std::move(dev)) {
  auto t0 = std::chrono::steady_clock::now();
  program_ = lower(g);
  input_nodes_ = program_.graph.input_nodes();
  for (int id : input_nodes_) input_ids_.emplace(program_.graph.nodes[id].name, id);
  if (!schedules.empty() && schedules.size() != program_.kernels.size())
    throw Error("got " + std::to_string(schedules.size()) + " schedules for " + std::to_string(program_.kernels.size()) +
                " kernels");
  for (size_t i = 0; i < program_.kernels.size(); ++i) {
    const Kernel& k = program_.kernels[i];
    if (!schedules.empty()) {
      schedules_.push_back(schedules[i]);
    } else if (std::optional<Schedule> tuned = tuned_schedule(k, dev_->info())) {
      schedules_.push_back(*tuned);  // the tuning database's winner (runtime/tuning_db.h)
    } else {
      schedules_.push_back(default_schedule(k, dev_->info()));
    }
    scheduled_.push_back(apply(k, schedules_.back()));
  }
  // Kernels compile in parallel (NVRTC and glslang are thread-safe; the CPU
  // backend serializes inside LLVM's JIT).
  exes_.resize(scheduled_.size());
  ThreadPool::global().parallel_for(0, int64_t(scheduled_.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) exes_[i] = KernelCache::global().get_or_compile(*dev_, scheduled_[i]);
  });
  compile_seconds_ = seconds_since(t0);
}

// A recording that no longer applies is kept (never replayed) for the
// stream to update into the next one, where it can.
void CompiledGraph::retire_replay() {
  if (replay_) retired_ = std::move(replay_);
}

Buffer& CompiledGraph::buffer(int node) {
  const Node& n = program_.graph.nodes[node];
  int64_t bytes = numel(n.shape, bound_) * dtype_size(n.dtype);
  auto& buf = buffers_[node];
  if (auto it = bound_inputs_.find(node); it != bound_inputs_.end()) {
    if (it->second->bytes() < bytes)
      throw Error("input '" + n.name + "' needs " + std::to_string(bytes) + " bytes, but its bound buffer has " +
                  std::to_string(it->second->bytes()));
    if (buf != it->second) retire_replay();
    buf = it->second;
    return *buf;
  }
  if (!buf || buffer_bytes_[node] != bytes) {
    retire_replay();  // it launches with the old buffer
    buf = dev_->allocate(bytes);
    buffer_bytes_[node] = bytes;
    if (n.op != Op::Input) buf->written_by_kernels = true;
  }
  return *buf;
}

void CompiledGraph::set_inputs(const std::map<std::string, HostTensor>& inputs, const Bindings& symbols) {
  const Graph& g = program_.graph;
  // Not ready until every input is written: after a failed allocation some
  // buffers would still have the old sizes that the new symbols overrun.
  bool was_ready = ready_;
  ready_ = false;
  Bindings bound = bind_symbols(g, input_ids_, inputs, symbols);
  if (bound != bound_) retire_replay();  // it launches with the old values as params
  // The same symbols as last time and no bind_input() since (which clears
  // ready_): every buffer still has its size, and only the host inputs need
  // writing (a decode step).
  bool same = was_ready && bound == bound_;
  bound_ = std::move(bound);
  std::set<std::string> used;
  // A decode step visits its few host inputs only, not every bound weight.
  if (!same) {
    host_inputs_.clear();
    for (int id : input_nodes_)
      if (!bound_inputs_.count(id)) host_inputs_.push_back(id);
  }
  for (int id : same ? host_inputs_ : input_nodes_) {
    const Node& n = g.nodes[id];
    auto it = inputs.find(n.name);
    if (bound_inputs_.count(id)) {
      if (same && it == inputs.end()) continue;
      if (it != inputs.end()) throw Error("input '" + n.name + "' is bound to a device buffer; it takes no host data");
      for (const Dim& d : n.shape)
        if (!d.is_const() && !bound_.count(d.sym))
          throw Error("symbol '" + d.sym + "' of input '" + n.name + "' (bound to a device buffer) needs a value");
      buffer(id);
      continue;
    }
    if (it == inputs.end()) throw Error("input '" + n.name + "' is missing");
    const HostTensor& t = it->second;
    std::vector<int64_t> want = concrete(n.shape, bound_);
    if (t.dtype != n.dtype || t.sizes != want)
      throw Error("input '" + n.name + "' should be " + std::string(dtype_name(n.dtype)) + sizes_str(want) +
                  " (" + std::string(dtype_name(n.dtype)) + shape_str(n.shape) + "), got " + describe(t));
    dev_->write(buffer(id), t.data.data(), int64_t(t.data.size()));
    used.insert(n.name);
  }
  for (auto& [name, t] : inputs)
    if (!used.count(name)) {
      auto id = input_ids_.find(name);
      if (id != input_ids_.end() && bound_inputs_.count(id->second))
        throw Error("input '" + name + "' is bound to a device buffer; it takes no host data");
      throw Error("the graph has no input named '" + name + "'");
    }
  if (!same)
    for (int id : program_.buffers) buffer(id);
  ready_ = true;
}

void CompiledGraph::bind_input(const std::string& name, std::shared_ptr<Buffer> buf) {
  if (!buf) throw Error("bind_input('" + name + "'): no buffer");
  for (int id : input_nodes_) {
    const Node& n = program_.graph.nodes[id];
    if (n.name != name) continue;
    // Its kernels may read it early, before the kernel launched before has
    // written it (Node::immutable).
    if (n.immutable && buf->written_by_kernels)
      throw Error("bind_input('" + name + "'): the input is immutable, but kernels write this buffer");
    bound_inputs_[id] = std::move(buf);
    ready_ = false;  // set_inputs() checks its size
    return;
  }
  throw Error("bind_input: the graph has no input named '" + name + "'");
}

std::shared_ptr<Buffer> CompiledGraph::output_buffer(size_t i) const {
  if (!ready_) throw Error("output_buffer() before set_inputs()");
  if (i >= program_.graph.outputs.size())
    throw Error("output " + std::to_string(i) + " of a graph with " + std::to_string(program_.graph.outputs.size()) +
                " outputs");
  int node = program_.graph.outputs[i];
  if (auto a = program_.aliases.find(node); a != program_.aliases.end()) node = a->second.node;
  return buffers_.at(node);
}

std::shared_ptr<Buffer> CompiledGraph::input_buffer(const std::string& name) const {
  if (!ready_) throw Error("input_buffer() before set_inputs()");
  auto id = input_ids_.find(name);
  if (id == input_ids_.end()) throw Error("input_buffer: the graph has no input named '" + name + "'");
  if (auto b = bound_inputs_.find(id->second); b != bound_inputs_.end()) return b->second;
  return buffers_.at(id->second);
}

int64_t CompiledGraph::output_offset(size_t i) const {
  output_buffer(i);  // the same checks
  int node = program_.graph.outputs[i];
  auto a = program_.aliases.find(node);
  return a == program_.aliases.end() ? 0 : a->second.offset * dtype_size(program_.graph.nodes[node].dtype);
}

void CompiledGraph::launch(size_t i) {
  const Launch& l = program_.launches[i];
  const Kernel& k = program_.kernels[l.kernel];
  std::vector<Buffer*> args;
  for (int node : l.args) args.push_back(buffers_.at(node).get());
  std::vector<int64_t> params;
  for (const std::string& p : k.params) params.push_back(bound_.at(p));
  exes_[l.kernel]->launch(dev_->stream(), args, params);
}

void CompiledGraph::launch_one_by_one(bool timing, const std::function<void()>& after) {
  Stream& stream = dev_->stream();
  if (!timing) {
    for (size_t i = 0; i < program_.launches.size(); ++i) launch(i);
    if (after) after();
    stream.synchronize();
    return;
  }
  kernel_seconds_.assign(program_.launches.size(), 0);
  if (stream.can_time()) {  // the device's clock: queued back to back, waited for once
    std::vector<size_t> first(program_.launches.size() + 1);  // launch i's timed launches: [first[i], first[i+1])
    stream.start_timing();
    try {
      for (size_t i = 0; i < program_.launches.size(); ++i) {
        first[i] = stream.timed_launches();
        launch(i);
      }
      first.back() = stream.timed_launches();
    } catch (...) {
      stream.stop_timing();
      throw;
    }
    std::vector<double> timed = stream.stop_timing();
    for (size_t i = 0; i < program_.launches.size(); ++i)
      for (size_t j = first[i]; j < first[i + 1] && j < timed.size(); ++j) kernel_seconds_[i] += timed[j];
  } else {
    for (size_t i = 0; i < program_.launches.size(); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      launch(i);
      stream.synchronize();
      kernel_seconds_[i] = seconds_since(t0);
    }
  }
  if (after) {
    after();
    stream.synchronize();
  }
}

std::vector<double> CompiledGraph::replayed_kernel_seconds(int reps) {
  if (!ready_) throw Error("replayed_kernel_seconds() before set_inputs()");
  if (reps < 1) throw Error("replayed_kernel_seconds: reps must be at least 1");
  Stream& stream = dev_->stream();
  std::vector<double> seconds;
  if (!stream.can_capture()) return seconds;
  for (size_t i = 0; i < program_.launches.size(); ++i) {
    std::unique_ptr<Replay> r = stream.capture([&] {
      for (int j = 0; j < reps; ++j) launch(i);
    });
    r->replay();  // warm-up
    stream.synchronize();
    double best = 1e30;
    for (int t = 0; t < 3; ++t) {
      auto t0 = std::chrono::steady_clock::now();
      r->replay();
      stream.synchronize();
      best = std::min(best, seconds_since(t0));
    }
    seconds.push_back(best / reps);
  }
  return seconds;
}

void CompiledGraph::execute(const ExecuteOptions& opt) {
  if (!ready_) throw Error("execute() before set_inputs()");
  kernel_seconds_.clear();
  Stream& stream = dev_->stream();
  if (!opt.replay || !stream.can_capture()) {
    launch_one_by_one(opt.timing, opt.after);
    return;
  }
  if (replay_has_after_ != bool(opt.after)) {  // other launches: no template for the next recording
    replay_.reset();
    retired_.reset();
  }
  if (!replay_) {
    auto record = [&] {
      for (size_t i = 0; i < program_.launches.size(); ++i) launch(i);
      if (opt.after) opt.after();
    };
    replay_has_after_ = bool(opt.after);
    replay_ = retired_ ? stream.recapture(std::move(retired_), record) : stream.capture(record);
    ++captures_;
  }
  replay_->replay();
  stream.synchronize();
}

std::vector<HostTensor> CompiledGraph::outputs() {
  std::vector<HostTensor> out;
  for (size_t i = 0; i < program_.graph.outputs.size(); ++i) out.push_back(output(i));
  return out;
}

HostTensor CompiledGraph::output(size_t i) {
  const Buffer& buf = *output_buffer(i);
  const Node& n = program_.graph.nodes[program_.graph.outputs[i]];
  HostTensor t(n.dtype, concrete(n.shape, bound_));
  int64_t bytes = int64_t(t.data.size()), offset = output_offset(i);
  if (offset == 0) {
    dev_->read(buf, t.data.data(), bytes);
    return t;
  }
  std::shared_ptr<Buffer> run = dev_->allocate(bytes);  // the output's run of a larger result
  dev_->copy(buf, offset, *run, 0, bytes);
  dev_->read(*run, t.data.data(), bytes);
  return t;
}

std::vector<HostTensor> CompiledGraph::run(const std::map<std::string, HostTensor>& inputs, const Bindings& symbols) {
  set_inputs(inputs, symbols);
  execute();
  return outputs();
}

}  // namespace kiln
