// Fusion: the kernel counts of issue 3's cases, and fallbacks that keep results
// right where a stage cannot live in a register.
#include <gtest/gtest.h>

#include <cmath>

#include "codegen/lower.h"
#include "frontend/workloads.h"
#include "kiln/kiln.h"

namespace kiln {
namespace {

int kernels(const Graph& g) { return int(lower(g).kernels.size()); }

// An output that only reshapes a stored result (a decode step's new key or
// value row, also read by the attention) is read from that result's buffer:
// no copy kernel. Outputs of the CPU and the interpreter agree.
TEST(Fuse, ReshapedOutputsShareTheirProducersBuffer) {
  Graph g;
  int v = g.contract(g.input("x", f32, {1, 64}), g.input("w", f32, {64, 32}));
  int rows = g.reshape(v, {1, 4, 8});
  int sq = g.binary(Op::Mul, rows, rows);
  g.outputs = {g.reduce(Op::ReduceSum, sq, {2}), rows};
  Program p = lower(g);
  EXPECT_EQ(p.kernels.size(), 2u);
  ASSERT_EQ(p.aliases.size(), 1u);
  EXPECT_EQ(p.aliases.begin()->first, rows);
  EXPECT_EQ(p.aliases.begin()->second, (ViewAlias{v, 0}));
  auto inputs = random_inputs(g, {});
  std::vector<HostTensor> want = interpret(g, inputs, {});
  CompiledGraph cg(g, device("cpu"));
  std::vector<HostTensor> got = cg.run(inputs, {});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(describe(got[1]), "f32[1, 4, 8]");
  for (size_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < want[o].numel(); ++i) EXPECT_NEAR(got[o].get(i), want[o].get(i), 1e-5 + 1e-6 * std::fabs(want[o].get(i))) << o << " " << i;  // f32 sums
  // An output reshaping a graph input, or another output, is still copied.
  Graph h;
  int x = h.input("x", f32, {2, 6});
  h.outputs = {h.reshape(x, {3, 4})};
  EXPECT_TRUE(lower(h).aliases.empty());
}

// Outputs that are contiguous runs of a result several consumers read (a
// decode step's key and value rows sliced out of one stacked q/k/v product)
// are read from its buffer at an offset; a slice that is not contiguous is
// copied. Values on the CPU equal the interpreter's.
TEST(Fuse, SlicedOutputsAreReadAtAnOffset) {
  Graph g;
  int all = g.contract(g.input("x", f32, {1, 64}), g.input("w", f32, {64, 48}));  // [1, 48]
  int rot = g.unary(Op::Neg, g.reshape(g.slice(all, {0, 0}, {kSliceEnd, 40}, {1, 1}), {1, 5, 8}));
  int q = g.slice(rot, {0, 0, 0}, {kSliceEnd, 4, kSliceEnd}, {1, 1, 1});
  int k = g.slice(rot, {0, 4, 0}, {kSliceEnd, kSliceEnd, kSliceEnd}, {1, 1, 1});      // rot's last row
  int v = g.reshape(g.slice(all, {0, 40}, {kSliceEnd, kSliceEnd}, {1, 1}), {1, 1, 8});  // all's last 8
  int odd = g.slice(rot, {0, 0, 2}, {kSliceEnd, kSliceEnd, 4}, {1, 1, 1});              // 2 of every 8
  g.outputs = {g.reduce(Op::ReduceSum, g.binary(Op::Mul, q, q), {2}), k, v, odd};
  Program p = lower(g);
  ASSERT_EQ(p.aliases.size(), 2u);
  EXPECT_EQ(p.aliases.at(k).offset, 32);
  EXPECT_EQ(p.aliases.at(v).offset, 40);
  EXPECT_EQ(p.graph.nodes[p.aliases.at(v).node].op, Op::Contract);
  EXPECT_EQ(p.graph.nodes[p.aliases.at(k).node].op, Op::Neg);
  EXPECT_FALSE(p.aliases.count(odd));
  auto inputs = random_inputs(g, {});
  std::vector<HostTensor> want = interpret(g, inputs, {});
  CompiledGraph cg(g, device("cpu"));
  std::vector<HostTensor> got = cg.run(inputs, {});
  EXPECT_EQ(cg.output_offset(1), 32 * 4);
  EXPECT_EQ(cg.output_offset(3), 0);
  ASSERT_EQ(got.size(), want.size());
  for (size_t o = 0; o < got.size(); ++o) {
    ASSERT_EQ(got[o].sizes, want[o].sizes) << o;
    for (int64_t i = 0; i < want[o].numel(); ++i) EXPECT_NEAR(got[o].get(i), want[o].get(i), 1e-5 + 1e-6 * std::fabs(want[o].get(i))) << o << " " << i;  // f32 sums
  }
}

TEST(Fuse, ElementwiseChainIsOneKernel) {
  EXPECT_EQ(kernels(make_workload("chain:1024").graph), 1);
}

TEST(Fuse, SoftmaxOverRowsIsOneKernel) {
  Program p = lower(make_workload("softmax:64x128").graph);
  ASSERT_EQ(p.kernels.size(), 1u);
  EXPECT_EQ(p.kernels[0].name, "k0_div_reduce_max_reduce_sum");
}

// mean and variance over the last axis, then (x - mean) * rsqrt(var + eps) * w
Graph layernorm(bool rms) {
  Graph g;
  int64_t r = 32, c = 256;
  int x = g.input("x", f32, {r, c});
  int w = g.expand(g.input("w", f32, {1, c}), {r, c});
  auto bcast = [&](int v) { return g.expand(v, {r, c}); };
  auto scalar = [&](double v, Shape s) { return g.expand(g.constant(v, f32, {1, 1}), s); };
  int centered = x;
  if (!rms) {
    int mean = g.binary(Op::Mul, g.reduce(Op::ReduceSum, x, {1}), scalar(1.0 / c, {r, 1}));
    centered = g.binary(Op::Sub, x, bcast(mean));
  }
  int var = g.binary(Op::Mul, g.reduce(Op::ReduceSum, g.binary(Op::Mul, centered, centered), {1}), scalar(1.0 / c, {r, 1}));
  int inv = g.unary(Op::Recip, g.unary(Op::Sqrt, g.binary(Op::Add, var, scalar(1e-5, {r, 1}))));
  g.outputs = {g.binary(Op::Mul, g.binary(Op::Mul, centered, bcast(inv)), w)};
  return g;
}

TEST(Fuse, LayernormAndRmsnormAreOneKernel) {
  EXPECT_EQ(kernels(layernorm(false)), 1);
  EXPECT_EQ(kernels(layernorm(true)), 1);
}

TEST(Fuse, ContractionTakesItsEpilogue) {
  Graph g;
  int x = g.input("x", f32, {16, 32});
  int w = g.input("w", f32, {32, 8});
  int b = g.expand(g.input("b", f32, {1, 8}), {16, 8});
  int res = g.input("res", f32, {16, 8});
  int y = g.binary(Op::Add, g.contract(x, w), b);
  y = g.binary(Op::Max, y, g.expand(g.constant(0, f32, {1, 1}), {16, 8}));
  g.outputs = {g.cast(g.binary(Op::Add, y, res), f16)};
  Program p = lower(g);
  ASSERT_EQ(p.kernels.size(), 1u);
  EXPECT_EQ(p.kernels[0].name, "k0_cast_contract");
}

TEST(Fuse, MlpLayersAreOneKernelEach) {
  EXPECT_EQ(kernels(make_workload("mlp:8").graph), 3);
}

// Graph replay's workload: each step needs the one before, so none can merge.
TEST(Fuse, DepsStepsAreOneKernelEach) {
  for (int n : {1, 7, 200}) EXPECT_EQ(kernels(make_workload("deps:" + std::to_string(n)).graph), n);
}

TEST(Fuse, ElementwisePrologueOfInputsFusesIntoContraction) {
  Graph g;
  int x = g.input("x", f32, {4, 16});
  int wq = g.input("wq", i8, {16, 8});
  int scale = g.expand(g.input("scale", f32, {1, 8}), {16, 8});
  int w = g.binary(Op::Mul, g.cast(wq, f32), scale);  // dequantize
  g.outputs = {g.contract(x, w)};
  EXPECT_EQ(kernels(g), 1);
}

TEST(Fuse, ReductionReadAtAnotherPointIsStored) {
  // The row max is read flipped: not at the kernel's own row, so it cannot be a
  // register stage and gets a kernel of its own.
  Graph g;
  int x = g.input("x", f32, {8, 16});
  int m = g.flip(g.reduce(Op::ReduceMax, x, {1}), {0});
  g.outputs = {g.binary(Op::Sub, x, g.expand(m, {8, 16}))};
  Program p = lower(g);
  EXPECT_EQ(p.kernels.size(), 2u);
}

TEST(Fuse, SharedReductionIsStoredOnce) {
  Graph g;
  int x = g.input("x", f32, {8, 16});
  int s = g.expand(g.reduce(Op::ReduceSum, x, {1}), {8, 16});
  g.outputs = {g.binary(Op::Add, x, s), g.binary(Op::Mul, x, s)};
  EXPECT_EQ(kernels(g), 3);  // the sum, and the two outputs that read it
}

// A decode step's GEMV, W[out, in] x v[in, 1] read as a row [1, out]: the
// residual add and the cast after it are its epilogue, not kernels of their own.
Graph gemv_with_residual() {
  Graph g;
  int64_t in = 48, out = 40;
  int x = g.input("x", f32, {1, in});
  int w = g.input("w", f32, {out, in});
  int res = g.input("res", f32, {1, out});
  int act = g.unary(Op::Sqrt, g.binary(Op::Mul, x, x));  // reads inputs only: the GEMV's prologue
  int y = g.reshape(g.contract(w, g.reshape(act, {in, 1})), {1, out});
  g.outputs = {g.cast(g.binary(Op::Add, y, res), f16)};
  return g;
}

TEST(Fuse, GemvTakesItsEpilogue) {
  Program p = lower(gemv_with_residual());
  ASSERT_EQ(p.kernels.size(), 1u);  // was 2 (the product, then add + cast) before the rewrite
  EXPECT_EQ(p.kernels[0].name, "k0_cast_contract");
  // The program's graph is the rewritten one; inputs keep their names and order.
  std::vector<std::string> names;
  for (int id : p.graph.input_nodes()) names.push_back(p.graph.nodes[id].name);
  EXPECT_EQ(names, (std::vector<std::string>{"x", "w", "res"}));
}

TEST(Fuse, GemvReadOtherwiseIsLeftAlone) {
  // The [out, 1] product is also an output: nothing is rewritten.
  Graph g = gemv_with_residual();
  int gemv = -1;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].op == Op::Contract) gemv = int(i);
  g.outputs.push_back(gemv);
  Graph c = canonicalize_gemv(g);
  EXPECT_EQ(c.nodes.size(), g.nodes.size());
  EXPECT_EQ(print(c), print(g));
}

}  // namespace
}  // namespace kiln
