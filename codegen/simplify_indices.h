// Index simplification that knows loop bounds: inside `for v in 0..n`, v is in
// [0, n - 1], so (v0 * 768 + r1o * 16 + r1i) / 16 with r1i < 16 is v0 * 48 +
// r1o, and % 16 is r1i. Reshapes that merge axes (a q4 weight's groups viewed
// as one input axis) leave such divisions behind; without this an emitter sees
// scattered accesses where the schedule made contiguous or uniform ones.
#pragma once

#include "kiln/kernel.h"

namespace kiln {

// `k` with every i64 division and remainder by a positive constant rewritten
// where the bounds of the loops around it prove the rewrite exact (operands
// known to be non-negative). Other expressions are kept as they are.
Kernel simplify_indices(const Kernel& k);

}  // namespace kiln
