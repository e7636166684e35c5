// simplify_indices: divisions and remainders of loop indices rewritten where
// the loop bounds make it exact, checked against evaluate_index on every
// point of random loop nests.
#include <gtest/gtest.h>

#include <random>

#include "codegen/simplify_indices.h"

namespace kiln {
namespace {

// for a in 0..ea { for b in 0..eb { for c in 0..ec { buf[index] = 0 } } }
Kernel nest(Expr index, int64_t ea, int64_t eb, int64_t ec) {
  Kernel k;
  k.name = "t";
  k.buffers.push_back({"buf", f32, MemScope::Global, 0, true});
  k.body = for_loop("a", idx(ea), LoopKind::Parallel,
                    {for_loop("b", idx(eb), LoopKind::Serial,
                              {for_loop("c", idx(ec), LoopKind::Vectorized, {store(0, index, const_f32(0))})})});
  return k;
}

Expr index_of(const Kernel& k) { return k.body->body[0]->body[0]->body[0]->index; }

// The q4 weight's index after a reshape and a split of the reduction by 16.
TEST(SimplifyIndices, SplitReductionIndexBecomesContiguous) {
  Expr flat = var("a") * idx(288) + (var("b") * idx(16) + var("c"));
  Kernel k = simplify_indices(nest(flat / idx(32) * idx(16) + flat % idx(16), 100, 18, 16));
  EXPECT_EQ(print(index_of(k), k), "(a * 9 + b / 2) * 16 + c");
  k = simplify_indices(nest(flat / idx(16) % idx(2), 100, 18, 16));
  EXPECT_EQ(print(index_of(k), k), "b % 2");
}

// Where bounds do not prove more (c may reach 16), only the multiples of 16
// drop out; an unbounded kernel parameter keeps the expression as it is.
TEST(SimplifyIndices, KeepsWhatBoundsDoNotProve) {
  Expr flat = var("a") * idx(288) + (var("b") * idx(16) + var("c"));
  Kernel k = simplify_indices(nest(flat % idx(16), 100, 18, 17));
  EXPECT_EQ(print(index_of(k), k), "c % 16");
  Expr p = (var("a") + var("n")) / idx(4);  // n: a kernel parameter, unbounded
  k = simplify_indices(nest(p, 8, 1, 1));
  EXPECT_EQ(print(index_of(k), k), print(p, k));
}

// Random sums of loop variables with random coefficients, divided and taken
// modulo random constants (nested), equal their simplified forms everywhere.
TEST(SimplifyIndices, RandomExpressionsKeepTheirValues) {
  std::mt19937_64 rng(7);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int changed = 0;
  for (int trial = 0; trial < 400; ++trial) {
    int64_t ea = pick(1, 6), eb = pick(1, 9), ec = pick(1, 20);
    Expr e = var("a") * idx(pick(0, 300)) + var("b") * idx(pick(1, 40)) + var("c") * idx(pick(1, 3)) + idx(pick(0, 50));
    for (int depth = pick(1, 3); depth > 0; --depth) {
      int64_t d = std::vector<int64_t>{2, 3, 4, 8, 16, 32, 6, 24}[pick(0, 7)];
      e = pick(0, 1) ? e / idx(d) : e % idx(d);
      if (pick(0, 2) == 0) e = e * idx(pick(1, 16)) + var("c");
    }
    Kernel k = simplify_indices(nest(e, ea, eb, ec));
    Expr s = index_of(k);
    changed += print(s, k) != print(e, k);
    for (int64_t a = 0; a < ea; ++a)
      for (int64_t b = 0; b < eb; ++b)
        for (int64_t c = 0; c < ec; ++c) {
          std::map<std::string, int64_t> v{{"a", a}, {"b", b}, {"c", c}};
          ASSERT_EQ(evaluate_index(s, v), evaluate_index(e, v))
              << print(e, k) << " -> " << print(s, k) << " at a=" << a << " b=" << b << " c=" << c;
        }
  }
  EXPECT_GT(changed, 100);  // the rewrites do fire
}

}  // namespace
}  // namespace kiln
