// The reference interpreter: evaluates a Graph directly, every value a double,
// each node's result rounded to the node's dtype (round_to_dtype) and sums and
// dot products accumulated in f64. Slow and obviously right: the oracle that
// every backend is tested against.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kiln/graph.h"
#include "kiln/host_tensor.h"

namespace kiln {

// `inputs` maps each Input node's name to its value; `symbols` binds the
// symbolic dims. Returns the graph's outputs in order. Throws kiln::Error for a
// missing or mis-shaped input or an unbound symbol.
std::vector<HostTensor> interpret(const Graph& g, const std::map<std::string, HostTensor>& inputs,
                                  const Bindings& symbols = {});

}  // namespace kiln
