// The CUDA backend on a real GPU: every graph of tests/backends/gpu_testing.h
// against the reference interpreter, hand-built kernels against kiln's exact
// definitions (rounding, integer division, saturating casts), launch geometry,
// buffers and errors, and graph replay (capture once, replay, recapture).
// Every test skips when make_cuda_devices() finds no GPU.
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <thread>
#include <tuple>

#include "backends/cuda/cuda_device.h"
#include "codegen/emit/cuda/emit_cuda.h"
#include "runtime/kernel_cache.h"
#include "tests/backends/gpu_testing.h"
#include "tests/backends/kernel_testing.h"
#include "tests/fault_testing.h"
#include "tests/testing.h"

namespace kiln {
namespace {

using testing::Bytes;
using testing::from_bytes;
using testing::global;
using testing::launch;
using testing::random_float_bits;
using testing::random_ints;
using testing::run_map;
using testing::to_bytes;
constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::shared_ptr<Device> gpu() {
  static std::shared_ptr<Device> device = [] {
    std::string why;
    auto found = make_cuda_devices("libcuda.so.1", &why);
    if (found.empty()) std::printf("no CUDA device: %s\n", why.c_str());
    return found.empty() ? nullptr : found[0];
  }();
  return device;
}

#define REQUIRE_GPU() \
  if (!gpu()) GTEST_SKIP() << "no CUDA device"

void expect_matches_interpreter(const testing::GraphCase& c, uint64_t seed = 7) {
  auto inputs = testing::inputs_for(c.graph, c.symbols, seed, c.scale);
  std::vector<HostTensor> want = interpret(c.graph, inputs, c.symbols);
  CompiledGraph cg(c.graph, gpu());
  std::vector<HostTensor> got = cg.run(inputs, c.symbols);
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    std::string diff = testing::compare(want[o], got[o], testing::tolerance_for(want[o].dtype));
    EXPECT_TRUE(diff.empty()) << "output " << o << ": " << diff << "\n" << print(c.graph);
  }
}

TEST(CudaBackend, EveryGraphMatchesTheInterpreter) {
  REQUIRE_GPU();
  for (const testing::GraphCase& c : testing::op_cases()) {
    SCOPED_TRACE(c.name);
    expect_matches_interpreter(c);
  }
}

TEST(CudaBackend, SymbolicDimsRunAtManySizesWithoutRecompiling) {
  REQUIRE_GPU();
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int y = g.contract(g.input("x", f32, {seq, 64}), g.input("w", f32, {64, 32}));
  g.outputs = {g.reduce(Op::ReduceMax, y, {1}), y};
  CompiledGraph cg(g, gpu());
  int64_t compiled = KernelCache::global().misses();
  for (int64_t n : {1, 255, 256, 257, 4096}) {
    SCOPED_TRACE("seq = " + std::to_string(n));
    auto inputs = testing::inputs_for(g, {{"seq", n}}, uint64_t(n));
    auto want = interpret(g, inputs, {{"seq", n}});
    auto got = cg.run(inputs);
    for (size_t o = 0; o < want.size(); ++o)
      EXPECT_EQ(testing::compare(want[o], got[o], testing::tolerance_for(f32)), "");
  }
  EXPECT_EQ(KernelCache::global().misses(), compiled) << "a new symbolic value must not recompile";
}

// NVRTC plus module load, per kernel, on this machine.
TEST(CudaBackend, CompileTime) {
  REQUIRE_GPU();
  int kernels = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const char* name : {"add f32", "contract f16", "reduce_sum bf16 axes #3", "gather i8 axis 1", "cast f32 -> u8"})
    for (const testing::GraphCase& c : testing::op_cases())
      if (c.name == name)
        for (const Kernel& k : lower(c.graph).kernels) {
          Kernel timed = testing::scheduled(k, gpu()->info());
          timed.name += "_timed";  // not in the kernel cache
          gpu()->compile(timed);
          ++kernels;
        }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %d kernels compiled and loaded, %.1f ms each\n", gpu()->info().name.c_str(), kernels,
              1000 * seconds / kernels);
}

// --- Hand-built kernels ---

// out[i] = f(in_0[i], in_1[i], ...) for i in 0..n (a param), with the default
// GPU schedule.
Kernel scheduled_map(const std::vector<DType>& ins, DType out,
                      const std::function<Expr(const std::vector<Expr>&)>& f) {
  return testing::scheduled(testing::map_kernel(ins, out, f), gpu()->info());
}

std::mt19937& rng() {
  static std::mt19937 gen(1234);
  return gen;
}

int32_t wrap(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

// Every float bit pattern class, and values halfway between neighbouring f16 /
// bf16 values (ties).
std::vector<float> rounding_inputs() {
  std::vector<float> v = random_float_bits(rng(), 4000);
  v.insert(v.end(), {0.0f, -0.0f, kInf, -kInf, kNaN, 65504.0f, 65520.0f, 1e-8f, -1e-8f, 5.9604645e-8f,
                     std::bit_cast<float>(0x33000000u), std::bit_cast<float>(0x33c00000u)});
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 2000; ++i) {
    v.push_back(std::bit_cast<float>((bits(rng()) & 0xffff0000u) | 0x8000u));  // bf16 ties
    uint32_t h = bits(rng()) % 0x7800u + 0x400u;  // a normal f16
    uint32_t f = std::bit_cast<uint32_t>(f16_bits_to_f32(uint16_t(h)));
    v.push_back(std::bit_cast<float>(f + 0x1000u));  // the f16 tie above it
  }
  return v;
}

bool same_float(float got, float want) {
  return std::isnan(want) ? std::isnan(got) : std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(want);
}

TEST(CudaBackend, F16AndBF16StoresAndRoundsMatchTheCpuDefinitions) {
  REQUIRE_GPU();
  std::vector<float> x = rounding_inputs();
  for (DType t : {f16, bf16}) {
    SCOPED_TRACE(dtype_name(t));
    auto stored = run_map<uint16_t>(*gpu(), scheduled_map({f32}, t, [](auto& a) { return a[0]; }), {to_bytes(x)}, x.size());
    auto rounded =
        run_map<float>(*gpu(), scheduled_map({f32}, f32, [&](auto& a) { return round_to(t, a[0]); }), {to_bytes(x)}, x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t want = t == f16 ? f32_to_f16_bits(x[i]) : f32_to_bf16_bits(x[i]);
      float want_value = t == f16 ? f16_bits_to_f32(want) : bf16_bits_to_f32(want);
      if (t == f16 && std::isnan(x[i]))  // the NaN payload is the hardware's choice
        EXPECT_TRUE(std::isnan(f16_bits_to_f32(stored[i])));
      else
        EXPECT_EQ(stored[i], want) << std::hexfloat << x[i];
      EXPECT_TRUE(same_float(rounded[i], want_value)) << std::hexfloat << x[i] << " -> " << rounded[i];
    }
  }
}

TEST(CudaBackend, F16AndBF16LoadEveryBitPattern) {
  REQUIRE_GPU();
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < all.size(); ++h) all[h] = uint16_t(h);
  for (DType t : {f16, bf16}) {
    auto got = run_map<float>(*gpu(), scheduled_map({t}, f32, [](auto& a) { return a[0]; }), {to_bytes(all)}, all.size());
    for (uint32_t h = 0; h < all.size(); ++h) {
      float want = t == f16 ? f16_bits_to_f32(uint16_t(h)) : bf16_bits_to_f32(uint16_t(h));
      EXPECT_TRUE(same_float(got[h], want)) << dtype_name(t) << " " << h;
    }
  }
}

// Truncates toward zero and saturates to [lo, hi]; NaN gives 0.
double saturate(float v, double lo, double hi) {
  return std::isnan(v) ? 0 : std::min(std::max(std::trunc(double(v)), lo), hi);
}

// An i64 value leaves the kernel as three i32 pieces: v / 2^32, then the next
// 16 bits and the last 16 (truncating division keeps v = sum of the pieces).
Kernel f32_to_i64_pieces() {
  Kernel k;
  k.name = "f32_to_i64";
  k.params = {"n"};
  k.buffers = {global("x", f32), global("out", i32, true)};
  Expr v = cast(ValType::i64, load(0, ValType::f32, var("i")));
  auto piece = [&](int j, Expr e) { return store(1, var("i") * idx(3) + idx(j), cast(ValType::i32, e)); };
  k.body = block({for_loop("i", var("n"), LoopKind::Parallel,
                           {piece(0, v / idx(int64_t(1) << 32)), piece(1, v / idx(1 << 16) % idx(1 << 16)),
                            piece(2, v % idx(1 << 16))})});
  return testing::scheduled(k, gpu()->info());
}

TEST(CudaBackend, FloatToIntCastsSaturateAndNaNIsZero) {
  REQUIRE_GPU();
  std::vector<float> x = {kNaN, -kNaN, kInf, -kInf, 3e9f, -3e9f, 2147483520.0f, -2147483648.0f, 1.9f, -1.9f,
                          0.5f, -0.0f, 1e20f, -1e20f, 9.2233715e18f, -9.223372e18f, 255.5f, -128.7f};
  std::vector<float> more = random_float_bits(rng(), 2000);
  x.insert(x.end(), more.begin(), more.end());
  auto to_i32 = run_map<int32_t>(*gpu(), scheduled_map({f32}, i32, [](auto& a) { return cast(ValType::i32, a[0]); }),
                                 {to_bytes(x)}, x.size());
  auto pieces = from_bytes<int32_t>(
      launch(*gpu(), *gpu()->compile(f32_to_i64_pieces()), {to_bytes(x), Bytes(12 * x.size())}, {int64_t(x.size())})[1]);
  const double i64_max = 9223372036854775807.0;  // rounds to 2^63
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(to_i32[i], int32_t(saturate(x[i], kIntMin, kIntMax))) << std::hexfloat << x[i];
    double wide = saturate(x[i], -i64_max, i64_max);
    int64_t want = wide >= i64_max ? std::numeric_limits<int64_t>::max() : wide <= -i64_max ? std::numeric_limits<int64_t>::min() : int64_t(wide);
    int64_t got = int64_t(pieces[3 * i]) * (int64_t(1) << 32) + int64_t(pieces[3 * i + 1]) * 65536 + pieces[3 * i + 2];
    EXPECT_EQ(got, want) << std::hexfloat << x[i];
  }
}

int32_t ref_div(int32_t a, int32_t b) { return b == 0 ? 0 : b == -1 ? wrap(-int64_t(a)) : a / b; }
int32_t ref_mod(int32_t a, int32_t b) { return b == 0 || b == -1 ? 0 : a % b; }

TEST(CudaBackend, IntegerArithmeticWrapsAndDivisionNeverTraps) {
  REQUIRE_GPU();
  std::vector<int32_t> a = random_ints(rng(), 1000), b = random_ints(rng(), 1000);
  const std::pair<int32_t, int32_t> special[] = {{kIntMin, -1}, {kIntMin, 0}, {5, 0},  {0, 0},   {-7, 0},
                                                 {7, -1},       {kIntMax, -1}, {7, 2}, {-7, 2},  {7, -2},
                                                 {-7, -2},      {kIntMin, 1},  {kIntMax, kIntMax}, {kIntMin, kIntMin}};
  for (auto [x, y] : special) a.push_back(x), b.push_back(y);
  const std::pair<BinOp, std::function<int32_t(int32_t, int32_t)>> cases[] = {
      {BinOp::Add, [](int32_t x, int32_t y) { return wrap(int64_t(x) + y); }},
      {BinOp::Sub, [](int32_t x, int32_t y) { return wrap(int64_t(x) - y); }},
      {BinOp::Mul, [](int32_t x, int32_t y) { return wrap(int64_t(x) * y); }},
      {BinOp::Div, ref_div},
      {BinOp::Mod, ref_mod},
      {BinOp::Max, [](int32_t x, int32_t y) { return std::max(x, y); }},
      {BinOp::Min, [](int32_t x, int32_t y) { return std::min(x, y); }},
  };
  for (const auto& [op, ref] : cases) {
    Kernel k = scheduled_map({i32, i32}, i32, [&](auto& v) { return binary(op, v[0], v[1]); });
    auto got = run_map<int32_t>(*gpu(), k, {to_bytes(a), to_bytes(b)}, a.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(got[i], ref(a[i], b[i])) << binop_name(op) << " " << a[i] << ", " << b[i];
  }
  Kernel neg = scheduled_map({i32}, i32, [](auto& v) { return unary(UnOp::Neg, v[0]); });
  auto negated = run_map<int32_t>(*gpu(), neg, {to_bytes(a)}, a.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(negated[i], wrap(-int64_t(a[i])));
  for (DType t : {i8, u8}) {
    auto got = run_map<int32_t>(*gpu(), scheduled_map({i32}, i32, [&](auto& v) { return round_to(t, v[0]); }), {to_bytes(a)},
                                a.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(got[i], t == i8 ? int32_t(int8_t(a[i])) : int32_t(uint8_t(a[i])));
  }
}

TEST(CudaBackend, AllReduceGivesEveryThreadTheCombinedValue) {
  REQUIRE_GPU();
  std::vector<float> x;
  std::vector<int32_t> xi;
  testing::allreduce_inputs(&x, &xi);
  auto out = launch(*gpu(), *gpu()->compile(testing::allreduce_kernel()),
                    {to_bytes(x), to_bytes(xi), Bytes(3 * x.size() * 4), Bytes(xi.size() * 4)}, {3});
  EXPECT_EQ(testing::check_allreduce(x, xi, from_bytes<float>(out[2]), from_bytes<int32_t>(out[3])), "");
}

// out[((z * Y + y) * X + x) * threads + t] = that index, over a 3-D grid of
// 3-D blocks: every block and thread index lands where the mapping says.
TEST(CudaBackend, ThreeDimensionalGridsAndBlocks) {
  REQUIRE_GPU();
  const int64_t gz = 3, gy = 5, tz = 2, ty = 4, tx = 8;
  Expr gx = var("n");
  Expr block_id = (var("bz") * idx(gy) + var("by")) * gx + var("bx");
  Expr thread_id = (var("tz") * idx(ty) + var("ty")) * idx(tx) + var("tx");
  Expr at = block_id * idx(tz * ty * tx) + thread_id;
  Stmt s = store(0, at, cast(ValType::i32, at));
  for (auto [v, n, kind] : {std::tuple{"tx", idx(tx), LoopKind::GpuThread}, {"ty", idx(ty), LoopKind::GpuThread},
                            {"tz", idx(tz), LoopKind::GpuThread}, {"bx", gx, LoopKind::GpuBlock},
                            {"by", idx(gy), LoopKind::GpuBlock}, {"bz", idx(gz), LoopKind::GpuBlock}})
    s = for_loop(v, n, kind, {s});
  Kernel k;
  k.name = "grid3d";
  k.params = {"n"};
  k.buffers = {global("out", i32, true)};
  k.body = block({s});
  auto exe = gpu()->compile(k);
  for (int64_t n : {1, 7}) {
    int64_t total = gz * gy * n * tz * ty * tx;
    auto got = from_bytes<int32_t>(launch(*gpu(), *exe, {to_bytes(std::vector<int32_t>(total, -1))}, {n})[0]);
    for (int64_t i = 0; i < total; ++i) ASSERT_EQ(got[i], i) << "n = " << n;
  }
}

TEST(CudaBackend, OneThreadKernelAndEmptyLaunch) {
  REQUIRE_GPU();
  Kernel k;
  k.name = "serial_sum";
  k.params = {"n"};
  k.buffers = {global("x", f32), global("y", f32, true)};
  Expr y = load(1, ValType::f32, idx(0));
  k.body = block({store(1, idx(0), const_f32(0)),
                  for_loop("i", var("n"), LoopKind::Serial, {store(1, idx(0), binary(BinOp::Add, y, load(0, ValType::f32, var("i"))))})});
  std::vector<float> x = {1, 2, 3, 4.5f};
  EXPECT_EQ(from_bytes<float>(launch(*gpu(), *gpu()->compile(k), {to_bytes(x), Bytes(4)}, {4})[1])[0], 10.5f);
  // A grid of 0 blocks launches nothing and leaves the output alone.
  auto map = scheduled_map({f32}, f32, [](auto& a) { return a[0]; });
  std::vector<float> out = {7};
  EXPECT_EQ(from_bytes<float>(launch(*gpu(), *gpu()->compile(map), {to_bytes(x), to_bytes(out)}, {0})[1])[0], 7.0f);
}

TEST(CudaBackend, LaunchesLargerThanTheDeviceAreErrors) {
  REQUIRE_GPU();
  Kernel k;
  k.name = "too_wide";
  k.params = {"n"};
  k.buffers = {global("out", f32, true)};
  k.body = block({for_loop("t", var("n"), LoopKind::GpuThread, {store(0, var("t"), const_f32(1))})});
  auto exe = gpu()->compile(k);
  auto buf = gpu()->allocate(4 * 4096);
  EXPECT_NO_THROW(exe->launch(gpu()->stream(), {buf.get()}, {1024}));
  try {
    exe->launch(gpu()->stream(), {buf.get()}, {2048});
    ADD_FAILURE() << "launched 2048 threads per block";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too_wide"), std::string::npos) << e.what();
  }
  EXPECT_THROW(exe->launch(gpu()->stream(), {buf.get(), buf.get()}, {4}), Error);
  EXPECT_THROW(exe->launch(gpu()->stream(), {buf.get()}, {}), Error);
  gpu()->stream().synchronize();
}

TEST(CudaBackend, ParallelLoopsAreRefused) {
  REQUIRE_GPU();
  Kernel k;
  k.name = "unscheduled";
  k.buffers = {global("out", f32, true)};
  k.body = block({for_loop("i", idx(8), LoopKind::Parallel, {store(0, var("i"), const_f32(1))})});
  try {
    gpu()->compile(k);
    ADD_FAILURE() << "compiled a parallel loop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not scheduled for the GPU"), std::string::npos) << e.what();
  }
}

TEST(CudaBackend, BuffersAreBoundsCheckedAndReused) {
  REQUIRE_GPU();
  Device& d = *gpu();
  for (int64_t bytes : {0, 1, 100, 4096, 3 << 20}) {
    auto buf = d.allocate(bytes);
    EXPECT_EQ(buf->bytes(), bytes);
    std::vector<uint8_t> in(bytes), out(bytes);
    for (int64_t i = 0; i < bytes; ++i) in[i] = uint8_t(i * 7);
    d.write(*buf, in.data(), bytes);
    d.read(*buf, out.data(), bytes);
    EXPECT_EQ(in, out);
  }
  auto buf = d.allocate(8);
  char data[16] = {};
  EXPECT_THROW(d.write(*buf, data, 16), Error);
  EXPECT_THROW(d.read(*buf, data, 9), Error);
  EXPECT_THROW(d.write(*buf, data, -1), Error);
  EXPECT_THROW(d.allocate(-1), Error);
  for (int i = 0; i < 1000; ++i) d.allocate(1 << 20);  // freed blocks come back, not new memory
}

TEST(CudaBackend, CompilesFromSeveralThreadsAtOnce) {
  REQUIRE_GPU();
  std::vector<std::thread> threads;
  std::atomic<int> ok = 0;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Kernel k = scheduled_map({i32}, i32, [&](auto& a) { return binary(BinOp::Add, a[0], const_int(ValType::i32, t)); });
      if (run_map<int32_t>(*gpu(), k, {to_bytes(std::vector<int32_t>{1, 2, 3})}, 3) == std::vector<int32_t>{1 + t, 2 + t, 3 + t})
        ok++;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
}

// --- Graph replay ---

void expect_same(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got, testing::Tolerance tol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) EXPECT_EQ(testing::compare(want[o], got[o], tol), "") << "output " << o;
}

TEST(CudaReplay, MatchesLaunchesOneByOneAndTheInterpreter) {
  REQUIRE_GPU();
  ASSERT_TRUE(gpu()->stream().can_capture());
  for (const char* spec : {"mlp:8", "deps:50"}) {
    SCOPED_TRACE(spec);
    Workload w = make_workload(spec);
    CompiledGraph cg(w.graph, gpu());
    std::vector<HostTensor> one_by_one = cg.run(w.inputs);
    expect_same(interpret(w.graph, w.inputs), one_by_one, testing::tolerance_for(f32));
    cg.execute({.replay = false, .timing = false});
    expect_same(one_by_one, cg.outputs(), {0, 0});
    for (int rep = 0; rep < 3; ++rep) {
      cg.execute({.replay = true});
      expect_same(one_by_one, cg.outputs(), {0, 0});  // the same kernels on the same data
    }
    EXPECT_EQ(cg.captures(), 1);
    EXPECT_TRUE(cg.kernel_seconds().empty());
  }
}

TEST(CudaReplay, NewInputsReplayWithoutRecapture) {
  REQUIRE_GPU();
  Workload w = make_workload("deps:20");
  CompiledGraph cg(w.graph, gpu());
  for (uint64_t seed : {1, 2, 3}) {
    auto inputs = testing::inputs_for(w.graph, {}, seed);
    cg.set_inputs(inputs);
    cg.execute({.replay = true});
    expect_same(interpret(w.graph, inputs), cg.outputs(), testing::tolerance_for(f32));
  }
  EXPECT_EQ(cg.captures(), 1);
}

TEST(CudaReplay, ANewSymbolValueRecaptures) {
  REQUIRE_GPU();
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int y = g.contract(g.input("x", f32, {seq, 64}), g.input("w", f32, {64, 32}));
  g.outputs = {g.reduce(Op::ReduceMax, y, {1}), y};
  CompiledGraph cg(g, gpu());
  const std::pair<int64_t, int> steps[] = {{7, 1}, {7, 1}, {1000, 2}, {1000, 2}, {7, 3}};
  uint64_t seed = 1;
  for (auto [n, captures] : steps) {
    SCOPED_TRACE("seq = " + std::to_string(n));
    auto inputs = testing::inputs_for(g, {{"seq", n}}, seed++);
    cg.set_inputs(inputs);
    cg.execute({.replay = true});
    EXPECT_EQ(cg.captures(), captures);
    expect_same(interpret(g, inputs, {{"seq", n}}), cg.outputs(), testing::tolerance_for(f32));
  }
}

// A recording that fails leaves the stream running work, not capturing.
TEST(CudaReplay, FailedCapturesAreErrorsAndTheStreamRecovers) {
  REQUIRE_GPU();
  Stream& stream = gpu()->stream();
  auto exe = gpu()->compile(scheduled_map({f32}, f32, [](auto& a) { return binary(BinOp::Add, a[0], const_f32(1)); }));
  std::vector<float> x = {1, 2, 3, 4};
  auto in = gpu()->allocate(16), out = gpu()->allocate(16);
  gpu()->write(*in, x.data(), 16);
  try {
    stream.capture([&] { throw Error("recording stopped"); });
    ADD_FAILURE() << "the exception was lost";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "recording stopped");
  }
  try {
    stream.capture([&] {
      exe->launch(stream, {in.get(), out.get()}, {4});
      stream.synchronize();  // waiting is not allowed while capturing
    });
    ADD_FAILURE() << "synchronized inside a capture";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuStreamSynchronize"), std::string::npos) << e.what();
  }
  // Launches run again, and a new capture replays.
  EXPECT_EQ(from_bytes<float>(launch(*gpu(), *exe, {to_bytes(x), Bytes(16)}, {4})[1]), (std::vector<float>{2, 3, 4, 5}));
  std::unique_ptr<Replay> replay = stream.capture([&] { exe->launch(stream, {in.get(), out.get()}, {4}); });
  std::vector<float> zeros(4, 0), got(4);
  gpu()->write(*out, zeros.data(), 16);
  replay->replay();
  stream.synchronize();
  gpu()->read(*out, got.data(), 16);
  EXPECT_EQ(got, (std::vector<float>{2, 3, 4, 5}));
}

// f32 contractions on SIMT tiles of every side, depth and stage count.
TEST(CudaBackend, F32TilesOfEveryShapeMatchAProductInDouble) {
  REQUIRE_GPU();
  testing::expect_f32_tiles_match_a_product_in_double(*gpu(), {8, 16, 32});
}

// f16 contractions on wgmma tiles (sm_90) of every width, row count, depth
// and stage count, with B's columns contiguous (MN-major) or a weight's rows
// (K-major), and A's rows contiguous, copied by cp.async and by tensor maps
// (`tma`; KILN_CUDA_TMA=0 skips those): against a product in double of the
// same f16 inputs, within the f32 sum's error plus the f16 output's rounding.
TEST(CudaBackend, WarpgroupTilesOfEveryShapeMatchAProductInDouble) {
  REQUIRE_GPU();
  if (gpu()->info().features != "sm_90") GTEST_SKIP() << "wgmma is sm_90's";
  const int64_t m = 256, kd = 256, n = 256;
  std::mt19937 rng(12);
  std::vector<float> a = testing::random_floats(rng, size_t(m * kd), -2.0f, 2.0f);
  std::vector<float> b = testing::random_floats(rng, size_t(kd * n), -2.0f, 2.0f);
  for (float& v : a) v = f16_bits_to_f32(f32_to_f16_bits(v));
  for (float& v : b) v = f16_bits_to_f32(f32_to_f16_bits(v));
  const char* tma_env = std::getenv("KILN_CUDA_TMA");
  const bool tma_too = !(tma_env && std::string(tma_env) == "0");
  for (int layout = 0; layout < 3; ++layout) {  // B's columns contiguous, weight rows, A's columns (rows contiguous)
    Graph g;
    int x = layout == 2 ? g.permute(g.input("a", f16, {kd, m}), {1, 0}) : g.input("a", f16, {m, kd});
    int y = layout == 1 ? g.permute(g.input("b", f16, {n, kd}), {1, 0}) : g.input("b", f16, {kd, n});
    g.outputs = {g.contract(x, y)};
    Kernel k = lower(g).kernels[0];
    std::vector<uint16_t> ah(a.size()), bh(b.size());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < kd; ++r) ah[size_t(layout == 2 ? r * m + i : i * kd + r)] = f32_to_f16_bits(a[size_t(i * kd + r)]);
    for (int64_t r = 0; r < kd; ++r)
      for (int64_t c = 0; c < n; ++c) bh[size_t(layout == 1 ? c * kd + r : r * n + c)] = f32_to_f16_bits(b[size_t(r * n + c)]);
    std::vector<Bytes> buffers;
    for (const BufferDecl& d : k.buffers)
      if (d.scope == MemScope::Global)
        buffers.push_back(d.output ? Bytes(size_t(m * n) * 2) : d.name == "a" ? testing::to_bytes(ah) : testing::to_bytes(bh));
    for (int64_t bm : {128, 256})
      for (int64_t bn : {64, 128, 256})
        for (int64_t bk : {64, 128})
        for (int64_t stages : {2, 3, 4})
        for (int tma : tma_too ? std::vector<int>{0, 1} : std::vector<int>{0}) {
          if ((bm == 256 && bn == 256) || stages * (bm + bn) * bk * 2 + 1024 > 227 * 1024 || (bk == 64 && stages == 2))
            continue;
          SCOPED_TRACE(std::to_string(bm) + " x " + std::to_string(bk) + " x " + std::to_string(bn) + ", " +
                       std::to_string(stages) + " stages, layout " + std::to_string(layout) + (tma ? ", tma" : ""));
          Knobs knobs({{"mma_bm", bm}, {"mma_bn", bn}, {"mma_bk", bk}, {"mma_stages", stages}, {"tma", tma}});
          Kernel tiled = apply(k, schedule_with(k, gpu()->info(), knobs));
          ASSERT_TRUE(tiled.array_tile.warpgroup);
          ASSERT_EQ(cuda_tensor_maps(tiled).size(), tma ? 2u : 0u);
          ASSERT_EQ(tiled.array_tile.m, bm);
          ASSERT_EQ(tiled.array_tile.k, bk);
          ASSERT_EQ(tiled.array_tile.n, bn);
          std::vector<Bytes> out = testing::run(*gpu(), tiled, buffers);
          std::vector<double> got;  // f16 outputs
          for (size_t i = 0; i < k.buffers.size(); ++i)
            if (k.buffers[i].output)
              for (uint16_t h : testing::from_bytes<uint16_t>(out[i])) got.push_back(f16_bits_to_f32(h));
          testing::expect_product_in_double(got, a, b, m, kd, n, 1e-5, 1.0 / 1024);
        }
  }
}

TEST(CudaBackend, Info) {
  REQUIRE_GPU();
  const DeviceInfo& info = gpu()->info();
  EXPECT_EQ(info.backend, "cuda");
  EXPECT_EQ(info.name.rfind("cuda 0: ", 0), 0u) << info.name;
  EXPECT_EQ(info.features.rfind("sm_", 0), 0u) << info.features;
  EXPECT_GT(info.cores, 0);
  EXPECT_GT(info.memory_bytes, 0);
  EXPECT_EQ(info.warp_size, 32);
  EXPECT_EQ(info.max_threads, 1024);
  EXPECT_GE(info.shared_bytes, 48 * 1024);
  EXPECT_NE(gpu()->target_source(scheduled_map({f32}, f32, [](auto& a) { return a[0]; })).find("__global__"),
            std::string::npos);
  std::printf("%s: %s, %d SMs, %.1f GiB\n", info.name.c_str(), info.features.c_str(), info.cores,
              double(info.memory_bytes) / (1 << 30));
}

// Injected faults (tests/fault_testing.h): NVRTC failing, device memory
// running out, a kernel timing out; each an error, then the next request works.
class CudaFault : public ::testing::Test {
 protected:
  void TearDown() override { fault::disarm_all(); }
};

TEST_F(CudaFault, CompileFailsThenTheSameKernelCompiles) {
  REQUIRE_GPU();
  testing::expect_compile_fault_recovers(gpu(), 1.625);
}

TEST_F(CudaFault, DeviceMemoryRunsOutThenTheSameGraphRuns) {
  REQUIRE_GPU();
  testing::expect_alloc_fault_recovers(gpu(), 2.875, 28000000, "cuMemAlloc");
}

TEST_F(CudaFault, KernelTimesOutThenTheGraphRunsAgain) {
  REQUIRE_GPU();
  testing::expect_launch_fault_recovers(gpu(), 4.625);
}

}  // namespace
}  // namespace kiln
