// exp2, log2 and sin on the CPU backend are inline polynomials
// (codegen/emit/llvm/math.h). Each runs as a plain parallel loop (left to LLVM's
// loop vectorizer) and inside a 16-lane vectorized loop, over dense sweeps of
// its domain and over its special values, against double-precision libm
// rounded to f32 (what the interpreter computes).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cpu/cpu_device.h"
#include "kiln/kernel.h"
#include "tests/backends/kernel_testing.h"

namespace kiln {
namespace {

using testing::global;

constexpr int64_t kLanes = 16;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kMax = std::numeric_limits<float>::max();
constexpr float kTiny = std::numeric_limits<float>::denorm_min();

Device& cpu() {
  static std::shared_ptr<Device> device = make_cpu_device();
  return *device;
}

Kernel kernel(std::string name, Stmt loop) {
  Kernel k;
  k.name = std::move(name);
  k.buffers = {global("x", f32), global("y", f32, true)};
  k.params = {"n"};
  k.body = block({std::move(loop)});
  return k;
}

// y[i] = op(x[i]) for i < n, as one parallel loop.
Kernel scalar_kernel(UnOp op) {
  Expr i = var("i");
  return kernel(std::string(unop_name(op)),
                for_loop("i", var("n"), LoopKind::Parallel, {store(1, i, unary(op, load(0, ValType::f32, i)))}));
}

// The same over n blocks of 16 lanes.
Kernel vector_kernel(UnOp op) {
  Expr i = var("o") * idx(kLanes) + var("j");
  Stmt lanes = for_loop("j", idx(kLanes), LoopKind::Vectorized, {store(1, i, unary(op, load(0, ValType::f32, i)))});
  return kernel(std::string(unop_name(op)) + "_vec", for_loop("o", var("n"), LoopKind::Parallel, {lanes}));
}

// The kernel's output for `x`, whose size must be a multiple of 16.
std::vector<float> run(Executable& exe, bool vectorized, const std::vector<float>& x) {
  const int64_t bytes = int64_t(x.size()) * 4;
  std::shared_ptr<Buffer> in = cpu().allocate(bytes), out = cpu().allocate(bytes);
  cpu().write(*in, x.data(), bytes);
  int64_t n = int64_t(x.size()) / (vectorized ? kLanes : 1);
  exe.launch(cpu().stream(), {in.get(), out.get()}, {n});
  cpu().stream().synchronize();
  std::vector<float> y(x.size());
  cpu().read(*out, y.data(), bytes);
  return y;
}

using Reference = std::function<double(double)>;

Reference reference(UnOp op) {
  switch (op) {
    case UnOp::Exp2: return [](double x) { return std::exp2(x); };
    case UnOp::Log2: return [](double x) { return std::log2(x); };
    default: return [](double x) { return std::sin(x); };
  }
}

// Floats as integers in the order of their values (-0 and +0 both 0), so
// that the difference of two is their distance in ulps.
int64_t ordered(float f) {
  int32_t b = std::bit_cast<int32_t>(f);
  return b < 0 ? -int64_t(b & 0x7fffffff) : b;
}

// Ulps between `got` and the correctly rounded `want`; NaN is 0 from NaN and
// "infinitely" far from anything else.
int64_t ulp_distance(float got, float want) {
  if (std::isnan(got) || std::isnan(want)) return std::isnan(got) == std::isnan(want) ? 0 : INT64_MAX;
  return std::llabs(ordered(got) - ordered(want));
}

// The worst error of one kernel over a sweep.
struct Worst {
  int64_t ulps = 0;
  float ulps_at = 0;
  double error = 0;  // |got - exact| / max(1, |exact|), where f32 holds exact
  float error_at = 0;

  void add(float x, float got, double exact) {
    int64_t u = ulp_distance(got, float(exact));
    if (u > ulps) ulps = u, ulps_at = x;
    double e = std::fabs(double(got) - exact) / std::max(1.0, std::fabs(exact));
    if (std::isfinite(float(exact)) && e > error) error = e, error_at = x;
  }
};

// Runs op's scalar and vector kernels over one f32 bit pattern in every 64
// from `first` to `last` (both >= 0), and over their negations if `both_signs`.
// The pattern picked in each block of 64 varies, so the low mantissa bits vary too.
class Sweep {
 public:
  explicit Sweep(UnOp op)
      : op_(op), ref_(reference(op)), scalar_(cpu().compile(scalar_kernel(op))),
        vector_(cpu().compile(vector_kernel(op))) {}

  void over(float first, float last, bool both_signs) {
    const uint32_t begin = std::bit_cast<uint32_t>(first), end = std::bit_cast<uint32_t>(last);
    std::vector<float> x;
    for (uint64_t block = begin; block <= end; block += 64) {
      uint32_t bits = uint32_t(block + (block / 64 * 37) % 64);
      if (bits > end) break;
      for (uint32_t sign : {0u, 0x80000000u}) {
        if (sign && !both_signs) continue;
        x.push_back(std::bit_cast<float>(bits | sign));
      }
      if (x.size() == kChunk) check(x), x.clear();
    }
    while (x.size() % kLanes) x.push_back(first);
    check(x);
  }

  void report(const std::string& what) const {
    for (const auto& [name, w] : {std::pair{"scalar", scalar_worst_}, std::pair{"vector", vector_worst_}})
      std::printf("[   math   ] %s %s, %s: %lld inputs, max %lld ulp (at %a), max error %.3g (at %a)\n",
                  std::string(unop_name(op_)).c_str(), what.c_str(), name, (long long)count_,
                  (long long)w.ulps, w.ulps_at, w.error, w.error_at);
  }

  const Worst& scalar_worst() const { return scalar_worst_; }
  const Worst& vector_worst() const { return vector_worst_; }

 private:
  static constexpr size_t kChunk = size_t(1) << 22;

  void check(const std::vector<float>& x) {
    std::vector<float> scalar = run(*scalar_, false, x), vector = run(*vector_, true, x);
    for (size_t i = 0; i < x.size(); ++i) {
      double exact = ref_(x[i]);
      scalar_worst_.add(x[i], scalar[i], exact);
      vector_worst_.add(x[i], vector[i], exact);
    }
    count_ += int64_t(x.size());
  }

  UnOp op_;
  Reference ref_;
  std::shared_ptr<Executable> scalar_, vector_;
  Worst scalar_worst_, vector_worst_;
  int64_t count_ = 0;
};

void expect_max_ulps(const Sweep& sweep, int64_t max) {
  EXPECT_LE(sweep.scalar_worst().ulps, max) << "scalar, at " << std::hexfloat << sweep.scalar_worst().ulps_at;
  EXPECT_LE(sweep.vector_worst().ulps, max) << "vector, at " << std::hexfloat << sweep.vector_worst().ulps_at;
}

// Whether some line of `ir` is a call of one of `names`.
bool calls(const std::string& ir, const std::vector<std::string>& names) {
  std::istringstream in(ir);
  for (std::string line; std::getline(in, line);) {
    if (line.find("call ") == std::string::npos) continue;
    for (const std::string& name : names)
      if (line.find("@" + name + "(") != std::string::npos || line.find("@" + name + ".") != std::string::npos)
        return true;
  }
  return false;
}

// Covers x near 2^-149 (subnormal results), at 128 (overflow) and all between.
TEST(CpuMath, Exp2Sweep) {
  Sweep sweep(UnOp::Exp2);
  sweep.over(0, 160, true);
  sweep.report("over [-160, 160]");
  expect_max_ulps(sweep, 1);  // also measured over every f32 in the range
}

TEST(CpuMath, Log2Sweep) {
  Sweep sweep(UnOp::Log2);
  sweep.over(kTiny, kMax, false);
  sweep.report("over (0, inf)");
  expect_max_ulps(sweep, 1);
}

// RoPE angles reach a few thousand; math.h promises the accuracy up to 2e5.
TEST(CpuMath, SinSweep) {
  Sweep sweep(UnOp::Sin);
  sweep.over(0, 10000, true);
  sweep.report("over [-10000, 10000]");
  expect_max_ulps(sweep, 2);
  EXPECT_LT(sweep.scalar_worst().error, 2e-7);
  EXPECT_LT(sweep.vector_worst().error, 2e-7);

  Sweep far(UnOp::Sin);
  far.over(10000, 2e5, true);
  far.report("over 1e4 <= |x| <= 2e5");
  EXPECT_LT(far.scalar_worst().error, 1e-7);
  EXPECT_LT(far.vector_worst().error, 1e-7);
}

// Both kernels' results for each input are within `max_ulps` of `want` and of
// its kind: NaN, inf, or zero of the same sign.
void expect_values(UnOp op, const std::vector<std::pair<float, float>>& cases, int64_t max_ulps = 0) {
  std::vector<float> x;
  for (const auto& c : cases) x.push_back(c.first);
  while (x.size() % kLanes) x.push_back(x[0]);
  std::vector<float> scalar = run(*cpu().compile(scalar_kernel(op)), false, x);
  std::vector<float> vector = run(*cpu().compile(vector_kernel(op)), true, x);
  for (size_t i = 0; i < cases.size(); ++i) {
    auto [in, want] = cases[i];
    for (float got : {scalar[i], vector[i]}) {
      bool same_kind = std::isinf(got) == std::isinf(want) &&
                       (got == 0 && want == 0 ? std::signbit(got) == std::signbit(want) : got != 0 && want != 0);
      EXPECT_TRUE(ulp_distance(got, want) <= max_ulps && (std::isnan(want) || same_kind))
          << unop_name(op) << "(" << std::hexfloat << in << ") = " << got << ", want " << want;
    }
  }
}

// The correctly rounded results for `x`.
std::vector<std::pair<float, float>> rounded(UnOp op, const std::vector<float>& x) {
  std::vector<std::pair<float, float>> cases;
  for (float v : x) cases.push_back({v, float(reference(op)(v))});
  return cases;
}

TEST(CpuMath, Exp2Specials) {
  std::vector<std::pair<float, float>> cases = {
      {kNaN, kNaN},      {kInf, kInf},      {-kInf, 0},     {kMax, kInf},          {-kMax, 0},
      {128, kInf},       {200, kInf},       {1e30f, kInf},  {-150, 0},             {-150.5f, 0},
      {-1000, 0},        {-1e30f, 0},       {-149.75f, kTiny}, {-149.5f, kTiny},   {-149.25f, kTiny},
      {-147.5f, 3 * kTiny}, {0, 1},         {-0.0f, 1},     {kTiny, 1},
  };
  for (int n = -149; n <= 127; ++n) cases.push_back({float(n), std::ldexp(1.0f, n)});  // exact
  expect_values(UnOp::Exp2, cases);
  // Finite just below 128 and not flushed just below 2^-126.
  expect_values(UnOp::Exp2, rounded(UnOp::Exp2, {127.5f, 0x1.fffffep+6f, -126.5f, -0x1.f9fffep+6f, -149.99f}), 1);
}

TEST(CpuMath, Log2Specials) {
  std::vector<std::pair<float, float>> cases = {
      {kNaN, kNaN}, {-kNaN, kNaN}, {kInf, kInf}, {-kInf, kNaN}, {-1, kNaN}, {-kTiny, kNaN},
      {-kMax, kNaN}, {0, -kInf},   {-0.0f, -kInf}, {1, 0},     {kMax, 128},
  };
  for (int n = -149; n <= 127; ++n) cases.push_back({std::ldexp(1.0f, n), float(n)});  // exact
  expect_values(UnOp::Log2, cases);
  // Subnormal inputs, and either side of the smallest normal one.
  expect_values(UnOp::Log2, rounded(UnOp::Log2, {3 * kTiny, 0x1.8p-130f, 0x1.fffffcp-127f, 0x1.000002p-126f}), 1);
}

TEST(CpuMath, SinSpecials) {
  const float half_pi = 0x1.921fb6p+0f, pi = 0x1.921fb6p+1f;
  expect_values(UnOp::Sin, {{kNaN, kNaN},
                            {kInf, kNaN},
                            {-kInf, kNaN},
                            {0, 0},
                            {-0.0f, -0.0f},
                            {kTiny, kTiny},
                            {-kTiny, -kTiny},
                            {1e-20f, 1e-20f},
                            {half_pi, 1},
                            {-half_pi, -1},
                            {pi, float(std::sin(double(pi)))},
                            {-pi, float(std::sin(-double(pi)))}});
  // Past the accurate range the value means little, but it is a number in [-1, 1].
  std::vector<float> x;
  for (float v = 1e7f; v < kMax / 2; v *= 1.37f) x.insert(x.end(), {v, -v});
  x.insert(x.end(), {kMax, -kMax});
  while (x.size() % kLanes) x.push_back(kMax);
  for (bool vectorized : {false, true}) {
    Kernel k = vectorized ? vector_kernel(UnOp::Sin) : scalar_kernel(UnOp::Sin);
    std::vector<float> y = run(*cpu().compile(k), vectorized, x);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(y[i]), 1.0f) << std::hexfloat << x[i];
  }
}

// Neither LLVM's loop vectorizer (scalar kernels) nor the emitter's vector mode
// leave a libm call or a call of the intrinsics that would become one.
TEST(CpuMath, VectorCodeWithoutCalls) {
  const std::vector<std::string> names = {"exp2f", "log2f", "sinf", "llvm.exp2", "llvm.log2", "llvm.sin"};
  for (UnOp op : {UnOp::Exp2, UnOp::Log2, UnOp::Sin}) {
    for (const Kernel& k : {scalar_kernel(op), vector_kernel(op)}) {
      std::string ir = cpu().target_source(k);
      EXPECT_FALSE(calls(ir, names)) << k.name << ":\n" << ir;
      EXPECT_NE(ir.find("x float> @llvm.fma"), std::string::npos) << k.name << ": no vector fma:\n" << ir;
    }
  }
}

}  // namespace
}  // namespace kiln
