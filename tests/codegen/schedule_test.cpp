// Schedules: text in, text out for each primitive; refusals with reasons; the
// text form round-trips and hashes stably; schedules never change results.
#include <gtest/gtest.h>

#include <random>

#include "codegen/lower.h"
#include "codegen/schedule.h"
#include "tests/testing.h"

namespace kiln {
namespace {

Kernel k(const char* text) { return parse_kernel(text); }

const char* kElementwise =
    "kernel ew(n) {\n"
    "  buffer y: f32 global out\n"
    "  buffer x: f32 global\n"
    "  parallel for i0 in n {\n"
    "    serial for i1 in 12 {\n"
    "      y[i0 * 12 + i1] = exp2(x[i0 * 12 + i1])\n"
    "    }\n"
    "  }\n"
    "}\n";

TEST(Schedule, SplitExactHasNoGuard) {
  Kernel out = apply(k(kElementwise), Schedule().split("i1", 4, "i1o", "i1i"));
  EXPECT_EQ(print(out),
            "kernel ew(n) {\n"
            "  buffer y: f32 global out\n"
            "  buffer x: f32 global\n"
            "  parallel for i0 in n {\n"
            "    serial for i1o in 3 {\n"
            "      serial for i1i in 4 {\n"
            "        y[i0 * 12 + (i1o * 4 + i1i)] = exp2(x[i0 * 12 + (i1o * 4 + i1i)])\n"
            "      }\n"
            "    }\n"
            "  }\n"
            "}\n");
}

TEST(Schedule, SplitOfSymbolicExtentGuardsTheTail) {
  Kernel out = apply(k(kElementwise), Schedule().split("i0", 8, "i0o", "i0i"));
  std::string t = print(out);
  EXPECT_NE(t.find("parallel for i0o in (n + 7) / 8 {"), std::string::npos) << t;
  EXPECT_NE(t.find("if cmplt(i0o * 8 + i0i, n) {"), std::string::npos) << t;
}

TEST(Schedule, ReorderFuseAndKinds) {
  Schedule s;
  s.split("i1", 4, "i1o", "i1i").reorder({"i1i", "i1o"}).fuse("i1i", "i1o", "f").vectorize("f");
  Kernel out = apply(k(kElementwise), s);
  EXPECT_NE(print(out).find("vectorized for f in 12 {"), std::string::npos) << print(out);
  EXPECT_NE(print(out).find("y[i0 * 12 + (f % 3 * 4 + f / 3)]"), std::string::npos) << print(out);
}

TEST(Schedule, HoistKeepsATileOfAccumulators) {
  Graph g;
  int a = g.input("a", f32, {16, 8});
  int b = g.input("b", f32, {8, 32});
  g.outputs = {g.contract(a, b)};
  Kernel kern = lower(g).kernels[0];
  Schedule s;
  s.split("i0", 4, "i0o", "i0i").split("i1", 16, "i1o", "i1i").reorder({"i0o", "i1o", "i0i", "i1i"}).hoist("r2", "i0i");
  Kernel out = apply(kern, s);
  std::string t = print(out);
  EXPECT_NE(t.find("buffer acc: f32 local[64]"), std::string::npos) << t;
  EXPECT_NE(t.find("serial for r2 in 8 {\n          serial for i0i in 4 {"), std::string::npos) << t;
}

TEST(Schedule, CacheReadPacksWhatALoopReads) {
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {4, 8}), g.input("b", f32, {8, 32}))};
  Kernel kern = lower(g).kernels[0];
  Schedule s;
  s.split("i1", 16, "i1o", "i1i").cache_read("b", "i1o", "pb");
  std::string t = print(apply(kern, s));
  EXPECT_NE(t.find("buffer pb: f32 local[128]"), std::string::npos) << t;
  // The copy follows the order of the loops around the read: i1i, then r2.
  EXPECT_NE(t.find("pb[pb_i1i * 8 + pb_r2] = b[pb_r2 * 32 + (i1o * 16 + pb_i1i)]"), std::string::npos) << t;
  EXPECT_NE(t.find("mul(a[i0 * 8 + r2], pb[i1i * 8 + r2])"), std::string::npos) << t;
  EXPECT_THROW(apply(kern, Schedule().split("i1", 5, "i1o", "i1i").cache_read("b", "i1o", "pb")), Error)
      << "a read under a tail guard must be refused";
  EXPECT_THROW(apply(kern, Schedule().cache_read("nope", "i0", "pb")), Error);
}

TEST(Schedule, PrimitivesRefuseWithAReason) {
  Kernel ew = k(kElementwise);
  auto refused = [&](const Schedule& s, const std::string& reason) {
    try {
      apply(ew, s);
      ADD_FAILURE() << "accepted: " << print(s);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  };
  refused(Schedule().split("nope", 4, "a", "b"), "no loop named 'nope'");
  refused(Schedule().split("i1", 4, "i0", "b"), "already used");
  refused(Schedule().split("i1", 0, "a", "b"), "factor");
  refused(Schedule().vectorize("i0"), "constant extent");
  refused(Schedule().reorder({"i1", "i0"}), "must stay outermost");
  refused(Schedule().unroll("i0"), "constant extent");
  refused(Schedule().parallel("i1"), "top-level");
  refused(Schedule().fuse("i1", "i0", "f"), "only statement");
  refused(Schedule().reorder({"i0", "i0"}), "two different loops");
  refused(Schedule().hoist("i1", "i0"), "reduction loop");
  refused(Schedule().bind("i0", LoopKind::Serial), "gpu_block or gpu_thread");
}

TEST(Schedule, VectorizingAReductionIsRefused) {
  Graph g;
  g.outputs = {g.reduce(Op::ReduceSum, g.input("x", f32, {4, 16}), {1})};
  Kernel kern = lower(g).kernels[0];
  EXPECT_THROW(apply(kern, Schedule().vectorize("r1")), Error);
}

TEST(Schedule, TextRoundTripsAndHashesStably) {
  Schedule s;
  s.split("i0", 8, "i0o", "i0i").reorder({"i0o", "i1", "i0i"}).fuse("a", "b", "c").hoist("r2", "i0i");
  s.cache_read("b", "i1o", "pb").unroll("i0i").vectorize("i1i").parallel("i0o").serial("x");
  s.bind("blk", LoopKind::GpuBlock);
  std::string text = print(s);
  EXPECT_EQ(parse_schedule(text), s);
  EXPECT_EQ(print(parse_schedule(text)), text);
  EXPECT_EQ(hash(parse_schedule(text)), hash(s));
  EXPECT_NE(hash(Schedule().unroll("a")), hash(Schedule().unroll("b")));
  for (const char* bad : {"split i0 by x -> a, b", "split i0 by 4 -> a", "teleport i0", "bind i0 gpu_warp",
                          "hoist r2 i0", "fuse a, b", "unroll 3x", "cache_read b i1o pb", "cache_read b at i1o ->"})
    EXPECT_THROW(parse_schedule(bad), Error) << bad;
}

TEST(Schedule, ReplayGivesTheSameKernel) {
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {24, 16}), g.input("b", f32, {16, 64}))};
  Kernel kern = lower(g).kernels[0];
  DeviceInfo cpu;
  cpu.backend = "cpu";
  cpu.vector_bits = 256;
  Schedule s = default_schedule(kern, cpu);
  EXPECT_FALSE(s.steps.empty());
  EXPECT_TRUE(apply(kern, s) == apply(kern, parse_schedule(print(s))));
}

// Random legal schedules: splits (with and without tails), reorders, fusions
// and kinds, applied where they are accepted; results must not change.
Schedule random_schedule(const Kernel& kern, std::mt19937& rng) {
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

TEST(Schedule, RandomLegalSchedulesNeverChangeResults) {
  std::mt19937 rng(1234);
  std::vector<Graph> graphs;
  for (const char* spec : {"matmul:12x10x20", "softmax:6x10", "chain:50", "mlp:3"})
    graphs.push_back(make_workload(spec).graph);
  Graph g;
  int x = g.input("x", f16, {5, 7, 3});
  g.outputs = {g.reduce(Op::ReduceMax, g.permute(x, {2, 0, 1}), {1})};
  graphs.push_back(g);
  int tried = 0;
  for (const Graph& graph : graphs) {
    auto inputs = testing::inputs_for(graph, {}, 5);
    std::vector<HostTensor> want = interpret(graph, inputs);
    Program p = lower(graph);
    for (int trial = 0; trial < 5; ++trial) {
      std::vector<Schedule> schedules;
      for (const Kernel& kern : p.kernels) schedules.push_back(random_schedule(kern, rng));
      SCOPED_TRACE(print(schedules[0]));
      CompiledGraph cg(graph, device("cpu"), schedules);
      std::vector<HostTensor> got = cg.run(inputs);
      for (size_t o = 0; o < want.size(); ++o)
        EXPECT_EQ(testing::compare(want[o], got[o], testing::tolerance_for(want[o].dtype)), "") << print(graph);
      ++tried;
    }
  }
  EXPECT_EQ(tried, 25);
}

}  // namespace
}  // namespace kiln
