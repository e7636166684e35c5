// The strided operand gather's analysis (KernelEval::affine_load) against the
// evaluator's probe: the same value at every point of the box for affine f32
// loads (plain, transposed, strided, offset by a parameter), and no fast path
// for indices that are not affine or that leave the buffer.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "backends/systolic/kernel_eval.h"

namespace kiln::systolic {
namespace {

constexpr int64_t M = 5, N = 7, K = 6;

Kernel gather_kernel() {
  Kernel k;
  k.name = "gather";
  k.buffers = {{"out", f32, MemScope::Global, 0, true}, {"x", f32, MemScope::Global, 0, false}};
  k.params = {"p"};
  k.body = block({});
  return k;
}

struct Fixture {
  Kernel k = gather_kernel();
  KernelEval eval{k};
  std::vector<float> out = std::vector<float>(1), x;
  std::vector<HostBuf> globals;
  std::vector<int64_t> params = {3};
  std::vector<std::string> vars = {"i0", "i1", "r"};
  std::vector<int64_t> extents = {M, N, K};

  explicit Fixture(int64_t elems) : x(size_t(elems)) {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> v(-3, 3);
    for (float& f : x) f = v(rng) + 3.5f;  // non-zero
    globals = {{out.data(), 4}, {x.data(), elems * 4}};
  }
};

Expr at(const Expr& index) { return load(1, ValType::f32, index); }

TEST(SystolicGather, AffineLoadsMatchTheEvaluator) {
  Expr i0 = var("i0"), i1 = var("i1"), r = var("r"), p = var("p");
  std::vector<Expr> cases = {
      at(i0 * idx(K) + r),                          // A, row-major
      at(r * idx(N) + i1),                          // B, row-major
      at(r * idx(M) + i0),                          // A transposed
      at(p + (i0 * idx(K) + r) * idx(2)),           // strided, offset by a parameter
      at(idx(200) - (i1 * idx(K) + r) - i0 * idx(3)),  // negative strides
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    Fixture f(256);
    auto fast = f.eval.affine_load(cases[c], f.vars, f.extents, f.globals, f.params);
    ASSERT_TRUE(fast.has_value()) << "case " << c;
    auto probe = f.eval.probe(cases[c], f.vars, f.globals, f.params);
    int64_t checked = 0;
    for (int64_t a = 0; a < M; ++a)
      for (int64_t b = 0; b < N; ++b)
        for (int64_t q = 0; q < K; ++q) {
          int64_t v[3] = {a, b, q};
          int64_t index = fast->offset + fast->coeff[0] * a + fast->coeff[1] * b + fast->coeff[2] * q;
          float want = probe->at(v), got = fast->data[index];
          EXPECT_EQ(std::memcmp(&want, &got, 4), 0) << "case " << c << " at " << a << "," << b << "," << q;
          ++checked;
        }
    EXPECT_EQ(checked, M * N * K);
  }
}

TEST(SystolicGather, NoFastPathOutsideTheBufferOrForOtherIndices) {
  Expr i0 = var("i0"), r = var("r");
  Fixture f(M * K);
  // Exactly fits, then one past the end, then negative.
  EXPECT_TRUE(f.eval.affine_load(at(i0 * idx(K) + r), f.vars, f.extents, f.globals, f.params).has_value());
  EXPECT_FALSE(f.eval.affine_load(at(i0 * idx(K) + r + idx(1)), f.vars, f.extents, f.globals, f.params));
  EXPECT_FALSE(f.eval.affine_load(at(i0 * idx(K) + r - idx(1)), f.vars, f.extents, f.globals, f.params));
  // Not affine: a product of variables, a division, an unknown variable.
  EXPECT_FALSE(f.eval.affine_load(at(i0 * r), f.vars, f.extents, f.globals, f.params));
  EXPECT_FALSE(f.eval.affine_load(at((i0 * idx(K) + r) / idx(2)), f.vars, f.extents, f.globals, f.params));
  EXPECT_FALSE(f.eval.affine_load(at(var("z")), f.vars, f.extents, f.globals, f.params));
  // Not a plain load: arithmetic on the value.
  EXPECT_FALSE(f.eval.affine_load(binary(BinOp::Mul, at(r), const_f32(2)), f.vars, f.extents, f.globals, f.params));
}

}  // namespace
}  // namespace kiln::systolic
