// Every graph op on the CPU backend against the reference interpreter, on
// random inputs of every dtype it accepts, with broadcasting, non-contiguous
// views and symbolic dims.
#include <gtest/gtest.h>

#include "runtime/kernel_cache.h"
#include "tests/backends/gpu_testing.h"
#include "tests/testing.h"

namespace kiln {
namespace {

using testing::expect_matches_interpreter;

// The graphs every backend's op tests share (tests/backends/gpu_testing.h): every
// op and dtype, cast pairs, broadcasting, views, gathers, contractions, fused
// workloads and symbolic dims.
TEST(Ops, EveryOpCaseMatchesTheInterpreter) {
  for (const testing::GraphCase& c : testing::op_cases()) {
    SCOPED_TRACE(c.name);
    expect_matches_interpreter(c.graph, c.symbols, 7, c.scale);
  }
}

TEST(Ops, UnaryRejectsWrongDtypes) {
  Graph g;
  int x = g.input("x", i32, {4});
  EXPECT_THROW(g.unary(Op::Exp2, x), Error);
  int b = g.input("b", boolean, {4});
  EXPECT_THROW(g.unary(Op::Neg, b), Error);
}

TEST(Ops, ViewsComposeIntoConsumers) {
  // permute -> slice -> flip -> pad -> reshape feeding an add: non-contiguous
  // reads through a chain of views, with no copies.
  Graph g;
  int x = g.input("x", f32, {8, 12, 5});
  int v = g.permute(x, {1, 2, 0});                       // [12, 5, 8]
  v = g.slice(v, {2, 0, 1}, {12, 5, 8}, {3, 2, 2});       // [4, 3, 4]
  v = g.flip(v, {1});
  v = g.pad(v, {1, 0, 0}, {1, 1, 0}, -1.0);               // [6, 4, 4]
  v = g.reshape(v, {Dim(24), Dim(4)});
  int y = g.input("y", f32, {24, 4});
  g.outputs = {g.binary(Op::Add, v, y)};
  Program p = lower(g);
  EXPECT_EQ(p.kernels.size(), 1u) << "views must not become kernels";
  expect_matches_interpreter(g);
}

TEST(Ops, ContractRejectsBadShapes) {
  Graph g;
  int a = g.input("a", f32, {4, 5});
  int b = g.input("b", f32, {6, 3});
  EXPECT_THROW(g.contract(a, b), Error);
  int c = g.input("c", i8, {5, 3});
  int d = g.input("d", i8, {4, 5});
  EXPECT_THROW(g.contract(d, c), Error);
}

Graph symbolic_mlp_layer() {
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int x = g.input("x", f32, {seq, 64});
  int w = g.input("w", f32, {64, 32});
  int y = g.contract(x, w);
  int s = g.reduce(Op::ReduceSum, g.unary(Op::Exp2, y), {1});
  g.outputs = {g.binary(Op::Div, y, g.expand(s, {seq, Dim(32)})), s};
  return g;
}

TEST(Ops, SymbolicDimsRunAtManySizesWithoutRecompiling) {
  Graph g = symbolic_mlp_layer();
  CompiledGraph cg(g, device("cpu"));
  int64_t compiled = KernelCache::global().misses();
  for (int64_t seq : {1, 7, 300}) {
    SCOPED_TRACE("seq = " + std::to_string(seq));
    auto inputs = testing::inputs_for(g, {{"seq", seq}}, uint64_t(seq));
    auto want = interpret(g, inputs, {{"seq", seq}});
    auto got = cg.run(inputs);  // seq is taken from the input's size
    for (size_t o = 0; o < want.size(); ++o) EXPECT_EQ(testing::compare(want[o], got[o], testing::tolerance_for(f32)), "");
  }
  EXPECT_EQ(KernelCache::global().misses(), compiled) << "a new symbolic value must not recompile";
}

TEST(Ops, SymbolicDimOutOfBoundsIsAnError) {
  Graph g = symbolic_mlp_layer();
  CompiledGraph cg(g, device("cpu"));
  auto inputs = testing::inputs_for(g, {{"seq", 3}}, 1);
  EXPECT_THROW(cg.run(inputs, {{"seq", 5000}}), Error);
  EXPECT_THROW(cg.run(inputs, {{"seq", 4}}), Error);  // x has 3 rows
}

TEST(Ops, RunRejectsBadInputs) {
  Graph g;
  g.outputs = {g.unary(Op::Neg, g.input("x", f32, {4}))};
  CompiledGraph cg(g, device("cpu"));
  EXPECT_THROW(cg.run({}), Error);
  EXPECT_THROW(cg.run({{"x", HostTensor(f16, {4})}}), Error);
  EXPECT_THROW(cg.run({{"x", HostTensor(f32, {5})}}), Error);
  EXPECT_THROW(cg.run({{"x", HostTensor(f32, {4})}, {"nope", HostTensor(f32, {4})}}), Error);
}

TEST(Ops, FusedKernelsMatchTheInterpreter) {
  for (const char* spec : {"chain:1000", "softmax:33x65", "mlp:5"}) {
    SCOPED_TRACE(spec);
    expect_matches_interpreter(make_workload(spec).graph);
  }
  Graph g;  // a stage read at another row falls back to its own kernel
  int x = g.input("x", f32, {8, 16});
  int m = g.flip(g.reduce(Op::ReduceMax, x, {1}), {0});
  g.outputs = {g.binary(Op::Sub, x, g.expand(m, {8, 16}))};
  expect_matches_interpreter(g);
  Graph h;  // f16 reductions round their result once, like the interpreter
  int y = h.input("y", f16, {4, 300});
  int s = h.reduce(Op::ReduceSum, y, {1});
  h.outputs = {h.binary(Op::Mul, h.expand(s, {4, 300}), y)};
  expect_matches_interpreter(h);
}

}  // namespace
}  // namespace kiln
