// Unrolled and vectorized loops on the CPU backend: the emitter carries them out
// itself (vector loads, gathers, splats), so each kernel here is checked against
// plain C++ and, for the matmul micro-kernel, against the code it must become.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>

#include "backends/cpu/cpu_device.h"
#include "kiln/error.h"
#include "kiln/kernel.h"
#include "tests/backends/kernel_testing.h"

namespace kiln {
namespace {

using testing::Bytes;
using testing::from_bytes;
using testing::global;
using testing::random_floats;
using testing::run;
using testing::to_bytes;
constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr auto V = LoopKind::Vectorized;
constexpr auto U = LoopKind::Unrolled;
constexpr auto S = LoopKind::Serial;

Device& cpu() {
  static std::shared_ptr<Device> device = make_cpu_device();
  return *device;
}

BufferDecl local(std::string name, DType t, int64_t size) {
  return {std::move(name), t, MemScope::Local, size, false};
}

Expr ld(int buffer, DType t, Expr index) { return load(buffer, valtype_of(t), std::move(index)); }
Expr add(Expr a, Expr b) { return binary(BinOp::Add, std::move(a), std::move(b)); }
Expr mul(Expr a, Expr b) { return binary(BinOp::Mul, std::move(a), std::move(b)); }

std::mt19937& rng() {
  static std::mt19937 gen(4321);
  return gen;
}

// Random non-zero ints in [lo, hi] (which must hold 1).
std::vector<int32_t> random_ints(size_t n, int32_t lo = kIntMin, int32_t hi = kIntMax) {
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) {
    x = d(rng());
    if (x == 0) x = 1;
  }
  return v;
}

// Random non-zero storage values of `t`: any bit pattern but zero, and finite
// for floats (NaN payloads are not what these tests are about).
Bytes random_storage(DType t, size_t n) {
  const int64_t size = dtype_size(t);
  Bytes b(n * size);
  std::uniform_int_distribution<int> byte(0, 255);
  for (std::byte& x : b) x = std::byte(byte(rng()));
  for (size_t i = 0; i < n; ++i) {
    std::byte* p = &b[i * size];
    if (is_float(t)) p[size - 1] &= std::byte(0xbf);  // the top exponent bit: finite
    if (load_as_double(p, t) == 0) p[0] = std::byte(1);
  }
  return b;
}

// Element i of a storage buffer as its compute value (bool as 0/1).
double element(DType t, const Bytes& b, size_t i) { return load_as_double(&b[i * dtype_size(t)], t); }

int32_t wrap(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

Kernel kernel(std::string name, std::vector<BufferDecl> buffers, std::vector<Stmt> body) {
  Kernel k;
  k.name = std::move(name);
  k.buffers = std::move(buffers);
  k.body = block(std::move(body));
  return k;
}

void expect_compile_error(const Kernel& k, const std::vector<std::string>& parts) {
  try {
    cpu().compile(k);
    ADD_FAILURE() << "compiled, expected an error with: " << parts[0];
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

// Whether some line of `ir` contains every one of `parts`.
bool has_line_with(const std::string& ir, const std::vector<std::string>& parts) {
  std::istringstream in(ir);
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (const std::string& p : parts) all &= line.find(p) != std::string::npos;
    if (all) return true;
  }
  return false;
}

// --- Vectorized loops ---

// out[o*W + j] = a + b (bool: a < b) through a local buffer of the same dtype:
// two vectorized loops in sequence inside the parallel loop.
Kernel elementwise(DType t, int64_t width) {
  Expr flat = var("o") * idx(width) + var("j");
  Expr a = ld(0, t, flat), b = ld(1, t, flat);
  Expr value = t == boolean ? binary(BinOp::CmpLt, a, b) : add(a, b);
  return kernel("vec_" + std::string(dtype_name(t)),
                {global("a", t), global("b", t), global("out", t, true), local("tmp", t, width)},
                {for_loop("o", idx(6), LoopKind::Parallel,
                          {for_loop("j", idx(width), V, {store(3, var("j"), value)}),
                           for_loop("j", idx(width), V, {store(2, flat, ld(3, t, var("j")))})})});
}

double ref_elementwise(DType t, double a, double b) {
  if (t == boolean) return a < b;
  if (is_float(t)) return round_to_dtype(float(a) + float(b), t);
  return round_to_dtype(wrap(int64_t(a) + int64_t(b)), t);
}

TEST(CpuVectorize, ElementwiseOverEveryDtype) {
  for (DType t : kAllDTypes) {
    for (int64_t width : {16, 7}) {  // a power of two or not
      const size_t n = 6 * width;
      Bytes a = random_storage(t, n), b = random_storage(t, n);
      Bytes out = run(cpu(), elementwise(t, width), {a, b, Bytes(n * dtype_size(t))})[2];
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(element(t, out, i), ref_elementwise(t, element(t, a, i), element(t, b, i)))
            << dtype_name(t) << ", width " << width << ", at " << i;
    }
  }
}

// Loads whose index does not move with the lane are scalar loads, splat where
// they meet a vector; `j - j` counts as not moving.
TEST(CpuVectorize, BroadcastLoad) {
  const int64_t rows = 5, w = 16;
  Expr flat = var("r") * idx(w) + var("j");
  Kernel k = kernel("broadcast", {global("a", f32), global("s", f32), global("out", f32, true)},
                    {for_loop("r", idx(rows), S,
                              {for_loop("j", idx(w), V,
                                        {store(2, flat,
                                               binary(BinOp::Sub, mul(ld(0, f32, flat), ld(1, f32, var("r"))),
                                                      ld(1, f32, var("r") + (var("j") - var("j")))))})})});
  std::vector<float> a = random_floats(rng(), rows * w), s = random_floats(rng(), rows);
  auto out = from_bytes<float>(run(cpu(), k, {to_bytes(a), to_bytes(s), Bytes(rows * w * 4)})[2]);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j)
      EXPECT_NEAR(out[r * w + j], a[r * w + j] * s[r] - s[r], 1e-5f * (std::fabs(a[r * w + j] * s[r]) + 4))
          << r << "," << j;
  std::string ir = cpu().target_source(k);
  EXPECT_EQ(ir.find("masked.gather"), std::string::npos) << ir;
  EXPECT_TRUE(has_line_with(ir, {"load <16 x float>"})) << ir;
}

// x[(r*W + j)*2] (stride 2) and x[j*j + r] (not affine) are gathers; a store to
// out[j*R + r] (a transpose) is a scatter. Conversions work on both: x is bf16,
// the transpose f16.
TEST(CpuVectorize, GatherAndScatter) {
  const int64_t rows = 3, w = 8;
  Expr x_strided = ld(0, bf16, (var("r") * idx(w) + var("j")) * idx(2));
  Expr x_squares = ld(0, bf16, var("j") * var("j") + var("r"));
  Kernel k = kernel("gather_scatter", {global("x", bf16), global("t", f16, true), global("q", f32, true)},
                    {for_loop("r", idx(rows), S,
                              {for_loop("j", idx(w), V,
                                        {store(1, var("j") * idx(rows) + var("r"), x_strided),
                                         store(2, var("r") * idx(w) + var("j"), x_squares)})})});
  const size_t n = 2 * rows * w + 49;
  Bytes x = random_storage(bf16, n);
  auto out = run(cpu(), k, {x, Bytes(rows * w * 2), Bytes(rows * w * 4)});
  auto q = from_bytes<float>(out[2]);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) {
      EXPECT_EQ(element(f16, out[1], j * rows + r), round_to_dtype(element(bf16, x, (r * w + j) * 2), f16))
          << r << "," << j;
      EXPECT_EQ(q[r * w + j], element(bf16, x, j * j + r)) << r << "," << j;
    }
  std::string ir = cpu().target_source(k);
  EXPECT_NE(ir.find("masked.gather"), std::string::npos) << ir;
  EXPECT_NE(ir.find("masked.scatter"), std::string::npos) << ir;
}

int32_t ref_div(int32_t a, int32_t b) { return b == 0 ? 0 : b == -1 ? wrap(-int64_t(a)) : a / b; }
int32_t ref_mod(int32_t a, int32_t b) { return b == 0 || b == -1 ? 0 : a % b; }

// Divisors of 0 and -1 (and INT_MIN / -1) in a vector, in i32 and i64, and a
// scalar divisor splat against a vector.
TEST(CpuVectorize, IntegerDivModByZeroAndMinusOne) {
  const int64_t rows = 4, w = 16, n = rows * w;
  std::vector<int32_t> a = random_ints(n), b = random_ints(n, -40, 40), d = {0, -1, 7, -3};
  for (int64_t r = 0; r < rows; ++r) a[r * w] = kIntMin, b[r * w] = -1, b[r * w + 1] = 0, b[r * w + 5] = -1;
  Expr flat = var("r") * idx(w) + var("j");
  Expr av = ld(0, i32, flat), bv = ld(1, i32, flat);
  auto wide = [](Expr e) { return cast(ValType::i64, e); };
  std::vector<Stmt> stores = {
      store(3, flat, binary(BinOp::Div, av, bv)),
      store(4, flat, binary(BinOp::Mod, av, bv)),
      store(5, flat, cast(ValType::i32, binary(BinOp::Div, wide(av), wide(bv)))),
      store(6, flat, binary(BinOp::Mod, av, ld(2, i32, var("r")))),
  };
  Kernel k = kernel("divmod",
                    {global("a", i32), global("b", i32), global("d", i32), global("div", i32, true),
                     global("mod", i32, true), global("div64", i32, true), global("mod_d", i32, true)},
                    {for_loop("r", idx(rows), LoopKind::Parallel, {for_loop("j", idx(w), V, stores)})});
  Bytes empty(n * 4);
  auto out = run(cpu(), k, {to_bytes(a), to_bytes(b), to_bytes(d), empty, empty, empty, empty});
  auto div = from_bytes<int32_t>(out[3]), mod = from_bytes<int32_t>(out[4]);
  auto div64 = from_bytes<int32_t>(out[5]), mod_d = from_bytes<int32_t>(out[6]);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(div[i], ref_div(a[i], b[i])) << a[i] << " / " << b[i];
    EXPECT_EQ(mod[i], ref_mod(a[i], b[i])) << a[i] << " % " << b[i];
    int64_t q64 = b[i] == 0 ? 0 : int64_t(a[i]) / b[i];
    EXPECT_EQ(div64[i], wrap(q64)) << a[i] << " / " << b[i];
    EXPECT_EQ(mod_d[i], ref_mod(a[i], d[i / w])) << a[i] << " % " << d[i / w];
  }
}

int32_t ref_f32_to_i32(float f) {
  if (std::isnan(f)) return 0;
  if (f >= 2147483648.0f) return kIntMax;
  if (f < -2147483648.0f) return kIntMin;
  return int32_t(f);
}

// Saturating float -> int casts, rounding to f16/bf16/i8, bool casts and the
// loop variable itself as a value, element-wise on vectors.
TEST(CpuVectorize, CastAndRound) {
  const int64_t w = 16, n = 8 * w;
  std::vector<float> x(n);
  std::uniform_int_distribution<uint32_t> bits;
  for (float& f : x) f = std::bit_cast<float>(bits(rng()) | 1);  // non-zero: odd mantissa
  const float specials[] = {NAN,      INFINITY, -INFINITY,      3e9f,  -3e9f,
                            65519.0f, 65520.0f, 1.0f + 0x1p-8f, -0.5f, 127.9f};
  std::copy(std::begin(specials), std::end(specials), x.begin());
  Expr flat = var("r") * idx(w) + var("j");
  Expr xv = ld(0, f32, flat);
  Kernel k = kernel(
      "casts",
      {global("x", f32), global("to_i32", i32, true), global("to_f16", f32, true),
       global("to_bf16", f32, true), global("to_i8", i32, true), global("nonzero", boolean, true),
       global("lane", f32, true)},
      {for_loop(
          "r", idx(n / w), S,
          {for_loop(
              "j", idx(w), V,
              {store(1, flat, cast(ValType::i32, xv)), store(2, flat, round_to(f16, xv)),
               store(3, flat, round_to(bf16, xv)), store(4, flat, round_to(i8, cast(ValType::i32, xv))),
               store(5, flat, cast(ValType::b1, xv)), store(6, flat, cast(ValType::f32, var("j")))})})});
  auto out =
      run(cpu(), k, {to_bytes(x), Bytes(n * 4), Bytes(n * 4), Bytes(n * 4), Bytes(n * 4), Bytes(n), Bytes(n * 4)});
  auto to_i32 = from_bytes<int32_t>(out[1]), to_i8 = from_bytes<int32_t>(out[4]);
  auto to_f16 = from_bytes<float>(out[2]), to_bf16 = from_bytes<float>(out[3]),
       lane = from_bytes<float>(out[6]);
  auto same = [](float got, float want) { return std::isnan(want) ? std::isnan(got) : got == want; };
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(to_i32[i], ref_f32_to_i32(x[i])) << std::hexfloat << x[i];
    EXPECT_TRUE(same(to_f16[i], f16_bits_to_f32(f32_to_f16_bits(x[i])))) << std::hexfloat << x[i];
    EXPECT_TRUE(same(to_bf16[i], bf16_bits_to_f32(f32_to_bf16_bits(x[i])))) << std::hexfloat << x[i];
    EXPECT_EQ(to_i8[i], int8_t(ref_f32_to_i32(x[i]))) << std::hexfloat << x[i];
    EXPECT_EQ(element(boolean, out[5], i), x[i] != 0 || std::isnan(x[i]) ? 1.0 : 0.0) << x[i];
    EXPECT_EQ(lane[i], float(i % w));
  }
}

// A vector condition with vector or scalar arms, and a scalar condition with
// vector arms.
TEST(CpuVectorize, Select) {
  const int64_t w = 8, n = 4 * w;
  Expr flat = var("r") * idx(w) + var("j");
  Expr a = ld(0, f32, flat), b = ld(1, f32, flat), c0 = ld(2, f32, idx(0)), c1 = ld(2, f32, idx(1));
  Expr lt = binary(BinOp::CmpLt, a, b);
  Kernel k =
      kernel("select",
             {global("a", f32), global("b", f32), global("c", f32), global("o1", f32, true),
              global("o2", f32, true), global("o3", f32, true)},
             {for_loop("r", idx(n / w), S,
                       {for_loop("j", idx(w), V,
                                 {store(3, flat, select(lt, a, c0)), store(4, flat, select(lt, c0, c1)),
                                  store(5, flat, select(binary(BinOp::CmpLt, c0, c1), a, b))})})});
  std::vector<float> av = random_floats(rng(), n), bv = random_floats(rng(), n), cv = {1.5f, -2.5f};
  auto out = run(cpu(), k, {to_bytes(av), to_bytes(bv), to_bytes(cv), Bytes(n * 4), Bytes(n * 4), Bytes(n * 4)});
  auto o1 = from_bytes<float>(out[3]), o2 = from_bytes<float>(out[4]), o3 = from_bytes<float>(out[5]);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(o1[i], av[i] < bv[i] ? av[i] : cv[0]) << i;
    EXPECT_EQ(o2[i], av[i] < bv[i] ? cv[0] : cv[1]) << i;
    EXPECT_EQ(o3[i], bv[i]) << i;  // c0 < c1 is false
  }
}

// --- Unrolled loops ---

// y[o*4 + u] = x[o*4 + 3 - u] * (u + 1) with u unrolled inside the parallel
// loop, and z = x + u through a serial loop, an unrolled one and a vectorized one.
TEST(CpuVectorize, UnrolledLoops) {
  const int64_t outer = 6, w = 8;
  Expr u_plus_1 = cast(ValType::f32, var("u") + idx(1));
  Expr reversed = ld(0, f32, var("o") * idx(4) + (idx(3) - var("u")));
  Kernel k = kernel(
      "reverse", {global("x", f32), global("y", f32, true)},
      {for_loop(
          "o", idx(outer), LoopKind::Parallel,
          {for_loop("u", idx(4), U, {store(1, var("o") * idx(4) + var("u"), mul(reversed, u_plus_1))})})});
  std::vector<float> x = random_floats(rng(), outer * 3 * w);
  auto y = from_bytes<float>(run(cpu(), k, {to_bytes(x), Bytes(outer * 4 * 4)})[1]);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t u = 0; u < 4; ++u) EXPECT_EQ(y[o * 4 + u], x[o * 4 + 3 - u] * float(u + 1)) << o << "," << u;

  Expr flat = (var("o") * idx(3) + var("u")) * idx(w) + var("j");
  Kernel nested = kernel(
      "nested", {global("x", f32), global("z", f32, true)},
      {for_loop(
          "o", idx(outer), S,
          {for_loop("u", idx(3), U,
                    {for_loop("j", idx(w), V,
                              {store(1, flat, add(ld(0, f32, flat), cast(ValType::f32, var("u"))))})})})});
  auto z = from_bytes<float>(run(cpu(), nested, {to_bytes(x), Bytes(x.size() * 4)})[1]);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(z[i], x[i] + float(i / w % 3)) << i;
}

// The register-tiled matmul the scheduler makes: a 4x16 accumulator tile in a
// local buffer, indexed only by unrolled and vectorized variables, so it must
// live in registers.
TEST(CpuVectorize, MatmulMicroKernel) {
  const int64_t m = 8, n = 32, kk = 37;
  Expr row = var("i0o") * idx(4) + var("i");
  Expr col = var("j0o") * idx(16) + var("j");
  Expr tile = var("i") * idx(16) + var("j");
  Expr acc = ld(3, f32, tile);
  auto tile_loop = [](std::vector<Stmt> body) {
    return for_loop("i", idx(4), U, {for_loop("j", idx(16), V, std::move(body))});
  };
  Kernel k = kernel(
      "micro", {global("a", f32), global("b", f32), global("c", f32, true), local("acc", f32, 4 * 16)},
      {for_loop("i0o", idx(m / 4), S,
                {for_loop("j0o", idx(n / 16), S,
                          {tile_loop({store(3, tile, const_f32(0))}),
                           for_loop("k", var("K"), S,
                                    {tile_loop({store(3, tile,
                                                      add(acc, mul(ld(0, f32, row * var("K") + var("k")),
                                                                   ld(1, f32, var("k") * idx(n) + col))))})}),
                           tile_loop({store(2, row * idx(n) + col, acc)})})})});
  k.params = {"K"};
  std::vector<float> a = random_floats(rng(), m * kk), b = random_floats(rng(), kk * n);
  auto c = from_bytes<float>(run(cpu(), k, {to_bytes(a), to_bytes(b), Bytes(m * n * 4)}, {kk})[2]);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double want = 0, scale = 0;
      for (int64_t p = 0; p < kk; ++p)
        want += double(a[i * kk + p]) * b[p * n + j], scale += std::fabs(a[i * kk + p] * b[p * n + j]);
      EXPECT_NEAR(c[i * n + j], want, 1e-5 * scale) << i << "," << j;
    }
  std::string ir = cpu().target_source(k);
  EXPECT_EQ(ir.find("alloca"), std::string::npos) << "the accumulators should be registers:\n" << ir;
  EXPECT_TRUE(has_line_with(ir, {"<16 x float>", "fma"}) ||
              (has_line_with(ir, {"fmul", "<16 x float>"}) && has_line_with(ir, {"fadd", "<16 x float>"})))
      << ir;
}

// A vector load that an outer loop moves by 256 bytes or more (a GEMV's
// weight rows) also prefetches the lines that loop will read about 4 KB
// later; a stream the innermost loop walks is left to the hardware.
TEST(CpuVectorize, StridedStreamsArePrefetched) {
  const int64_t rows = 64, cols = 64;
  // pieces > 1: a row is `pieces` steps of an inner loop; 1: the row loop
  // is the only one.
  auto rows_kernel = [&](int64_t pieces) {
    Expr at = var("i") * idx(cols) + (pieces > 1 ? var("r") * idx(cols / pieces) : idx(0)) + var("j");
    Stmt row = for_loop("j", idx(cols / pieces), V, {store(1, at, mul(ld(0, f32, at), const_f32(2)))});
    if (pieces > 1) row = for_loop("r", idx(pieces), S, {row});
    return kernel("rows", {global("x", f32), global("y", f32, true)}, {for_loop("i", idx(rows), S, {row})});
  };
  std::vector<float> x = random_floats(rng(), rows * cols);
  for (int64_t pieces : {4, 1}) {
    Kernel k = rows_kernel(pieces);
    auto y = from_bytes<float>(run(cpu(), k, {to_bytes(x), Bytes(rows * cols * 4)}, {})[1]);
    for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(y[i], 2 * x[i]) << i;
    std::string ir = cpu().target_source(k);
    // 4 pieces: row i's 256 bytes are 4 steps of the inner loop, and the
    // prefetch reaches 16 rows ahead; 1 piece (64 lanes a row): the row loop
    // is innermost.
    EXPECT_EQ(ir.find("llvm.prefetch") != std::string::npos, pieces == 4) << ir;
  }
  // A KV cache's head: 256 bytes read of each 4 KB row. Ahead by the 4 KB
  // stride, that is one row, too near to hide the memory's latency; ahead by
  // the bytes the stream reads, 16 rows (16 x 1024 floats).
  Expr at = var("i") * idx(1024) + var("r") * idx(16) + var("j");
  Stmt row = for_loop("r", idx(4), S, {for_loop("j", idx(16), V, {store(1, var("i") * idx(64) + var("r") * idx(16) + var("j"), ld(0, f32, at))})});
  Kernel k = kernel("head", {global("x", f32), global("y", f32, true)}, {for_loop("i", idx(rows), S, {row})});
  std::vector<float> cache = random_floats(rng(), rows * 1024);
  auto y = from_bytes<float>(run(cpu(), k, {to_bytes(cache), Bytes(rows * 64 * 4)}, {})[1]);
  for (int64_t i = 0; i < rows * 64; ++i) ASSERT_EQ(y[i], cache[i / 64 * 1024 + i % 64]) << i;
  std::string ir = cpu().target_source(k);
  EXPECT_NE(ir.find("16384"), std::string::npos) << ir;
}

// --- Errors ---

Stmt copy_store(const std::string& v) { return store(1, var(v), ld(0, f32, var(v))); }

Kernel two_buffers(std::vector<Stmt> body) {
  return kernel("bad", {global("x", f32), global("y", f32, true), local("acc", f32, 1)}, std::move(body));
}

TEST(CpuVectorize, Errors) {
  expect_compile_error(two_buffers({for_loop("j", idx(8), V, {store(2, idx(0), ld(0, f32, var("j")))})}),
                       {"'acc'", "'j'", "loop-carried"});
  expect_compile_error(
      two_buffers({for_loop("j", idx(8), V, {store(1, var("j") - var("j"), ld(0, f32, var("j")))})}),
      {"'y'", "'j'", "loop-carried"});
  expect_compile_error(two_buffers({for_loop("j", idx(8), V, {for_loop("k", idx(2), S, {copy_store("k")})})}),
                       {"'k'", "inside vectorized loop 'j'"});
  expect_compile_error(two_buffers({for_loop("j", idx(8), V, {for_loop("k", idx(2), U, {copy_store("k")})})}),
                       {"'k'", "inside vectorized loop 'j'"});
  expect_compile_error(
      two_buffers({for_loop("j", idx(8), V, {if_then(const_int(ValType::b1, 1), {copy_store("j")})})}),
      {"an if inside vectorized loop 'j'"});
  Kernel symbolic = two_buffers({for_loop("j", var("n"), V, {copy_store("j")})});
  symbolic.params = {"n"};
  expect_compile_error(symbolic, {"vectorized loop 'j' needs a constant extent"});
  Kernel unrolled = two_buffers({for_loop("u", var("n"), U, {copy_store("u")})});
  unrolled.params = {"n"};
  expect_compile_error(unrolled, {"unrolled loop 'u' needs a constant extent"});
  expect_compile_error(two_buffers({for_loop("j", idx(65), V, {copy_store("j")})}),
                       {"vectorized loop 'j'", "65"});
  expect_compile_error(two_buffers({for_loop("u", idx(1025), U, {copy_store("u")})}),
                       {"unrolled loop 'u'", "1025"});
}

}  // namespace
}  // namespace kiln
