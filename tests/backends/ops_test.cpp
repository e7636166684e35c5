// Every graph op on the CPU backend against the reference interpreter, on
// random inputs of every dtype it accepts, with broadcasting, non-contiguous
// views and symbolic dims.
#include <gtest/gtest.h>

#include "runtime/kernel_cache.h"
#include "tests/testing.h"

namespace kiln {
namespace {

using testing::expect_matches_interpreter;

const Op kUnary[] = {Op::Neg, Op::Exp2, Op::Log2, Op::Sqrt, Op::Recip, Op::Sin};
const Op kBinary[] = {Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min, Op::CmpLt, Op::CmpEq};
const DType kNumeric[] = {f32, f16, bf16, i32, i8, u8};
const DType kFloats[] = {f32, f16, bf16};

std::string label(Op op, DType t) { return std::string(op_name(op)) + " " + std::string(dtype_name(t)); }

TEST(Ops, Unary) {
  for (DType t : kAllDTypes)
    for (Op op : kUnary) {
      bool ok = op == Op::Neg ? t != boolean : is_float(t);
      if (!ok) continue;
      SCOPED_TRACE(label(op, t));
      Graph g;
      g.outputs = {g.unary(op, g.input("x", t, {37, 19}))};
      expect_matches_interpreter(g, {}, 1, 4.0);
    }
}

TEST(Ops, UnaryRejectsWrongDtypes) {
  Graph g;
  int x = g.input("x", i32, {4});
  EXPECT_THROW(g.unary(Op::Exp2, x), Error);
  int b = g.input("b", boolean, {4});
  EXPECT_THROW(g.unary(Op::Neg, b), Error);
}

TEST(Ops, CastEveryPair) {
  for (DType from : kAllDTypes)
    for (DType to : kAllDTypes) {
      SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to)));
      Graph g;
      g.outputs = {g.cast(g.input("x", from, {257}), to)};
      // Floats up to +-300 reach past the i8/u8 ranges (wrap) and into the fractions.
      expect_matches_interpreter(g, {}, 3, 300.0);
    }
}

TEST(Ops, Binary) {
  for (DType t : kAllDTypes)
    for (Op op : kBinary) {
      bool bool_ok = op == Op::Max || op == Op::Min || op == Op::CmpLt || op == Op::CmpEq;
      if (t == boolean && !bool_ok) continue;
      SCOPED_TRACE(label(op, t));
      Graph g;
      g.outputs = {g.binary(op, g.input("a", t, {13, 29}), g.input("b", t, {13, 29}))};
      expect_matches_interpreter(g, {}, 5, 3.0);
    }
}

TEST(Ops, BinaryBroadcastsThroughExpand) {
  for (DType t : kNumeric) {
    SCOPED_TRACE(dtype_name(t));
    Graph g;
    int a = g.expand(g.input("a", t, {1, 17}), {23, 17});
    int b = g.expand(g.input("b", t, {23, 1}), {23, 17});
    g.outputs = {g.binary(Op::Mul, a, b)};
    expect_matches_interpreter(g);
  }
}

TEST(Ops, Where) {
  for (DType t : kAllDTypes) {
    SCOPED_TRACE(dtype_name(t));
    Graph g;
    int c = g.input("c", boolean, {9, 11});
    g.outputs = {g.where(c, g.input("a", t, {9, 11}), g.input("b", t, {9, 11}))};
    expect_matches_interpreter(g);
  }
}

TEST(Ops, Reductions) {
  const std::vector<std::vector<int64_t>> axis_sets = {{0}, {1}, {2}, {0, 2}, {0, 1, 2}, {-1}};
  for (DType t : kNumeric)
    for (Op op : {Op::ReduceSum, Op::ReduceMax})
      for (const auto& axes : axis_sets) {
        SCOPED_TRACE(label(op, t) + " axes " + std::to_string(axes.size()));
        Graph g;
        g.outputs = {g.reduce(op, g.input("x", t, {5, 33, 7}), axes)};
        expect_matches_interpreter(g);
      }
}

TEST(Ops, ReduceOverEmptyAxis) {
  for (DType t : kNumeric)
    for (Op op : {Op::ReduceSum, Op::ReduceMax}) {
      SCOPED_TRACE(label(op, t));
      Graph g;
      g.outputs = {g.reduce(op, g.input("x", t, {3, 0}), {1})};
      expect_matches_interpreter(g);
    }
}

TEST(Ops, MovementOutputs) {
  for (DType t : kAllDTypes) {
    SCOPED_TRACE(dtype_name(t));
    Graph g;
    int x = g.input("x", t, {6, 10, 4});
    g.outputs = {
        g.reshape(x, {Dim(15), Dim(16)}),
        g.permute(x, {2, 0, 1}),
        g.expand(g.reshape(x, {Dim(1), Dim(6), Dim(10), Dim(4)}), {Dim(3), Dim(6), Dim(10), Dim(4)}),
        g.slice(x, {1, 0, 3}, {6, 10, 4}, {2, 3, 1}),
        g.pad(x, {1, 0, 2}, {0, 3, 1}, 2.5),
        g.flip(x, {0, 2}),
    };
    expect_matches_interpreter(g);
  }
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

TEST(Ops, Gather) {
  for (DType t : kAllDTypes)
    for (int64_t axis : {0, 1, -1}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " axis " + std::to_string(axis));
      Graph g;
      int x = g.input("x", t, {21, 6});
      int ix = g.input("idx", i32, {3, 4});  // random in [-20, 20]: negative and out-of-range ones too
      g.outputs = {g.gather(x, ix, axis)};
      expect_matches_interpreter(g);
    }
}

TEST(Ops, Contract) {
  for (DType t : {f32, f16, bf16, i32}) {
    SCOPED_TRACE(dtype_name(t));
    Graph g;
    g.outputs = {g.contract(g.input("a", t, {33, 47}), g.input("b", t, {47, 19}))};
    expect_matches_interpreter(g);
  }
}

TEST(Ops, ContractBatchBroadcast) {
  Graph g;
  int a = g.input("a", f32, {2, 1, 5, 7});
  int b = g.input("b", f32, {3, 7, 4});
  g.outputs = {g.contract(a, b)};  // -> [2, 3, 5, 4]
  EXPECT_EQ(shape_str(g.nodes[g.outputs[0]].shape), "[2, 3, 5, 4]");
  expect_matches_interpreter(g);
}

TEST(Ops, ContractOfTransposedView) {
  Graph g;
  int a = g.input("a", f32, {16, 9});
  int b = g.input("b", f32, {11, 16});
  g.outputs = {g.contract(g.permute(a, {1, 0}), g.permute(b, {1, 0}))};  // [9, 16] @ [16, 11]
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

TEST(Ops, ConstantAndInputOutputs) {
  Graph g;
  int x = g.input("x", f32, {3});
  g.outputs = {x, g.constant(1.5, f16, {2, 2})};
  expect_matches_interpreter(g);
}

// Fused kernels compute what the unfused graph does.
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

TEST(Ops, LargeElementwiseRunsOnEveryCore) {
  Graph g;
  g.outputs = {g.binary(Op::Add, g.input("a", f32, {1 << 20}), g.input("b", f32, {1 << 20}))};
  expect_matches_interpreter(g);
}

}  // namespace
}  // namespace kiln
