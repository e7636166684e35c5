// Graph replay on Vulkan: a capture records a whole compiled graph into one
// command buffer; replays give the launches' results, with new inputs too, and
// a failed capture leaves the stream as it was.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/backends/gpu_testing.h"
#include "tests/backends/kernel_testing.h"
#include "tests/backends/vulkan/vulkan_testing.h"

namespace kiln {
namespace {

using testing::from_bytes;
using testing::to_bytes;
using VulkanReplay = testing::VulkanTest;

void expect_same(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got, testing::Tolerance tol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) EXPECT_EQ(testing::compare(want[o], got[o], tol), "") << "output " << o;
}

// out[i] = in[i] + 1 for i in 0..n (a param).
std::shared_ptr<Executable> add_one(Device& dev) {
  return dev.compile(testing::scheduled(
      testing::map_kernel({f32}, f32, [](auto& a) { return binary(BinOp::Add, a[0], const_f32(1)); }), dev.info()));
}

std::vector<float> read_floats(Device& dev, const Buffer& b, size_t n) {
  std::vector<float> v(n);
  dev.read(b, v.data(), int64_t(n * sizeof(float)));
  return v;
}

TEST_F(VulkanReplay, MatchesLaunchesOneByOneAndTheInterpreter) {
  ASSERT_TRUE(dev().stream().can_capture());
  for (const char* spec : {"mlp:8", "deps:50"}) {
    SCOPED_TRACE(spec);
    Workload w = make_workload(spec);
    CompiledGraph cg(w.graph, dev_);
    std::vector<HostTensor> one_by_one = cg.run(w.inputs);
    expect_same(interpret(w.graph, w.inputs), one_by_one, testing::tolerance_for(f32));
    cg.execute({.replay = false, .timing = false});
    expect_same(one_by_one, cg.outputs(), {0, 0});
    for (int rep = 0; rep < 3; ++rep) {
      cg.execute({.replay = true});
      expect_same(one_by_one, cg.outputs(), {0, 0});  // the same kernels on the same data
    }
    EXPECT_EQ(cg.captures(), 1);
    EXPECT_TRUE(cg.kernel_seconds().empty());
  }
}

TEST_F(VulkanReplay, NewInputsReplayWithoutRecapture) {
  for (const char* spec : {"mlp:8", "deps:50"}) {
    SCOPED_TRACE(spec);
    Workload w = make_workload(spec);
    CompiledGraph cg(w.graph, dev_);
    for (uint64_t seed : {1, 2, 3, 4}) {
      auto inputs = testing::inputs_for(w.graph, {}, seed);
      std::vector<HostTensor> one_by_one = cg.run(inputs);
      cg.set_inputs(inputs);  // the same shapes: the recording stays
      cg.execute({.replay = true});
      expect_same(one_by_one, cg.outputs(), {0, 0});
      expect_same(interpret(w.graph, inputs), cg.outputs(), testing::tolerance_for(f32));
    }
    EXPECT_EQ(cg.captures(), 1);
  }
}

TEST_F(VulkanReplay, ANewSymbolValueRecaptures) {
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int y = g.contract(g.input("x", f32, {seq, 64}), g.input("w", f32, {64, 32}));
  g.outputs = {g.reduce(Op::ReduceMax, y, {1}), y};
  CompiledGraph cg(g, dev_);
  const std::pair<int64_t, int> steps[] = {{7, 1}, {7, 1}, {300, 2}, {300, 2}, {7, 3}};
  uint64_t seed = 1;
  for (auto [n, captures] : steps) {
    SCOPED_TRACE("seq = " + std::to_string(n));
    auto inputs = testing::inputs_for(g, {{"seq", n}}, seed++);
    cg.set_inputs(inputs);
    cg.execute({.replay = true});
    EXPECT_EQ(cg.captures(), captures);
    expect_same(interpret(g, inputs, {{"seq", n}}), cg.outputs(), testing::tolerance_for(f32));
  }
}

// A recording that fails leaves the stream running work, not capturing.
TEST_F(VulkanReplay, FailedCapturesAreErrorsAndTheStreamRecovers) {
  Stream& stream = dev().stream();
  auto exe = add_one(dev());
  std::vector<float> x = {1, 2, 3, 4};
  auto in = dev().allocate(16), out = dev().allocate(16);
  std::vector<float> zeros(4, 0);
  dev().write(*in, x.data(), 16);
  dev().write(*out, zeros.data(), 16);
  try {
    stream.capture([&] {
      exe->launch(stream, {in.get(), out.get()}, {4});
      throw Error("recording stopped");
    });
    ADD_FAILURE() << "the exception was lost";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "recording stopped");
  }
  auto expect_refused = [&](const std::function<void()>& f, const char* what) {
    try {
      stream.capture([&] {
        exe->launch(stream, {in.get(), out.get()}, {4});
        f();
      });
      ADD_FAILURE() << what << " inside a capture";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("while the stream captures"), std::string::npos) << e.what();
    }
  };
  expect_refused([&] { stream.synchronize(); }, "synchronized");
  expect_refused([&] { read_floats(dev(), *in, 4); }, "read");
  expect_refused([&] { dev().write(*in, x.data(), 16); }, "wrote");
  try {
    stream.capture([&] { stream.capture([] {}); });
    ADD_FAILURE() << "nested captures";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capturing already"), std::string::npos) << e.what();
  }

  // Launches run again, and a new capture replays.
  EXPECT_EQ(from_bytes<float>(testing::launch(dev(), *exe, {to_bytes(x), testing::Bytes(16)}, {4})[1]),
            (std::vector<float>{2, 3, 4, 5}));
  std::unique_ptr<Replay> replay = stream.capture([&] { exe->launch(stream, {in.get(), out.get()}, {4}); });
  EXPECT_EQ(read_floats(dev(), *out, 4), (std::vector<float>{0, 0, 0, 0})) << "recording runs nothing";
  replay->replay();
  stream.synchronize();
  EXPECT_EQ(read_floats(dev(), *out, 4), (std::vector<float>{2, 3, 4, 5}));
}

// in -> a -> b -> in, three launches that each read what the last wrote.
TEST_F(VulkanReplay, ReplaysQueueBackToBackAndOutliveTheirReplay) {
  Stream& stream = dev().stream();
  auto exe = add_one(dev());
  std::vector<float> x = {0, 10, 20, 30};
  auto in = dev().allocate(16), a = dev().allocate(16), b = dev().allocate(16);
  dev().write(*in, x.data(), 16);
  std::unique_ptr<Replay> replay = stream.capture([&] {
    exe->launch(stream, {in.get(), a.get()}, {4});
    exe->launch(stream, {a.get(), b.get()}, {4});
    exe->launch(stream, {b.get(), in.get()}, {4});
  });
  for (int i = 0; i < 5; ++i) replay->replay();  // no wait between them
  replay.reset();  // the submissions in flight keep what they use
  stream.synchronize();
  EXPECT_EQ(read_floats(dev(), *in, 4), (std::vector<float>{15, 25, 35, 45}));
}

// Launches one by one after a capture take other descriptor sets: the
// recording's stay as they were written.
TEST_F(VulkanReplay, LaunchesBesideARecordingLeaveItsDescriptorSets) {
  Stream& stream = dev().stream();
  auto exe = add_one(dev());
  std::vector<float> x = {1, 2, 3, 4}, y = {100, 200, 300, 400};
  auto in = dev().allocate(16), out = dev().allocate(16);
  dev().write(*in, x.data(), 16);
  std::unique_ptr<Replay> replay = stream.capture([&] { exe->launch(stream, {in.get(), out.get()}, {4}); });
  std::vector<std::shared_ptr<Buffer>> others;
  for (int i = 0; i < 40; ++i) {  // more launches than a descriptor pool has sets
    others.push_back(dev().allocate(16));
    dev().write(*others.back(), y.data(), 16);
    exe->launch(stream, {others.back().get(), others.back().get()}, {4});
  }
  replay->replay();
  stream.synchronize();
  EXPECT_EQ(read_floats(dev(), *out, 4), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(read_floats(dev(), *others.back(), 4), (std::vector<float>{101, 201, 301, 401}));
}

// Capture is per thread: another thread's launches, copies and waits run
// meanwhile.
TEST_F(VulkanReplay, OtherThreadsRunWorkDuringACapture) {
  Stream& stream = dev().stream();
  auto exe = add_one(dev());
  std::vector<float> x = {1, 2, 3, 4};
  auto in = dev().allocate(16), out = dev().allocate(16);
  std::vector<float> zeros(4, 0);
  dev().write(*in, x.data(), 16);
  dev().write(*out, zeros.data(), 16);
  std::vector<float> other;
  std::unique_ptr<Replay> replay = stream.capture([&] {
    exe->launch(stream, {in.get(), out.get()}, {4});
    std::thread t([&] { other = from_bytes<float>(testing::launch(dev(), *exe, {to_bytes(x), testing::Bytes(16)}, {4})[1]); });
    t.join();
  });
  EXPECT_EQ(other, (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(read_floats(dev(), *out, 4), (std::vector<float>{0, 0, 0, 0})) << "the capture ran nothing";
  replay->replay();
  stream.synchronize();
  EXPECT_EQ(read_floats(dev(), *out, 4), (std::vector<float>{2, 3, 4, 5}));
}

// Timestamp queries: each launch from the timing thread writes the device's
// clock before and after its commands; launches of other threads, launches
// into a capture and launches with nothing to run are not counted.
TEST_F(VulkanReplay, TimestampsTimeEachLaunchOnTheDevice) {
  Stream& stream = dev().stream();
  ASSERT_TRUE(stream.can_time()) << "lavapipe and the NVIDIA driver both have timestamps";
  auto exe = add_one(dev());
  const int64_t big = int64_t(1) << 22;
  std::vector<float> x(big);
  for (int64_t i = 0; i < big; ++i) x[i] = float(i % 1000) * 0.5f;
  auto in = dev().allocate(big * 4), out = dev().allocate(big * 4), out2 = dev().allocate(16);
  dev().write(*in, x.data(), big * 4);
  std::unique_ptr<Replay> replay;
  auto t0 = std::chrono::steady_clock::now();
  stream.start_timing();
  EXPECT_THROW(stream.start_timing(), Error);
  exe->launch(stream, {in.get(), out2.get()}, {4});
  exe->launch(stream, {in.get(), out.get()}, {big});
  exe->launch(stream, {in.get(), out.get()}, {0});  // no work groups: not launched
  std::thread([&] { exe->launch(stream, {in.get(), out2.get()}, {4}); }).join();
  replay = stream.capture([&] { exe->launch(stream, {in.get(), out2.get()}, {4}); });
  EXPECT_EQ(stream.timed_launches(), 2u);
  std::vector<double> t = stream.stop_timing();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_GT(t[0], 0);
  EXPECT_GT(t[1], t[0]) << "4M points against 4";
  EXPECT_LT(t[0] + t[1], wall);
  EXPECT_EQ(stream.timed_launches(), 0u);
  EXPECT_THROW(stream.stop_timing(), Error);
  std::vector<float> y = read_floats(dev(), *out, size_t(big));
  for (int64_t i = 0; i < big; i += 4099) ASSERT_EQ(y[i], x[i] + 1) << i;
  std::vector<float> zeros(4, 0);
  dev().write(*out2, zeros.data(), 16);
  replay->replay();  // a capture made while timing replays as usual
  stream.synchronize();
  EXPECT_EQ(read_floats(dev(), *out2, 4), (std::vector<float>{1, 1.5f, 2, 2.5f}));
}

TEST_F(VulkanReplay, KernelSecondsComeFromTimestamps) {
  ASSERT_TRUE(dev().stream().can_time());
  Workload w = make_workload("mlp:64");
  CompiledGraph cg(w.graph, dev_);
  std::vector<HostTensor> out = cg.run(w.inputs);
  expect_same(interpret(w.graph, w.inputs), out, testing::tolerance_for(f32));
  auto t0 = std::chrono::steady_clock::now();
  cg.execute();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(cg.kernel_seconds().size(), cg.program().launches.size());
  double sum = 0;
  for (double s : cg.kernel_seconds()) {
    EXPECT_GT(s, 0);
    sum += s;
  }
  EXPECT_LT(sum, wall);
  expect_same(out, cg.outputs(), {0, 0});
}

}  // namespace
}  // namespace kiln
