#include "kiln/interpreter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "kiln/error.h"

namespace kiln {
namespace {

using Values = std::vector<double>;
using Inputs = std::map<std::string, HostTensor>;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kI32Min = std::numeric_limits<int32_t>::min();
constexpr double kI32Max = std::numeric_limits<int32_t>::max();

HostTensor tensor(DType t, std::vector<int64_t> sizes, const Values& vals) {
  HostTensor h(t, std::move(sizes));
  for (size_t i = 0; i < vals.size(); ++i) h.set(int64_t(i), vals[i]);
  return h;
}

Values values(const HostTensor& t) {
  Values v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.get(i));
  return v;
}

// The single output of g, checked to have the given dtype and sizes.
Values run(const Graph& g, const Inputs& inputs, DType t, std::vector<int64_t> sizes, const Bindings& b = {}) {
  std::vector<HostTensor> outs = interpret(g, inputs, b);
  EXPECT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].dtype, t);
  EXPECT_EQ(outs[0].sizes, sizes);
  return values(outs[0]);
}

// 0, 1, 2, ... as an f32 tensor.
HostTensor iota(std::vector<int64_t> sizes) {
  HostTensor h(f32, std::move(sizes));
  for (int64_t i = 0; i < h.numel(); ++i) h.set(i, double(i));
  return h;
}

Values unary_op(Op op, DType t, const Values& x) {
  Graph g;
  int64_t n = int64_t(x.size());
  g.outputs = {g.unary(op, g.input("x", t, {n}))};
  return run(g, {{"x", tensor(t, {n}, x)}}, t, {n});
}

Values cast_op(DType from, DType to, const Values& x) {
  Graph g;
  int64_t n = int64_t(x.size());
  g.outputs = {g.cast(g.input("x", from, {n}), to)};
  return run(g, {{"x", tensor(from, {n}, x)}}, to, {n});
}

Values binary_op(Op op, DType t, const Values& a, const Values& b) {
  Graph g;
  int64_t n = int64_t(a.size());
  g.outputs = {g.binary(op, g.input("a", t, {n}), g.input("b", t, {n}))};
  DType out = (op == Op::CmpLt || op == Op::CmpEq) ? boolean : t;
  return run(g, {{"a", tensor(t, {n}, a)}, {"b", tensor(t, {n}, b)}}, out, {n});
}

// Expects f to throw kiln::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no kiln::Error thrown";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(Interpreter, InputAndConst) {
  Graph g;
  int x = g.input("x", i32, {2});
  int c = g.constant(0.1, f16, {2, 2});
  g.outputs = {x, c};
  std::vector<HostTensor> outs = interpret(g, {{"x", tensor(i32, {2}, {7, -3})}});
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(values(outs[0]), (Values{7, -3}));
  EXPECT_EQ(outs[1].dtype, f16);
  EXPECT_EQ(outs[1].sizes, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(values(outs[1]), Values(4, 0.0999755859375));  // 0.1 rounded to f16
}

TEST(Interpreter, FloatUnary) {
  EXPECT_EQ(unary_op(Op::Neg, f32, {1.5, -2, 0}), (Values{-1.5, 2, 0}));
  EXPECT_EQ(unary_op(Op::Exp2, f32, {3, -1, 0}), (Values{8, 0.5, 1}));
  EXPECT_EQ(unary_op(Op::Log2, f32, {8, 0.25, 0}), (Values{3, -2, -kInf}));
  EXPECT_EQ(unary_op(Op::Sqrt, f32, {9, 2.25}), (Values{3, 1.5}));
  EXPECT_EQ(unary_op(Op::Recip, f32, {4, -0.5, 0}), (Values{0.25, -2, kInf}));
  EXPECT_EQ(unary_op(Op::Sin, f32, {0, 0.5}), (Values{0, float(std::sin(0.5))}));
  EXPECT_TRUE(std::isnan(unary_op(Op::Sqrt, f32, {-1})[0]));
}

TEST(Interpreter, UnaryRoundsToF16AndBf16) {
  // sqrt(2) = 1.41421356: 1448 * 2^-10 in f16, 181 * 2^-7 in bf16 (both 1.4140625).
  // 1/3: 1365 * 2^-12 in f16, 171 * 2^-9 in bf16.
  EXPECT_EQ(unary_op(Op::Sqrt, f16, {2}), (Values{1.4140625}));
  EXPECT_EQ(unary_op(Op::Sqrt, bf16, {2}), (Values{1.4140625}));
  EXPECT_EQ(unary_op(Op::Recip, f16, {3}), (Values{0.333251953125}));
  EXPECT_EQ(unary_op(Op::Recip, bf16, {3}), (Values{0.333984375}));
}

TEST(Interpreter, IntegerNegWraps) {
  EXPECT_EQ(unary_op(Op::Neg, i32, {5, kI32Min, kI32Max}), (Values{-5, kI32Min, -kI32Max}));
  EXPECT_EQ(unary_op(Op::Neg, i8, {-128, 127, 3}), (Values{-128, -127, -3}));
  EXPECT_EQ(unary_op(Op::Neg, u8, {1, 0, 200}), (Values{255, 0, 56}));
}

TEST(Interpreter, CastFloatToIntTruncatesAndSaturates) {
  EXPECT_EQ(cast_op(f32, i32, {2.7, -2.7, 3e9, -3e9, kNaN, kInf}), (Values{2, -2, kI32Max, kI32Min, 0, kI32Max}));
  // Saturate to i32, then wrap: 300 -> 44, -129 -> 127, 3e9 -> 0x7fffffff -> -1.
  EXPECT_EQ(cast_op(f32, i8, {300.5, -129, 3e9, -1.9}), (Values{44, 127, -1, -1}));
  EXPECT_EQ(cast_op(f32, u8, {257, -1, 255.9}), (Values{1, 255, 255}));
}

TEST(Interpreter, CastBetweenOtherTypes) {
  EXPECT_EQ(cast_op(i32, i8, {200, -129, 1000}), (Values{-56, 127, -24}));
  EXPECT_EQ(cast_op(i32, u8, {-1, 256, 300}), (Values{255, 0, 44}));
  EXPECT_EQ(cast_op(u8, i8, {200, 127}), (Values{-56, 127}));
  EXPECT_EQ(cast_op(i8, u8, {-1, -128}), (Values{255, 128}));
  EXPECT_EQ(cast_op(f32, boolean, {0, -0.5, kNaN, -0.0}), (Values{0, 1, 1, 0}));
  EXPECT_EQ(cast_op(boolean, f32, {1, 0}), (Values{1, 0}));
  EXPECT_EQ(cast_op(i32, boolean, {0, -7}), (Values{0, 1}));
  EXPECT_EQ(cast_op(f32, f16, {0.1, 70000, 1e-8}), (Values{0.0999755859375, kInf, 0}));
  // 1 + 2^-8 and 1 + 3 * 2^-8 are ties in bf16: round to even.
  EXPECT_EQ(cast_op(f32, bf16, {1.00390625, 1.01171875}), (Values{1, 1.015625}));
  EXPECT_EQ(cast_op(i32, f16, {2049, 2051}), (Values{2048, 2052}));
}

TEST(Interpreter, FloatBinary) {
  Values a{1.5, -2, 6, 0}, b{0.5, 4, -3, 0};
  EXPECT_EQ(binary_op(Op::Add, f32, a, b), (Values{2, 2, 3, 0}));
  EXPECT_EQ(binary_op(Op::Sub, f32, a, b), (Values{1, -6, 9, 0}));
  EXPECT_EQ(binary_op(Op::Mul, f32, a, b), (Values{0.75, -8, -18, 0}));
  EXPECT_EQ(binary_op(Op::Max, f32, a, b), (Values{1.5, 4, 6, 0}));
  EXPECT_EQ(binary_op(Op::Min, f32, a, b), (Values{0.5, -2, -3, 0}));
  EXPECT_EQ(binary_op(Op::CmpLt, f32, a, b), (Values{0, 1, 0, 0}));
  EXPECT_EQ(binary_op(Op::CmpEq, f32, a, b), (Values{0, 0, 0, 1}));
  Values q = binary_op(Op::Div, f32, {3, 1, -1, 0}, {4, 0, 0, 0});
  EXPECT_EQ((Values{q[0], q[1], q[2]}), (Values{0.75, kInf, -kInf}));
  EXPECT_TRUE(std::isnan(q[3]));
}

TEST(Interpreter, FloatMaxMinSkipNaN) {
  EXPECT_EQ(binary_op(Op::Max, f32, {kNaN, 2}, {1, kNaN}), (Values{1, 2}));
  EXPECT_EQ(binary_op(Op::Min, f32, {kNaN, 2}, {1, kNaN}), (Values{1, 2}));
  EXPECT_EQ(binary_op(Op::CmpEq, f32, {kNaN}, {kNaN}), (Values{0}));
  EXPECT_EQ(binary_op(Op::CmpLt, f32, {kNaN}, {1}), (Values{0}));
}

TEST(Interpreter, BinaryRoundsToF16AndBf16) {
  // f16 spacing at 2048 is 2, bf16 spacing at 256 is 2: ties go to even.
  EXPECT_EQ(binary_op(Op::Add, f16, {2048, 2048}, {1, 3}), (Values{2048, 2052}));
  EXPECT_EQ(binary_op(Op::Add, bf16, {256, 256}, {1, 3}), (Values{256, 260}));
  EXPECT_EQ(binary_op(Op::Add, f16, {60000}, {10000}), (Values{kInf}));
  EXPECT_EQ(binary_op(Op::Div, f16, {1}, {3}), (Values{0.333251953125}));
}

TEST(Interpreter, I32ArithmeticWraps) {
  EXPECT_EQ(binary_op(Op::Add, i32, {kI32Max, 5}, {1, -7}), (Values{kI32Min, -2}));
  EXPECT_EQ(binary_op(Op::Sub, i32, {kI32Min, 5}, {1, 7}), (Values{kI32Max, -2}));
  // 65536^2 = 2^32 -> 0; 100000^2 = 10^10 -> 10^10 - 2 * 2^32.
  EXPECT_EQ(binary_op(Op::Mul, i32, {65536, 100000, -3}, {65536, 100000, 4}), (Values{0, 1410065408, -12}));
}

TEST(Interpreter, IntegerDivisionTruncatesAndDivByZeroIsZero) {
  EXPECT_EQ(binary_op(Op::Div, i32, {7, -7, 7, -7, 5, kI32Min, 0}, {2, 2, -2, -2, 0, -1, 0}),
            (Values{3, -3, -3, 3, 0, kI32Min, 0}));
  EXPECT_EQ(binary_op(Op::Div, i8, {-128, 7, -9}, {-1, 0, 4}), (Values{-128, 0, -2}));
  EXPECT_EQ(binary_op(Op::Div, u8, {255, 200, 7}, {0, 3, 8}), (Values{0, 66, 0}));
}

TEST(Interpreter, I8AndU8Wrap) {
  EXPECT_EQ(binary_op(Op::Add, i8, {100, 127}, {100, 1}), (Values{-56, -128}));
  EXPECT_EQ(binary_op(Op::Sub, i8, {-128}, {1}), (Values{127}));
  EXPECT_EQ(binary_op(Op::Mul, i8, {16, -16, 64}, {16, 9, 3}), (Values{0, 112, -64}));
  EXPECT_EQ(binary_op(Op::Add, u8, {200, 255}, {100, 1}), (Values{44, 0}));
  EXPECT_EQ(binary_op(Op::Sub, u8, {0, 5}, {1, 3}), (Values{255, 2}));
  EXPECT_EQ(binary_op(Op::Mul, u8, {16, 255}, {17, 255}), (Values{16, 1}));
}

TEST(Interpreter, IntegerAndBoolCompareAndMaxMin) {
  Values a{-3, 7, 4}, b{2, 7, -9};
  EXPECT_EQ(binary_op(Op::Max, i32, a, b), (Values{2, 7, 4}));
  EXPECT_EQ(binary_op(Op::Min, i8, a, b), (Values{-3, 7, -9}));
  EXPECT_EQ(binary_op(Op::CmpLt, i32, a, b), (Values{1, 0, 0}));
  EXPECT_EQ(binary_op(Op::CmpEq, i32, a, b), (Values{0, 1, 0}));
  EXPECT_EQ(binary_op(Op::CmpLt, u8, {0, 255}, {255, 0}), (Values{1, 0}));
  Values p{0, 0, 1, 1}, q{0, 1, 0, 1};
  EXPECT_EQ(binary_op(Op::Max, boolean, p, q), (Values{0, 1, 1, 1}));
  EXPECT_EQ(binary_op(Op::Min, boolean, p, q), (Values{0, 0, 0, 1}));
  EXPECT_EQ(binary_op(Op::CmpLt, boolean, p, q), (Values{0, 1, 0, 0}));
  EXPECT_EQ(binary_op(Op::CmpEq, boolean, p, q), (Values{1, 0, 0, 1}));
}

TEST(Interpreter, Where) {
  Graph g;
  int c = g.input("c", boolean, {4});
  g.outputs = {g.where(c, g.input("a", i8, {4}), g.input("b", i8, {4}))};
  Inputs in{{"c", tensor(boolean, {4}, {1, 0, 0, 1})},
            {"a", tensor(i8, {4}, {1, 2, 3, 4})},
            {"b", tensor(i8, {4}, {-1, -2, -3, -4})}};
  EXPECT_EQ(run(g, in, i8, {4}), (Values{1, -2, -3, 4}));
}

TEST(Interpreter, ReduceOverSeveralAxes) {
  Graph g;
  int x = g.input("x", f32, {2, 3, 2});
  g.outputs = {g.reduce(Op::ReduceSum, x, {0, 2})};
  // x[a][b][c] = 6a + 2b + c; sum over a and c: (0+1+6+7) + 8b.
  EXPECT_EQ(run(g, {{"x", iota({2, 3, 2})}}, f32, {1, 3, 1}), (Values{14, 22, 30}));
  g.outputs = {g.reduce(Op::ReduceMax, x, {-2})};
  EXPECT_EQ(run(g, {{"x", iota({2, 3, 2})}}, f32, {2, 1, 2}), (Values{4, 5, 10, 11}));
  g.outputs = {g.reduce(Op::ReduceSum, x, {0, 1, 2})};
  EXPECT_EQ(run(g, {{"x", iota({2, 3, 2})}}, f32, {1, 1, 1}), (Values{66}));
}

TEST(Interpreter, ReduceSumAccumulatesInDouble) {
  Graph g;
  g.outputs = {g.reduce(Op::ReduceSum, g.input("x", f32, {3}), {0})};
  // An f32 accumulator would lose both ones: 2^24 + 1 == 2^24 in f32.
  EXPECT_EQ(run(g, {{"x", tensor(f32, {3}, {16777216, 1, 1})}}, f32, {1}), (Values{16777218}));
}

TEST(Interpreter, IntegerReduceWraps) {
  Graph g;
  int x = g.input("x", i8, {3});
  g.outputs = {g.reduce(Op::ReduceSum, x, {0})};
  EXPECT_EQ(run(g, {{"x", tensor(i8, {3}, {100, 100, 100})}}, i8, {1}), (Values{44}));
  Graph h;
  int y = h.input("y", i32, {3});
  h.outputs = {h.reduce(Op::ReduceSum, y, {0})};
  EXPECT_EQ(run(h, {{"y", tensor(i32, {3}, {kI32Max, 1, 1})}}, i32, {1}), (Values{kI32Min + 1}));
  h.outputs = {h.reduce(Op::ReduceMax, y, {0})};
  EXPECT_EQ(run(h, {{"y", tensor(i32, {3}, {-5, -2, -9})}}, i32, {1}), (Values{-2}));
}

TEST(Interpreter, EmptyReduce) {
  // Sum of nothing is 0; max of nothing is the dtype's lowest value.
  struct Case {
    DType t;
    double lowest;
  };
  for (Case c : {Case{f32, -kInf}, Case{f16, -kInf}, Case{i32, kI32Min}, Case{i8, -128}, Case{u8, 0}}) {
    Graph g;
    int x = g.input("x", c.t, {2, 0});
    g.outputs = {g.reduce(Op::ReduceSum, x, {1})};
    EXPECT_EQ(run(g, {{"x", HostTensor(c.t, {2, 0})}}, c.t, {2, 1}), (Values{0, 0}));
    g.outputs = {g.reduce(Op::ReduceMax, x, {1})};
    EXPECT_EQ(run(g, {{"x", HostTensor(c.t, {2, 0})}}, c.t, {2, 1}), (Values{c.lowest, c.lowest}));
  }
}

TEST(Interpreter, ReduceMaxSkipsNaN) {
  Graph g;
  g.outputs = {g.reduce(Op::ReduceMax, g.input("x", f32, {3}), {0})};
  EXPECT_EQ(run(g, {{"x", tensor(f32, {3}, {1, kNaN, -4})}}, f32, {1}), (Values{1}));
}

TEST(Interpreter, Reshape) {
  Graph g;
  g.outputs = {g.reshape(g.input("x", f32, {2, 3}), {3, 1, 2})};
  EXPECT_EQ(run(g, {{"x", iota({2, 3})}}, f32, {3, 1, 2}), (Values{0, 1, 2, 3, 4, 5}));
}

TEST(Interpreter, Permute) {
  Graph g;
  g.outputs = {g.permute(g.input("x", f32, {2, 3}), {1, 0})};
  EXPECT_EQ(run(g, {{"x", iota({2, 3})}}, f32, {3, 2}), (Values{0, 3, 1, 4, 2, 5}));
  Graph h;
  h.outputs = {h.permute(h.input("x", f32, {2, 2, 2}), {2, 0, 1})};
  // out[i][j][k] = x[j][k][i] = 4j + 2k + i
  EXPECT_EQ(run(h, {{"x", iota({2, 2, 2})}}, f32, {2, 2, 2}), (Values{0, 2, 4, 6, 1, 3, 5, 7}));
}

TEST(Interpreter, Expand) {
  Graph g;
  g.outputs = {g.expand(g.input("x", f32, {1, 3}), {2, 3})};
  EXPECT_EQ(run(g, {{"x", iota({1, 3})}}, f32, {2, 3}), (Values{0, 1, 2, 0, 1, 2}));
  Graph h;
  h.outputs = {h.expand(h.input("x", f32, {2, 1}), {2, 3})};
  EXPECT_EQ(run(h, {{"x", iota({2, 1})}}, f32, {2, 3}), (Values{0, 0, 0, 1, 1, 1}));
}

TEST(Interpreter, SliceWithSteps) {
  Graph g;
  g.outputs = {g.slice(g.input("x", f32, {10}), {1}, {8}, {3})};
  EXPECT_EQ(run(g, {{"x", iota({10})}}, f32, {3}), (Values{1, 4, 7}));
  Graph h;
  h.outputs = {h.slice(h.input("x", f32, {3, 4}), {0, 1}, {3, kSliceEnd}, {2, 2})};
  EXPECT_EQ(run(h, {{"x", iota({3, 4})}}, f32, {2, 2}), (Values{1, 3, 9, 11}));
}

TEST(Interpreter, Pad) {
  Graph g;
  g.outputs = {g.pad(g.input("x", f32, {2, 2}), {1, 0}, {0, 1}, 9)};
  EXPECT_EQ(run(g, {{"x", tensor(f32, {2, 2}, {1, 2, 3, 4})}}, f32, {3, 3}), (Values{9, 9, 9, 1, 2, 9, 3, 4, 9}));
  Graph h;  // the pad value is rounded to the dtype too
  h.outputs = {h.pad(h.input("x", u8, {1}), {2}, {1}, 257)};
  EXPECT_EQ(run(h, {{"x", tensor(u8, {1}, {7})}}, u8, {4}), (Values{1, 1, 7, 1}));
}

TEST(Interpreter, Flip) {
  Graph g;
  int x = g.input("x", f32, {2, 3});
  g.outputs = {g.flip(x, {1})};
  EXPECT_EQ(run(g, {{"x", iota({2, 3})}}, f32, {2, 3}), (Values{2, 1, 0, 5, 4, 3}));
  g.outputs = {g.flip(x, {0, 1})};
  EXPECT_EQ(run(g, {{"x", iota({2, 3})}}, f32, {2, 3}), (Values{5, 4, 3, 2, 1, 0}));
}

TEST(Interpreter, GatherWrapsNegativeAndClampsOutOfRange) {
  Graph g;
  g.outputs = {g.gather(g.input("x", f32, {4}), g.input("i", i32, {6}), 0)};
  Inputs in{{"x", tensor(f32, {4}, {10, 20, 30, 40})}, {"i", tensor(i32, {6}, {0, -1, 5, -7, 2, -4})}};
  // -1 -> 3; 5 -> clamped to 3; -7 -> -3 -> clamped to 0; -4 -> 0.
  EXPECT_EQ(run(g, in, f32, {6}), (Values{10, 40, 40, 10, 30, 10}));
}

TEST(Interpreter, GatherInnerAxisAndIndexRank2) {
  Graph g;
  g.outputs = {g.gather(g.input("x", f32, {2, 3}), g.input("i", i32, {2}), 1)};
  Inputs in{{"x", iota({2, 3})}, {"i", tensor(i32, {2}, {2, 0})}};
  EXPECT_EQ(run(g, in, f32, {2, 2}), (Values{2, 0, 5, 3}));
  Graph h;
  h.outputs = {h.gather(h.input("x", f32, {3, 2}), h.input("i", i32, {2, 2}), 0)};
  Inputs in2{{"x", iota({3, 2})}, {"i", tensor(i32, {2, 2}, {2, 0, 1, 1})}};
  EXPECT_EQ(run(h, in2, f32, {2, 2, 2}), (Values{4, 5, 0, 1, 2, 3, 2, 3}));
}

TEST(Interpreter, Contract) {
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {2, 3}), g.input("b", f32, {3, 2}))};
  // [[0 1 2] [3 4 5]] x [[0 1] [2 3] [4 5]]
  EXPECT_EQ(run(g, {{"a", iota({2, 3})}, {"b", iota({3, 2})}}, f32, {2, 2}), (Values{10, 13, 28, 40}));
}

TEST(Interpreter, BatchedContractBroadcasts) {
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {2, 1, 1, 2}), g.input("b", f32, {3, 2, 1}))};
  // a's batches are the rows [1 2] and [3 4]; b's the columns [1 0], [0 1], [1 1].
  Inputs in{{"a", tensor(f32, {2, 1, 1, 2}, {1, 2, 3, 4})}, {"b", tensor(f32, {3, 2, 1}, {1, 0, 0, 1, 1, 1})}};
  EXPECT_EQ(run(g, in, f32, {2, 3, 1, 1}), (Values{1, 2, 3, 3, 4, 7}));
  Graph h;  // a batch of two against one shared matrix
  h.outputs = {h.contract(h.input("a", f32, {2, 1, 2}), h.input("b", f32, {2, 2}))};
  Inputs in2{{"a", tensor(f32, {2, 1, 2}, {1, 2, 3, 4})}, {"b", tensor(f32, {2, 2}, {1, 10, 100, 1000})}};
  EXPECT_EQ(run(h, in2, f32, {2, 1, 2}), (Values{201, 2010, 403, 4030}));
}

TEST(Interpreter, ContractAccumulatesInDoubleAndRounds) {
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {1, 3}), g.input("b", f32, {3, 1}))};
  Inputs in{{"a", tensor(f32, {1, 3}, {16777216, 1, 1})}, {"b", tensor(f32, {3, 1}, {1, 1, 1})}};
  EXPECT_EQ(run(g, in, f32, {1, 1}), (Values{16777218}));
  Graph h;
  h.outputs = {h.contract(h.input("a", f16, {1, 2}), h.input("b", f16, {2, 1}))};
  Inputs in2{{"a", tensor(f16, {1, 2}, {2048, 1})}, {"b", tensor(f16, {2, 1}, {1, 3})}};
  EXPECT_EQ(run(h, in2, f16, {1, 1}), (Values{2052}));
}

TEST(Interpreter, IntegerContractWraps) {
  Graph g;
  g.outputs = {g.contract(g.input("a", i32, {2, 2}), g.input("b", i32, {2, 1}))};
  Inputs in{{"a", tensor(i32, {2, 2}, {65536, 1, kI32Min, kI32Min})},
            {"b", tensor(i32, {2, 1}, {65536, 1})}};
  // 65536^2 + 1 = 2^32 + 1 -> 1; -2^31 * 65536 - 2^31 = -2^47 - 2^31 -> -2^31.
  EXPECT_EQ(run(g, in, i32, {2, 1}), (Values{1, kI32Min}));
  in["b"] = tensor(i32, {2, 1}, {kI32Min, kI32Min});
  // -2^47 - 2^31 -> -2^31; (-2^31)^2 * 2 = 2^63, past int64's range -> 0.
  EXPECT_EQ(run(g, in, i32, {2, 1}), (Values{kI32Min, 0}));
}

// x[m, n] -> sum over n, and x broadcast against a [1, n] row; m and n bound
// to different values, then rebound.
Graph symbolic_graph() {
  Graph g;
  Dim m = Dim::symbol("m", 1, 8), n = Dim::symbol("n", 1, 8);
  int x = g.input("x", f32, {m, n});
  int row = g.input("row", f32, {1, n});
  int sum = g.reduce(Op::ReduceSum, x, {1});
  int added = g.binary(Op::Add, x, g.expand(row, {m, n}));
  int whole = g.slice(x, {0, 0}, {kSliceEnd, kSliceEnd}, {1, 1});
  int turned = g.reshape(g.flip(whole, {0}), {n, m});
  g.outputs = {sum, added, turned};
  return g;
}

TEST(Interpreter, SymbolicDims) {
  Graph g = symbolic_graph();
  std::vector<HostTensor> a = interpret(g, {{"x", iota({2, 3})}, {"row", tensor(f32, {1, 3}, {10, 20, 30})}},
                                        {{"m", 2}, {"n", 3}});
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].sizes, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(values(a[0]), (Values{3, 12}));
  EXPECT_EQ(values(a[1]), (Values{10, 21, 32, 13, 24, 35}));
  EXPECT_EQ(a[2].sizes, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(values(a[2]), (Values{3, 4, 5, 0, 1, 2}));

  std::vector<HostTensor> b = interpret(g, {{"x", iota({3, 2})}, {"row", tensor(f32, {1, 2}, {10, 20})}},
                                        {{"m", 3}, {"n", 2}});
  EXPECT_EQ(b[0].sizes, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(values(b[0]), (Values{1, 5, 9}));
  EXPECT_EQ(values(b[1]), (Values{10, 21, 12, 23, 14, 25}));
  EXPECT_EQ(b[2].sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(values(b[2]), (Values{4, 5, 2, 3, 0, 1}));
}

TEST(Interpreter, SymbolErrors) {
  Graph g = symbolic_graph();
  Inputs in{{"x", iota({2, 3})}, {"row", tensor(f32, {1, 3}, {10, 20, 30})}};
  expect_error([&] { interpret(g, in, {{"m", 2}}); }, {"'n'", "not bound"});
  expect_error([&] { interpret(g, in, {{"m", 2}, {"n", 9}}); }, {"'n'", "9", "[1, 8]"});
  expect_error([&] { interpret(g, in, {{"m", 0}, {"n", 3}}); }, {"'m'", "[1, 8]"});
}

TEST(Interpreter, InputErrors) {
  Graph g;
  g.outputs = {g.unary(Op::Neg, g.input("x", f32, {2, 3}))};
  expect_error([&] { interpret(g, {}); }, {"missing input 'x'"});
  expect_error([&] { interpret(g, {{"y", iota({2, 3})}}); }, {"missing input 'x'"});
  expect_error([&] { interpret(g, {{"x", HostTensor(f16, {2, 3})}}); }, {"'x'", "expected f32[2, 3]", "got f16[2, 3]"});
  expect_error([&] { interpret(g, {{"x", iota({3, 2})}}); }, {"'x'", "expected f32[2, 3]", "got f32[3, 2]"});
  expect_error([&] { interpret(g, {{"x", iota({6})}}); }, {"'x'", "got f32[6]"});
  HostTensor short_data = iota({2, 3});
  short_data.data.resize(8);
  expect_error([&] { interpret(g, {{"x", short_data}}); }, {"'x'", "bytes"});
}

TEST(Interpreter, MalformedGraphsThrow) {
  Graph g;
  g.input("x", f32, {2});
  g.outputs = {1};
  expect_error([&] { interpret(g, {{"x", iota({2})}}); }, {"output"});

  Graph fwd;  // an operand that refers forward
  Node neg;
  neg.op = Op::Neg;
  neg.shape = {2};
  neg.inputs = {1};
  fwd.nodes = {neg};
  fwd.outputs = {0};
  expect_error([&] { interpret(fwd, {}); }, {"neg"});

  Graph gather;  // numpy.take from an empty axis has no answer
  gather.outputs = {gather.gather(gather.input("x", f32, {0}), gather.input("i", i32, {1}), 0)};
  expect_error([&] { interpret(gather, {{"x", HostTensor(f32, {0})}, {"i", HostTensor(i32, {1})}}); },
               {"gather"});
}

}  // namespace
}  // namespace kiln
