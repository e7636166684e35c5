// The executor's replay path without a GPU: on the CPU, whose stream cannot
// capture, replay falls back to launches one by one; on a CPU device wrapped
// with a stream that records launches, the executor records once, replays,
// and records again when a symbol or a buffer changes.
#include <gtest/gtest.h>

#include "tests/testing.h"

namespace kiln {
namespace {

// Launches kept as calls, run again on each replay.
class Recording : public Replay {
 public:
  void replay() override {
    for (auto& call : calls) call();
  }
  std::vector<std::function<void()>> calls;
};

// A stream that can capture: while it does, launches are kept, not run.
class RecordingStream : public Stream {
 public:
  explicit RecordingStream(Stream& inner) : inner_(inner) {}

  void synchronize() override { inner_.synchronize(); }
  bool can_capture() const override { return true; }

  std::unique_ptr<Replay> capture(const std::function<void()>& record) override {
    if (fail_next_capture) {
      fail_next_capture = false;
      throw Error("capture failed on purpose");
    }
    recording_ = std::make_unique<Recording>();
    try {
      record();
    } catch (...) {
      recording_.reset();
      throw;
    }
    return std::move(recording_);
  }

  // Runs `launch` now, or keeps it if a capture is under way.
  void submit(std::function<void()> launch) {
    auto counted = [this, launch = std::move(launch)] {
      launch();
      ++launches_run;
    };
    if (recording_)
      recording_->calls.push_back(counted);
    else
      counted();
  }

  Stream& inner() { return inner_; }

  int launches_run = 0;
  bool fail_next_capture = false;

 private:
  Stream& inner_;
  std::unique_ptr<Recording> recording_;
};

class RecordingExecutable : public Executable {
 public:
  explicit RecordingExecutable(std::shared_ptr<Executable> inner) : inner_(std::move(inner)) {}
  const std::string& name() const override { return inner_->name(); }
  void launch(Stream& stream, const std::vector<Buffer*>& args, const std::vector<int64_t>& params) override {
    auto& rs = dynamic_cast<RecordingStream&>(stream);
    rs.submit([inner = inner_, &rs, args, params] { inner->launch(rs.inner(), args, params); });
  }

 private:
  std::shared_ptr<Executable> inner_;
};

// The CPU device with a RecordingStream. Its own name keeps its kernels apart
// from the CPU's in the kernel cache.
class RecordingDevice : public Device {
 public:
  explicit RecordingDevice(std::shared_ptr<Device> inner)
      : inner_(std::move(inner)), info_(inner_->info()), stream_(inner_->stream()) {
    info_.name = "recording " + info_.name;
  }
  const DeviceInfo& info() const override { return info_; }
  std::shared_ptr<Buffer> allocate(int64_t bytes) override { return inner_->allocate(bytes); }
  void write(Buffer& dst, const void* src, int64_t bytes) override { inner_->write(dst, src, bytes); }
  void read(const Buffer& src, void* dst, int64_t bytes) override { inner_->read(src, dst, bytes); }
  std::shared_ptr<Executable> compile(const Kernel& k) override {
    return std::make_shared<RecordingExecutable>(inner_->compile(k));
  }
  std::string target_source(const Kernel& k) override { return inner_->target_source(k); }
  Stream& stream() override { return stream_; }
  RecordingStream& recording_stream() { return stream_; }

 private:
  std::shared_ptr<Device> inner_;
  DeviceInfo info_;
  RecordingStream stream_;
};

void expect_equal(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got, testing::Tolerance tol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) EXPECT_EQ(testing::compare(want[o], got[o], tol), "") << "output " << o;
}

const testing::Tolerance kExact{0, 0};

// x [seq, 64] @ w [64, 32], then its row max: two kernels, both taking seq.
Graph symbolic_graph() {
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int y = g.contract(g.input("x", f32, {seq, 64}), g.input("w", f32, {64, 32}));
  g.outputs = {g.reduce(Op::ReduceMax, y, {1}), y};
  return g;
}

TEST(Replay, CpuCannotCaptureSoReplayLaunchesOneByOne) {
  for (const char* spec : {"mlp:8", "deps:20"}) {
    SCOPED_TRACE(spec);
    Workload w = make_workload(spec);
    CompiledGraph cg(w.graph, device("cpu"));
    ASSERT_FALSE(cg.device().stream().can_capture());
    std::vector<HostTensor> one_by_one = cg.run(w.inputs);
    expect_equal(interpret(w.graph, w.inputs), one_by_one, testing::tolerance_for(f32));

    cg.execute({.replay = true});
    EXPECT_EQ(cg.captures(), 0);
    EXPECT_EQ(cg.kernel_seconds().size(), cg.program().launches.size()) << "timed, one by one";
    expect_equal(one_by_one, cg.outputs(), kExact);

    cg.execute({.replay = false, .timing = false});
    EXPECT_TRUE(cg.kernel_seconds().empty()) << "not timed per kernel";
    expect_equal(one_by_one, cg.outputs(), kExact);
  }
}

TEST(Replay, RecordsOnceAndReplaysUntilASymbolChanges) {
  auto dev = std::make_shared<RecordingDevice>(device("cpu"));
  RecordingStream& stream = dev->recording_stream();
  Graph g = symbolic_graph();
  CompiledGraph cg(g, dev);
  const int launches = int(cg.program().launches.size());
  ASSERT_EQ(launches, 2);

  auto run_replayed = [&](int64_t seq, uint64_t seed) {
    SCOPED_TRACE("seq = " + std::to_string(seq) + ", seed " + std::to_string(seed));
    auto inputs = testing::inputs_for(g, {{"seq", seq}}, seed);
    cg.set_inputs(inputs);
    int before = stream.launches_run;
    cg.execute({.replay = true});
    EXPECT_EQ(stream.launches_run - before, launches) << "recording runs nothing; the replay runs each launch once";
    EXPECT_TRUE(cg.kernel_seconds().empty());
    expect_equal(interpret(g, inputs, {{"seq", seq}}), cg.outputs(), testing::tolerance_for(f32));
  };
  run_replayed(5, 1);
  EXPECT_EQ(cg.captures(), 1);
  run_replayed(5, 2);  // new data in the same buffers
  EXPECT_EQ(cg.captures(), 1);
  run_replayed(300, 3);  // new params and new buffers
  EXPECT_EQ(cg.captures(), 2);
  run_replayed(300, 4);
  EXPECT_EQ(cg.captures(), 2);
  run_replayed(5, 5);
  EXPECT_EQ(cg.captures(), 3);

  cg.execute();  // one by one still works beside a recording
  EXPECT_EQ(cg.kernel_seconds().size(), size_t(launches));
  EXPECT_EQ(cg.captures(), 3);
}

TEST(Replay, AFailedCaptureIsReportedAndTriedAgain) {
  auto dev = std::make_shared<RecordingDevice>(device("cpu"));
  Workload w = make_workload("deps:4");
  CompiledGraph cg(w.graph, dev);
  cg.set_inputs(w.inputs);
  dev->recording_stream().fail_next_capture = true;
  try {
    cg.execute({.replay = true});
    ADD_FAILURE() << "the failed capture was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capture failed on purpose"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cg.captures(), 0);
  cg.execute({.replay = true});
  EXPECT_EQ(cg.captures(), 1);
  expect_equal(interpret(w.graph, w.inputs), cg.outputs(), testing::tolerance_for(f32));
}

TEST(Replay, DepsWorkloadIsOneKernelPerStepAndMatchesTheInterpreter) {
  Workload w = make_workload("deps:50");
  CompiledGraph cg(w.graph, device("cpu"));
  EXPECT_EQ(cg.program().kernels.size(), 50u);
  EXPECT_EQ(cg.program().launches.size(), 50u);
  expect_equal(interpret(w.graph, w.inputs), cg.run(w.inputs), testing::tolerance_for(f32));
}

}  // namespace
}  // namespace kiln
