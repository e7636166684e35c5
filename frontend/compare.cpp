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
  return compare(want, got, tol, want);
}

// Errors measured against `size`: want itself, or the magnitudes of its terms.
std::string compare(const HostTensor& want, const HostTensor& got, Tolerance tol, const HostTensor& size) {
  if (want.dtype != got.dtype || want.sizes != got.sizes)
    return "got " + describe(got) + ", want " + describe(want);
  if (size.numel() != want.numel()) return "magnitudes " + describe(size) + " for " + describe(want);
  double scale = 0;
  for (int64_t i = 0; i < size.numel(); ++i)
    if (std::isfinite(size.get(i))) scale = std::max(scale, std::fabs(size.get(i)));
  for (int64_t i = 0; i < want.numel(); ++i) {
    double w = want.get(i), g = got.get(i);
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && w == g) continue;
    if (std::fabs(g - w) <= tol.rtol * std::fabs(size.get(i)) + tol.atol * scale) continue;
    return "element " + std::to_string(i) + " of " + describe(want) + ": got " + std::to_string(g) + ", want " +
           std::to_string(w);
  }
  return "";
}

std::optional<Graph> magnitude_graph(const Graph& g, int node) {
  // Views that keep the elements' order, and casts between floats.
  int s = node;
  while (g.nodes.at(s).op == Op::Reshape || (g.nodes[s].op == Op::Cast && is_float(g.nodes[s].dtype) &&
                                              is_float(g.nodes[g.nodes[s].inputs[0]].dtype)))
    s = g.nodes[s].inputs[0];
  const Node& sum = g.nodes[s];
  if ((sum.op != Op::ReduceSum && sum.op != Op::Contract) || !is_float(sum.dtype)) return std::nullopt;
  Graph m;
  m.name = g.name;
  m.nodes.assign(g.nodes.begin(), g.nodes.begin() + s);
  auto abs = [&](int x) { return m.binary(Op::Max, x, m.unary(Op::Neg, x)); };
  int out = sum.op == Op::ReduceSum ? m.reduce(Op::ReduceSum, abs(sum.inputs[0]), sum.axes)
                                    : m.contract(abs(sum.inputs[0]), abs(sum.inputs[1]));
  m.outputs = {out};
  return m;
}

}  // namespace kiln
