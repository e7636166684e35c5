// Schedules never change results: every graph of the op tests, with random
// legal schedules on every kernel, against the reference interpreter on the CPU.
#include <gtest/gtest.h>

#include "tests/backends/gpu_testing.h"
#include "tests/testing.h"

namespace kiln {
namespace {

TEST(ScheduleFuzz, RandomSchedulesOnEveryOpTestKernel) {
  std::mt19937 rng(2026);
  int steps = 0;  // steps applied in all: the test must exercise real schedules
  for (const testing::GraphCase& c : testing::op_cases()) {
    SCOPED_TRACE(c.name);
    auto inputs = testing::inputs_for(c.graph, c.symbols, 11, c.scale);
    std::vector<HostTensor> want = interpret(c.graph, inputs, c.symbols);
    Program p = lower(c.graph);
    std::vector<Schedule> schedules;
    for (const Kernel& k : p.kernels) {
      schedules.push_back(testing::random_schedule(k, rng));
      steps += int(schedules.back().steps.size());
    }
    CompiledGraph cg(c.graph, device("cpu"), schedules);
    std::vector<HostTensor> got = cg.run(inputs, c.symbols);
    for (size_t o = 0; o < want.size(); ++o)
      EXPECT_EQ(testing::compare(want[o], got[o], testing::tolerance_for(want[o].dtype)), "")
          << "output " << o << " with schedule\n" << print(schedules[0]);
  }
  EXPECT_GT(steps, 500);
}

}  // namespace
}  // namespace kiln
