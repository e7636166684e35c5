// Tolerances for comparing with the interpreter: by dtype, and for a graph's
// output by the values computed on the way to it.
#include <gtest/gtest.h>

#include "frontend/compare.h"

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
}  // namespace kiln
