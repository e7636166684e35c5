// Loop-invariant factors out of an unrolled sum. In
//   for v in 0..W (unrolled) { acc[0] = acc[0] + a * b(v) }
// with `a` the same for every v (a q4 group's scale and its -8 offset's
// neighbours are per group, the group's 32 weights are per v), the loop sums
// b(v) into a fresh register and adds a times that sum once: one
// multiplication an element fewer in the instruction-bound quantized GEMVs.
#pragma once

#include "kiln/kernel.h"

namespace kiln {

// `k` with each unrolled loop of constant extent whose one statement adds an
// f32 product into a local accumulator, some of whose factors do not depend
// on the loop, rewritten as above (a new local buffer per such loop). The
// sum is reassociated as a * (b(0) + b(1) + ...): the rounding of an f32
// reduction, not its value, changes. Kernels with an array tile are returned
// as they are.
Kernel factor_sums(const Kernel& k);

}  // namespace kiln
