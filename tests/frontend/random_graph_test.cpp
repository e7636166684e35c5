// The random graph generator behind `kiln fuzz`: deterministic, valid graphs
// that cover every op and dtype, and case files that read back.
#include "frontend/random_graph.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <set>

#include "kiln/kiln.h"

namespace kiln {
namespace {

constexpr uint64_t kSeeds = 300;

TEST(RandomGraph, SameSeedSameGraph) {
  std::set<std::string> distinct;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    RandomGraph a = random_graph(seed), b = random_graph(seed);
    EXPECT_EQ(a, b) << "seed " << seed;
    distinct.insert(print(a.graph));
  }
  EXPECT_GT(distinct.size(), 45u);
}

TEST(RandomGraph, ValidSmallGraphsThatRoundTripAsText) {
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    RandomGraph c = random_graph(seed);
    const Graph& g = c.graph;
    EXPECT_GE(g.nodes.size(), 2u) << seed;
    EXPECT_LE(g.nodes.size(), 25u) << seed;
    EXPECT_GE(g.outputs.size(), 1u) << seed;
    EXPECT_LE(g.outputs.size(), 4u) << seed;
    EXPECT_EQ(parse_graph(print(g)), g) << print(g);
    // Every symbol has a value in its bounds, so the inputs can be made.
    for (const Dim& d : g.symbols()) {
      ASSERT_TRUE(c.symbols.count(d.sym)) << print(g);
      EXPECT_GE(c.symbols.at(d.sym), d.lo);
      EXPECT_LE(c.symbols.at(d.sym), d.hi);
    }
    EXPECT_EQ(case_inputs(c).size(), g.input_nodes().size());
  }
}

// Counts each op, dtype, cast pair and feature over many seeds; each must
// appear (the counts are printed, to see the mix).
TEST(RandomGraph, CoversEveryOpAndDType) {
  std::map<std::string, int> ops, dtypes, casts, features;
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    const Graph& g = random_graph(seed).graph;
    if (!g.symbols().empty()) ++features["symbolic dims"];
    if (g.outputs.size() > 1) ++features["several outputs"];
    for (const Node& n : g.nodes) {
      ++ops[std::string(op_name(n.op))];
      ++dtypes[std::string(dtype_name(n.dtype))];
      const Node* x = n.inputs.empty() ? nullptr : &g.nodes[n.inputs[0]];
      if (n.op == Op::Cast) ++casts[std::string(dtype_name(x->dtype)) + "->" + std::string(dtype_name(n.dtype))];
      if (n.op == Op::Slice)
        for (int64_t s : n.steps) features["slice step > 1"] += s > 1;
      if (n.op == Op::Gather && g.nodes[n.inputs[1]].op == Op::Input) ++features["gather of input indices"];
      if (n.op == Op::Contract && x->shape.size() != g.nodes[n.inputs[1]].shape.size())
        ++features["contract with broadcast batch"];
      if (n.op == Op::Expand) ++features["expand"];
      if (n.op == Op::Contract && (n.dtype == f16 || n.dtype == bf16) && n.shape.size() == 2 && n.shape[0].is_const() &&
          n.shape[0].value % 64 == 0 && n.shape[1].is_const() && n.shape[1].value % 64 == 0)
        ++features["contract of tensor-core sizes"];
    }
  }
  for (int op = int(Op::Input); op <= int(Op::Contract); ++op)
    EXPECT_GT(ops[std::string(op_name(Op(op)))], 0) << op_name(Op(op));
  for (DType t : kAllDTypes) {
    EXPECT_GT(dtypes[std::string(dtype_name(t))], 0) << dtype_name(t);
    for (DType to : kAllDTypes)
      EXPECT_GT(casts[std::string(dtype_name(t)) + "->" + std::string(dtype_name(to))], 0)
          << "cast " << dtype_name(t) << " -> " << dtype_name(to);
  }
  for (const char* f : {"symbolic dims", "several outputs", "slice step > 1", "gather of input indices",
                        "contract with broadcast batch", "expand", "contract of tensor-core sizes"})
    EXPECT_GT(features[f], 0) << f;
  std::cout << "over " << kSeeds << " seeds:\n ";
  for (auto* counts : {&ops, &dtypes, &features}) {
    for (const auto& [name, n] : *counts) std::cout << " " << name << " " << n << ",";
    std::cout << "\n ";
  }
  std::cout << " " << std::count_if(casts.begin(), casts.end(), [](const auto& c) { return c.second > 0; })
            << " of 49 cast pairs\n";
}

TEST(RandomGraph, CaseFileRoundTrips) {
  for (uint64_t seed : {3, 17, 123456789}) {
    RandomGraph c = random_graph(seed);
    c.symbols["unused"] = 9;  // the file keeps every binding, used or not
    std::string text = print_case(c, {"device cpu", "failure mismatch: output 0\nsecond line"});
    EXPECT_EQ(parse_case(text), c) << text;
  }
}

TEST(RandomGraph, CaseFileErrors) {
  EXPECT_THROW(parse_case("graph main() {\n}\n"), Error);  // no seed
  EXPECT_THROW(parse_case("# seed 1\n# symbols n\n" + print(random_graph(1).graph)), Error);
  EXPECT_THROW(parse_case("# seed 1\ngraph main( {\n"), Error);
}

}  // namespace
}  // namespace kiln
