// Every op and dtype of tests/backends/ops_test.cpp on the Vulkan device, through
// lowering, the default GPU schedule and CompiledGraph, against the reference
// interpreter; once more on the same device without 8/16-bit storage (packed
// elements written with atomics). No test may cause a validation message.
#include <gtest/gtest.h>

#include <cctype>

#include "runtime/kernel_cache.h"
#include "tests/backends/gpu_testing.h"
#include "tests/backends/vulkan/vulkan_testing.h"

namespace kiln {

namespace testing {

// Failures name the case, not its bytes.
void PrintTo(const GraphCase& c, std::ostream* os) { *os << c.name; }

}  // namespace testing

namespace {

using testing::GraphCase;

class VulkanOps : public testing::VulkanTest, public ::testing::WithParamInterface<GraphCase> {};

TEST_P(VulkanOps, MatchesTheInterpreter) {
  const GraphCase& c = GetParam();
  testing::expect_matches_interpreter_on(dev_, c.graph, c.symbols, c.scale);
}

using VulkanOpsWithoutSmallStorage = VulkanOps;

TEST_P(VulkanOpsWithoutSmallStorage, MatchesTheInterpreter) {
  const GraphCase& c = GetParam();
  testing::expect_matches_interpreter_on(testing::vulkan_device_without_small_storage(), c.graph, c.symbols,
                                         c.scale);
}

// The cases whose tensors hold 8- or 16-bit elements.
std::vector<GraphCase> small_element_cases() {
  std::vector<GraphCase> small;
  for (GraphCase& c : testing::op_cases()) {
    bool any = false;
    for (const Node& n : c.graph.nodes) any |= dtype_size(n.dtype) < 4;
    if (any) small.push_back(std::move(c));
  }
  return small;
}

std::string test_name(const ::testing::TestParamInfo<GraphCase>& info) {
  std::string s;
  for (char c : info.param.name) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(EveryOp, VulkanOps, ::testing::ValuesIn(testing::op_cases()), test_name);
INSTANTIATE_TEST_SUITE_P(EveryOp, VulkanOpsWithoutSmallStorage, ::testing::ValuesIn(small_element_cases()),
                         test_name);

using VulkanGraphs = testing::VulkanTest;

TEST_F(VulkanGraphs, SymbolicDimsRunAtManySizesWithoutRecompiling) {
  Graph g;
  Dim seq = Dim::symbol("seq", 1, 4096);
  int x = g.input("x", f32, {seq, 64});
  int y = g.contract(x, g.input("w", f32, {64, 32}));
  int s = g.reduce(Op::ReduceSum, g.unary(Op::Exp2, y), {1});
  g.outputs = {g.binary(Op::Div, y, g.expand(s, {seq, Dim(32)})), s};
  CompiledGraph cg(g, dev_);
  int64_t compiled = KernelCache::global().misses();
  for (int64_t n : {1, 7, 300, 2}) {
    SCOPED_TRACE("seq = " + std::to_string(n));
    auto inputs = testing::inputs_for(g, {{"seq", n}}, uint64_t(n));
    auto want = interpret(g, inputs, {{"seq", n}});
    auto got = cg.run(inputs);
    for (size_t o = 0; o < want.size(); ++o)
      EXPECT_EQ(testing::compare(want[o], got[o], testing::tolerance_for(f32)), "");
  }
  EXPECT_EQ(KernelCache::global().misses(), compiled) << "a new symbolic value must not recompile";
}

}  // namespace
}  // namespace kiln
