// Schedules: text in, text out for each primitive; refusals with reasons; the
// text form round-trips and hashes stably; schedules never change results.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "codegen/lower.h"
#include "codegen/device_presets.h"
#include "codegen/schedule.h"
#include "tests/backends/kernel_testing.h"
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

// pack computes a contraction's column operand (here a weight dequantized
// from bytes and a scale per row, as a q4 prefill's) once per column panel
// into a local buffer, outside the row blocks that reuse it, and the result
// is unchanged; an operand that uses the rows, or two candidates, are refused.
TEST(Schedule, PackComputesTheColumnOperandOncePerPanel) {
  Graph g;
  int a = g.input("a", f32, {16, 8});
  int q = g.cast(g.input("q", u8, {8, 32}), f32);
  int sc = g.expand(g.input("s", f32, {1, 32}), {8, 32});
  g.outputs = {g.contract(a, g.binary(Op::Mul, q, sc))};
  Kernel kern = lower(g).kernels[0];
  // Column panels of 16 outermost, blocks of 4 rows inside, accumulators hoisted.
  Schedule base;
  base.split("i0", 4, "i0o", "i0i").split("i1", 16, "i1o", "i1i").serial("i0o").reorder({"i1o", "i0o", "i0i", "i1i"});
  base.hoist("r2", "i0i");
  Schedule s = base;
  s.pack("r2", "i1o", "pw").vectorize("pw_i1i");
  Kernel out = apply(kern, s);
  std::string t = print(out);
  EXPECT_NE(t.find("buffer pw: f32 local[128]"), std::string::npos) << t;
  // The copy comes first in the panel, over r2 then the tile's columns,
  // before the loop over row blocks; the update reads it.
  EXPECT_NE(t.find("for i1o in 2 {\n    serial for pw_r2 in 8 {\n      vectorized for pw_i1i in 16 {\n"
                   "        pw[pw_r2 * 16 + pw_i1i] = mul("),
            std::string::npos) << t;
  EXPECT_NE(t.find("mul(a[(i0o * 4 + i0i) * 8 + r2], pw[r2 * 16 + i1i])"), std::string::npos) << t;
  EXPECT_EQ(print(parse_schedule(print(s))), print(s));
  EXPECT_NE(print(s).find("pack r2 at i1o -> pw\n"), std::string::npos) << print(s);
  // The interpreter's results.
  ASSERT_EQ(lower(g).kernels.size(), 1u);
  auto inputs = testing::inputs_for(g, {}, 5);
  std::vector<HostTensor> want = interpret(g, inputs);
  std::vector<HostTensor> got = CompiledGraph(g, device("cpu"), {s}).run(inputs);
  EXPECT_EQ(testing::compare(want[0], got[0], testing::tolerance_for(f32)), "");
  auto refused = [&](const Kernel& on, const Schedule& bad, const std::string& reason) {
    try {
      apply(on, bad);
      ADD_FAILURE() << "accepted: " << print(bad);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  };
  refused(kern, Schedule(base).pack("r9", "i1o", "pw"), "holds no loop 'r9'");
  refused(kern, Schedule(base).pack("r2", "i0i", "pw"), "holds no loop 'r2'");  // i0i is inside r2
  // A matmul of two plain inputs, packed at the columns' loop i1, just
  // around r2: both factors qualify there.
  Graph mm;
  mm.outputs = {mm.contract(mm.input("x", f32, {4, 8}), mm.input("y", f32, {8, 16}))};
  refused(lower(mm).kernels[0], Schedule().pack("r2", "i1", "pw"), "not exactly one factor");
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
  refused(Schedule().split("i1", 4, "i1o", "i1i").vectorize("i1i").reorder({"i1i", "i1o"}), "no longer be innermost");
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

// rfactor folds a power of two of partials as a tree, halving each round
// (a chain of F dependent adds per output took as long as a CPU GEMV row);
// other factors fold in a chain. Both compute the sum.
TEST(Schedule, RfactorFoldsPartialsAsATree) {
  Graph g;
  g.outputs = {g.reduce(Op::ReduceSum, g.input("x", f32, {4, 48}), {1})};
  Kernel kern = lower(g).kernels[0];
  std::string tree = print(apply(kern, Schedule().rfactor("r1", 8, "r1o", "r1i")));
  for (const char* round : {"for r1i_fold in 4 {", "acc_rf[r1i_fold + 4]", "for r1i_fold_1 in 2 {",
                            "for r1i_fold_2 in 1 {", "acc[0] = add(acc[0], acc_rf[0])"})
    EXPECT_NE(tree.find(round), std::string::npos) << round << "\n" << tree;
  std::string chain = print(apply(kern, Schedule().rfactor("r1", 6, "r1o", "r1i")));
  EXPECT_NE(chain.find("for r1i_fold in 6 {"), std::string::npos) << chain;
  EXPECT_EQ(chain.find("r1i_fold_1"), std::string::npos) << chain;
  HostTensor x = HostTensor::random(f32, {4, 48}, 5);
  std::vector<HostTensor> want = interpret(g, {{"x", x}});
  std::shared_ptr<Device> cpu = device("cpu");
  if (!cpu) GTEST_SKIP() << "no CPU backend";
  for (int64_t f : {8, 16, 6}) {
    Kernel tiled = apply(kern, Schedule().rfactor("r1", f, "r1o", "r1i"));
    testing::Bytes in(x.data.size());
    std::memcpy(in.data(), x.data.data(), in.size());
    std::vector<testing::Bytes> out = testing::run(*cpu, tiled, {testing::Bytes(16), in});
    std::vector<float> got = testing::from_bytes<float>(out[0]);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(got[size_t(i)], want[0].get(i), 1e-4) << "factor " << f;
  }
  // The CPU's default schedule vectorizes the tree's rounds of 2 lanes or
  // more (64 partials on AVX-512: 32, 16, 8, 4, 2), so each is one vector add
  // of two halves; the last (1 lane) stays scalar.
  Graph wide;
  wide.outputs = {wide.reduce(Op::ReduceSum, wide.input("x", f32, {4, 1024}), {1})};
  Kernel wk = lower(wide).kernels[0];
  DeviceInfo avx512;
  avx512.backend = "cpu";
  avx512.vector_bits = 512;
  Schedule ws = default_schedule(wk, avx512);
  std::string text = print(ws);
  for (const char* v : {"vectorize r1i\n", "vectorize r1i_fold\n", "vectorize r1i_fold_1\n", "vectorize r1i_fold_4\n"})
    EXPECT_NE(text.find(v), std::string::npos) << v << "\n" << text;
  EXPECT_EQ(text.find("vectorize r1i_fold_5"), std::string::npos) << text;
  HostTensor wx = HostTensor::random(f32, {4, 1024}, 6);
  std::vector<HostTensor> wwant = interpret(wide, {{"x", wx}});
  testing::Bytes win(wx.data.size());
  std::memcpy(win.data(), wx.data.data(), win.size());
  std::vector<float> wgot =
      testing::from_bytes<float>(testing::run(*cpu, apply(wk, ws), {testing::Bytes(16), win})[0]);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(wgot[size_t(i)], wwant[0].get(i), 1e-3) << i;
}

// A 4-bit matrix's bytes are read at (r / 32) * 16 + r % 16: vectors 16
// lanes wide keep that one contiguous load (the nibble's choice uniform across
// the vector); wider ones made every weight load a gather (stories110M q4
// decode at 29-32 tok/s). So the CPU's partials go in vectors of the indices'
// period, side by side; q8 (no division) keeps one wide vector.
TEST(Schedule, ReductionVectorsStopAtTheIndicesPeriod) {
  DeviceInfo avx512;
  avx512.backend = "cpu";
  avx512.vector_bits = 512;
  auto head = [&](const char* w) {
    Program p = lower(make_workload(w).graph);
    Kernel k = p.kernels[0];
    for (const Kernel& c : p.kernels)  // the first GEMV (not the token's embedding row)
      if (c.name.find("contract") != std::string::npos) {
        k = c;
        break;
      }
    std::string text = print(default_schedule(k, avx512));
    size_t second = text.find('\n', text.find('\n') + 1);
    return text.substr(0, second + 1);
  };
  // stories15m: rows of 288, 32 partials.
  for (const char* q4 : {"llm-decode:stories15m:8:q4", "llm-decode:stories15m:8:q4z"})
    EXPECT_EQ(head(q4), "rfactor r1 by 32 -> r1o, r1i\nsplit r1i by 16 -> r1v, r1l\n") << q4;
  EXPECT_EQ(head("llm-decode:stories15m:8:q8"), "rfactor r1 by 32 -> r1o, r1i\nvectorize r1i\n");
}

TEST(Schedule, TextRoundTripsAndHashesStably) {
  Schedule s;
  s.split("i0", 8, "i0o", "i0i").reorder({"i0o", "i1", "i0i"}).fuse("a", "b", "c").hoist("r2", "i0i");
  s.cache_read("b", "i1o", "pb").pack("r2", "i1o", "pw").unroll("i0i").vectorize("i1i").parallel("i0o").serial("x");
  s.bind("blk", LoopKind::GpuBlock).spread("i0", 256, "t");
  std::string text = print(s);
  EXPECT_NE(text.find("spread i0 over 256 -> t\n"), std::string::npos) << text;
  EXPECT_EQ(parse_schedule(text), s);
  EXPECT_EQ(print(parse_schedule(text)), text);
  EXPECT_EQ(hash(parse_schedule(text)), hash(s));
  EXPECT_NE(hash(Schedule().unroll("a")), hash(Schedule().unroll("b")));
  for (const char* bad : {"split i0 by x -> a, b", "split i0 by 4 -> a", "teleport i0", "bind i0 gpu_warp",
                          "hoist r2 i0", "fuse a, b", "unroll 3x", "cache_read b i1o pb", "cache_read b at i1o ->", "pack r2 at i1o",
                          "spread i0 over x -> t", "spread i0 256 -> t", "spread i0 over 0 -> t", "spread i0 over 8 t",
                          "spread i0 over 8 -> t u"})
    EXPECT_THROW(parse_schedule(bad), Error) << bad;
}

TEST(Schedule, SpreadStridesLoopsOverThreadsAndCombinesReductions) {
  Kernel kern = lower(make_workload("softmax:8x300").graph).kernels[0];
  std::string t = print(apply(kern, Schedule().spread("i0", 256, "t")));
  for (const char* want : {
           "parallel for i0 in 8 {\n    serial for t in 256 {\n      block {\n        acc[0] = -inff\n",
           "serial for r2 in 2 {\n          if cmplt(r2 * 256 + t, 300) {\n"
           "            acc[0] = max(acc[0], x[i0 * 300 + (r2 * 256 + t)])\n          }\n        }\n"
           "        allreduce acc[0] max over t\n        acc_1[0] = 0f\n",
           "allreduce acc_1[0] add over t\n        serial for i1 in 2 {\n"})
    EXPECT_NE(t.find(want), std::string::npos) << want << "\nin\n" << t;
  // An extent that T divides needs no guard; a store outside loops is thread 0's.
  t = print(apply(lower(make_workload("gemv:4x512").graph).kernels[0], Schedule().spread("i0", 128, "t")));
  EXPECT_NE(t.find("serial for r1 in 4 {\n          acc[0] = add(acc[0], mul(a[i0 * 512 + (r1 * 128 + t)], x[r1 * 128 + t]))"),
            std::string::npos) << t;
  EXPECT_NE(t.find("allreduce acc[0] add over t\n        if cmpeq(t, 0) {\n          t2[i0] = acc[0]"), std::string::npos) << t;
}

TEST(Schedule, SpreadRefusesWhatThreadsCannotShare) {
  auto refused = [](const std::string& body, const std::string& reason) {
    Kernel kern = parse_kernel("kernel k(n) {\n  buffer y: f32 global out\n  buffer x: f32 global\n"
                               "  buffer acc: f32 local[1]\n  buffer tmp: f32 local[1]\n  parallel for i in n {\n" +
                               body + "  }\n}\n");
    try {
      apply(kern, Schedule().spread("i", 32, "t"));
      ADD_FAILURE() << "accepted:\n" << body;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  };
  refused("    acc[0] = 1f\n    serial for r in 9 {\n      acc[0] = add(acc[0], x[r])\n    }\n    y[i] = acc[0]\n",
          "does not start from 0");
  refused("    serial for r in 9 {\n      y[r] = 1f\n    }\n    y[i] = y[0]\n", "which it writes");
  refused("    if cmplt(i, 3) {\n      serial for r in 9 {\n        y[i * 9 + r] = 1f\n      }\n    }\n", "under a condition");
  refused("    serial for r in 9 {\n      y[i] = x[r]\n    }\n", "does not depend on 'r'");
  refused("    serial for r in 9 {\n      tmp[0] = x[r]\n    }\n    y[i] = tmp[0]\n", "carries values out");
}

// Row reductions, and reductions with at most 4096 output points (too few
// for a thread each), are shared by a block's threads; other kernels get a
// thread per output point.
TEST(Schedule, GpuDefaultSpreadsRowReductionsAndFewPoints) {
  DeviceInfo gpu;
  gpu.backend = "vulkan";
  gpu.max_threads = 128;
  auto first = [&](const Graph& g) { return print(default_schedule(lower(g).kernels[0], gpu)); };
  // A 128-long row gets 64 threads (about one per 2 elements), two rows a
  // block; a long one the most threads the device allows.
  EXPECT_EQ(first(make_workload("softmax:64x128").graph),
            "split i0 by 2 -> rowb, row\nspread row over 64 -> thr\nbind rowb gpu_block\nbind row gpu_thread\n"
            "bind thr gpu_thread\n");
  EXPECT_EQ(first(make_workload("softmax:64x4096").graph), "spread i0 over 128 -> thr\nbind i0 gpu_block\nbind thr gpu_thread\n");
  EXPECT_NE(first(make_workload("gemv:64x128").graph).find("spread"), std::string::npos);
  // Short rows over a symbolic length: as many rows a block as its known
  // factor allows, split exactly (no guard would let the allreduce run); the
  // symbolic loop outermost, so that a row's indices come by constant
  // divisions (as on CUDA below).
  Graph att, colsum;
  Dim past = Dim::symbol("past", 1, 4096);
  att.outputs = {att.reduce(Op::ReduceSum, att.input("s", f32, {Dim(4), past, Dim(32)}), {2})};
  EXPECT_EQ(first(att), "serial i0\nreorder i1, i0\nfuse i1, i0 -> f1\nsplit f1 by 4 -> rowb, row\nspread row over 32 -> thr\n"
                        "bind rowb gpu_block\nbind row gpu_thread\nbind thr gpu_thread\n");
  Kernel att_k = lower(att).kernels[0];
  std::string att_text = print(apply(att_k, default_schedule(att_k, gpu)));
  EXPECT_EQ(att_text.find("if cmplt"), std::string::npos) << att_text;
  // On CUDA such rows (a power of two of 16-byte pieces, under 32) are
  // shared by as many lanes, a piece each, as many rows a block as divide
  // the points (4 here; TinyLlama's 4 x 8 heads fill 256 threads); long ones
  // 128 threads each where that leaves a thread at least 2 pieces (2048 f16:
  // 256 pieces), a warp otherwise.
  Graph att16, long16;
  att16.outputs = {att16.reduce(Op::ReduceSum, att16.input("s", f16, {Dim(4), past, Dim(64)}), {2})};
  long16.outputs = {long16.reduce(Op::ReduceSum, long16.input("s", f16, {Dim(4096), Dim(2048)}), {1})};
  auto on_h100 = [&](const Graph& g) { return print(default_schedule(lower(g).kernels[0], h100_description())); };
  // The cache's symbolic loop goes outermost, so a row's indices come by
  // constant divisions.
  EXPECT_EQ(on_h100(att16), "serial i0\nreorder i1, i0\nfuse i1, i0 -> f1\nsplit r2 by 8 -> r2o, r2v\nunroll r2v\nsplit f1 by 4 -> rowb, row\n"
                            "spread row over 8 -> lane\nbind rowb gpu_block\nbind row gpu_thread\nbind lane gpu_thread\n");
  EXPECT_EQ(on_h100(long16), "split r1 by 8 -> r1o, r1v\nunroll r1v\nsplit i0 by 2 -> rowb, row\nspread row over 128 -> thr\n"
                             "bind rowb gpu_block\nbind row gpu_thread\nbind thr gpu_thread\nunroll r1o\n");
  Graph long8;  // 2048 int8 elements a row: 128 pieces, a warp's
  long8.outputs = {long8.reduce(Op::ReduceSum, long8.cast(long8.input("q", i8, {Dim(4096), Dim(2048)}), f32), {1})};
  EXPECT_NE(on_h100(long8).find("spread row over 32 -> thr"), std::string::npos) << on_h100(long8);
  // One row for the whole GPU (a greedy argmax's 32,000 f32 logits: 8,000
  // 16-byte pieces): the most whole warps up to the block limit that divide
  // the pieces (800, 10 each), not a power of two (64, 125 each: 17 us).
  Graph logits;
  logits.outputs = {logits.reduce(Op::ReduceMax, logits.input("l", f32, {Dim(1), Dim(32000)}), {1})};
  EXPECT_NE(on_h100(logits).find("over 800 -> thr"), std::string::npos) << on_h100(logits);
  // Few points reading columns: 16 neighbouring points along x, their
  // reductions shared along y.
  colsum.outputs = {colsum.reduce(Op::ReduceSum, colsum.input("v", f32, {past, Dim(64)}), {0})};
  EXPECT_EQ(first(colsum), "split i0 by 16 -> colb, col\nspread col over 8 -> part\nreorder part, col\n"
                           "bind colb gpu_block\nbind part gpu_thread\nbind col gpu_thread\n");
  Graph mm, cols, big_mm, big_cols, chain = make_workload("chain:1024").graph;
  mm.outputs = {mm.contract(mm.input("a", f32, {33, 47}), mm.input("b", f32, {47, 19}))};
  cols.outputs = {cols.reduce(Op::ReduceSum, cols.input("x", f32, {5, 33, 7}), {1})};
  for (const Graph* g : {&mm, &cols}) EXPECT_NE(first(*g).find("spread"), std::string::npos) << first(*g);
  big_mm.outputs = {big_mm.contract(big_mm.input("a", f32, {130, 47}), big_mm.input("b", f32, {47, 70}))};
  big_cols.outputs = {big_cols.reduce(Op::ReduceSum, big_cols.input("x", f32, {100, 33, 70}), {1})};
  for (const Graph* g : {&big_mm, &big_cols, &chain})
    EXPECT_EQ(first(*g).find("spread"), std::string::npos) << first(*g);
}

// CPU: a few parallel rows (heads) over cached positions of symbolic count
// take the positions outermost and parallel, reading the cache in order.
TEST(Schedule, CpuAttentionRunsOverPositionsInParallel) {
  DeviceInfo cpu;
  cpu.backend = "cpu";
  cpu.vector_bits = 512;
  Graph att;
  Dim past = Dim::symbol("past", 1, 4096);
  att.outputs = {att.reduce(Op::ReduceSum, att.input("k", f32, {Dim(12), past, Dim(64)}), {2})};
  Kernel k = lower(att).kernels[0];
  std::string s = print(default_schedule(k, cpu));
  EXPECT_NE(s.find("serial i0\nreorder i1, i0\nparallel i1\n"), std::string::npos) << s;
  std::string text = print(apply(k, default_schedule(k, cpu)));
  EXPECT_NE(text.find("parallel for i1 in past"), std::string::npos) << text;
  // Constant positions keep the heads parallel.
  Graph fixed;
  fixed.outputs = {fixed.reduce(Op::ReduceSum, fixed.input("k", f32, {Dim(12), Dim(100), Dim(64)}), {2})};
  EXPECT_EQ(print(default_schedule(lower(fixed).kernels[0], cpu)).find("reorder"), std::string::npos);
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

TEST(Schedule, RandomLegalSchedulesNeverChangeResults) {
  std::mt19937 rng(1234);
  std::vector<Graph> graphs;
  for (const char* spec : {"matmul:12x10x20", "softmax:6x10", "chain:50", "mlp:3"})
    graphs.push_back(make_workload(spec).graph);
  Graph g;
  int x = g.input("x", f16, {5, 7, 3});
  g.outputs = {g.reduce(Op::ReduceMax, g.permute(x, {2, 0, 1}), {1})};
  graphs.push_back(g);
  int steps = 0;  // steps applied in all: the test must exercise real schedules
  for (const Graph& graph : graphs) {
    auto inputs = testing::inputs_for(graph, {}, 5);
    std::vector<HostTensor> want = interpret(graph, inputs);
    Program p = lower(graph);
    for (int trial = 0; trial < 5; ++trial) {
      std::vector<Schedule> schedules;
      for (const Kernel& kern : p.kernels) {
        schedules.push_back(testing::random_schedule(kern, rng));
        steps += int(schedules.back().steps.size());
      }
      SCOPED_TRACE(print(schedules[0]));
      CompiledGraph cg(graph, device("cpu"), schedules);
      std::vector<HostTensor> got = cg.run(inputs);
      for (size_t o = 0; o < want.size(); ++o)
        EXPECT_EQ(testing::compare(want[o], got[o], testing::tolerance_for(want[o].dtype)), "") << print(graph);
    }
  }
  EXPECT_GT(steps, 100);
}

}  // namespace
}  // namespace kiln
