// Injected faults (runtime/fault.h): a device allocation, a CPU JIT compile and
// a kernel launch that fail. Each must give a kiln::Error that says what
// failed, leave nothing behind (the ASan build checks for leaks) and leave the
// device, the kernel cache and the CompiledGraph usable for the next request.
// The GPU backends run the same checks (tests/fault_testing.h). A model file
// cut short is covered by the loaders' truncation tests
// (tests/frontend/loaders/), a corrupt cache file by tests/runtime/disk_cache_test.cpp.
#include <gtest/gtest.h>

#include <string>

#include "runtime/fault.h"
#include "runtime/kernel_cache.h"
#include "tests/fault_testing.h"
#include "tests/testing.h"

namespace kiln {
namespace {

// Disarms every site after each test, whatever it left armed.
class Fault : public ::testing::Test {
 protected:
  void TearDown() override { fault::disarm_all(); }
};

using testing::expect_error;
using testing::expect_runs;

Graph small_graph(double scale, Dim n = 64) { return testing::fault_graph(scale, n); }

TEST_F(Fault, JitCompileFailsThenTheNextGraphCompiles) {
  Graph g = small_graph(1.25);
  int64_t misses = KernelCache::global().misses();
  fault::arm(fault::Site::jit_compile);
  expect_error([&] { CompiledGraph cg(g, device("cpu")); }, {"cpu backend", "cannot compile kernel", "injected"});
  EXPECT_EQ(KernelCache::global().misses(), misses) << "a failed compile must not be cached";

  CompiledGraph again(g, device("cpu"));  // the same kernel, now compiled
  expect_runs(g, again);
  CompiledGraph other(small_graph(-0.5), device("cpu"));
  expect_runs(small_graph(-0.5), other);
}

TEST_F(Fault, EveryCompileFailingIsAnErrorEachTime) {
  fault::arm(fault::Site::jit_compile, 1000);
  for (int i = 0; i < 5; ++i)
    expect_error([&] { CompiledGraph cg(small_graph(2.0 + i), device("cpu")); }, {"cannot compile kernel"});
  fault::disarm_all();
  CompiledGraph cg(small_graph(2.0), device("cpu"));
  expect_runs(small_graph(2.0), cg);
}

TEST_F(Fault, AllocationFailsThenTheSameGraphRuns) {
  Graph g = small_graph(3.5);
  CompiledGraph cg(g, device("cpu"));
  fault::arm(fault::Site::alloc);
  auto inputs = testing::inputs_for(g, {}, 3);
  expect_error([&] { cg.run(inputs); }, {"cpu backend", "out of memory allocating 256 bytes"});
  expect_runs(g, cg);
}

TEST_F(Fault, AllocationFailsForADirectRequest) {
  fault::arm(fault::Site::alloc);
  expect_error([] { device("cpu")->allocate(1 << 20); }, {"out of memory allocating 1048576 bytes"});
  EXPECT_EQ(device("cpu")->allocate(1 << 20)->bytes(), 1 << 20);
}

// The graph ran with n = 16; growing to n = 1024 fails halfway through the
// allocations. Its buffers must not be launched on while some still have the
// old size (the kernel would write past them).
TEST_F(Fault, FailedResizeLeavesTheGraphNotReady) {
  Dim n = Dim::symbol("n", 1, 4096);
  Graph g = small_graph(0.75, n);
  CompiledGraph cg(g, device("cpu"));
  expect_runs(g, cg, {{"n", 16}});
  fault::arm(fault::Site::alloc);
  auto big = testing::inputs_for(g, {{"n", 1024}}, 5);
  expect_error([&] { cg.set_inputs(big); }, {"out of memory"});
  expect_error([&] { cg.execute(); }, {"execute() before set_inputs()"});
  expect_runs(g, cg, {{"n", 1024}});
}

TEST_F(Fault, KernelLaunchTimesOutThenTheGraphRunsAgain) {
  Graph g = small_graph(4.5);
  CompiledGraph cg(g, device("cpu"));
  expect_runs(g, cg);
  fault::arm(fault::Site::launch);
  expect_error([&] { cg.execute(); }, {"kernel", "timed out"});
  expect_runs(g, cg);
}

TEST_F(Fault, SitesHaveNames) {
  EXPECT_EQ(fault::site_name(fault::Site::alloc), "alloc");
  EXPECT_EQ(fault::site_name(fault::Site::jit_compile), "jit_compile");
  EXPECT_EQ(fault::site_name(fault::Site::launch), "launch");
  EXPECT_FALSE(fault::fires(fault::Site::alloc)) << "nothing armed";
  fault::arm(fault::Site::alloc, 2);
  EXPECT_TRUE(fault::fires(fault::Site::alloc));
  EXPECT_FALSE(fault::fires(fault::Site::launch));
  EXPECT_TRUE(fault::fires(fault::Site::alloc));
  EXPECT_FALSE(fault::fires(fault::Site::alloc));
}

}  // namespace
}  // namespace kiln
