// Text form of the Graph IR: round trips, golden text, malformed input.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "kiln/error.h"
#include "kiln/graph.h"
#include "tests/ir/text_fuzz.h"

namespace kiln {
namespace {

// A graph that uses every Op, symbolic dims and an input name needing escapes.
Graph every_op_graph() {
  Graph g;
  g.name = "every_op";
  Dim seq = Dim::symbol("seq", 1, 4096), batch = Dim::symbol("batch", 2, 8);
  int x = g.input("x", f32, {seq, 8});
  int y = g.input("y \"quoted\" \\ name", f32, {seq, 8});
  int c = g.constant(1.5, f32);
  int a = g.binary(Op::Add, x, g.expand(g.reshape(c, {1, 1}), {seq, 8}));
  for (Op op : {Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min}) a = g.binary(op, a, y);
  for (Op op : {Op::Neg, Op::Exp2, Op::Log2, Op::Sqrt, Op::Recip, Op::Sin}) a = g.unary(op, a);
  int lt = g.binary(Op::CmpLt, a, x);
  int eq = g.binary(Op::CmpEq, a, x);
  int w = g.where(lt, a, x);
  int rs = g.reduce(Op::ReduceSum, g.cast(w, f16), {1});
  int rm = g.reduce(Op::ReduceMax, x, {-1, 0});
  int r3 = g.reshape(x, {seq, 2, 4});
  int p = g.permute(r3, {2, 0, 1});
  int s = g.slice(x, {0, 2}, {kSliceEnd, 8}, {1, 3});
  int f = g.flip(r3, {0, 2});
  int m = g.input("m", f32, {4, 6});
  int pd = g.pad(m, {1, 0}, {2, 3}, -0.5);
  int ids = g.input("ids", i32, {3});
  int gt = g.gather(m, ids, -2);
  int bm = g.input("bm", bf16, {batch, 6, 5});
  int ct = g.contract(g.cast(gt, bf16), bm);
  int u = g.cast(g.constant(200, u8, {2}), i8);
  g.outputs = {rs, rm, p, s, f, pd, ct, eq, u, rs};
  return g;
}

std::string error_of(std::string_view text) {
  try {
    parse_graph(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

const char* kTiny = R"(graph tiny(seq in [1, 4096]) {
  %0 = input "x" : f32[seq, 4]
  %1 = const 1.5 : f32[]
  %2 = reshape %1 : f32[1, 1]
  %3 = expand %2 : f32[seq, 4]
  %4 = add %0, %3 : f32[seq, 4]
  %5 = reduce_sum %4 {axes=[1]} : f32[seq, 1]
  %6 = slice %0 {starts=[0, 1], stops=[end, 4], steps=[1, 2]} : f32[seq, 2]
  %7 = pad %0 {lo=[0, 1], hi=[0, 2], value=0} : f32[seq, 7]
  %8 = cast %4 : f16[seq, 4]
  return %4, %5, %8
}
)";

TEST(GraphText, GoldenText) {
  Graph g;
  g.name = "tiny";
  Dim seq = Dim::symbol("seq", 1, 4096);
  int x = g.input("x", f32, {seq, 4});
  int e = g.expand(g.reshape(g.constant(1.5, f32), {1, 1}), {seq, 4});
  int a = g.binary(Op::Add, x, e);
  int r = g.reduce(Op::ReduceSum, a, {1});
  g.slice(x, {0, 1}, {kSliceEnd, 4}, {1, 2});
  g.pad(x, {0, 1}, {0, 2});
  int h = g.cast(a, f16);
  g.outputs = {a, r, h};
  EXPECT_EQ(print(g), kTiny);
  EXPECT_EQ(parse_graph(kTiny), g);
}

TEST(GraphText, RoundTripsEveryOp) {
  Graph g = every_op_graph();
  std::string text = print(g);
  Graph back = parse_graph(text);
  EXPECT_EQ(back, g) << text;
  EXPECT_EQ(print(back), text);
  for (Op op : {Op::Input, Op::Const, Op::Neg, Op::Exp2, Op::Log2, Op::Sqrt, Op::Recip, Op::Sin, Op::Cast,
                Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min, Op::CmpLt, Op::CmpEq, Op::Where,
                Op::ReduceSum, Op::ReduceMax, Op::Reshape, Op::Permute, Op::Expand, Op::Slice, Op::Pad, Op::Flip,
                Op::Gather, Op::Contract})
    EXPECT_NE(text.find(" = " + std::string(op_name(op)) + " "), std::string::npos) << op_name(op);
  EXPECT_NE(text.find("graph every_op(batch in [2, 8], seq in [1, 4096]) {"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("y \"quoted\" \\ name")"), std::string::npos) << text;
}

TEST(GraphText, ImmutableInputsRoundTrip) {
  Graph g;
  int w = g.immutable_input("w", f16, {8, 4});
  g.outputs = {g.contract(w, g.input("x", f16, {4, 1}))};
  std::string text = print(g);
  EXPECT_NE(text.find("%0 = input \"w\" {immutable} : f16[8, 4]"), std::string::npos) << text;
  EXPECT_NE(text.find("%1 = input \"x\" : f16[4, 1]"), std::string::npos) << text;
  EXPECT_EQ(parse_graph(text), g);
  Graph plain = g;
  plain.nodes[0].immutable = false;
  EXPECT_FALSE(plain == g);
  Node n = g.nodes[2];
  n.immutable = true;
  EXPECT_THROW(g.add(n), Error) << "only an input can be immutable";
}

TEST(GraphText, RoundTripsEmptyGraph) {
  Graph g;
  EXPECT_EQ(print(g), "graph main() {\n  return\n}\n");
  EXPECT_EQ(parse_graph(print(g)), g);
}

// Graph::add keeps values as given, so any double must survive, bit for bit.
TEST(GraphText, SpecialDoublesRoundTripBitExactly) {
  const double values[] = {0.1,
                           -0.0,
                           1e300,
                           5e-324,
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::lowest(),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN(),
                           -std::numeric_limits<double>::quiet_NaN(),
                           1.0 / 3};
  Graph g;
  for (double v : values) {
    Node n;
    n.op = Op::Const;
    n.value = v;
    g.add(n);
  }
  int x = g.input("x", f32, {2});
  Node pad;
  pad.op = Op::Pad;
  pad.inputs = {x};
  pad.pad_lo = {1};
  pad.pad_hi = {0};
  pad.value = -std::numeric_limits<double>::infinity();
  pad.shape = {3};
  g.add(pad);
  std::string text = print(g);
  Graph back = parse_graph(text);
  ASSERT_EQ(back.nodes.size(), g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    EXPECT_EQ(std::bit_cast<uint64_t>(back.nodes[i].value), std::bit_cast<uint64_t>(g.nodes[i].value))
        << "node " << i << " in\n" << text;
  EXPECT_EQ(print(back), text);
  EXPECT_NE(text.find("const -nan"), std::string::npos) << text;
  EXPECT_NE(text.find("value=-inf"), std::string::npos) << text;
}

TEST(GraphText, ParsesNormalizedAttributes) {
  // Negative axes and `end` on constant dims read fine; print shows the normal form.
  Graph g = parse_graph(
      "graph main() {\n  %0 = input \"x\" : f32[4, 6]\n  %1 = reduce_max %0 {axes=[-1]} : f32[4, 1]\n"
      "  %2 = slice %0 {starts=[1, 0], stops=[end, end], steps=[2, 1]} : f32[2, 6]\n  return %1, %2\n}\n");
  EXPECT_EQ(g.nodes[1].axes, std::vector<int64_t>{1});
  EXPECT_EQ(g.nodes[2].stops, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(parse_graph(print(g)), g);
}

TEST(GraphText, ErrorsSayWhereAndWhat) {
  std::string e = error_of("graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = bogus %0 : f32[4]\n  return\n}\n");
  EXPECT_NE(e.find("line 3, col 8"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown op 'bogus'"), std::string::npos) << e;
  e = error_of("graph main() {\n  %0 = input \"x\" : f32[4]\n  return %0 %0\n}\n");
  EXPECT_NE(e.find("line 3, col 13: expected ',' or '}', got '%'"), std::string::npos) << e;
}

TEST(GraphText, RejectsMalformedInput) {
  const std::string head = "graph main(n in [1, 8]) {\n  %0 = input \"x\" : f32[n, 4]\n";
  const char* bad[] = {
      "",                                                        // empty input
      "graph",                                                   // truncated header
      "graph main(",                                             // truncated symbol list
      "graph main() {\n  %0 = input \"x\" : f32[4]\n",          // truncated body
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  return %0\n",  // missing '}'
      "graph main() {\n  return\n}\n}\n",                       // unbalanced '}'
      "graph main() {\n  %0 = frobnicate : f32[]\n  return\n}",  // unknown op
      "graph main() {\n  %0 = input \"x\" : f33[4]\n  return\n}",  // bad dtype
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = neg %0 : f32[5]\n  return\n}",  // wrong shape
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = neg %0 : i32[4]\n  return\n}",  // wrong dtype
      "graph main() {\n  %0 = neg %1 : f32[4]\n  %1 = input \"x\" : f32[4]\n  return\n}",  // later node
      "graph main() {\n  %1 = input \"x\" : f32[4]\n  return\n}",  // ids out of order
      "graph main() {\n  %0 = input \"x\" : f32[99999999999999999999]\n  return\n}",  // huge integer
      "graph main() {\n  %0 = input \"x\" : f32[m]\n  return\n}",  // undeclared dim
      "graph main(n in [1, 8]) {\n  %0 = input \"x\" : f32[4]\n  return\n}",  // unused dim
      "graph main(n in [8, 1]) {\n  %0 = input \"x\" : f32[n]\n  return\n}",  // bad bounds
      "graph main(n in [1, 8], n in [1, 8]) {\n  %0 = input \"x\" : f32[n]\n  return\n}",  // twice
      "graph main() {\n  %0 = input \"x : f32[4]\n  return\n}",  // unterminated string
      "graph main() {\n  %0 = input \"x\\q\" : f32[4]\n  return\n}",  // bad escape
      "graph main() {\n  %0 = input \"x\" : f32[4] @\n  return\n}",  // bad character
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = input \"x\" : f32[4]\n  return\n}",  // same name
      "graph main() {\n  %0 = const 1.5f : f32[]\n  return\n}",  // suffix on a value
      "graph main() {\n  %0 = const 1e999 : f32[]\n  return\n}",  // value overflows
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  return %1\n}",  // undefined output
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = add %0 : f32[4]\n  return\n}",  // operand count
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = reduce_sum %0 : f32[1]\n  return\n}",  // no axes
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = flip %0 {axis=[0]} : f32[4]\n  return\n}",  // key
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = slice %0 {starts=[0], stops=[end], steps=[0]} : "
      "f32[4]\n  return\n}",  // zero step
      "graph main() {\n  %0 = input \"x\" : f32[[[[[[[[[[[[[4]]]]]]]]]]]]]\n  return\n}",  // nesting
      "graph 12() {\n  return\n}",  // graph name is not an identifier
      "graph main() {\n  %0 = input \"x\" {mutable} : f32[4]\n  return\n}",      // unknown attribute
      "graph main() {\n  %0 = input \"x\" {immutable : f32[4]\n  return\n}",     // unclosed
      "graph main() {\n  %0 = input \"x\" : f32[4]\n  %1 = neg %0 {immutable} : f32[4]\n  return\n}",
  };
  for (const char* text : bad) {
    EXPECT_THROW(parse_graph(text), Error) << text;
    EXPECT_NE(error_of(text).find("graph text: line "), std::string::npos) << error_of(text);
  }
  EXPECT_NO_THROW(parse_graph(head + "  return %0\n}\n"));
}

TEST(GraphText, FuzzOnlyThrowsKilnError) {
  testing::fuzz_parser(1234, {print(every_op_graph()), kTiny}, "{}[]()%,:=-+\"\\0123456789.aefinxz_ \n\t@", [](const std::string& text) {
    Graph g = parse_graph(text);
    EXPECT_EQ(print(parse_graph(print(g))), print(g)) << text;
  });
}

}  // namespace
}  // namespace kiln
