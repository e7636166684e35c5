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

Tolerance tolerance_for(const Graph& g, int node) {
  Tolerance loosest = tolerance_for(g.nodes.at(node).dtype);
  std::vector<bool> seen(g.nodes.size(), false);
  std::vector<int> todo = {node};
  while (!todo.empty()) {
    int x = todo.back();
    todo.pop_back();
    if (seen[x]) continue;
    seen[x] = true;
    const Node& n = g.nodes[x];
    OpClass c = op_class(n.op);
    if (n.op != Op::Input && c != OpClass::Source && c != OpClass::Movement) {
      Tolerance t = tolerance_for(n.dtype);
      loosest = {std::max(loosest.rtol, t.rtol), std::max(loosest.atol, t.atol)};
    }
    for (int in : n.inputs) todo.push_back(in);
  }
  return loosest;
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
