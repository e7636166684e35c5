// Injected faults (runtime/fault.h) on any device: a compile, an allocation
// and a launch that fail must each give a kiln::Error that says what failed,
// and leave the device, the kernel cache and the CompiledGraph usable for the
// next request. The CPU's tests are tests/runtime/fault_test.cpp; the GPU
// backends' call the checks below.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <memory>
#include <string>

#include "runtime/fault.h"
#include "runtime/kernel_cache.h"
#include "tests/testing.h"

namespace kiln::testing {

// relu(x * scale + 1) over [n]: one kernel of its own (each test picks its own
// scale), so that no other test has it in the kernel cache.
inline Graph fault_graph(double scale, Dim n = 64) {
  Graph g;
  int x = g.input("x", f32, {n});
  int y = g.binary(Op::Add, g.binary(Op::Mul, x, g.constant(scale, f32, {n})), g.constant(1, f32, {n}));
  g.outputs = {g.binary(Op::Max, y, g.constant(0, f32, {n}))};
  return g;
}

inline void expect_runs(const Graph& g, CompiledGraph& cg, const Bindings& symbols = {}) {
  auto inputs = inputs_for(g, symbols, 3);
  std::vector<HostTensor> want = interpret(g, inputs, symbols);
  std::vector<HostTensor> got = cg.run(inputs, symbols);
  ASSERT_EQ(got.size(), want.size());
  for (size_t o = 0; o < want.size(); ++o) EXPECT_EQ(compare(want[o], got[o], tolerance_for(f32)), "");
}

// Runs `fn`, which must throw a kiln::Error whose message has every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no kiln::Error";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// A compile that fails is an error naming the backend and is not cached; the
// same kernel then compiles and runs.
inline void expect_compile_fault_recovers(const std::shared_ptr<Device>& dev, double scale) {
  Graph g = fault_graph(scale);
  int64_t misses = KernelCache::global().misses();
  fault::arm(fault::Site::jit_compile);
  expect_error([&] { CompiledGraph cg(g, dev); }, {dev->info().backend + " backend", "cannot compile kernel", "injected"});
  EXPECT_EQ(KernelCache::global().misses(), misses) << "a failed compile must not be cached";
  fault::disarm_all();
  CompiledGraph again(g, dev);
  expect_runs(g, again);
}

// Every allocation failing: a buffer of `bytes` (its pool may hand back a
// cached one first: those are held) and a graph's run fail with the device's
// out-of-memory error; then both work.
inline void expect_alloc_fault_recovers(const std::shared_ptr<Device>& dev, double scale, int64_t bytes,
                                        const std::string& out_of_memory) {
  fault::arm(fault::Site::alloc, 1000000);
  std::vector<std::shared_ptr<Buffer>> held;
  bool failed = false;
  for (int i = 0; i < 64 && !failed; ++i) {
    try {
      held.push_back(dev->allocate(bytes));
    } catch (const Error& e) {
      failed = true;
      EXPECT_NE(std::string(e.what()).find(out_of_memory), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(failed) << "no allocation failed";
  Graph g = fault_graph(scale, bytes / 4);
  CompiledGraph cg(g, dev);
  expect_error([&] { cg.run(inputs_for(g, {}, 3)); }, {out_of_memory});
  fault::disarm_all();
  held.clear();
  EXPECT_EQ(dev->allocate(bytes)->bytes(), bytes);
  expect_runs(g, cg);
}

// A launch that times out, launched one by one and while capturing: an error
// naming the kernel; then the graph runs, replayed too.
inline void expect_launch_fault_recovers(const std::shared_ptr<Device>& dev, double scale) {
  Graph g = fault_graph(scale);
  CompiledGraph cg(g, dev);
  expect_runs(g, cg);
  fault::arm(fault::Site::launch);
  expect_error([&] { cg.execute(); }, {"kernel", "timed out"});
  expect_runs(g, cg);
  if (!dev->stream().can_capture()) return;
  fault::arm(fault::Site::launch);
  expect_error([&] { cg.execute({.replay = true, .timing = false, .after = {}}); }, {"kernel", "timed out"});
  cg.execute({.replay = true, .timing = false, .after = {}});
  std::vector<HostTensor> want = interpret(g, inputs_for(g, {}, 3));
  EXPECT_EQ(compare(want[0], cg.output(0), tolerance_for(f32)), "");
}

}  // namespace kiln::testing
