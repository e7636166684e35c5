// Text form of the Kernel IR: round trips, precedence, golden text, malformed input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "kiln/error.h"
#include "kiln/kernel.h"
#include "tests/ir/text_fuzz.h"

namespace kiln {
namespace {

using B = BinOp;
using U = UnOp;

BufferDecl buf(std::string name, DType dtype, MemScope scope = MemScope::Global, int64_t size = 0, bool out = false) {
  return BufferDecl{std::move(name), dtype, scope, size, out};
}

// A kernel that uses every ExprKind, UnOp, BinOp, LoopKind and MemScope, nested
// blocks and ifs.
Kernel every_kind_kernel() {
  Kernel k;
  k.name = "every_0";
  k.params = {"seq", "n"};
  k.buffers = {buf("x", f32),
               buf("y", f16, MemScope::Global, 0, true),
               buf("ix", i8),
               buf("u", u8, MemScope::Global, 0, true),
               buf("flag", boolean, MemScope::Global, 0, true),
               buf("tile", bf16, MemScope::Shared, 256),
               buf("acc", f32, MemScope::Local, 4),
               buf("w", i32, MemScope::Global, 0, true)};
  Expr i0 = var("i0"), i1 = var("i1"), n = var("n");
  Expr at = binary(B::Add, binary(B::Mul, i0, idx(8)), i1);
  Expr xv = load(0, ValType::f32, at);
  Expr iv = load(2, ValType::i32, at);
  Expr bv = load(4, ValType::b1, at);
  Expr f = xv;
  for (U op : {U::Neg, U::Exp2, U::Log2, U::Sqrt, U::Recip, U::Sin}) f = unary(op, f);
  for (B op : {B::Add, B::Sub, B::Mul, B::Div, B::Max, B::Min}) f = binary(op, f, const_f32(1.5));
  Expr cond = binary(B::Or,
                     binary(B::And, binary(B::CmpLt, f, const_f32(1e30)),
                            unary(U::Not, binary(B::CmpEq, xv, const_f32(-2)))),
                     const_int(ValType::b1, 0));
  std::vector<Stmt> inner = {
      store(1, at, round_to(f16, select(cond, f, const_f32(-0.0)))),
      store(2, at, round_to(i8, binary(B::Mod, unary(U::Neg, iv), const_int(ValType::i32, -7)))),
      store(3, at, round_to(u8, cast(ValType::i32, f))),
      store(4, at, binary(B::Max, unary(U::Not, bv), binary(B::CmpLt, bv, const_int(ValType::b1, 1)))),
      store(5, i1, round_to(bf16, cast(ValType::f32, iv))),
      store(6, binary(B::Mod, i1, idx(4)), cast(ValType::f32, cast(ValType::b1, iv))),
      store(7, at, binary(B::Min, iv, cast(ValType::i32, binary(B::Max, i0, unary(U::Neg, n))))),
      store(0, cast(ValType::i64, iv), load(6, ValType::f32, idx(3))),
      block({if_then(binary(B::CmpLt, i0, n), {block({}), store(7, idx(0), const_int(ValType::i32, 5))})}),
  };
  Stmt nest = for_loop(
      "i0", var("seq"), LoopKind::Parallel,
      {for_loop("i1", idx(8), LoopKind::Serial,
                {for_loop("i2", idx(2), LoopKind::Unrolled,
                          {for_loop("i3", binary(B::Div, n, idx(4)), LoopKind::Vectorized, inner)})})});
  Stmt gpu = for_loop("b", n, LoopKind::GpuBlock,
                      {for_loop("t", idx(32), LoopKind::GpuThread,
                                {store(0, binary(B::Add, var("b"), var("t")), const_f32(0))})});
  k.body = block({nest, gpu, block({block({})}), if_then(const_int(ValType::b1, 1), {})});
  return k;
}

// A kernel over params a, b, c, d and one f32 buffer x, for expressions.
Kernel expr_kernel(std::vector<Expr> indices = {}) {
  Kernel k;
  k.name = "exprs";
  k.params = {"a", "b", "c", "d"};
  k.buffers = {buf("x", f32, MemScope::Global, 0, true)};
  std::vector<Stmt> body;
  for (const Expr& e : indices) body.push_back(store(0, e, const_f32(0)));
  k.body = block(body);
  return k;
}

std::string error_of(std::string_view text) {
  try {
    parse_kernel(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

const char* kGolden = R"(kernel add_0(seq) {
  buffer x: f32 global
  buffer y: f16 global out
  buffer acc: f32 local[1]
  parallel for i0 in seq {
    serial for i1 in 1024 {
      y[i0 * 1024 + i1] = round<f16>(add(x[i0 * 1024 + i1], 1.5f))
    }
  }
  block {
    if cmplt(seq, 10) {
      acc[0] = -inff
    }
  }
}
)";

TEST(KernelText, GoldenText) {
  Kernel k;
  k.name = "add_0";
  k.params = {"seq"};
  k.buffers = {buf("x", f32), buf("y", f16, MemScope::Global, 0, true), buf("acc", f32, MemScope::Local, 1)};
  Expr at = binary(B::Add, binary(B::Mul, var("i0"), idx(1024)), var("i1"));
  Stmt st = store(1, at, round_to(f16, binary(B::Add, load(0, ValType::f32, at), const_f32(1.5))));
  k.body = block({for_loop("i0", var("seq"), LoopKind::Parallel, {for_loop("i1", idx(1024), LoopKind::Serial, {st})}),
                  block({if_then(binary(B::CmpLt, var("seq"), idx(10)),
                                 {store(2, idx(0), const_f32(-std::numeric_limits<float>::infinity()))})})});
  EXPECT_EQ(print(k), kGolden);
  EXPECT_EQ(parse_kernel(kGolden), k);
}

TEST(KernelText, RoundTripsEveryKind) {
  Kernel k = every_kind_kernel();
  std::string text = print(k);
  Kernel back = parse_kernel(text);
  EXPECT_EQ(back, k) << text;
  EXPECT_EQ(print(back), text);
  for (const char* word : {"exp2(", "log2(", "sqrt(", "recip(", "sin(", "neg(", "not(", "add(", "sub(", "mul(",
                           "div(", "max(", "min(", "mod(", "cmplt(", "cmpeq(", "and(", "or(", "select(",
                           "cast<i64>(", "cast<bool>(", "round<bf16>(", "parallel for", "serial for", "unrolled for",
                           "vectorized for", "gpu_block for", "gpu_thread for", "shared[256]", "local[4]", "block {",
                           "if true {", "-7i32", "false"})
    EXPECT_NE(text.find(word), std::string::npos) << word << " in\n" << text;
}

// An immutable global buffer prints as such; a buffer named `immutable` (or
// `out`) that the next line stores to is not taken for the word.
TEST(KernelText, ImmutableBuffersRoundTrip) {
  Kernel k;
  k.name = "gemv";
  k.buffers = {buf("w", f32), buf("immutable", f32, MemScope::Global, 0, true)};
  k.buffers[0].immutable = true;
  k.body = block({store(1, idx(0), load(0, ValType::f32, idx(0)))});
  std::string text = print(k);
  EXPECT_NE(text.find("buffer w: f32 global immutable\n"), std::string::npos) << text;
  EXPECT_EQ(parse_kernel(text), k) << text;
  Kernel plain = k;
  plain.buffers[0].immutable = false;
  EXPECT_FALSE(plain == k);
  EXPECT_EQ(parse_kernel(print(plain)), plain);
  Kernel stored = parse_kernel("kernel k() {\n  buffer immutable: f32 global\n  immutable[0] = 1f\n}\n");
  EXPECT_FALSE(stored.buffers[0].immutable);
}

TEST(KernelText, RoundTripsEmptyKernel) {
  Kernel k;
  k.name = "empty";
  k.body = block({});
  EXPECT_EQ(print(k), "kernel empty() {\n}\n");
  EXPECT_EQ(parse_kernel(print(k)), k);
}

TEST(KernelText, AllReduceRoundTrips) {
  const char* text = R"(kernel rows(n) {
  buffer x: f32 global
  buffer acc: f32 local[1]
  buffer s: i32 local[1]
  gpu_block for b in n {
    gpu_thread for t in 256 {
      allreduce acc[0] max over t
      allreduce s[0] add over t
      allreduce acc[0] min over b
    }
  }
}
)";
  Kernel k;
  k.name = "rows";
  k.params = {"n"};
  k.buffers = {buf("x", f32), buf("acc", f32, MemScope::Local, 1), buf("s", i32, MemScope::Local, 1)};
  k.body = block({for_loop("b", var("n"), LoopKind::GpuBlock,
                           {for_loop("t", idx(256), LoopKind::GpuThread,
                                     {all_reduce(1, B::Max, "t"), all_reduce(2, B::Add, "t"), all_reduce(1, B::Min, "b")})})});
  EXPECT_EQ(print(k), text);
  EXPECT_EQ(parse_kernel(text), k);
  Kernel other = k;
  other.body = block({for_loop("b", var("n"), LoopKind::GpuBlock,
                               {for_loop("t", idx(256), LoopKind::GpuThread,
                                         {all_reduce(1, B::Add, "t"), all_reduce(2, B::Add, "t"), all_reduce(1, B::Min, "b")})})});
  EXPECT_FALSE(other == k) << "the combine is part of the statement";
  EXPECT_THROW(all_reduce(1, B::Sub, "t"), Error);
}

TEST(KernelText, InfixKeepsTheExactTree) {
  Expr a = var("a"), b = var("b"), c = var("c"), d = var("d");
  auto bin = [](B op, Expr x, Expr y) { return binary(op, x, y); };
  const std::pair<Expr, const char*> cases[] = {
      {bin(B::Sub, a, bin(B::Sub, b, c)), "a - (b - c)"},
      {bin(B::Sub, bin(B::Sub, a, b), c), "a - b - c"},
      {bin(B::Sub, a, bin(B::Add, b, c)), "a - (b + c)"},
      {bin(B::Add, a, bin(B::Add, b, c)), "a + (b + c)"},
      {bin(B::Mul, a, bin(B::Add, b, c)), "a * (b + c)"},
      {bin(B::Mul, bin(B::Add, a, b), c), "(a + b) * c"},
      {bin(B::Add, a, bin(B::Mul, b, c)), "a + b * c"},
      {bin(B::Div, a, bin(B::Mul, b, c)), "a / (b * c)"},
      {bin(B::Mul, bin(B::Div, a, b), c), "a / b * c"},
      {bin(B::Mod, a, bin(B::Mod, b, c)), "a % (b % c)"},
      {bin(B::Sub, bin(B::Mul, a, b), bin(B::Mod, c, idx(4))), "a * b - c % 4"},
      {bin(B::Sub, a, idx(-3)), "a - -3"},
      {bin(B::Add, idx(std::numeric_limits<int64_t>::min()), a), "-9223372036854775808 + a"},
      {bin(B::Mul, bin(B::Max, bin(B::Add, a, b), c), d), "max(a + b, c) * d"},
      {bin(B::Min, a, idx(std::numeric_limits<int64_t>::max())), "min(a, 9223372036854775807)"},
      {cast(ValType::i64, bin(B::Add, cast(ValType::i32, a), const_int(ValType::i32, -2147483648LL))),
       "cast<i64>(add(cast<i32>(a), -2147483648i32))"},
      {bin(B::Mul, bin(B::Mul, bin(B::Add, a, b), bin(B::Sub, c, d)), bin(B::Mod, a, b)),
       "(a + b) * (c - d) * (a % b)"},
  };
  std::vector<Expr> all;
  for (const auto& [e, text] : cases) {
    EXPECT_EQ(print(e, expr_kernel()), text);
    all.push_back(e);
  }
  Kernel k = expr_kernel(all);
  EXPECT_EQ(parse_kernel(print(k)), k) << print(k);
}

TEST(KernelText, ParsesUnspacedAndRedundantParentheses) {
  Kernel k = parse_kernel("kernel exprs(a, b, c, d) {\n buffer x: f32 global out\n x[((a))-b-c*-2] = 0f\n}");
  Expr a = var("a"), b = var("b"), c = var("c");
  EXPECT_EQ(k, expr_kernel({binary(B::Sub, binary(B::Sub, a, b), binary(B::Mul, c, idx(-2)))}));
}

TEST(KernelText, SpecialFloatsRoundTripBitExactly) {
  using L = std::numeric_limits<float>;
  const float values[] = {0.1f, -0.0f, 1e30f, L::denorm_min(), L::min(), L::max(), L::lowest(), L::infinity(),
                          -L::infinity(), 1.0f / 3, 16777216.0f};
  std::vector<Expr> stores;
  for (float v : values) stores.push_back(binary(B::Add, load(0, ValType::f32, idx(0)), const_f32(v)));
  Kernel k = expr_kernel();
  std::vector<Stmt> body;
  for (const Expr& e : stores) body.push_back(store(0, idx(0), e));
  k.body = block(body);
  std::string text = print(k);
  EXPECT_EQ(parse_kernel(text), k) << text;
  EXPECT_NE(text.find(" -inff)"), std::string::npos) << text;
  EXPECT_NE(text.find(" inff)"), std::string::npos) << text;
  EXPECT_NE(text.find(" -0f)"), std::string::npos) << text;

  // NaN never compares equal, so check the text and the bits instead.
  k.body = block({store(0, idx(0), const_f32(L::quiet_NaN())), store(0, idx(1), const_f32(-L::quiet_NaN()))});
  text = print(k);
  EXPECT_NE(text.find("x[0] = nanf\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x[1] = -nanf\n"), std::string::npos) << text;
  Kernel back = parse_kernel(text);
  EXPECT_EQ(print(back), text);
  EXPECT_TRUE(std::isnan(back.body->body[0]->value->fval));
  EXPECT_TRUE(std::signbit(back.body->body[1]->value->fval));
}

TEST(KernelText, NestingWithinTheLimitParses) {
  std::string open, close;
  for (int i = 0; i < 60; ++i) {
    open += "block {\n";
    close += "}\n";
  }
  std::string e = "a";
  for (int i = 0; i < 60; ++i) e = "(" + e + " + b)";
  Kernel k = parse_kernel("kernel exprs(a, b) {\n buffer x: f32 global\n" + open + "x[" + e + "] = 0f\n" + close +
                          "}\n");
  EXPECT_EQ(parse_kernel(print(k)), k);
}

TEST(KernelText, ErrorsSayWhereAndWhat) {
  std::string e = error_of("kernel k(n) {\n  buffer x: f32 global\n  serial for i in n {\n    x[j] = 0f\n  }\n}\n");
  EXPECT_NE(e.find("line 4, col 7: unknown variable 'j'"), std::string::npos) << e;
  e = error_of("kernel k() {\n  buffer x: f32 global\n  x[0] = add(1f, 1)\n}\n");
  EXPECT_NE(e.find("line 3, col 10: kernel IR: add of f32 and i64"), std::string::npos) << e;
}

TEST(KernelText, RejectsMalformedInput) {
  const std::string head = "kernel k(n) {\n  buffer x: f32 global\n  buffer y: i32 local[4]\n";
  const std::string bad_bodies[] = {
      "  serial for i in 4 {\n    x[i] = 0f\n",  // truncated: unbalanced braces
      "  x[0] = 0f\n}\n}\n",                      // one '}' too many
      "  x[0] = frob(1f)\n}\n",                   // unknown function
      "  z[0] = 0f\n}\n",                         // unknown buffer
      "  x[0] = z[0]\n}\n",                       // unknown buffer in a load
      "  x[j] = 0f\n}\n",                         // unknown variable
      "  serial for i in 4 {\n  }\n  x[i] = 0f\n}\n",  // loop variable out of scope
      "  x[0] = add(1f, 1)\n}\n",                 // operand types differ
      "  x[true + 1] = 0f\n}\n",                  // infix on bool
      "  x[1f] = 0f\n}\n",                        // f32 index
      "  x[99999999999999999999] = 0f\n}\n",      // huge integer
      "  y[0] = 3000000000i32\n}\n",              // i32 out of range
      "  x[1.5] = 0f\n}\n",                       // float without 'f'
      "  x[0] = 2u8\n}\n",                        // unknown suffix
      "  x[0] = cast<i64>(n)\n}\n",               // no-op cast
      "  x[0] = round<f32>(1f)\n}\n",             // no-op round
      "  x[0] = round<f16>(n)\n}\n",              // round of an i64
      "  x[0] = add(1f, 2f, 3f)\n}\n",            // too many arguments
      "  if 1 {\n  }\n}\n",                       // non-bool condition
      "  serial for i in 1f {\n  }\n}\n",         // f32 extent
      "  fast for i in 4 {\n  }\n}\n",            // unknown loop kind
      "  x[0] = 1e99f\n}\n",                      // f32 overflow
      "  x[0] = cast<f64>(n)\n}\n",               // unknown value type
      "  x[0] = -n\n}\n",                         // '-' before a non-number
      "  x[0] 0f\n}\n",                           // missing '='
      "  x[0] = 0f $\n}\n",                       // bad character
      "  x[0] = 0f\n  buffer z: f32 global\n}\n",  // buffer after a statement
      "  serial for i in 4 {\n    allreduce x[0] add over i\n  }\n}\n",   // allreduce of a global buffer
      "  serial for i in 4 {\n    allreduce y[1] add over i\n  }\n}\n",   // not element 0
      "  serial for i in 4 {\n    allreduce y[0] sub over i\n  }\n}\n",   // not add, max or min
      "  serial for i in 4 {\n    allreduce y[0] frob over i\n  }\n}\n",  // unknown op
      "  serial for i in 4 {\n    allreduce y[0] add i\n  }\n}\n",        // missing 'over'
      "  allreduce y[0] add over n\n}\n",                                    // a param, not a loop
      "  allreduce y[0] add over j\n}\n",                                    // unknown variable
      "  allreduce z[0] add over n\n}\n",                                    // unknown buffer
  };
  const std::string bad_texts[] = {
      "",
      "kernel",
      "kernel k(",
      "kernel k(n, n) {\n}\n",
      "kernel 5() {\n}\n",
      "kernel k() {\n  buffer x: f33 global\n}\n",
      "kernel k() {\n  buffer x: f32 private\n}\n",
      "kernel k() {\n  buffer x: f32 local[4] immutable\n}\n",  // only a global buffer is immutable
      "kernel k() {\n  buffer x: f32 local[-1]\n}\n",
      "kernel k() {\n  buffer x: f32 global\n  buffer x: f32 global\n}\n",
      "kernel k() {\n}\ntrailing",
      std::string("kernel k() {\n") + '\0' + "}\n",
      "kernel k() {\n  buffer x: f32 global\n  x[" + std::string(100000, '(') + "0" + std::string(100000, ')') +
          "] = 0f\n}\n",
      "kernel k() {\n  buffer x: f32 global\n  x[0] = " + [] {
        std::string s;
        for (int i = 0; i < 100000; ++i) s += "neg(";
        return s + "1f" + std::string(100000, ')');
      }() + "\n}\n",
      "kernel k() {\n  buffer x: f32 global\n  x[" + [] {
        std::string s = "0";
        for (int i = 0; i < 100000; ++i) s += " + 1";
        return s;
      }() + "] = 0f\n}\n",
      [] {
        std::string s = "kernel k() {\n";
        for (int i = 0; i < 100000; ++i) s += "block {";
        return s + std::string(100001, '}');
      }(),
  };
  std::vector<std::string> all(std::begin(bad_texts), std::end(bad_texts));
  for (const std::string& body : bad_bodies) all.push_back(head + body);
  for (const std::string& text : all) {
    EXPECT_THROW(parse_kernel(text), Error) << text.substr(0, 200);
    EXPECT_NE(error_of(text).find("kernel text: line "), std::string::npos) << error_of(text);
  }
  EXPECT_NO_THROW(parse_kernel(head + "  x[n] = 0f\n  y[0] = 1i32\n}\n"));
}

TEST(KernelText, FuzzOnlyThrowsKilnError) {
  testing::fuzz_parser(99, {print(every_kind_kernel()), kGolden}, "{}[]()<>%,:=-+*/0123456789.efinx_ \n", [](const std::string& text) {
    Kernel k = parse_kernel(text);
    EXPECT_EQ(print(parse_kernel(print(k))), print(k)) << text;
  });
}

}  // namespace
}  // namespace kiln
