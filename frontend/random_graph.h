// Random valid graphs for differential testing (`kiln fuzz`): every primitive
// op, every dtype an op accepts, broadcasting, views with odd strides, gathers
// out of range, contractions with epilogues, symbolic dims. Every node is made
// with the Graph builders, so a graph is valid by construction.
//
// Values stay where a backend and the interpreter can be compared with the
// tolerances of frontend/compare.h: discontinuous ops (compares, casts from a
// float to an integer or bool) only see "exact" float values (no rounding
// that could differ between implementations), and exp2, sin, log2, sqrt,
// recip and division only see arguments that keep their results well
// conditioned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/graph.h"
#include "kiln/host_tensor.h"

namespace kiln {

// One case: a graph, a value for each of its symbolic dims, and the seed it
// came from, which also seeds its inputs (case_inputs()).
struct RandomGraph {
  Graph graph;
  Bindings symbols;
  uint64_t seed = 0;

  bool operator==(const RandomGraph& o) const = default;
};

// The same seed gives the same graph (for one build of kiln: it draws from
// std:: distributions). 2..25 nodes, 1..4 outputs, sizes 1..70.
RandomGraph random_graph(uint64_t seed);

// The case's inputs: random_inputs(graph, symbols, seed).
std::map<std::string, HostTensor> case_inputs(const RandomGraph& c);

// A case as a file: '#' lines first ("# seed 12", "# symbols n=5 m=3", and
// notes, which parse_case skips), then the graph's IR text.
std::string print_case(const RandomGraph& c, const std::vector<std::string>& notes = {});
RandomGraph parse_case(std::string_view text);  // throws kiln::Error

}  // namespace kiln
