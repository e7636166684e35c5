// Every op of tests/backends/gpu_testing.h's op_cases() on the systolic device
// against the reference interpreter: integer paths exact, floats within their
// dtype's tolerance, widened to bf16's where a contraction ran on the array
// in single bf16 passes; and with bf16x6 passes, f32 tolerance throughout.
#include <gtest/gtest.h>

#include <cctype>

#include "backends/systolic/systolic_device.h"
#include "tests/backends/gpu_testing.h"
#include "tests/testing.h"

namespace kiln {

namespace testing {
void PrintTo(const GraphCase& c, std::ostream* os) { *os << c.name; }
}  // namespace testing

namespace {

using testing::GraphCase;

bool has_contraction(const Graph& g) {
  for (const Node& n : g.nodes)
    if (n.op == Op::Contract) return true;
  return false;
}

void expect_matches(const std::shared_ptr<Device>& dev, const GraphCase& c, bool widen) {
  auto inputs = testing::inputs_for(c.graph, c.symbols, 7, c.scale);
  std::vector<HostTensor> want = interpret(c.graph, inputs, c.symbols);
  CompiledGraph cg(c.graph, dev);
  std::vector<HostTensor> got = cg.run(inputs, c.symbols);
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    Tolerance tol = tolerance_for(want[o].dtype);
    if (widen && is_float(want[o].dtype) && has_contraction(c.graph)) tol = tolerance_for(bf16);
    std::string diff = compare(want[o], got[o], tol);
    EXPECT_TRUE(diff.empty()) << "output " << o << ": " << diff << "\n" << print(c.graph);
  }
}

class SystolicOps : public ::testing::TestWithParam<GraphCase> {};

TEST_P(SystolicOps, Bf16MatchesTheInterpreter) {
  static auto dev = std::make_shared<systolic::SystolicDevice>(systolic::default_config());
  expect_matches(dev, GetParam(), true);
}

TEST_P(SystolicOps, Bf16x6MatchesTheInterpreterAtF32Tolerance) {
  expect_matches(device("systolic"), GetParam(), false);
}

TEST_P(SystolicOps, OutputStationarySmallArrayMatchesTheInterpreter) {
  static auto dev = [] {
    systolic::SystolicConfig c = systolic::default_config();
    c.rows = c.cols = 8;
    c.dataflow = systolic::Dataflow::OutputStationary;
    c.weight_buffer = c.input_buffer = c.acc_buffer = 64 << 10;
    return std::make_shared<systolic::SystolicDevice>(c);
  }();
  expect_matches(dev, GetParam(), true);
}

std::string test_name(const ::testing::TestParamInfo<GraphCase>& info) {
  std::string s;
  for (char ch : info.param.name) s += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return s + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(EveryOp, SystolicOps, ::testing::ValuesIn(testing::op_cases()), test_name);

TEST(SystolicDevice, ContractionsRunOnTheArrayAndCountCycles) {
  auto dev = std::make_shared<systolic::SystolicDevice>(systolic::default_config());
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {64, 100}), g.input("b", f32, {100, 48}))};
  auto inputs = testing::inputs_for(g, {}, 3, 1.0);
  CompiledGraph(g, dev).run(inputs);
  auto records = dev->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(records[0].on_array);
  EXPECT_EQ(records[0].stats.macs, 64 * 100 * 48);
  EXPECT_GT(records[0].stats.total_cycles, 64);
}

TEST(SystolicDevice, Int8ContractionIsExactOnIntegerValuedInputs) {
  // Rows and columns whose largest magnitude is 127 quantize with scale 1:
  // the array's int32 sums are then the exact products.
  systolic::SystolicConfig c = systolic::tpu_v1_config();
  auto dev = std::make_shared<systolic::SystolicDevice>(c);
  Graph g;
  g.outputs = {g.contract(g.input("a", f32, {5, 300}), g.input("b", f32, {300, 7}))};
  std::map<std::string, HostTensor> in;
  in["a"] = HostTensor(f32, {5, 300});
  in["b"] = HostTensor(f32, {300, 7});
  for (int64_t i = 0; i < 1500; ++i) in["a"].set(i, i % 300 == 0 ? 127 : double((i * 37) % 255 - 127));
  for (int64_t i = 0; i < 2100; ++i) in["b"].set(i, i < 7 ? -127 : double((i * 91) % 255 - 127));
  auto got = CompiledGraph(g, dev).run(in);
  auto want = interpret(g, in);
  EXPECT_EQ(compare(want[0], got[0], {0, 0}), "");
}

}  // namespace
}  // namespace kiln
