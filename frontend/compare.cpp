#include "frontend/compare.h"

#include <algorithm>
#include <cmath>

namespace kiln {

Tolerance tolerance_for(DType t) {
  switch (t) {
    case f32: return {2e-5, 2e-5};
    case f16: return {2.5e-3, 2e-3};
    case bf16: return {1.6e-2, 1.6e-2};
    default: return {0, 0};
  }
}

std::string compare(const HostTensor& want, const HostTensor& got, Tolerance tol) {
  if (want.dtype != got.dtype || want.sizes != got.sizes)
    return "got " + describe(got) + ", want " + describe(want);
  double scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    if (std::isfinite(want.get(i))) scale = std::max(scale, std::fabs(want.get(i)));
  for (int64_t i = 0; i < want.numel(); ++i) {
    double w = want.get(i), g = got.get(i);
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && w == g) continue;
    if (std::fabs(g - w) <= tol.rtol * std::fabs(w) + tol.atol * scale) continue;
    return "element " + std::to_string(i) + " of " + describe(want) + ": got " + std::to_string(g) + ", want " +
           std::to_string(w);
  }
  return "";
}

}  // namespace kiln
