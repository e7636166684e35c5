// Inputs bound to device buffers (CompiledGraph::bind_input) and copies
// between buffers (Device::copy): what the language models' weights and KV
// cache rest on.
#include <gtest/gtest.h>

#include <numeric>

#include "runtime/kernel_cache.h"
#include "tests/testing.h"

namespace kiln {
namespace {

std::shared_ptr<Buffer> buffer_of(Device& dev, const std::vector<float>& v) {
  auto b = dev.allocate(int64_t(v.size() * sizeof(float)));
  dev.write(*b, v.data(), b->bytes());
  return b;
}

// y = rows of x (x's outermost dim symbolic) summed; x is a bound buffer
// larger than the rows read.
TEST(BindInput, ABoundBufferIsReadInPlaceAndMayBeLarger) {
  std::shared_ptr<Device> dev = device("cpu");
  Graph g;
  int x = g.input("x", f32, {Dim::symbol("n", 1, 8), 4});
  int w = g.input("w", f32, {4});
  g.outputs = {g.binary(Op::Mul, g.reduce(Op::ReduceSum, x, {0}), g.reshape(w, {1, 4}))};
  CompiledGraph cg(g, dev);
  std::vector<float> rows(8 * 4);
  std::iota(rows.begin(), rows.end(), 1.0f);
  auto cache = buffer_of(*dev, rows);
  cg.bind_input("x", cache);
  HostTensor wt(f32, {4});
  for (int i = 0; i < 4; ++i) wt.ptr<float>()[i] = float(i + 1);
  for (int64_t n : {1, 3, 8}) {
    cg.set_inputs({{"w", wt}}, {{"n", n}});
    cg.execute();
    HostTensor y = cg.output(0);
    for (int j = 0; j < 4; ++j) {
      float sum = 0;
      for (int64_t r = 0; r < n; ++r) sum += rows[r * 4 + j];
      EXPECT_EQ(y.ptr<float>()[j], sum * float(j + 1)) << "n " << n << " column " << j;
    }
  }
  // Appending a row in place is seen by the next run.
  auto row = buffer_of(*dev, {100, 100, 100, 100});
  dev->copy(*row, 0, *cache, 16, 16);  // row 1 of x
  cg.set_inputs({{"w", wt}}, {{"n", 2}});
  cg.execute();
  EXPECT_EQ(cg.output(0).ptr<float>()[0], 101.0f);
}

TEST(BindInput, MisuseIsAnError) {
  std::shared_ptr<Device> dev = device("cpu");
  Graph g;
  int x = g.input("x", f32, {Dim::symbol("n", 1, 8), 4});
  g.outputs = {g.reduce(Op::ReduceSum, x, {0})};
  CompiledGraph cg(g, dev);
  EXPECT_THROW(cg.bind_input("nope", dev->allocate(64)), Error);
  EXPECT_THROW(cg.bind_input("x", nullptr), Error);
  cg.bind_input("x", dev->allocate(3 * 4 * 4));                        // room for 3 rows
  EXPECT_THROW(cg.set_inputs({}, {{"n", 4}}), Error);                   // 4 do not fit
  EXPECT_THROW(cg.set_inputs({}), Error);                               // n has no value
  EXPECT_THROW(cg.set_inputs({{"x", HostTensor(f32, {3, 4})}}, {{"n", 3}}), Error);  // bound: no host data
  EXPECT_THROW(cg.output_buffer(0), Error);                             // not ready
  cg.set_inputs({}, {{"n", 3}});
  EXPECT_THROW(cg.output_buffer(1), Error);
  auto a = dev->allocate(16), b = dev->allocate(16);
  EXPECT_THROW(dev->copy(*a, 8, *b, 0, 16), Error);
  EXPECT_THROW(dev->copy(*a, 0, *b, -1, 4), Error);
  EXPECT_THROW(dev->copy(*a, 0, *b, 0, -1), Error);
}

// An immutable input (weights) takes a buffer the host wrote, not one that a
// graph's kernels write: those could read it before it was written.
TEST(BindInput, AnImmutableInputRefusesABufferKernelsWrite) {
  std::shared_ptr<Device> dev = device("cpu");
  Graph a;
  a.outputs = {a.unary(Op::Neg, a.input("x", f32, {4}))};
  CompiledGraph first(a, dev);
  first.set_inputs({{"x", HostTensor::random(f32, {4}, 1)}});
  first.execute();
  Graph b;
  b.outputs = {b.binary(Op::Mul, b.immutable_input("w", f32, {4}), b.input("v", f32, {4}))};
  CompiledGraph second(b, dev);
  std::shared_ptr<Buffer> written = first.output_buffer(0);
  EXPECT_THROW(second.bind_input("w", written), Error);
  EXPECT_NO_THROW(second.bind_input("v", written));  // an ordinary input may
  auto weights = buffer_of(*dev, {1, 2, 3, 4});
  second.bind_input("w", weights);
  second.bind_input("v", written);
  second.set_inputs({});
  second.execute();
  HostTensor x = first.output(0), y = second.output(0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y.ptr<float>()[i], x.ptr<float>()[i] * float(i + 1));
}

// ExecuteOptions::after queues launches behind the graph's own (a decode
// step's cache appends), recorded with them where the device replays: a
// kernel that reads the position from the graph's input buffer and copies
// the output there sees every execute's new values, replayed or not.
TEST(BindInput, LaunchesAfterTheGraphRunWithItAndReadItsBuffers) {
  for (const char* name : {"cpu", "vulkan"}) {
    std::shared_ptr<Device> dev;
    try {
      dev = device(name);
    } catch (const Error&) {
      continue;  // no such device here
    }
    SCOPED_TRACE(name);
    Graph g;
    int x = g.input("x", f32, {4});
    g.input("at", i32, {1});
    g.outputs = {g.binary(Op::Mul, x, x)};
    CompiledGraph cg(g, dev);
    Kernel k = parse_kernel(
        "kernel put() {\n  buffer at: i32 global\n  buffer y: f32 global\n  buffer rows: f32 global out\n"
        "  serial for i in 4 {\n    rows[cast<i64>(at[0]) * 4 + i] = y[i]\n  }\n}\n");
    std::shared_ptr<Executable> put = KernelCache::global().get_or_compile(*dev, apply(k, default_schedule(k, dev->info())));
    auto rows = dev->allocate(3 * 4 * 4);
    int calls = 0;
    auto after = [&] {
      ++calls;
      put->launch(dev->stream(), {cg.input_buffer("at").get(), cg.output_buffer(0).get(), rows.get()}, {});
    };
    EXPECT_THROW(cg.input_buffer("at"), Error);  // not ready
    for (int32_t step = 0; step < 3; ++step) {
      HostTensor xs(f32, {4});
      for (int i = 0; i < 4; ++i) xs.ptr<float>()[i] = float(step * 4 + i + 1);
      HostTensor at(i32, {1});
      at.ptr<int32_t>()[0] = step;
      cg.set_inputs({{"x", xs}, {"at", at}});
      cg.execute({.replay = true, .timing = false, .after = after});
      int32_t seen = 0;
      dev->read(*cg.input_buffer("at"), &seen, 4);
      EXPECT_EQ(seen, step);
    }
    EXPECT_THROW(cg.input_buffer("nope"), Error);
    std::vector<float> got(12);
    dev->read(*rows, got.data(), 48);
    for (int i = 0; i < 12; ++i) EXPECT_EQ(got[i], float((i + 1) * (i + 1))) << i;
    // Recorded once where the device replays, else called on every execute.
    EXPECT_EQ(calls, dev->stream().can_capture() ? 1 : 3);
  }
}

}  // namespace
}  // namespace kiln
