// The rfactor schedule primitive (codegen/schedule.h): a reduction split into F
// independent partial accumulators, combined at the end, so the partial
// reduction can be vectorized whatever the combine (max has no fast-math form).
#pragma once

#include "codegen/schedule.h"

namespace kiln {

Kernel rfactor(const Kernel& k, const Step& st);

}  // namespace kiln
