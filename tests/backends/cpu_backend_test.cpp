// The CPU backend end to end: hand-built kernels run through make_cpu_device()
// and are checked against the same computation in plain C++.
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

#include "backends/cpu/cpu_device.h"
#include "codegen/factor_sums.h"
#include "kiln/error.h"
#include "kiln/kernel.h"
#include "runtime/thread_pool.h"
#include "tests/backends/kernel_testing.h"

namespace kiln {
namespace {

using testing::Bytes;
using testing::from_bytes;
using testing::global;
using testing::launch;
using testing::map_kernel;
using testing::random_float_bits;
using testing::random_floats;
using testing::random_ints;
using testing::run;
using testing::run_map;
using testing::to_bytes;
constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

Device& cpu() {
  static std::shared_ptr<Device> device = make_cpu_device();
  return *device;
}

BufferDecl local(std::string name, DType t, int64_t size) {
  return {std::move(name), t, MemScope::Local, size, false};
}

std::mt19937& rng() {
  static std::mt19937 gen(1234);
  return gen;
}

// Distance in units in the last place between two finite floats.
int64_t ulps(float a, float b) {
  auto key = [](float f) {
    int32_t i = std::bit_cast<int32_t>(f);
    return i < 0 ? int64_t(kIntMin) - i : int64_t(i);
  };
  return std::llabs(key(a) - key(b));
}

void expect_near_rel(float got, float want, float rel, size_t i) {
  EXPECT_NEAR(got, want, rel * std::max(1.0f, std::fabs(want))) << "at " << i;
}

int32_t wrap(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

// --- Kernels with loops, params and local buffers ---

TEST(CpuBackend, ParallelAddCompiledOnceLaunchedWithTwoSizes) {
  Kernel k = map_kernel({f32, f32}, f32, [](auto& a) { return binary(BinOp::Add, a[0], a[1]); });
  std::shared_ptr<Executable> exe = cpu().compile(k);
  EXPECT_EQ(exe->name(), "map");
  for (int64_t n : {1000, 37}) {
    std::vector<float> a = random_floats(rng(), 1000), b = random_floats(rng(), 1000), out(1000, -123.0f);
    auto result = from_bytes<float>(launch(cpu(), *exe, {to_bytes(a), to_bytes(b), to_bytes(out)}, {n})[2]);
    for (int64_t i = 0; i < 1000; ++i) {
      if (i < n)
        expect_near_rel(result[i], a[i] + b[i], 1e-6f, i);
      else
        EXPECT_EQ(result[i], -123.0f) << "wrote past n at " << i;
    }
  }
}

TEST(CpuBackend, ReductionWithLocalAccumulator) {
  const int64_t rows = 67, cols = 301;
  Kernel k;
  k.name = "row_sum";
  k.buffers = {global("x", f32), global("y", f32, true), local("acc", f32, 1)};
  Expr acc = load(2, ValType::f32, idx(0));
  Expr x = load(0, ValType::f32, var("r") * idx(cols) + var("c"));
  k.body = block({for_loop("r", idx(rows), LoopKind::Parallel,
                           {store(2, idx(0), const_f32(0)),
                            for_loop("c", idx(cols), LoopKind::Serial,
                                     {store(2, idx(0), binary(BinOp::Add, acc, x))}),
                            store(1, var("r"), acc)})});
  std::vector<float> in = random_floats(rng(), rows * cols);
  auto out = from_bytes<float>(run(cpu(), k, {to_bytes(in), Bytes(rows * 4)})[1]);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0, abs_sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += in[r * cols + c], abs_sum += std::fabs(in[r * cols + c]);
    EXPECT_NEAR(out[r], sum, 1e-5 * abs_sum) << "row " << r;
  }
}

// factor_sums (the CUDA emitter's pass): y[r] = sum over groups g of
// sum over v of s[r, g] * (w[r, g, v] - 8) * x[g, v], a q4 GEMV's shape with
// the group's scale per g, becomes part = sum over v of (w - 8) * x, then
// acc += s * part: the rewritten kernel runs here and matches plain C++ (and
// the original kernel) within f32 rounding; sums with no fixed factor, or
// whose loop is not unrolled, stay as they are.
TEST(CpuBackend, FactoredSumsKeepTheirValues) {
  const int64_t rows = 37, groups = 5, width = 32;
  auto make = [&](LoopKind inner) {
    Kernel k;
    k.name = "q4ish";
    k.buffers = {global("w", f32), global("s", f32), global("x", f32), global("y", f32, true), local("acc", f32, 1)};
    Expr acc = load(4, ValType::f32, idx(0));
    Expr g = var("r") * idx(groups) + var("g");
    Expr w = load(0, ValType::f32, g * idx(width) + var("v"));
    Expr s = load(1, ValType::f32, g);
    Expr x = load(2, ValType::f32, var("g") * idx(width) + var("v"));
    Expr term = (w - const_f32(8)) * s * x;
    k.body = block({for_loop("r", idx(rows), LoopKind::Parallel,
                             {store(4, idx(0), const_f32(0)),
                              for_loop("g", idx(groups), LoopKind::Unrolled,
                                       {for_loop("v", idx(width), inner, {store(4, idx(0), acc + term)})}),
                              store(3, var("r"), acc)})});
    return k;
  };
  Kernel k = make(LoopKind::Unrolled), f = factor_sums(k);
  ASSERT_EQ(f.buffers.size(), k.buffers.size() + 1);  // one partial sum: the v loop (g's sum is not one store)
  EXPECT_EQ(f.buffers.back().scope, MemScope::Local);
  std::string text = print(f);
  EXPECT_NE(text.find("mul(s["), std::string::npos) << text;  // the scale multiplies the partial sum once
  EXPECT_EQ(print(factor_sums(make(LoopKind::Serial))), print(make(LoopKind::Serial)));
  std::vector<float> w(rows * groups * width), s = random_floats(rng(), rows * groups, 0.01f, 0.1f),
                     x = random_floats(rng(), groups * width, 0.1f, 2.0f);
  for (float& v : w) v = float(std::uniform_int_distribution<int>(0, 15)(rng()));
  std::vector<Bytes> bufs = {to_bytes(w), to_bytes(s), to_bytes(x), Bytes(rows * 4)};
  auto got = from_bytes<float>(run(cpu(), f, bufs)[3]), orig = from_bytes<float>(run(cpu(), k, bufs)[3]);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0, abs_sum = 0;
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t v = 0; v < width; ++v) {
        double t = double(s[r * groups + g]) * (w[(r * groups + g) * width + v] - 8) * x[g * width + v];
        sum += t, abs_sum += std::fabs(t);
      }
    EXPECT_NEAR(got[r], sum, 1e-5 * abs_sum) << "row " << r;
    EXPECT_NEAR(got[r], orig[r], 2e-5 * abs_sum) << "row " << r;
  }
}

TEST(CpuBackend, NestedLoopsMatmul) {
  const int64_t m = 13, n = 17, kk = 29;
  Kernel k;
  k.name = "matmul";
  k.buffers = {global("a", f32), global("b", f32), global("c", f32, true), local("acc", f32, 1)};
  Expr a = load(0, ValType::f32, var("i") * idx(kk) + var("k"));
  Expr b = load(1, ValType::f32, var("k") * idx(n) + var("j"));
  Expr acc = load(3, ValType::f32, idx(0));
  k.body = block({for_loop(
      "i", idx(m), LoopKind::Parallel,
      {for_loop("j", idx(n), LoopKind::Serial,
                {store(3, idx(0), const_f32(0)),
                 for_loop("k", idx(kk), LoopKind::Serial,
                          {store(3, idx(0), binary(BinOp::Add, acc, binary(BinOp::Mul, a, b)))}),
                 store(2, var("i") * idx(n) + var("j"), acc)})})});
  std::vector<float> av = random_floats(rng(), m * kk), bv = random_floats(rng(), kk * n);
  auto c = from_bytes<float>(run(cpu(), k, {to_bytes(av), to_bytes(bv), Bytes(m * n * 4)})[2]);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double want = 0, scale = 0;
      for (int64_t p = 0; p < kk; ++p)
        want += double(av[i * kk + p]) * bv[p * n + j], scale += std::fabs(av[i * kk + p] * bv[p * n + j]);
      EXPECT_NEAR(c[i * n + j], want, 1e-5 * scale) << i << "," << j;
    }
}

// y[i*16 + j] = x*2 + 1 with the inner loop of each kind, inside a parallel loop
// and alone at the top level.
TEST(CpuBackend, LoopKinds) {
  const int64_t n = 16 * 20;
  for (LoopKind kind : {LoopKind::Serial, LoopKind::Unrolled, LoopKind::Vectorized}) {
    for (bool parallel : {true, false}) {
      // Unrolled and vectorized loops need constant extents (the emitter carries them out).
      if (!parallel && kind != LoopKind::Serial) continue;
      Kernel k;
      k.name = "kinds";
      k.params = {"n"};
      k.buffers = {global("x", f32), global("y", f32, true)};
      Expr flat = parallel ? var("i") * idx(16) + var("j") : var("j");
      Expr value = binary(BinOp::Add, binary(BinOp::Mul, load(0, ValType::f32, flat), const_f32(2)),
                          const_f32(1));
      Stmt inner = for_loop("j", parallel ? idx(16) : var("n"), kind, {store(1, flat, value)});
      k.body = parallel ? block({for_loop("i", var("n") / idx(16), LoopKind::Parallel, {inner})})
                        : block({inner});
      std::vector<float> x = random_floats(rng(), n);
      auto y = from_bytes<float>(run(cpu(), k, {to_bytes(x), Bytes(n * 4)}, {n})[1]);
      for (int64_t i = 0; i < n; ++i) expect_near_rel(y[i], x[i] * 2 + 1, 1e-6f, i);
      EXPECT_NE(cpu().target_source(k).find("define"), std::string::npos);
    }
  }
}

TEST(CpuBackend, SelectAndIf) {
  const size_t n = 500;
  std::vector<float> a = random_floats(rng(), n), b = random_floats(rng(), n);
  Kernel sel = map_kernel({f32, f32}, f32, [](auto& v) {
    return select(binary(BinOp::CmpLt, v[0], v[1]), binary(BinOp::Mul, v[0], const_f32(2)), v[1]);
  });
  auto got = run_map<float>(cpu(), sel, {to_bytes(a), to_bytes(b)}, n);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(got[i], a[i] < b[i] ? a[i] * 2 : b[i]) << i;

  Kernel k;
  k.name = "abs_if_negative";
  k.buffers = {global("x", f32), global("y", f32, true)};
  Expr x = load(0, ValType::f32, var("i"));
  k.body = block({for_loop("i", idx(n), LoopKind::Parallel,
                           {if_then(binary(BinOp::CmpLt, x, const_f32(0)),
                                    {store(1, var("i"), unary(UnOp::Neg, x))})})});
  std::vector<float> y(n, 7.0f);
  auto out = from_bytes<float>(run(cpu(), k, {to_bytes(a), to_bytes(y)})[1]);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] < 0 ? -a[i] : 7.0f) << i;
}

// --- Operators ---

TEST(CpuBackend, UnaryF32) {
  const size_t n = 1000;
  std::vector<float> x = random_floats(rng(), n, 0.01f, 50.0f);
  std::vector<float> pos(n);
  for (size_t i = 0; i < n; ++i) pos[i] = std::fabs(x[i]);
  struct Case {
    UnOp op;
    bool positive;
    std::function<float(float)> ref;
    int64_t max_ulps;
  };
  const Case cases[] = {
      {UnOp::Neg, false, [](float v) { return -v; }, 0},
      {UnOp::Exp2, false, [](float v) { return std::exp2(v); }, 4},
      {UnOp::Log2, true, [](float v) { return std::log2(v); }, 4},
      {UnOp::Sqrt, true, [](float v) { return std::sqrt(v); }, 0},
      {UnOp::Recip, false, [](float v) { return 1.0f / v; }, 1},
      {UnOp::Sin, false, [](float v) { return std::sin(v); }, 4},
  };
  for (const Case& c : cases) {
    const std::vector<float>& in = c.positive ? pos : x;
    Kernel k = map_kernel({f32}, f32, [&](auto& a) { return unary(c.op, a[0]); });
    auto got = run_map<float>(cpu(), k, {to_bytes(in)}, n);
    for (size_t i = 0; i < n; ++i)
      EXPECT_LE(ulps(got[i], c.ref(in[i])), c.max_ulps)
          << unop_name(c.op) << "(" << in[i] << ") = " << got[i] << ", want " << c.ref(in[i]);
  }
}

TEST(CpuBackend, NegI32WrapsAndNotBool) {
  std::vector<int32_t> x = random_ints(rng(), 200);
  x.insert(x.end(), {kIntMin, kIntMax, 0, -1});
  Kernel neg = map_kernel({i32}, i32, [](auto& a) { return unary(UnOp::Neg, a[0]); });
  auto got = run_map<int32_t>(cpu(), neg, {to_bytes(x)}, x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], wrap(-int64_t(x[i]))) << x[i];

  std::vector<uint8_t> b = {0, 1, 1, 0, 1};
  Kernel lnot = map_kernel({boolean}, boolean, [](auto& a) { return unary(UnOp::Not, a[0]); });
  auto nb = run_map<uint8_t>(cpu(), lnot, {to_bytes(b)}, b.size());
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(nb[i], b[i] ? 0 : 1) << i;
}

TEST(CpuBackend, BinaryF32) {
  const size_t n = 1000;
  std::vector<float> a = random_floats(rng(), n), b = random_floats(rng(), n);
  for (size_t i = 0; i < n; i += 5) b[i] = a[i];  // so CmpEq sees equal pairs
  struct Case {
    BinOp op;
    std::function<float(float, float)> ref;
  };
  const Case arith[] = {
      {BinOp::Add, [](float x, float y) { return x + y; }},
      {BinOp::Sub, [](float x, float y) { return x - y; }},
      {BinOp::Mul, [](float x, float y) { return x * y; }},
      {BinOp::Div, [](float x, float y) { return x / y; }},
      {BinOp::Max, [](float x, float y) { return std::fmax(x, y); }},
      {BinOp::Min, [](float x, float y) { return std::fmin(x, y); }},
  };
  for (const Case& c : arith) {
    Kernel k = map_kernel({f32, f32}, f32, [&](auto& v) { return binary(c.op, v[0], v[1]); });
    auto got = run_map<float>(cpu(), k, {to_bytes(a), to_bytes(b)}, n);
    for (size_t i = 0; i < n; ++i) {
      SCOPED_TRACE(binop_name(c.op));
      expect_near_rel(got[i], c.ref(a[i], b[i]), 1e-6f, i);
    }
  }
  for (BinOp op : {BinOp::CmpLt, BinOp::CmpEq}) {
    Kernel k = map_kernel({f32, f32}, boolean, [&](auto& v) { return binary(op, v[0], v[1]); });
    auto got = run_map<uint8_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, n);
    for (size_t i = 0; i < n; ++i)
      EXPECT_EQ(got[i], op == BinOp::CmpLt ? a[i] < b[i] : a[i] == b[i]) << binop_name(op) << " " << i;
  }
}

TEST(CpuBackend, CompareWithNaNIsFalse) {
  std::vector<float> a = {kNaN, 1.0f, kNaN}, b = {1.0f, kNaN, kNaN};
  for (BinOp op : {BinOp::CmpLt, BinOp::CmpEq}) {
    Kernel k = map_kernel({f32, f32}, boolean, [&](auto& v) { return binary(op, v[0], v[1]); });
    for (uint8_t r : run_map<uint8_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, 3)) EXPECT_EQ(r, 0);
  }
}

int32_t ref_div(int32_t a, int32_t b) {
  if (b == 0) return 0;
  if (b == -1) return wrap(-int64_t(a));
  return a / b;
}

int32_t ref_mod(int32_t a, int32_t b) { return b == 0 || b == -1 ? 0 : a % b; }

TEST(CpuBackend, BinaryI32) {
  std::vector<int32_t> a = random_ints(rng(), 1000), b = random_ints(rng(), 1000);
  std::vector<int32_t> small = random_ints(rng(), 1000, -100, 100);
  a.insert(a.end(), small.begin(), small.end());
  b.insert(b.end(), small.rbegin(), small.rend());
  const std::pair<int32_t, int32_t> special[] = {
      {kIntMin, -1}, {kIntMin, 0}, {5, 0}, {0, 0}, {-7, 0}, {7, -1}, {kIntMax, -1},
      {7, 2}, {-7, 2}, {7, -2}, {-7, -2}, {kIntMin, 1}, {kIntMin, kIntMin}, {kIntMax, kIntMin}};
  for (auto [x, y] : special) a.push_back(x), b.push_back(y);
  struct Case {
    BinOp op;
    std::function<int32_t(int32_t, int32_t)> ref;
  };
  const Case cases[] = {
      {BinOp::Add, [](int32_t x, int32_t y) { return wrap(int64_t(x) + y); }},
      {BinOp::Sub, [](int32_t x, int32_t y) { return wrap(int64_t(x) - y); }},
      {BinOp::Mul, [](int32_t x, int32_t y) { return wrap(int64_t(x) * y); }},
      {BinOp::Div, ref_div},
      {BinOp::Mod, ref_mod},
      {BinOp::Max, [](int32_t x, int32_t y) { return std::max(x, y); }},
      {BinOp::Min, [](int32_t x, int32_t y) { return std::min(x, y); }},
  };
  for (const Case& c : cases) {
    Kernel k = map_kernel({i32, i32}, i32, [&](auto& v) { return binary(c.op, v[0], v[1]); });
    auto got = run_map<int32_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, a.size());
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ(got[i], c.ref(a[i], b[i])) << binop_name(c.op) << "(" << a[i] << ", " << b[i] << ")";
  }
  for (BinOp op : {BinOp::CmpLt, BinOp::CmpEq}) {
    Kernel k = map_kernel({i32, i32}, boolean, [&](auto& v) { return binary(op, v[0], v[1]); });
    auto got = run_map<uint8_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, a.size());
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ(got[i], op == BinOp::CmpLt ? a[i] < b[i] : a[i] == b[i]) << binop_name(op) << " " << i;
  }
}

// Div and Mod in i64 (the index type), widened from and truncated back to i32.
TEST(CpuBackend, DivModI64) {
  std::vector<int32_t> a = random_ints(rng(), 500), b = random_ints(rng(), 500, -50, 50);
  a.insert(a.end(), {kIntMin, kIntMin, 9, -9});
  b.insert(b.end(), {-1, 0, 0, -1});
  for (BinOp op : {BinOp::Div, BinOp::Mod}) {
    Kernel k = map_kernel({i32, i32}, i32, [&](auto& v) {
      return cast(ValType::i32, binary(op, cast(ValType::i64, v[0]), cast(ValType::i64, v[1])));
    });
    auto got = run_map<int32_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      int64_t x = a[i], y = b[i];
      int64_t want = op == BinOp::Div ? (y == 0 ? 0 : y == -1 ? -x : x / y)
                                      : (y == 0 || y == -1 ? 0 : x % y);
      EXPECT_EQ(got[i], wrap(want)) << binop_name(op) << "(" << x << ", " << y << ")";
    }
  }
}

TEST(CpuBackend, BinaryBool) {
  std::vector<uint8_t> a = {0, 0, 1, 1}, b = {0, 1, 0, 1};
  struct Case {
    BinOp op;
    std::function<bool(bool, bool)> ref;
  };
  const Case cases[] = {
      {BinOp::CmpEq, [](bool x, bool y) { return x == y; }},
      {BinOp::CmpLt, [](bool x, bool y) { return x < y; }},
      {BinOp::Max, [](bool x, bool y) { return std::max(x, y); }},
      {BinOp::Min, [](bool x, bool y) { return std::min(x, y); }},
      {BinOp::And, [](bool x, bool y) { return x && y; }},
      {BinOp::Or, [](bool x, bool y) { return x || y; }},
  };
  for (const Case& c : cases) {
    Kernel k = map_kernel({boolean, boolean}, boolean, [&](auto& v) { return binary(c.op, v[0], v[1]); });
    auto got = run_map<uint8_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, 4);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i], c.ref(a[i], b[i])) << binop_name(c.op) << " " << i;
  }
}

// --- Casts and rounding ---

int32_t ref_f32_to_i32(float f) {
  if (std::isnan(f)) return 0;
  if (f <= -2147483648.0f) return kIntMin;
  if (f >= 2147483648.0f) return kIntMax;
  return static_cast<int32_t>(f);
}

std::vector<float> special_floats() {
  return {kNaN, -kNaN, kInf, -kInf, 0.0f, -0.0f, 0.5f, -0.5f, 2.5f, -2.5f, 0.999f, -1.999f,
          3e9f, -3e9f, 2147483520.0f, -2147483648.0f, 1e-40f, -1e-40f, 65504.0f, 65520.0f, 1e30f};
}

TEST(CpuBackend, CastF32ToI32SaturatesAndMapsNaNToZero) {
  std::vector<float> x = special_floats();
  std::vector<float> big = random_floats(rng(), 300, 1.0f, 5e9f);
  x.insert(x.end(), big.begin(), big.end());
  Kernel k = map_kernel({f32}, i32, [](auto& a) { return cast(ValType::i32, a[0]); });
  auto got = run_map<int32_t>(cpu(), k, {to_bytes(x)}, x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], ref_f32_to_i32(x[i])) << x[i];
}

// f32 -> i64 saturates at the i64 range; the high 32 bits come back as i32.
TEST(CpuBackend, CastF32ToI64Saturates) {
  std::vector<float> x = {1e30f, -1e30f, kNaN, 1e10f, -1e10f, 4294967296.0f, -2.5f, kInf, -kInf};
  Kernel k = map_kernel({f32}, i32, [](auto& a) {
    return cast(ValType::i32, binary(BinOp::Div, cast(ValType::i64, a[0]), idx(int64_t(1) << 32)));
  });
  auto got = run_map<int32_t>(cpu(), k, {to_bytes(x)}, x.size());
  const int32_t want[] = {kIntMax, kIntMin, 0, 2, -2, 1, 0, kIntMax, kIntMin};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], want[i]) << x[i];
}

TEST(CpuBackend, CastsBetweenIntFloatAndBool) {
  std::vector<int32_t> ints = random_ints(rng(), 300);
  ints.insert(ints.end(), {0, 0, kIntMin, kIntMax, -1, 1, 16777217});
  std::vector<float> floats = special_floats();
  const size_t ni = ints.size(), nf = floats.size();

  auto i2f = run_map<float>(cpu(), map_kernel({i32}, f32, [](auto& a) { return cast(ValType::f32, a[0]); }),
                            {to_bytes(ints)}, ni);
  auto i2b = run_map<uint8_t>(cpu(), map_kernel({i32}, boolean, [](auto& a) { return cast(ValType::b1, a[0]); }),
                              {to_bytes(ints)}, ni);
  for (size_t i = 0; i < ni; ++i) {
    EXPECT_EQ(i2f[i], static_cast<float>(ints[i])) << ints[i];
    EXPECT_EQ(i2b[i], ints[i] != 0) << ints[i];
  }
  auto f2b = run_map<uint8_t>(cpu(), map_kernel({f32}, boolean, [](auto& a) { return cast(ValType::b1, a[0]); }),
                              {to_bytes(floats)}, nf);
  for (size_t i = 0; i < nf; ++i) EXPECT_EQ(f2b[i], floats[i] != 0.0f) << floats[i];  // NaN -> true

  std::vector<uint8_t> bools = {0, 1, 1, 0};
  auto b2i = run_map<int32_t>(cpu(), map_kernel({boolean}, i32, [](auto& a) { return cast(ValType::i32, a[0]); }),
                              {to_bytes(bools)}, 4);
  auto b2f = run_map<float>(cpu(), map_kernel({boolean}, f32, [](auto& a) { return cast(ValType::f32, a[0]); }),
                            {to_bytes(bools)}, 4);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(b2i[i], bools[i]);
    EXPECT_EQ(b2f[i], float(bools[i]));
  }
}

// i32 -> i64 sign-extends (the product does not wrap) and i64 -> i32 truncates.
TEST(CpuBackend, CastsBetweenI32AndI64) {
  std::vector<int32_t> a = random_ints(rng(), 300), b = random_ints(rng(), 300);
  Kernel k = map_kernel({i32, i32}, i32, [](auto& v) {
    Expr wide = binary(BinOp::Mul, cast(ValType::i64, v[0]), cast(ValType::i64, v[1]));
    return cast(ValType::i32, binary(BinOp::Div, wide, idx(int64_t(1) << 31)));
  });
  auto got = run_map<int32_t>(cpu(), k, {to_bytes(a), to_bytes(b)}, a.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(got[i], wrap(int64_t(a[i]) * b[i] / (int64_t(1) << 31))) << a[i] << " * " << b[i];
}

// Floats halfway between two neighbouring f16 / bf16 values (ties), plus
// random bit patterns and special values.
std::vector<float> rounding_inputs(DType t) {
  std::vector<float> v = random_float_bits(rng(), 3000);
  std::vector<float> special = special_floats();
  v.insert(v.end(), special.begin(), special.end());
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 2000; ++i) {
    if (t == bf16) {
      v.push_back(std::bit_cast<float>((bits(rng()) & 0xffff0000u) | 0x8000u));
    } else {  // normal f16 range: the f16 ulp is 2^13 f32 ulps
      uint32_t h = bits(rng()) % 0x7800u + 0x400u;
      uint32_t f = std::bit_cast<uint32_t>(f16_bits_to_f32(uint16_t(h)));
      v.push_back(std::bit_cast<float>(f + 0x1000u));
      v.push_back(-std::bit_cast<float>(f + 0x1000u));
    }
  }
  v.push_back(std::bit_cast<float>(0x33000000u));  // half the smallest f16 subnormal
  v.push_back(std::bit_cast<float>(0x33c00000u));  // 1.5 of it
  return v;
}

uint16_t ref_bits(DType t, float f) { return t == f16 ? f32_to_f16_bits(f) : f32_to_bf16_bits(f); }
float ref_value(DType t, uint16_t h) { return t == f16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h); }

TEST(CpuBackend, F16AndBF16StoresRoundToNearestEven) {
  for (DType t : {f16, bf16}) {
    std::vector<float> x = rounding_inputs(t);
    Kernel k = map_kernel({f32}, t, [](auto& a) { return a[0]; });
    auto got = run_map<uint16_t>(cpu(), k, {to_bytes(x)}, x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t want = ref_bits(t, x[i]);
      if (t == f16 && std::isnan(x[i]))  // the NaN payload is the hardware's choice
        EXPECT_TRUE(std::isnan(f16_bits_to_f32(got[i]))) << std::hex << got[i];
      else
        EXPECT_EQ(got[i], want) << dtype_name(t) << " " << std::hexfloat << x[i];
    }
  }
}

TEST(CpuBackend, F16AndBF16LoadEveryBitPattern) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < all.size(); ++h) all[h] = uint16_t(h);
  for (DType t : {f16, bf16}) {
    Kernel k = map_kernel({t}, f32, [](auto& a) { return a[0]; });
    auto got = run_map<float>(cpu(), k, {to_bytes(all)}, all.size());
    for (uint32_t h = 0; h < all.size(); ++h) {
      float want = ref_value(t, uint16_t(h));
      if (std::isnan(want))
        EXPECT_TRUE(std::isnan(got[h])) << std::hex << h;
      else
        EXPECT_EQ(std::bit_cast<uint32_t>(got[h]), std::bit_cast<uint32_t>(want)) << dtype_name(t) << " " << h;
    }
  }
}

TEST(CpuBackend, RoundF32ToF16AndBF16) {
  for (DType t : {f16, bf16}) {
    std::vector<float> x = rounding_inputs(t);
    Kernel k = map_kernel({f32}, f32, [&](auto& a) { return round_to(t, a[0]); });
    auto got = run_map<float>(cpu(), k, {to_bytes(x)}, x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      float want = ref_value(t, ref_bits(t, x[i]));
      if (std::isnan(want))
        EXPECT_TRUE(std::isnan(got[i]));
      else
        EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want))
            << dtype_name(t) << " " << std::hexfloat << x[i];
    }
  }
}

TEST(CpuBackend, RoundI32ToI8AndU8) {
  std::vector<int32_t> x = random_ints(rng(), 500);
  x.insert(x.end(), {127, 128, -128, -129, 255, 256, -1, kIntMin, kIntMax});
  for (DType t : {i8, u8}) {
    Kernel k = map_kernel({i32}, i32, [&](auto& a) { return round_to(t, a[0]); });
    auto got = run_map<int32_t>(cpu(), k, {to_bytes(x)}, x.size());
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_EQ(got[i], t == i8 ? int32_t(int8_t(x[i])) : int32_t(uint8_t(x[i]))) << x[i];
  }
}

TEST(CpuBackend, SmallIntegerAndBoolStorage) {
  std::vector<int32_t> x = random_ints(rng(), 500);
  x.insert(x.end(), {127, 128, -128, -129, 255, 256, -1, 0});
  for (DType t : {i8, u8}) {
    auto stored = run_map<uint8_t>(cpu(), map_kernel({i32}, t, [](auto& a) { return a[0]; }), {to_bytes(x)}, x.size());
    auto loaded = run_map<int32_t>(cpu(), map_kernel({t}, i32, [](auto& a) { return a[0]; }), {to_bytes(stored)},
                                   x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(stored[i], uint8_t(x[i])) << x[i];
      EXPECT_EQ(loaded[i], t == i8 ? int32_t(int8_t(x[i])) : int32_t(uint8_t(x[i]))) << x[i];
    }
  }
  std::vector<uint8_t> bytes = {0, 1, 2, 255};  // any non-zero byte loads as true
  auto bools = run_map<uint8_t>(cpu(), map_kernel({boolean}, boolean, [](auto& a) { return a[0]; }),
                                {to_bytes(bytes)}, 4);
  EXPECT_EQ(bools, (std::vector<uint8_t>{0, 1, 1, 1}));
}

// A Local f16 buffer rounds what goes through it like a global one.
TEST(CpuBackend, LocalBufferUsesStorageConversions) {
  std::vector<float> x = rounding_inputs(f16);
  Kernel k;
  k.name = "through_local";
  k.params = {"n"};
  k.buffers = {global("x", f32), global("y", f32, true), local("t", f16, 1)};
  k.body = block({for_loop("i", var("n"), LoopKind::Parallel,
                           {store(2, idx(0), load(0, ValType::f32, var("i"))),
                            store(1, var("i"), load(2, ValType::f32, idx(0)))})});
  auto got = from_bytes<float>(run(cpu(), k, {to_bytes(x), Bytes(x.size() * 4)}, {int64_t(x.size())})[1]);
  for (size_t i = 0; i < x.size(); ++i) {
    float want = f16_bits_to_f32(f32_to_f16_bits(x[i]));
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(got[i]));
    else
      EXPECT_EQ(got[i], want) << std::hexfloat << x[i];
  }
}

// --- Errors, device and buffers ---

Kernel copy_kernel(std::vector<Stmt> body) {
  Kernel k;
  k.name = "bad";
  k.buffers = {global("x", f32), global("y", f32, true)};
  k.body = block(std::move(body));
  return k;
}

Stmt copy_loop(const std::string& v, LoopKind kind) {
  return for_loop(v, idx(8), kind, {store(1, var(v), load(0, ValType::f32, var(v)))});
}

void expect_compile_error(const Kernel& k, const std::string& message) {
  try {
    cpu().compile(k);
    ADD_FAILURE() << "compiled: " << message;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(CpuBackend, RejectsWhatTheCpuCannotRun) {
  expect_compile_error(copy_kernel({copy_loop("i", LoopKind::Parallel), copy_loop("j", LoopKind::Serial)}),
                       "only top-level statement");
  expect_compile_error(
      copy_kernel({for_loop("o", idx(2), LoopKind::Serial, {copy_loop("i", LoopKind::Parallel)})}), "nested");
  expect_compile_error(copy_kernel({copy_loop("i", LoopKind::GpuThread)}), "not supported on the cpu backend");
  expect_compile_error(copy_kernel({copy_loop("i", LoopKind::GpuBlock)}), "not supported on the cpu backend");
  Kernel shared = copy_kernel({copy_loop("i", LoopKind::Serial)});
  shared.buffers.push_back({"s", f32, MemScope::Shared, 16, false});
  expect_compile_error(shared, "not supported on the cpu backend");
  expect_compile_error(copy_kernel({store(1, var("nowhere"), const_f32(1))}), "nowhere");
}

TEST(CpuBackend, LaunchChecksArguments) {
  Kernel k = map_kernel({f32}, f32, [](auto& a) { return a[0]; });
  auto exe = cpu().compile(k);
  auto buf = cpu().allocate(16);
  EXPECT_THROW(exe->launch(cpu().stream(), {buf.get()}, {4}), Error);
  EXPECT_THROW(exe->launch(cpu().stream(), {buf.get(), buf.get()}, {}), Error);
}

TEST(CpuBackend, TargetSourceIsOptimizedLlvmIr) {
  Kernel k = map_kernel({f32, f32}, f32, [](auto& a) { return binary(BinOp::Mul, a[0], a[1]); });
  std::string ir = cpu().target_source(k);
  EXPECT_NE(ir.find("define"), std::string::npos) << ir;
  EXPECT_NE(ir.find("map_"), std::string::npos) << ir;
  EXPECT_EQ(ir.find(".body("), std::string::npos) << "the inner function should be inlined:\n" << ir;
}

// Two kernels with one name get their own symbols; executables outlive the device.
TEST(CpuBackend, RepeatedNamesAndExecutablesOutliveTheDevice) {
  std::shared_ptr<Device> device = make_cpu_device();
  auto twice = device->compile(map_kernel({f32}, f32, [](auto& a) { return binary(BinOp::Add, a[0], a[0]); }));
  auto square = device->compile(map_kernel({f32}, f32, [](auto& a) { return binary(BinOp::Mul, a[0], a[0]); }));
  device.reset();
  CpuBuffer in(4 * 4), out(4 * 4);
  float values[4] = {1, 2, 3, -4};
  std::memcpy(in.data(), values, sizeof values);
  CpuStream stream;
  twice->launch(stream, {&in, &out}, {4});
  EXPECT_EQ(static_cast<float*>(out.data())[3], -8.0f);
  square->launch(stream, {&in, &out}, {4});
  EXPECT_EQ(static_cast<float*>(out.data())[3], 16.0f);
}

TEST(CpuBackend, CompilesFromSeveralThreadsAtOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> ok = 0;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Kernel k = map_kernel({i32}, i32, [&](auto& a) { return binary(BinOp::Add, a[0], const_int(ValType::i32, t)); });
      auto got = run_map<int32_t>(cpu(), k, {to_bytes(std::vector<int32_t>{1, 2, 3})}, 3);
      if (got == std::vector<int32_t>{1 + t, 2 + t, 3 + t}) ok++;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
}

TEST(CpuBackend, BuffersAreAlignedAndBoundsChecked) {
  for (int64_t bytes : {0, 1, 100, 4096}) {
    auto buf = cpu().allocate(bytes);
    EXPECT_EQ(buf->bytes(), bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(static_cast<CpuBuffer&>(*buf).data()) % 64, 0u);
  }
  auto empty = cpu().allocate(0);
  cpu().write(*empty, nullptr, 0);
  cpu().read(*empty, nullptr, 0);
  auto buf = cpu().allocate(8);
  char data[16] = {};
  EXPECT_THROW(cpu().write(*buf, data, 16), Error);
  EXPECT_THROW(cpu().read(*buf, data, 9), Error);
  EXPECT_THROW(cpu().write(*buf, data, -1), Error);
  EXPECT_THROW(cpu().allocate(-1), Error);
}

TEST(CpuBackend, Info) {
  const DeviceInfo& info = cpu().info();
  EXPECT_EQ(info.backend, "cpu");
  EXPECT_EQ(info.name.rfind("cpu: ", 0), 0u) << info.name;
  EXPECT_GT(info.name.size(), 5u);
  EXPECT_EQ(info.cores, ThreadPool::global().size());
  EXPECT_TRUE(info.vector_bits == 128 || info.vector_bits == 256 || info.vector_bits == 512);
  EXPECT_GT(info.memory_bytes, 0);
  cpu().stream().synchronize();
}

// --- ThreadPool ---

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.size(), 4);
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 0}, {5, 6}, {-10, 10}, {0, 1000}, {3, 100003}}) {
    std::vector<std::atomic<int>> hits(end - begin);
    pool.parallel_for(begin, end, [&](int64_t b, int64_t e) {
      EXPECT_LT(b, e);
      for (int64_t i = b; i < e; ++i) hits[i - begin]++;
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1) << "[" << begin << ", " << end << ")";
  }
  pool.parallel_for(10, 5, [](int64_t, int64_t) { FAIL() << "empty range"; });
}

TEST(ThreadPool, SpreadsWorkOverThreads) {
  ThreadPool pool(3);
  std::mutex mutex;
  std::set<std::thread::id> ids;
  pool.parallel_for(0, 300, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lock(mutex);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_GT(ids.size(), 1u);
}

TEST(ThreadPool, RethrowsExceptionsAndKeepsWorking) {
  ThreadPool pool(4);
  EXPECT_THROW(pool.parallel_for(0, 1000,
                                 [](int64_t b, int64_t e) {
                                   if (b <= 500 && 500 < e) throw std::runtime_error("index 500");
                                 }),
               std::runtime_error);
  std::atomic<int64_t> sum = 0;
  pool.parallel_for(0, 100, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, ConcurrentAndNestedCalls) {
  ThreadPool pool(3);
  std::vector<std::thread> callers;
  std::atomic<int64_t> total = 0;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      pool.parallel_for(0, 50, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          pool.parallel_for(0, 20, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
      });
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 20);
}

TEST(ThreadPool, ThreadCountIsValidated) {
  EXPECT_THROW(ThreadPool(0), Error);
  const char* old = std::getenv("KILN_NUM_THREADS");
  std::string saved = old ? old : "";
  setenv("KILN_NUM_THREADS", "3", 1);
  EXPECT_EQ(default_thread_count(), 3);
  for (const char* bad : {"", "0", "-2", "4x", "abc", "99999999999"}) {
    setenv("KILN_NUM_THREADS", bad, 1);
    try {
      default_thread_count();
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("KILN_NUM_THREADS"), std::string::npos) << e.what();
    }
  }
  unsetenv("KILN_NUM_THREADS");
  EXPECT_GE(default_thread_count(), 1);
  if (old) setenv("KILN_NUM_THREADS", saved.c_str(), 1);
}

}  // namespace
}  // namespace kiln
