// Comparing a device's results with the reference interpreter's: tolerances
// that fit each dtype, shared by the tests and `kiln fuzz`.
#pragma once

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

}  // namespace kiln
