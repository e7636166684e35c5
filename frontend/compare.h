// Comparing a device's results with the reference interpreter's: tolerances
// that fit each dtype, shared by the tests and `kiln fuzz`.
#pragma once

#include <string>

#include "kiln/host_tensor.h"

namespace kiln {

struct Tolerance {
  double rtol = 0, atol = 0;  // |got - want| <= rtol * |want| + atol * max|want|
};

// Floats get a few units in the last place of their dtype; integers and bools
// are exact.
Tolerance tolerance_for(DType t);

// Empty when equal within tolerance, else a description of the first mismatch.
// NaN matches NaN and an infinity matches itself.
std::string compare(const HostTensor& want, const HostTensor& got, Tolerance tol);

}  // namespace kiln
