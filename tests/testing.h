// Test helpers: run a graph on a device and on the reference interpreter, and
// compare with tolerances that fit each dtype.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "codegen/schedule.h"
#include "frontend/compare.h"
#include "frontend/workloads.h"
#include "kiln/kiln.h"

namespace kiln::testing {

// Tolerances and compare() live in the library, for `kiln fuzz` too.
using kiln::compare;
using kiln::Tolerance;
using kiln::tolerance_for;

// Random inputs for `g`; floats are multiplied by `scale` (to reach past [-1, 1)).
inline std::map<std::string, HostTensor> inputs_for(const Graph& g, const Bindings& symbols, uint64_t seed,
                                                    double scale = 1) {
  auto in = random_inputs(g, symbols, seed);
  for (auto& [name, t] : in)
    if (is_float(t.dtype))
      for (int64_t i = 0; i < t.numel(); ++i) t.set(i, t.get(i) * scale);
  return in;
}

// Compiles `g` for the CPU, runs it and the interpreter on the same random
// inputs, and expects every output to match.
inline void expect_matches_interpreter(const Graph& g, const Bindings& symbols = {}, uint64_t seed = 7,
                                       double scale = 1, const std::string& device_name = "cpu") {
  auto inputs = inputs_for(g, symbols, seed, scale);
  std::vector<HostTensor> want = interpret(g, inputs, symbols);
  CompiledGraph cg(g, device(device_name));
  std::vector<HostTensor> got = cg.run(inputs, symbols);
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    std::string diff = compare(want[o], got[o], tolerance_for(want[o].dtype));
    EXPECT_TRUE(diff.empty()) << "output " << o << ": " << diff << "\n" << print(g);
  }
}

// Random legal schedules: splits (with and without tails), reorders, fusions
// and kinds, applied where they are accepted; results must not change.
inline Schedule random_schedule(const Kernel& kern, std::mt19937& rng) {
  Schedule s;
  Kernel cur = kern;
  for (int attempt = 0, n = 0; attempt < 12; ++attempt) {
    std::vector<Stmt> loops;
    std::function<void(const Stmt&)> collect = [&](const Stmt& st) {
      if (st->kind == StmtKind::For) loops.push_back(st);
      for (const Stmt& b : st->body) collect(b);
    };
    collect(cur.body);
    if (loops.empty()) break;
    const Stmt& l = loops[rng() % loops.size()];
    Step step;
    std::string a = "s" + std::to_string(n) + "a", b = "s" + std::to_string(n) + "b";
    switch (rng() % 5) {
      case 0: step = Schedule().split(l->var, 1 + rng() % 7, a, b).steps[0]; break;
      case 1:
        if (l->body.size() != 1 || l->body[0]->kind != StmtKind::For) continue;
        step = Schedule().reorder({l->body[0]->var, l->var}).steps[0];
        break;
      case 2:
        if (l->body.size() != 1 || l->body[0]->kind != StmtKind::For) continue;
        step = Schedule().fuse(l->var, l->body[0]->var, a).steps[0];
        break;
      case 3:  // small unrolls keep the test's compile time short
        if (l->extent->kind != ExprKind::Const || l->extent->ival > 8) continue;
        step = Schedule().unroll(l->var).steps[0];
        break;
      default: step = Schedule().vectorize(l->var).steps[0];
    }
    try {
      cur = apply(cur, step);
      s.steps.push_back(step);
      ++n;
    } catch (const Error&) {
      // refused: try another step
    }
  }
  return s;
}

}  // namespace kiln::testing
