// The evaluator's fast paths against its general ones: the strided operand
// gather's analysis (KernelEval::affine_load) against the probe, the same
// value at every point of the box for affine f32 loads (plain, transposed,
// strided, offset by a parameter), and no fast path for indices that are not
// affine or that leave the buffer; and sums stored directly by a plain
// epilogue against the same kernel whose epilogue the evaluator runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "backends/systolic/kernel_eval.h"
#include "kiln/error.h"

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

// out[index] = epilogue(acc) after acc = sum over r of x[i0 * K + r] * x[r * N + i1],
// in a nest i0 (M), i1 (N).
Kernel gemm_kernel(const Expr& index, bool plain) {
  Kernel k = gather_kernel();
  k.buffers.push_back({"acc", f32, MemScope::Local, 1, false});
  Expr i0 = var("i0"), i1 = var("i1"), r = var("r");
  Expr acc = load(2, ValType::f32, idx(0));
  Expr a = at(i0 * idx(K) + r), b = at(r * idx(N) + i1);
  Expr value = plain ? acc : binary(BinOp::Add, acc, const_f32(0.0));  // x + 0: the same bits but -0
  Stmt nest = block({store(2, idx(0), const_f32(0)),
                     for_loop("r", idx(K), LoopKind::Serial, {store(2, idx(0), binary(BinOp::Add, acc, binary(BinOp::Mul, a, b)))}),
                     store(0, index, value)});
  k.body = for_loop("i0", idx(M), LoopKind::Parallel, {for_loop("i1", idx(N), LoopKind::Serial, {nest})});
  return k;
}

TEST(SystolicEpilogue, SumsStoredDirectlyMatchTheEvaluator) {
  Expr i0 = var("i0"), i1 = var("i1"), p = var("p");
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> v(-4, 4);
  std::vector<std::vector<float>> sums(1, std::vector<float>(size_t(M * N)));
  for (float& s : sums[0]) s = v(rng) + 5;  // non-zero
  std::vector<float> x(size_t(M * K + K * N), 1.0f);
  const int64_t elems = 3 + 2 * M * N;
  for (const Expr& index : {i0 * idx(N) + i1, i1 * idx(M) + i0, p + (i1 * idx(M) + i0) * idx(2),
                            idx(elems - 1) - i0 * idx(N) - i1}) {
    std::vector<float> direct(size_t(elems), -1.0f), general = direct;
    std::vector<int64_t> params = {3};
    ASSERT_NE(find_contraction(gemm_kernel(index, true)), nullptr);
    KernelEval fast(gemm_kernel(index, true)), slow(gemm_kernel(index, false));
    fast.run({{direct.data(), elems * 4}, {x.data(), int64_t(x.size()) * 4}}, params, &sums);
    slow.run({{general.data(), elems * 4}, {x.data(), int64_t(x.size()) * 4}}, params, &sums);
    EXPECT_EQ(direct, general);
    EXPECT_EQ(std::count(direct.begin(), direct.end(), -1.0f), elems - M * N);
  }
}

TEST(SystolicEpilogue, OutOfBoundsStoreStillThrows) {
  Expr i0 = var("i0"), i1 = var("i1");
  std::vector<std::vector<float>> sums(1, std::vector<float>(size_t(M * N), 1.0f));
  std::vector<float> out(size_t(M * N)), x(size_t(M * K + K * N), 1.0f);
  KernelEval e(gemm_kernel(i0 * idx(N) + i1 + idx(1), true));
  EXPECT_THROW(e.run({{out.data(), M * N * 4}, {x.data(), int64_t(x.size()) * 4}}, {3}, &sums), Error);
}

}  // namespace
}  // namespace kiln::systolic
