// Lowering: one kernel per compute op, views inlined as index arithmetic,
// symbolic dims as kernel params.
#include <gtest/gtest.h>

#include "codegen/lower.h"
#include "kiln/error.h"

namespace kiln {
namespace {

TEST(Lower, OneKernelPerComputeOpWithoutFusion) {
  Graph g;
  int x = g.input("x", f32, {8, 4});
  int t = g.permute(x, {1, 0});
  int e = g.unary(Op::Exp2, t);
  int s = g.reduce(Op::ReduceSum, e, {1});
  g.outputs = {g.reshape(s, {Dim(4)})};
  FusionOptions off;
  off.enabled = false;
  Program p = lower(g, off);
  ASSERT_EQ(p.kernels.size(), 3u);  // exp2, reduce_sum, and a copy for the reshaped output
  EXPECT_EQ(p.kernels[0].name, "k0_exp2");
  EXPECT_EQ(p.kernels[1].name, "k1_reduce_sum");
  EXPECT_EQ(p.kernels[2].name, "k2_reshape");
  EXPECT_EQ(p.launches[1].args, (std::vector<int>{s, e}));
  std::string d = describe_kernels(p);
  EXPECT_NE(d.find("k1_reduce_sum: %3 reduce_sum -> f32[4, 1] <- %2"), std::string::npos) << d;
}

TEST(Lower, ElementwiseKernelText) {
  Graph g;
  int a = g.input("a", f32, {Dim::symbol("n", 1, 1024), Dim(8)});
  g.outputs = {g.binary(Op::Add, a, a)};
  Program p = lower(g);
  ASSERT_EQ(p.kernels.size(), 1u);
  EXPECT_EQ(print(p.kernels[0]),
            "kernel k0_add(n) {\n"
            "  buffer t1: f32 global out\n"
            "  buffer a: f32 global\n"
            "  parallel for i0 in n {\n"
            "    serial for i1 in 8 {\n"
            "      t1[i0 * 8 + i1] = add(a[i0 * 8 + i1], a[i0 * 8 + i1])\n"
            "    }\n"
            "  }\n"
            "}\n");
}

// An 8-bit integer or a bool is exact in f16 and bf16: its cast is not
// rounded (a q8 GEMV would otherwise round every weight twice); an i32's is.
TEST(Lower, CastsOfBytesToHalfAreNotRounded) {
  for (DType from : {i8, u8, boolean, i32})
    for (DType to : {f16, bf16}) {
      Graph g;
      g.outputs = {g.cast(g.input("x", from, {8}), to)};
      Program p = lower(g);
      ASSERT_EQ(p.kernels.size(), 1u);
      std::string text = print(p.kernels[0]);
      bool rounded = text.find("round<") != std::string::npos;
      EXPECT_EQ(rounded, from == i32) << dtype_name(from) << " -> " << dtype_name(to) << "\n" << text;
    }
}

TEST(Lower, SymbolicDimsBecomeParams) {
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int x = g.input("x", f16, {seq, 16});
  g.outputs = {g.reduce(Op::ReduceMax, x, {0})};
  Program p = lower(g);
  ASSERT_EQ(p.kernels.size(), 1u);
  EXPECT_EQ(p.kernels[0].params, std::vector<std::string>{"seq"});
}

TEST(Lower, LoopVariablesAvoidSymbolNames) {
  Graph g;
  int x = g.input("x", f32, {Dim::symbol("i0", 1, 10), Dim(3)});
  g.outputs = {g.unary(Op::Neg, x)};
  Program p = lower(g);
  std::string text = print(p.kernels[0]);
  EXPECT_NE(text.find("for i0_ in i0"), std::string::npos) << text;
}

}  // namespace
}  // namespace kiln
