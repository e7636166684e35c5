// Comparing a device's results with the reference interpreter's: tolerances
// that fit each dtype, shared by the tests and `kiln fuzz`.
#pragma once

#include <optional>
#include <string>

#include "kiln/graph.h"
#include "kiln/host_tensor.h"

namespace kiln {

struct Tolerance {
  double rtol = 0, atol = 0;  // |got - want| <= rtol * |want| + atol * max|want|
};

// Floats get a few units in the last place of their dtype; integers and bools
// are exact.
Tolerance tolerance_for(DType t);

// For graph output `node`: the loosest tolerance among the dtypes of the
// values computed on the way to it (the node and its ancestors, less inputs,
// constants and views, which carry values exactly). An f32 output cast from
// an f16 contraction carries the f16 rounding of a sum whose order differs
// between backends, one f16 unit apart at worst (`kiln fuzz`, seed 1065286).
Tolerance tolerance_for(const Graph& g, int node);

// Empty when equal within tolerance, else a description of the first mismatch.
// NaN matches NaN and an infinity matches itself.
std::string compare(const HostTensor& want, const HostTensor& got, Tolerance tol);

// For float graph output `node`: the graph whose one output holds, element
// for element, the scale of the rounding differences it may carry: a sum's is
// the sum of its terms' absolute values (where terms cancel, the result is far
// smaller than what two backends' summation orders differ by: `kiln fuzz`,
// seed 1089209, 39 terms summing to -0.0043), carried through the elementwise
// ops, views and reductions after it by each op's sensitivity at the
// interpreter's values (seeds 6031307 and 6065457: such sums under log2 and
// sin). Null for outputs that are not float.
std::optional<Graph> magnitude_graph(const Graph& g, int node);

// As compare(), measuring errors against `magnitude` (the output of
// magnitude_graph(): |got - want| <= rtol * magnitude + atol * its largest).
std::string compare(const HostTensor& want, const HostTensor& got, Tolerance tol, const HostTensor& magnitude);

}  // namespace kiln
