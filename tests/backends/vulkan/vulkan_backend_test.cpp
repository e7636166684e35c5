// The Vulkan backend on hand-built kernels: the dispatch shape, value semantics
// at the edges (checked against the CPU backend, whose emitter defines them),
// errors, and the cost of compiling with glslang.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "backends/vulkan/glslang_compiler.h"
#include "backends/vulkan/vulkan_api.h"
#include "codegen/emit/glsl/emit_glsl.h"
#include "codegen/emit/gpu_nest.h"
#include "codegen/schedule.h"
#include "tests/backends/gpu_testing.h"
#include "tests/backends/kernel_testing.h"
#include "tests/backends/vulkan/vulkan_testing.h"

namespace kiln {
namespace {

using testing::Bytes;
using testing::from_bytes;
using testing::global;
using testing::map_kernel;
using testing::run;
using testing::to_bytes;
using VulkanBackend = testing::VulkanTest;

constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Runs `k` on `dev` with the device's default schedule applied first.
std::vector<Bytes> run_scheduled(Device& dev, const Kernel& k, const std::vector<Bytes>& buffers,
                                 const std::vector<int64_t>& params = {}) {
  return run(dev, apply(k, default_schedule(k, dev.info())), buffers, params);
}

// --- Value semantics: the same kernel on the CPU and on Vulkan, with and
// without 8/16-bit storage ---

Device& cpu() { return *device("cpu"); }

// Tests that compare with the CPU backend skip in builds without it (the GPU
// machine's build has no LLVM).
#ifdef KILN_WITH_LLVM
#define KILN_SKIP_WITHOUT_CPU() (void)0
#else
#define KILN_SKIP_WITHOUT_CPU() GTEST_SKIP() << "needs the CPU backend (built without LLVM)"
#endif

std::vector<Device*> vulkan_variants() {
  return {testing::vulkan_device().get(), testing::vulkan_device_without_small_storage().get()};
}

// Outputs of dtype `t` that must be equal: the same value, or both NaN (the
// sign of a zero result is not specified, as in IEEE maxNum).
void expect_same(const Bytes& want, const Bytes& got, DType t, const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  size_t size = size_t(dtype_size(t)), mismatches = 0;
  for (size_t i = 0; i < want.size() / size && mismatches < 5; ++i) {
    double w = load_as_double(&want[i * size], t), g = load_as_double(&got[i * size], t);
    if (w == g || (std::isnan(w) && std::isnan(g))) continue;
    ++mismatches;
    ADD_FAILURE() << what << ": element " << i << ": cpu " << w << ", vulkan " << g;
  }
}

// Runs a map kernel on the CPU and every Vulkan variant and expects the same output.
void expect_same_as_cpu(const Kernel& k, const std::vector<Bytes>& inputs, DType out, size_t n,
                        const std::string& what) {
  std::vector<Bytes> buffers = inputs;
  buffers.emplace_back(n * size_t(dtype_size(out)));
  Bytes want = run_scheduled(cpu(), k, buffers, {int64_t(n)}).back();
  for (Device* dev : vulkan_variants()) {
    SCOPED_TRACE(what + " on " + dev->info().name + " " + dev->info().features);
    expect_same(want, run_scheduled(*dev, k, buffers, {int64_t(n)}).back(), out, what);
  }
}

std::mt19937& rng() {
  static std::mt19937 gen(99);
  return gen;
}

// Edge values, then random bit patterns (every exponent, subnormals, NaN).
std::vector<float> interesting_floats(size_t random) {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 2.5f, -2.5f, 3.5f, kInf, -kInf, kNaN, -kNaN,
                          2147483520.0f, 2147483648.0f, -2147483648.0f, -2147483904.0f, 3e9f, -3e9f,
                          9.3e18f, -9.3e18f, 1e-40f, -1e-40f, 65504.0f, 65520.0f, 65519.99f, 5.96e-8f,
                          2.98e-8f, 2.99e-8f, 1e-5f, 3.0e38f, 1.00390625f, 1.01171875f, 300.0f, -300.0f};
  std::uniform_int_distribution<uint32_t> bits;
  for (size_t i = 0; i < random; ++i) v.push_back(std::bit_cast<float>(bits(rng())));
  return v;
}

std::vector<int32_t> interesting_ints() {
  return {0, 1, -1, 2, -2, 7, -7, 127, 128, -128, -129, 255, 256, kIntMin, kIntMax, kIntMin + 1, 1000003, -999983};
}

TEST_F(VulkanBackend, IntegerDivisionAndRemainderAtTheEdges) {
  KILN_SKIP_WITHOUT_CPU();
  std::vector<int32_t> a, b;
  for (int32_t x : interesting_ints())
    for (int32_t y : interesting_ints()) a.push_back(x), b.push_back(y);
  for (BinOp op : {BinOp::Div, BinOp::Mod}) {
    Kernel i32k = map_kernel({i32, i32}, i32, [&](auto& v) { return binary(op, v[0], v[1]); });
    expect_same_as_cpu(i32k, {to_bytes(a), to_bytes(b)}, i32, a.size(), std::string(binop_name(op)) + " i32");
    Kernel i64k = map_kernel({i32, i32}, i32, [&](auto& v) {
      return cast(ValType::i32, binary(op, cast(ValType::i64, v[0]), cast(ValType::i64, v[1])));
    });
    expect_same_as_cpu(i64k, {to_bytes(a), to_bytes(b)}, i32, a.size(), std::string(binop_name(op)) + " i64");
  }
}

TEST_F(VulkanBackend, FloatToIntCastsSaturateAndNaNIsZero) {
  KILN_SKIP_WITHOUT_CPU();
  std::vector<float> x = interesting_floats(2000);
  Kernel to_i32 = map_kernel({f32}, i32, [](auto& v) { return cast(ValType::i32, v[0]); });
  expect_same_as_cpu(to_i32, {to_bytes(x)}, i32, x.size(), "f32 -> i32");
  // The low 32 bits of the saturated i64.
  Kernel to_i64 = map_kernel({f32}, i32, [](auto& v) { return cast(ValType::i32, cast(ValType::i64, v[0])); });
  expect_same_as_cpu(to_i64, {to_bytes(x)}, i32, x.size(), "f32 -> i64");
  Kernel to_bool = map_kernel({f32}, boolean, [](auto& v) { return cast(ValType::b1, v[0]); });
  expect_same_as_cpu(to_bool, {to_bytes(x)}, boolean, x.size(), "f32 -> bool");
}

TEST_F(VulkanBackend, SixteenBitFloatsRoundToNearestEven) {
  KILN_SKIP_WITHOUT_CPU();
  std::vector<float> x = interesting_floats(20000);
  for (DType t : {f16, bf16}) {
    std::string name(dtype_name(t));
    Kernel stored = map_kernel({f32}, t, [](auto& v) { return v[0]; });
    expect_same_as_cpu(stored, {to_bytes(x)}, t, x.size(), "store to " + name);
    Kernel rounded = map_kernel({f32}, f32, [&](auto& v) { return round_to(t, v[0]); });
    expect_same_as_cpu(rounded, {to_bytes(x)}, f32, x.size(), "round to " + name);
    // Every 16-bit pattern loads as the CPU loads it.
    std::vector<uint16_t> all(65536);
    for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
    Kernel loaded = map_kernel({t}, f32, [](auto& v) { return v[0]; });
    expect_same_as_cpu(loaded, {to_bytes(all)}, f32, all.size(), "load of " + name);
  }
}

TEST_F(VulkanBackend, SmallIntegersWrapAndBoolsAreZeroOrOne) {
  KILN_SKIP_WITHOUT_CPU();
  std::vector<int32_t> x;
  for (int32_t v = -600; v <= 600; ++v) x.push_back(v);
  for (int32_t v : interesting_ints()) x.push_back(v);
  for (DType t : {i8, u8}) {
    std::string name(dtype_name(t));
    Kernel stored = map_kernel({i32}, t, [](auto& v) { return v[0]; });
    expect_same_as_cpu(stored, {to_bytes(x)}, t, x.size(), "store to " + name);
    Kernel rounded = map_kernel({i32}, i32, [&](auto& v) { return round_to(t, v[0]); });
    expect_same_as_cpu(rounded, {to_bytes(x)}, i32, x.size(), "round to " + name);
  }
  std::vector<uint8_t> bytes(256);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i);
  for (DType t : {i8, u8, boolean}) {
    Kernel loaded = map_kernel({t}, i32, [](auto& v) { return cast(ValType::i32, v[0]); });
    expect_same_as_cpu(loaded, {to_bytes(bytes)}, i32, bytes.size(), "load of " + std::string(dtype_name(t)));
  }
}

TEST_F(VulkanBackend, FloatMaxMinComparisonsAndMathWithNaN) {
  KILN_SKIP_WITHOUT_CPU();
  std::vector<float> edge = interesting_floats(0);
  std::vector<float> a, b;
  for (float x : edge)
    for (float y : edge) a.push_back(x), b.push_back(y);
  for (BinOp op : {BinOp::Max, BinOp::Min, BinOp::Add, BinOp::Mul}) {
    Kernel k = map_kernel({f32, f32}, f32, [&](auto& v) { return binary(op, v[0], v[1]); });
    expect_same_as_cpu(k, {to_bytes(a), to_bytes(b)}, f32, a.size(), std::string(binop_name(op)));
  }
  for (BinOp op : {BinOp::CmpLt, BinOp::CmpEq}) {
    Kernel k = map_kernel({f32, f32}, boolean, [&](auto& v) { return binary(op, v[0], v[1]); });
    expect_same_as_cpu(k, {to_bytes(a), to_bytes(b)}, boolean, a.size(), std::string(binop_name(op)));
  }
  // Results at the edges of each function's domain are exact.
  std::vector<float> special = {0.0f, -0.0f, -1.0f, -kInf, kInf, kNaN, -kNaN, 1.0f, 4.0f, -4.0f};
  for (UnOp op : {UnOp::Log2, UnOp::Sqrt, UnOp::Exp2, UnOp::Sin, UnOp::Recip, UnOp::Neg}) {
    if (op == UnOp::Sin) special = {0.0f, -0.0f, kInf, -kInf, kNaN};
    Kernel k = map_kernel({f32}, f32, [&](auto& v) { return unary(op, v[0]); });
    expect_same_as_cpu(k, {to_bytes(special)}, f32, special.size(), std::string(unop_name(op)));
  }
}

// GPU sin is accurate on [-pi, pi] only; kiln reduces the argument first.
TEST_F(VulkanBackend, SinOfLargeArguments) {
  KILN_SKIP_WITHOUT_CPU();
  std::uniform_real_distribution<float> d(-25000.0f, 25000.0f);
  std::vector<float> x(20000);
  for (float& v : x) v = d(rng());
  Kernel k = map_kernel({f32}, f32, [](auto& v) { return unary(UnOp::Sin, v[0]); });
  std::vector<Bytes> buffers = {to_bytes(x), Bytes(x.size() * 4)};
  auto want = from_bytes<float>(run_scheduled(cpu(), k, buffers, {int64_t(x.size())}).back());
  auto got = from_bytes<float>(run_scheduled(dev(), k, buffers, {int64_t(x.size())}).back());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-6) << "sin(" << x[i] << ")";
}

// A GPU's log2 is bound in absolute terms near 1, where log2 is near 0 (a
// lavapipe long run: the max of log2 over an input in [-1, 1) came out 1e-3
// off, relatively); kiln's is a few ulp of the exact value everywhere.
TEST_F(VulkanBackend, Log2IsAccurateNearOneAndEverywhere) {
  std::vector<float> x;
  for (int i = -3000; i <= 3000; ++i) x.push_back(1.0f + float(i) * 1e-6f);  // around 1
  std::uniform_real_distribution<float> near(0.5f, 2.0f), far(-40.0f, 40.0f);
  for (int i = 0; i < 10000; ++i) x.push_back(near(rng()));
  for (int i = 0; i < 10000; ++i) x.push_back(std::exp2(far(rng())));
  for (float v : {1e-40f, 3e-42f, 1.4e-45f, 1.1754942e-38f, 3.4e38f, 0.70710677f, 1.4142135f, 1.4142137f})
    x.push_back(v);
  Kernel k = map_kernel({f32}, f32, [](auto& v) { return unary(UnOp::Log2, v[0]); });
  std::vector<Bytes> buffers = {to_bytes(x), Bytes(x.size() * 4)};
  auto got = from_bytes<float>(run_scheduled(dev(), k, buffers, {int64_t(x.size())}).back());
  for (size_t i = 0; i < x.size(); ++i) {
    double want = std::log2(double(x[i]));
    ASSERT_NEAR(got[i], want, 4e-7 * std::fabs(want) + 1e-12) << "log2(" << x[i] << ")";
  }
}

TEST_F(VulkanBackend, ConstantsAtTheEdges) {
  KILN_SKIP_WITHOUT_CPU();
  std::vector<int32_t> x = interesting_ints();
  Kernel ints = map_kernel({i32}, i32, [](auto& v) {
    Expr big = cast(ValType::i32, binary(BinOp::Sub, cast(ValType::i64, v[0]),
                                         const_int(ValType::i64, std::numeric_limits<int64_t>::min())));
    return binary(BinOp::Add, binary(BinOp::Max, v[0], const_int(ValType::i32, kIntMin)), big);
  });
  expect_same_as_cpu(ints, {to_bytes(x)}, i32, x.size(), "integer constants");
  std::vector<float> f = interesting_floats(0);
  Kernel floats = map_kernel({f32}, f32, [](auto& v) {
    Expr lowest = binary(BinOp::Max, v[0], const_f32(-kInf));
    return select(binary(BinOp::CmpLt, v[0], const_f32(-0.0)), const_f32(kNaN), binary(BinOp::Min, lowest, const_f32(1e30)));
  });
  expect_same_as_cpu(floats, {to_bytes(f)}, f32, f.size(), "float constants");
}

// --- The dispatch ---

// out[((((bz * 3 + by) * 5 + bx) * 4 + ty) * 8 + tx] = that index.
Kernel grid_kernel() {
  Kernel k;
  k.name = "grid";
  k.buffers = {global("out", i32, true)};
  Expr at = (((var("bz") * idx(3) + var("by")) * idx(5) + var("bx")) * idx(4) + var("ty")) * idx(8) + var("tx");
  Stmt s = store(0, at, cast(ValType::i32, at));
  s = for_loop("tx", idx(8), LoopKind::GpuThread, {s});
  s = for_loop("ty", idx(4), LoopKind::GpuThread, {s});
  s = for_loop("bx", idx(5), LoopKind::GpuBlock, {s});
  s = for_loop("by", idx(3), LoopKind::GpuBlock, {s});
  s = for_loop("bz", idx(2), LoopKind::GpuBlock, {s});
  k.body = block({s});
  return k;
}

TEST_F(VulkanBackend, BoundLoopsMapInnermostToX) {
  Kernel k = grid_kernel();
  std::string glsl = dev().target_source(k);
  EXPECT_NE(glsl.find("layout(local_size_x = 8, local_size_y = 4, local_size_z = 1) in;"), std::string::npos) << glsl;
  EXPECT_NE(glsl.find("bx = int(gl_WorkGroupID.x)"), std::string::npos) << glsl;
  EXPECT_NE(glsl.find("bz = int(gl_WorkGroupID.z)"), std::string::npos) << glsl;
  EXPECT_NE(glsl.find("tx = int(gl_LocalInvocationID.x)"), std::string::npos) << glsl;
  GpuGrid grid = gpu_grid(k);
  EXPECT_EQ(grid.blocks[0]->ival, 5);
  EXPECT_EQ(grid.blocks[2]->ival, 2);
  EXPECT_EQ(workgroup_size(k), (std::array<int64_t, 3>{8, 4, 1}));
  const int n = 2 * 3 * 5 * 4 * 8;
  auto out = from_bytes<int32_t>(run(dev(), k, {to_bytes(std::vector<int32_t>(n, -1))})[0]);
  for (int i = 0; i < n; ++i) EXPECT_EQ(out[i], i);
}

// out[b] = b for b in 0..n, one invocation per workgroup: n beyond a single
// dispatch's limit goes out as several.
TEST_F(VulkanBackend, GridsLargerThanOneDispatch) {
  Kernel k;
  k.name = "wide";
  k.params = {"n"};
  k.buffers = {global("out", i32, true)};
  k.body = block({for_loop("b", var("n"), LoopKind::GpuBlock,
                           {for_loop("t", idx(1), LoopKind::GpuThread, {store(0, var("b"), cast(ValType::i32, var("b")))})})});
  const int n = 70001;  // lavapipe allows 65535 workgroups along x
  for (int64_t launch_n : {int64_t(n), int64_t(0)}) {
    auto out = from_bytes<int32_t>(run(dev(), k, {to_bytes(std::vector<int32_t>(n, -1))}, {launch_n})[0]);
    for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], launch_n ? i : -1) << "at " << i;
  }
}

TEST_F(VulkanBackend, OneInvocationWithoutBoundLoops) {
  Kernel k;
  k.name = "serial";
  k.params = {"n"};
  k.buffers = {global("out", i32, true)};
  k.body = block({for_loop("i", var("n"), LoopKind::Serial, {store(0, var("i"), cast(ValType::i32, var("i")))}),
                  store(0, idx(0), const_int(ValType::i32, 42))});
  auto out = from_bytes<int32_t>(run(dev(), k, {Bytes(40)}, {10})[0]);
  EXPECT_EQ(out, (std::vector<int32_t>{42, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// GLSL keywords and the emitter's own names as IR names; shared and local
// buffers; unrolled and vectorized loops.
TEST_F(VulkanBackend, KeywordNamesSharedLocalAndUnrolledLoops) {
  Kernel k;
  k.name = "odd names";
  k.params = {"half"};
  k.buffers = {global("input", f32), global("i", f32, true), {"Buf0", f32, MemScope::Shared, 64, false},
               {"float", f16, MemScope::Local, 4, false}};
  Expr t = var("filter");
  Expr in = load(0, ValType::f32, t * idx(4) + var("sample"));
  Expr sum = binary(BinOp::Add, binary(BinOp::Add, load(3, ValType::f32, idx(0)), load(3, ValType::f32, idx(1))),
                    binary(BinOp::Add, load(3, ValType::f32, idx(2)), load(3, ValType::f32, idx(3))));
  k.body = block({for_loop(
      "filter", idx(64), LoopKind::GpuThread,
      {for_loop("sample", idx(4), LoopKind::Unrolled, {store(3, var("sample"), in)}),
       store(2, t, sum),
       for_loop("in", var("half"), LoopKind::Vectorized,
                {store(1, t * var("half") + var("in"), load(2, ValType::f32, t))})})});
  std::vector<float> x(256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.25f + 0.1f;
  auto out = from_bytes<float>(run(dev(), k, {to_bytes(x), Bytes(64 * 2 * 4)}, {2})[1]);
  for (int i = 0; i < 64; ++i) {
    float want = 0;
    for (int j = 0; j < 4; ++j) want += float(round_to_dtype(x[i * 4 + j], f16));
    EXPECT_FLOAT_EQ(out[i * 2], want) << i;
    EXPECT_FLOAT_EQ(out[i * 2 + 1], want) << i;
  }
}

// Sums over rows of 4 to 256 invocations along x, several rows a workgroup
// along y: with subgroup operations where the device has them (the default
// device: a subgroup's own sum, clustered for shorter rows, then the row's
// subgroups through shared memory) and without (the shared-memory tree); f32
// sums of small integers (exact in any order) and i32 sums that wrap. The
// text for a device with subgroups of 32: subgroupAdd for 32 and 256,
// subgroupClusteredAdd for 8, the tree for a max.
TEST_F(VulkanBackend, RowSumsBySubgroupsOrSharedMemory) {
  for (int64_t lanes : {4, 8, 32, 256}) {
    int64_t rows = 256 / lanes;
    std::string text = R"(kernel rowsum() {
  buffer x: f32 global
  buffer xi: i32 global
  buffer y: f32 global out
  buffer yi: i32 global out
  buffer s: f32 local[1]
  buffer si: i32 local[1]
  gpu_block for b in 3 {
    gpu_thread for r in ROWS {
      gpu_thread for t in LANES {
        s[0] = x[(b * ROWS + r) * LANES + t]
        si[0] = xi[(b * ROWS + r) * LANES + t]
        allreduce s[0] add over t
        allreduce si[0] add over t
        y[(b * ROWS + r) * LANES + t] = s[0]
        yi[(b * ROWS + r) * LANES + t] = si[0]
      }
    }
  }
}
)";
    for (auto [from, to] : {std::pair<std::string, std::string>{"ROWS", std::to_string(rows)}, {"LANES", std::to_string(lanes)}})
      for (size_t at; (at = text.find(from)) != std::string::npos;) text.replace(at, from.size(), to);
    Kernel k = parse_kernel(text);
    SCOPED_TRACE(std::to_string(lanes) + " lanes");
    GlslOptions sg32;
    sg32.subgroup_size = 32;
    sg32.subgroup_clustered = true;
    std::string glsl = emit_glsl(k, sg32);
    EXPECT_EQ(glsl.find("subgroupClusteredAdd(") != std::string::npos, lanes < 32) << glsl;
    EXPECT_EQ(glsl.find("subgroupAdd(") != std::string::npos, lanes >= 32) << glsl;
    std::vector<float> x(size_t(3 * 256));
    std::vector<int32_t> xi(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = float(int(i * 37 % 101) - 50);
      xi[i] = std::numeric_limits<int32_t>::max() - int32_t(i % 5);
    }
    for (Device* d : vulkan_variants()) {
      auto out = run(*d, k, {to_bytes(x), to_bytes(xi), Bytes(x.size() * 4), Bytes(x.size() * 4)});
      auto y = from_bytes<float>(out[2]);
      auto yi = from_bytes<int32_t>(out[3]);
      for (size_t row = 0; row < x.size() / size_t(lanes); ++row) {
        float want = 0;
        uint32_t want_i = 0;
        for (size_t t = 0; t < size_t(lanes); ++t) {
          want += x[row * size_t(lanes) + t];
          want_i += uint32_t(xi[row * size_t(lanes) + t]);
        }
        for (size_t t = 0; t < size_t(lanes); ++t) {
          ASSERT_EQ(y[row * size_t(lanes) + t], want) << d->info().name << " row " << row << " lane " << t;
          ASSERT_EQ(yi[row * size_t(lanes) + t], int32_t(want_i)) << d->info().name << " row " << row;
        }
      }
    }
  }
  std::string max_text = print(testing::allreduce_kernel());
  GlslOptions sg32;
  sg32.subgroup_size = 32;
  std::string glsl = emit_glsl(parse_kernel(max_text), sg32);
  EXPECT_NE(glsl.find("allreduce_step"), std::string::npos) << "max and min keep the tree";
  EXPECT_NE(glsl.find("subgroupAdd("), std::string::npos) << glsl;
}

// An unrolled loop whose loads read whole 16-byte pieces (a GEMV thread's
// share of a row) reads them as uvec4s through a second view of the buffer's
// binding, each iteration taking its element: every dtype, two pieces a
// thread, and a q4-like packed byte read twice (element v % 16 of 32
// iterations); with and without 8/16-bit storage.
TEST_F(VulkanBackend, UnrolledLoopsReadSixteenBytePieces) {
  for (DType t : {f32, i32, f16, bf16, i8, u8})
    for (bool packed : {false, true}) {
      if (packed && t != u8) continue;
      int64_t size = dtype_size(t), w = packed ? 32 : 32 / size, span = packed ? 16 : w;
      Kernel k;
      k.name = "pieces";
      k.buffers = {global("y", f32, true), global("x", t), {"acc", f32, MemScope::Local, 1, false}};
      Expr row = var("b") * idx(32) + var("t");
      Expr at = packed ? row * idx(16) + var("v") % idx(16) : row * idx(w) + var("v");
      Expr x = load(1, valtype_of(t), at);
      if (x->type != ValType::f32) x = cast(ValType::f32, x);
      Expr term = binary(BinOp::Mul, x, cast(ValType::f32, var("v") + idx(1)));
      Stmt add = store(2, idx(0), binary(BinOp::Add, load(2, ValType::f32, idx(0)), term));
      k.body = block({for_loop("b", idx(4), LoopKind::GpuBlock,
                               {for_loop("t", idx(32), LoopKind::GpuThread,
                                         {store(2, idx(0), const_f32(0)), for_loop("v", idx(w), LoopKind::Unrolled, {add}),
                                          store(0, row, load(2, ValType::f32, idx(0)))})})});
      std::string glsl = emit_glsl(k);
      SCOPED_TRACE(std::string(dtype_name(t)) + (packed ? " packed" : ""));
      EXPECT_NE(glsl.find("x_pieces.data["), std::string::npos) << glsl;
      // Small integers, exact in every dtype, so the sums are exact too.
      int64_t n = 128 * span;
      Bytes in(size_t(n * size));
      for (int64_t i = 0; i < n; ++i)
        store_from_double(&in[size_t(i * size)], t, double((i * 7) % 23) - (t == u8 ? 0.0 : 11.0));
      for (Device* d : vulkan_variants()) {
        auto y = from_bytes<float>(run(*d, k, {Bytes(128 * 4), in})[0]);
        for (int64_t r = 0; r < 128; ++r) {
          float want = 0;
          for (int64_t v = 0; v < w; ++v)
            want += float(load_as_double(&in[size_t((r * span + (packed ? v % 16 : v)) * size)], t)) * float(v + 1);
          ASSERT_EQ(y[size_t(r)], want) << d->info().features << " row " << r;
        }
      }
    }
}

// Elementwise kernels with several points a thread (knob `elems`, an
// unrolled loop; CUDA reads it 16 bytes at a time) compute what the
// interpreter does.
TEST_F(VulkanBackend, SeveralPointsAThreadMatchTheInterpreter) {
  Workload w = make_workload("chain:262144", f32, 3);
  std::vector<HostTensor> want = interpret(w.graph, w.inputs);
  Kernel lowered = lower(w.graph).kernels[0];
  for (int64_t elems : {2, 4, 8}) {
    SCOPED_TRACE(elems);
    Knobs knobs({{"elems", elems}});
    Schedule s = schedule_with(lowered, testing::vulkan_device()->info(), knobs);
    ASSERT_NE(print(s).find("unroll"), std::string::npos) << print(s);
    std::vector<HostTensor> got = CompiledGraph(w.graph, testing::vulkan_device(), {s}).run(w.inputs);
    EXPECT_EQ(compare(want[0], got[0], tolerance_for(f32)), "");
  }
}

// --- Errors ---

// f32 contractions on tiles of every side and depth (two stages: registers
// carry the next step), on lavapipe in CI.
TEST_F(VulkanBackend, F32TilesOfEveryShapeMatchAProductInDouble) {
  testing::expect_f32_tiles_match_a_product_in_double(*testing::vulkan_device(), {8, 16}, 32768);
}

// Index arithmetic runs in 32-bit ints (64-bit integer multiplies and
// divisions take several instructions each on a GPU): on the default device,
// unless an i64 constant needs 64 bits; the device then refuses params
// beyond 32 bits. The variant without small storage keeps 64-bit indices.
TEST_F(VulkanBackend, IndicesAreThirtyTwoBitsWhereTheyFit) {
  Kernel k = map_kernel({f32}, f32, [](auto& v) { return binary(BinOp::Mul, v[0], const_f32(2)); });
  Kernel scheduled = apply(k, default_schedule(k, dev().info()));
  std::string narrow = dev().target_source(scheduled);
  // int64_t only for the push constant (the host passes 64-bit params).
  size_t first = narrow.find("int64_t");
  EXPECT_NE(narrow.find("uniform Params { int64_t n; }"), std::string::npos) << narrow;
  EXPECT_EQ(narrow.find("int64_t", first + 1), std::string::npos) << narrow;
  EXPECT_NE(narrow.find("const int n = int(pc.n);"), std::string::npos) << narrow;
  std::string wide = testing::vulkan_device_without_small_storage()->target_source(scheduled);
  EXPECT_NE(wide.find("const int64_t n = int64_t(pc.n);"), std::string::npos) << wide;
  // out[i] = (i + 2^40) - 2^40: 64-bit indices, and the right values.
  Kernel big;
  big.name = "big";
  big.params = {"n"};
  big.buffers = {global("out", i32, true)};
  Expr far = idx(int64_t(1) << 40);
  big.body = block({for_loop("i", var("n"), LoopKind::Parallel,
                             {store(0, var("i"), cast(ValType::i32, binary(BinOp::Sub, binary(BinOp::Add, var("i"), far), far)))})});
  Kernel big_scheduled = apply(big, default_schedule(big, dev().info()));
  EXPECT_NE(dev().target_source(big_scheduled).find("int64_t"), std::string::npos);
  auto out = from_bytes<int32_t>(run(dev(), big_scheduled, {Bytes(4 * 300)}, {300})[0]);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(out[size_t(i)], i);
  // A param beyond 32 bits is refused before anything runs.
  std::shared_ptr<Executable> exe = dev().compile(scheduled);
  try {
    testing::launch(dev(), *exe, {Bytes(16), Bytes(16)}, {int64_t(1) << 31});
    ADD_FAILURE() << "a param of 2^31 was passed to a kernel with 32-bit indices";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("32-bit indices"), std::string::npos) << e.what();
  }
}

TEST_F(VulkanBackend, UnscheduledKernelsAreRefused) {
  Kernel k = map_kernel({f32}, f32, [](auto& v) { return v[0]; });
  try {
    dev().compile(k);
    FAIL() << "a parallel loop compiled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not scheduled for the GPU"), std::string::npos) << e.what();
  }
  auto body = [](LoopKind outer, LoopKind inner, Expr extent) {
    return block({for_loop("a", idx(4), outer, {for_loop("b", extent, inner, {store(0, var("b"), const_f32(1))})})});
  };
  k.params = {"n"};
  k.body = body(LoopKind::GpuThread, LoopKind::GpuBlock, idx(4));
  EXPECT_THROW(dev().compile(k), Error) << "a block loop inside a thread loop";
  k.body = body(LoopKind::GpuBlock, LoopKind::GpuThread, var("n"));
  try {
    dev().compile(k);
    ADD_FAILURE() << "a thread loop of symbolic extent compiled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpu_thread loop 'b' must have a positive constant extent"), std::string::npos)
        << e.what();
  }
  k.body = body(LoopKind::Serial, LoopKind::GpuThread, idx(4));
  EXPECT_THROW(dev().compile(k), Error) << "a bound loop inside a serial one";
  k.body = body(LoopKind::GpuBlock, LoopKind::GpuThread, idx(4096));
  EXPECT_THROW(dev().compile(k), Error) << "a workgroup larger than the device allows";
  k.body = block({for_loop("a", var("b"), LoopKind::GpuBlock, {store(0, var("a"), const_f32(1))})});
  EXPECT_THROW(dev().compile(k), Error) << "a grid that depends on a loop variable";
}

// lavapipe cannot keep f32 subnormals; NVIDIA can. The shader must compile either way.
TEST_F(VulkanBackend, SubnormalPreservingShadersCompile) {
  Kernel k = map_kernel({f32}, f32, [](auto& v) { return binary(BinOp::Mul, v[0], const_f32(0.5)); });
  GlslOptions options;
  options.denorm_preserve = true;
  std::string glsl = emit_glsl(apply(k, default_schedule(k, dev().info())), options);
  EXPECT_NE(glsl.find("DenormPreserve"), std::string::npos) << glsl;
  EXPECT_FALSE(compile_glsl_to_spirv(glsl, "kernel 'map'").empty());
}

// sqrt(x) - sqrt(x) is NaN for x < 0; lavapipe folded it to 0 until shaders
// asked for SignedZeroInfNanPreserve (tests/fuzz/regressions/lavapipe-seed*).
TEST_F(VulkanBackend, NanPreservingShadersCompile) {
  Kernel k = map_kernel({f32}, f32, [](auto& v) {
    Expr r = unary(UnOp::Sqrt, v[0]);
    return binary(BinOp::Sub, r, r);
  });
  GlslOptions options;
  options.nan_preserve = true;
  options.denorm_preserve = true;
  std::string glsl = emit_glsl(apply(k, default_schedule(k, dev().info())), options);
  EXPECT_NE(glsl.find("SignedZeroInfNanPreserve"), std::string::npos) << glsl;
  EXPECT_FALSE(compile_glsl_to_spirv(glsl, "kernel 'map'").empty());
}

TEST_F(VulkanBackend, GlslangErrorsCarryItsLog) {
  try {
    compile_glsl_to_spirv("#version 450\nlayout(local_size_x = 1) in;\nvoid main() { no_such_function(); }\n",
                          "kernel 'broken'");
    FAIL() << "bad GLSL compiled";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("kernel 'broken'"), std::string::npos) << m;
    EXPECT_NE(m.find("no_such_function"), std::string::npos) << m;
    EXPECT_NE(m.find("ERROR"), std::string::npos) << m;
  }
}

TEST_F(VulkanBackend, VulkanErrorsNameTheCallTheResultAndTheKernel) {
  try {
    vk::check(VK_ERROR_DEVICE_LOST, "vkQueueSubmit", "kernel 'k0_add'");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "vulkan backend: vkQueueSubmit failed with VK_ERROR_DEVICE_LOST: kernel 'k0_add'");
  }
  EXPECT_NO_THROW(vk::check(VK_SUCCESS, "vkQueueSubmit", ""));
  EXPECT_EQ(vk::result_name(VK_ERROR_OUT_OF_DEVICE_MEMORY), "VK_ERROR_OUT_OF_DEVICE_MEMORY");
}

TEST_F(VulkanBackend, BadBuffersAndArgumentsAreErrors) {
  KILN_SKIP_WITHOUT_CPU();
  auto buf = dev().allocate(16);
  EXPECT_EQ(buf->bytes(), 16);
  std::vector<std::byte> host(32);
  EXPECT_THROW(dev().write(*buf, host.data(), 17), Error);
  EXPECT_THROW(dev().read(*buf, host.data(), 17), Error);
  EXPECT_THROW(dev().write(*buf, host.data(), -1), Error);
  EXPECT_THROW(dev().allocate(-1), Error);
  auto cpu_buf = cpu().allocate(16);
  EXPECT_THROW(dev().write(*cpu_buf, host.data(), 16), Error);
  EXPECT_THROW(cpu().write(*buf, host.data(), 16), Error);

  Kernel k = map_kernel({f32}, f32, [](auto& v) { return v[0]; });
  auto exe = dev().compile(apply(k, default_schedule(k, dev().info())));
  EXPECT_THROW(exe->launch(dev().stream(), {buf.get()}, {4}), Error);
  EXPECT_THROW(exe->launch(dev().stream(), {buf.get(), buf.get()}, {}), Error);
  EXPECT_THROW(exe->launch(dev().stream(), {buf.get(), nullptr}, {4}), Error);
  EXPECT_THROW(exe->launch(dev().stream(), {buf.get(), cpu_buf.get()}, {4}), Error);
  EXPECT_THROW(exe->launch(cpu().stream(), {buf.get(), buf.get()}, {4}), Error);
  auto empty = dev().allocate(0);
  EXPECT_NO_THROW(dev().write(*empty, host.data(), 0));
  EXPECT_NO_THROW(dev().read(*empty, host.data(), 0));
}

// Buffers and executables dropped while their launch is in flight stay alive
// until it finishes.
TEST_F(VulkanBackend, LaunchKeepsItsBuffersAlive) {
  Kernel k = map_kernel({f32}, f32, [](auto& v) { return binary(BinOp::Mul, v[0], const_f32(2)); });
  Kernel scheduled = apply(k, default_schedule(k, dev().info()));
  const int64_t n = 1 << 16;
  std::vector<float> x(n, 1.5f);
  auto out = dev().allocate(n * 4);
  for (int round = 0; round < 20; ++round) {
    auto in = dev().allocate(n * 4);
    dev().write(*in, x.data(), n * 4);
    dev().compile(scheduled)->launch(dev().stream(), {in.get(), out.get()}, {n});
  }
  std::vector<float> got(n);
  dev().read(*out, got.data(), n * 4);
  EXPECT_EQ(got, std::vector<float>(n, 3.0f));
}

TEST_F(VulkanBackend, DeviceInfo) {
  const DeviceInfo& info = dev().info();
  EXPECT_EQ(info.backend, "vulkan");
  EXPECT_FALSE(info.name.empty());
  EXPECT_GE(info.cores, 1);
  EXPECT_GT(info.warp_size, 0);
  EXPECT_GE(info.max_threads, 128);
  EXPECT_GE(info.shared_bytes, 16384);
  EXPECT_GT(info.memory_bytes, 0);
  EXPECT_NE(info.features.find("int64"), std::string::npos) << info.features;
  EXPECT_NE(info.features.find("subgroup_size=" + std::to_string(info.warp_size)), std::string::npos);
  EXPECT_EQ(device("vulkan").get(), dev_.get());
  std::cout << info.name << ": " << info.features << ", " << info.cores << " compute units, "
            << info.memory_bytes / (1 << 20) << " MiB\n";
}

// --- Compile time ---

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// How long glslang takes per kernel (GLSL -> SPIR-V), and the whole compile()
// with pipeline creation, over the kernels of every op case.
TEST_F(VulkanBackend, GlslangTimePerKernel) {
  std::vector<double> glslang, pipeline;
  for (const testing::GraphCase& c : testing::op_cases()) {
    for (const Kernel& k : lower(c.graph).kernels) {
      Kernel s = apply(k, default_schedule(k, dev().info()));
      std::string glsl = emit_glsl(s);
      auto t0 = std::chrono::steady_clock::now();
      compile_glsl_to_spirv(glsl, "kernel '" + s.name + "'");
      glslang.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      dev().compile(s);
      pipeline.push_back(seconds_since(t0));
    }
  }
  ASSERT_FALSE(glslang.empty());
  auto summary = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    return "mean " + std::to_string(sum / v.size() * 1e3) + " ms, median " + std::to_string(v[v.size() / 2] * 1e3) +
           " ms, max " + std::to_string(v.back() * 1e3) + " ms";
  };
  std::cout << glslang.size() << " kernels. glslang: " << summary(glslang)
            << ". compile() (emit + glslang + pipeline): " << summary(pipeline) << "\n";
}

TEST_F(VulkanBackend, AllReduceGivesEveryThreadTheCombinedValue) {
  std::vector<float> x;
  std::vector<int32_t> xi;
  testing::allreduce_inputs(&x, &xi);
  auto out = run(dev(), testing::allreduce_kernel(),
                       {to_bytes(x), to_bytes(xi), Bytes(3 * x.size() * 4), Bytes(xi.size() * 4)}, {3});
  EXPECT_EQ(testing::check_allreduce(x, xi, from_bytes<float>(out[2]), from_bytes<int32_t>(out[3])), "");
}

}  // namespace
}  // namespace kiln
