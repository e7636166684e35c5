// The schedule tiles contractions on the array: the array_tile step and its
// knobs (sys_tm, sys_tk, sys_tn) reach the emitter, every knob value computes
// what the interpreter does, a different tile changes the cycle count, the
// default schedule (and so every default report) is unchanged, bad tiles are
// refused with a message, and the autotuner, costing candidates by simulated
// cycles, finds a tiling at least as good as the default.
#include <gtest/gtest.h>

#include <set>

#include "backends/systolic/systolic_device.h"
#include "codegen/lower.h"
#include "codegen/schedule_space.h"
#include "runtime/tuner.h"
#include "runtime/tuning_db.h"
#include "tests/testing.h"

namespace kiln {
namespace {

using systolic::SystolicConfig;
using systolic::SystolicDevice;

// A small array with small buffers, so that tiles are evicted and the tiling
// matters; bf16x6 passes, so that results match f32 references.
SystolicConfig small_config() {
  SystolicConfig c = systolic::default_config();
  c.rows = c.cols = 16;
  c.bf16_passes = 6;
  c.input_buffer = 16 << 10;
  c.weight_buffer = c.acc_buffer = 8 << 10;
  return c;
}

Kernel only_kernel(const Graph& g) {
  Program p = lower(g);
  EXPECT_EQ(p.kernels.size(), size_t(1));
  return p.kernels[0];
}

// Simulated cycles of one run of `w` with `schedule` (empty: the default).
int64_t cycles_of(const Workload& w, const std::shared_ptr<SystolicDevice>& dev, const Schedule& schedule = {}) {
  int64_t before = dev->cycles();
  CompiledGraph(w.graph, dev, {schedule}).run(w.inputs);
  return dev->cycles() - before;
}

std::set<std::string> knob_names(const Kernel& k, const DeviceInfo& t) {
  std::set<std::string> n;
  for (const Knob& kn : schedule_knobs(k, t)) n.insert(kn.name);
  return n;
}

TEST(SystolicTiling, ContractionsHaveTileKnobsWhoseDefaultIsTheEmptySchedule) {
  SystolicDevice dev(systolic::default_config());
  const DeviceInfo& t = dev.info();
  EXPECT_EQ(t.matrix_tile_m, 4096);  // two 128-column accumulator tiles in 4 MiB
  EXPECT_EQ(t.matrix_tile_k, 128);
  EXPECT_EQ(t.matrix_tile_n, 128);
  Kernel mm = only_kernel(make_workload("matmul:512x512x512").graph);
  EXPECT_EQ(knob_names(mm, t), (std::set<std::string>{"sys_tm", "sys_tk", "sys_tn"}));
  for (const Knob& kn : schedule_knobs(mm, t)) {
    EXPECT_EQ(kn.def, 0) << kn.name;
    EXPECT_EQ(kn.options.front(), 0) << kn.name;
  }
  EXPECT_EQ(print(default_schedule(mm, t)), "");
  Knobs one({{"sys_tm", 256}});
  EXPECT_EQ(print(schedule_with(mm, t, one)), "array_tile r2 by 256, 0, 0\n");
  EXPECT_EQ(apply(mm, schedule_with(mm, t, one)).array_tile, (ArrayTile{256, 0, 0}));
  // Kernels that do not sum products have nothing to tile.
  EXPECT_TRUE(knob_names(only_kernel(make_workload("softmax:8x256").graph), t).empty());
  EXPECT_TRUE(knob_names(only_kernel(make_workload("chain:1000").graph), t).empty());
}

TEST(SystolicTiling, EveryKnobValueMatchesTheInterpreter) {
  auto dev = std::make_shared<SystolicDevice>(small_config());
  for (const char* spec : {"matmul:64x48x96", "gemv:40x72"}) {
    Workload w = make_workload(spec, f32, 5);
    Kernel k = only_kernel(w.graph);
    std::vector<HostTensor> want = interpret(w.graph, w.inputs);
    std::vector<Knob> knobs = schedule_knobs(k, dev->info());
    ASSERT_EQ(knobs.size(), size_t(3)) << spec;
    std::set<std::string> seen;
    for (const Knob& kn : knobs)
      for (int64_t v : kn.options) {
        Knobs set({{kn.name, v}});
        Schedule s = schedule_with(k, dev->info(), set);
        if (!seen.insert(print(s)).second) continue;
        std::vector<HostTensor> got = CompiledGraph(w.graph, dev, {s}).run(w.inputs);
        EXPECT_EQ(compare(want[0], got[0], tolerance_for(f32)), "") << spec << " " << kn.name << "=" << v;
      }
    EXPECT_GT(seen.size(), size_t(5)) << spec;
  }
}

TEST(SystolicTiling, TheScheduleTileChangesTheCycles) {
  auto dev = std::make_shared<SystolicDevice>(small_config());
  Workload w = make_workload("matmul:128x128x128", f32, 3);
  Kernel k = only_kernel(w.graph);
  // The emitter's own choice for this GEMM (K is 6 bf16 passes long).
  systolic::Tiling def = systolic::resolve_tiling(dev->config(), {0, 1, 2, 128, 128 * 6, 128});
  int64_t by_default = cycles_of(w, dev);
  EXPECT_EQ(cycles_of(w, dev, Schedule().array_tile("r2", def.tm, def.tk, def.tn)), by_default);
  int64_t smaller = cycles_of(w, dev, Schedule().array_tile("r2", def.tm / 4, 0, def.tn / 2));
  EXPECT_NE(smaller, by_default);
  // The same tile given to the device (`kiln sim --tiles`) costs the same;
  // a schedule's sizes win over the device's.
  auto tiled = std::make_shared<SystolicDevice>(small_config(), systolic::Tiling{def.tm / 4, 0, def.tn / 2});
  EXPECT_EQ(cycles_of(w, tiled), smaller);
  EXPECT_EQ(cycles_of(w, tiled, Schedule().array_tile("r2", def.tm, def.tk, def.tn)), by_default);
  // target_source names the tile.
  std::string src = dev->target_source(apply(k, Schedule().array_tile("r2", 16, 0, 8)));
  EXPECT_NE(src.find("tiles 16x0x8"), std::string::npos) << src;
}

// `kiln sim`'s default reports, as docs/systolic.md gives them (before the
// schedule had tile knobs): the default schedule still tiles the same way.
TEST(SystolicTiling, DefaultCyclesUnchanged) {
  Workload w = make_workload("matmul:512x512x512", f32, 1);
  auto ws = std::make_shared<SystolicDevice>(systolic::default_config());
  EXPECT_EQ(cycles_of(w, ws), 27718);
  SystolicConfig c = systolic::default_config();
  c.dataflow = systolic::Dataflow::OutputStationary;
  EXPECT_EQ(cycles_of(w, std::make_shared<SystolicDevice>(c)), 25670);
}

TEST(SystolicTiling, BadTilesAreRefusedWithAMessage) {
  Kernel k = only_kernel(make_workload("matmul:64x48x96").graph);
  auto refused = [&](const Schedule& s, const std::string& why) {
    try {
      apply(k, s);
      ADD_FAILURE() << print(s) << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused(Schedule().array_tile("r2", -1, 0, 0), "tile sizes must be in 0..");
  refused(Schedule().array_tile("r2", 0, int64_t(1) << 40, 0), "tile sizes must be in 0..");
  refused(Schedule().array_tile("i0", 16, 16, 16), "no reduction loop named 'i0'");
  refused(Schedule().array_tile("nosuch", 16, 16, 16), "no reduction loop named 'nosuch'");
  for (const char* text : {"array_tile r2 by 1, 2\n", "array_tile r2 by 1, x, 3\n", "array_tile r2 1, 2, 3\n",
                           "array_tile r2 by 1, 2, 3, 4, 5\n", "array_tile r2 by 99999999999999999999, 1, 1\n"})
    EXPECT_THROW(parse_schedule(text), Error) << text;
  // The kernel text carries the tile and refuses a negative one.
  Kernel tiled = apply(k, parse_schedule("array_tile r2 by 32, 0, 16\n"));
  EXPECT_EQ(parse_kernel(print(tiled)), tiled);
  EXPECT_NE(print(tiled).find("array_tile 32, 0, 16"), std::string::npos);
  EXPECT_EQ(print(k).find("array_tile"), std::string::npos);
  // A fourth size, the stages of a tensor-core tile, round-trips too.
  Kernel staged = apply(k, parse_schedule("array_tile r2 by 32, 16, 16, 3\n"));
  EXPECT_EQ(staged.array_tile, (ArrayTile{32, 16, 16, 3}));
  EXPECT_EQ(parse_kernel(print(staged)), staged);
  EXPECT_EQ(print(parse_schedule("array_tile r2 by 32, 16, 16, 3\n")), "array_tile r2 by 32, 16, 16, 3\n");
  // CUDA's warpgroup tiles (wgmma) are a trailing word in both texts.
  Kernel warpgroup = apply(k, parse_schedule("array_tile r2 by 32, 16, 16, 3 wgmma\n"));
  EXPECT_EQ(warpgroup.array_tile, (ArrayTile{32, 16, 16, 3, true}));
  EXPECT_EQ(parse_kernel(print(warpgroup)), warpgroup);
  EXPECT_NE(print(warpgroup).find("array_tile 32, 16, 16, 3 wgmma"), std::string::npos);
  EXPECT_EQ(print(parse_schedule("array_tile r2 by 32, 16, 16, 3 wgmma\n")), "array_tile r2 by 32, 16, 16, 3 wgmma\n");
  EXPECT_EQ(print(Schedule().array_tile("r2", 32, 16, 16, 3, true)), "array_tile r2 by 32, 16, 16, 3 wgmma\n");
  EXPECT_THROW(parse_schedule("array_tile r2 by 32, 16, 16, 3 mma\n"), Error);
  EXPECT_THROW(parse_schedule("array_tile r2 by wgmma\n"), Error);
  std::string text = print(tiled);
  size_t at = text.find("array_tile 32, 0, 16");
  for (const char* bad : {"-3, 0, 0", "1, 2", "1, x, 3", "99999999999999999999999, 0, 0"}) {
    std::string t = text;
    t.replace(at, std::string("array_tile 32, 0, 16").size(), std::string("array_tile ") + bad);
    EXPECT_THROW(parse_kernel(t), Error) << bad;
  }
  // A tile larger than anything is clamped by the emitter, not a crash.
  auto dev = std::make_shared<SystolicDevice>(small_config());
  Kernel big = tiled;
  big.array_tile = {int64_t(1) << 40, int64_t(1) << 40, int64_t(1) << 40};
  EXPECT_NO_THROW(dev->compile(big));
  Workload w = make_workload("matmul:64x48x96", f32, 2);
  std::vector<HostTensor> want = interpret(w.graph, w.inputs);
  Schedule largest = Schedule().array_tile("r2", 1 << 24, 1 << 24, 1 << 24);
  std::vector<HostTensor> got = CompiledGraph(w.graph, dev, {largest}).run(w.inputs);
  EXPECT_EQ(compare(want[0], got[0], tolerance_for(f32)), "");
}

TEST(SystolicTuner, FindsATilingAtLeastAsGoodAsTheDefaultBySimulatedCycles) {
  auto dev = std::make_shared<SystolicDevice>(small_config());
  Workload w = make_workload("matmul:128x128x128", f32, 9);
  Kernel k = only_kernel(w.graph);
  TuneOptions opt;
  opt.budget_s = 4;
  opt.progress = false;
  GraphTuning t = tune_graph(w.graph, w.inputs, {}, dev, opt, nullptr);
  ASSERT_EQ(t.kernels.size(), size_t(1));
  const KernelTuning& kt = t.kernels[0];
  EXPECT_EQ(kt.knobs, 3);
  EXPECT_GT(kt.candidates, 1);
  // The costs are the device's cycles at its clock, not host time.
  double hz = dev->config().clock_ghz * 1e9;
  int64_t by_default = cycles_of(w, dev);
  EXPECT_NEAR(kt.default_s * hz, double(by_default), 1e-3);
  EXPECT_LE(kt.tuned_s, kt.default_s);
  EXPECT_NEAR(t.graph_default_s * hz, double(by_default), 1e-3);
  Schedule best = kt.improved ? named_schedule(kt.best, k) : Schedule();
  int64_t tuned = cycles_of(w, dev, best);
  EXPECT_LE(tuned, by_default) << print(best);
  EXPECT_NEAR(kt.tuned_s * hz, double(tuned), 1e-3);
  // The tuned schedule computes what the interpreter does, on new inputs.
  auto inputs = testing::inputs_for(w.graph, {}, 77);
  std::vector<HostTensor> want = interpret(w.graph, inputs);
  std::vector<HostTensor> got = CompiledGraph(w.graph, dev, {best}).run(inputs);
  EXPECT_EQ(compare(want[0], got[0], tolerance_for(f32)), "") << print(best);
}

}  // namespace
}  // namespace kiln
