// Tolerances for comparing with the interpreter: by dtype, and for a graph's
// output by the values computed on the way to it.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numbers>
#include <optional>
#include <string>

#include "frontend/compare.h"
#include "kiln/interpreter.h"

namespace kiln {
namespace {

bool same(Tolerance a, Tolerance b) { return a.rtol == b.rtol && a.atol == b.atol; }

TEST(Compare, OutputToleranceFollowsTheLoosestComputedDtype) {
  // An f32 output cast from an f16 contraction: the f16 sum's rounding.
  Graph g;
  int a = g.input("a", f16, {4, 8}), b = g.input("b", f16, {8, 3});
  int c = g.contract(a, b);
  int out = g.cast(c, f32);
  EXPECT_TRUE(same(tolerance_for(g, out), tolerance_for(f16)));
  // f16 inputs viewed and cast exactly, then computed in f32: f32's.
  Graph e;
  int x = e.input("x", f16, {4, 8});
  int y = e.cast(e.reshape(x, {Dim(32)}), f32);
  int sum = e.binary(Op::Add, y, y);
  EXPECT_TRUE(same(tolerance_for(e, sum), tolerance_for(f32)));
  // A bf16 step anywhere upstream: bf16's; integers alone: exact.
  int narrow = e.cast(e.cast(sum, bf16), f32);
  EXPECT_TRUE(same(tolerance_for(e, narrow), tolerance_for(bf16)));
  Graph i;
  int n = i.binary(Op::Add, i.input("n", i32, {5}), i.input("m", i32, {5}));
  EXPECT_TRUE(same(tolerance_for(i, n), Tolerance{0, 0}));
}

}  // namespace
// A sum whose terms cancel (`kiln fuzz`, seed 1089209: 39 f32 terms summing to
// -0.0043) is measured against the sum of the terms' magnitudes, which its
// rounding error scales with; other outputs have no magnitude graph.
TEST(Compare, CancellingSumsAreMeasuredAgainstTheirTermsMagnitudes) {
  Graph g;
  int x = g.input("x", f32, {4});
  int sum = g.reduce(Op::ReduceSum, x, {0});
  g.outputs = {g.reshape(sum, {})};
  auto tensor = [](std::vector<double> v, std::vector<int64_t> sizes) {
    HostTensor t(f32, std::move(sizes));
    for (size_t i = 0; i < v.size(); ++i) t.set(int64_t(i), v[i]);
    return t;
  };
  std::map<std::string, HostTensor> in;
  in.emplace("x", tensor({1000.0, -999.5, 2.0, -2.49}, {4}));
  HostTensor want = interpret(g, in).at(0);
  EXPECT_NEAR(want.get(0), 0.01, 1e-4);
  std::optional<Graph> mag = magnitude_graph(g, g.outputs[0]);
  ASSERT_TRUE(mag.has_value());
  HostTensor magnitude = interpret(*mag, in).at(0);
  EXPECT_NEAR(magnitude.get(0), 2003.99, 1e-3);
  // Off by 2e-6 of the magnitude (a different summation order's rounding):
  // far outside f32's tolerance of the result, inside that of the terms.
  HostTensor got = tensor({want.get(0) + 4e-3}, {});
  Tolerance tol = tolerance_for(f32);
  EXPECT_FALSE(compare(want, got, tol).empty());
  EXPECT_TRUE(compare(want, got, tol, magnitude).empty());
  // Off by 1e-3 of the magnitude: wrong either way.
  HostTensor wrong = tensor({want.get(0) + 2.0}, {});
  EXPECT_FALSE(compare(want, wrong, tol, magnitude).empty());
  // A contraction's magnitude sums |a| |b|; integer outputs have none.
  Graph c;
  int a = c.input("a", f32, {2, 3}), b = c.input("b", f32, {3, 2});
  int y = c.contract(a, b);
  ASSERT_TRUE(magnitude_graph(c, y).has_value());
  EXPECT_EQ(magnitude_graph(c, y)->nodes.back().op, Op::Contract);
  EXPECT_FALSE(magnitude_graph(c, c.cast(y, i32)).has_value());
}

// A cancelling sum seen through elementwise ops keeps its terms' scale, times
// each op's sensitivity: sin(s) with |sin'| <= 1 (`kiln fuzz` on lavapipe,
// seed 6065457: 24 terms summing to -0.0037, 1e-6 apart between backends),
// log2(|s| + 0.5) (seed 6031307: the CPU and lavapipe 1e-4 apart from the
// interpreter). Where nothing cancels the scale stays the value's own.
TEST(Compare, ASumsScaleGoesThroughElementwiseOps) {
  Graph g;
  int x = g.input("x", f32, {4});
  int s = g.reduce(Op::ReduceSum, x, {0});
  int sin_s = g.unary(Op::Sin, s);
  int half = g.constant(0.5, f32, {1});
  int log_s = g.unary(Op::Log2, g.binary(Op::Add, g.binary(Op::Max, s, g.unary(Op::Neg, s)), half));
  int plain = g.unary(Op::Sin, x);
  g.outputs = {sin_s, log_s, plain};
  std::map<std::string, HostTensor> in;
  HostTensor t(f32, {4});
  for (int64_t i = 0; i < 4; ++i) t.set(i, std::vector<double>{1000.0, -999.5, 2.0, -2.49}[size_t(i)]);
  in.emplace("x", t);
  std::vector<HostTensor> want = interpret(g, in);
  auto magnitude = [&](int node) { return interpret(*magnitude_graph(g, node), in).at(0); };
  Tolerance tol = tolerance_for(f32);
  // sin(0.01): off by 4e-3 (2e-6 of the terms' 2004): within the sum's rounding.
  HostTensor got(f32, {1});
  got.set(0, want[0].get(0) + 4e-3);
  EXPECT_FALSE(compare(want[0], got, tol).empty());
  EXPECT_TRUE(compare(want[0], got, tol, magnitude(sin_s)).empty());
  got.set(0, want[0].get(0) + 1.0);
  EXPECT_FALSE(compare(want[0], got, tol, magnitude(sin_s)).empty());
  // log2(0.51): the scale is 2004 / 0.51 / ln 2 and more.
  EXPECT_GT(magnitude(log_s).get(0), 2004.0 / 0.51 * std::numbers::log2e);
  // sin of the inputs themselves: no more than |x| + |sin x|.
  HostTensor m = magnitude(plain);
  for (int64_t i = 0; i < 4; ++i) EXPECT_LE(m.get(i), std::fabs(t.get(i)) + 1.0 + 1e-3) << i;
}

}  // namespace kiln
