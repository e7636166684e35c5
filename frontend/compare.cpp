#include "frontend/compare.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

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

namespace {

// Builds, into a copy of the graph, each float node's error scale M: a tensor
// of its shape such that backends that round differently (summation orders,
// library functions of a few ulp) differ from the interpreter by at most about
// rtol * M. Inputs, constants and values of other dtypes: |x| (their own
// rounding). A sum: the sum of its terms' scales (where terms cancel, far
// above |sum|). Elsewhere first-order propagation, each operand's scale
// times the op's sensitivity to it at the interpreter's values, plus |result|
// for the op's own rounding.
class Magnitudes {
 public:
  Magnitudes(const Graph& g, int last) : g_(g), done_(size_t(last) + 1, -1) {
    m_.name = g.name;
    m_.nodes.assign(g.nodes.begin(), g.nodes.begin() + last + 1);
  }
  Graph take(int out) {
    m_.outputs = {out};
    return std::move(m_);
  }

  int of(int x) {
    if (done_[x] >= 0) return done_[x];
    return done_[x] = build(x);
  }

 private:
  int f32_of(int x) { return m_.nodes[x].dtype == f32 ? x : m_.cast(x, f32); }
  int abs(int x) {
    x = f32_of(x);
    return m_.binary(Op::Max, x, m_.unary(Op::Neg, x));
  }
  int add(int a, int b) { return m_.binary(Op::Add, a, b); }
  int mul(int a, int b) { return m_.binary(Op::Mul, a, b); }
  int div(int a, int b) { return m_.binary(Op::Div, a, b); }
  int scaled(int a, double c) {
    const Shape& s = m_.nodes[a].shape;
    return mul(a, m_.expand(m_.constant(c, f32, Shape(s.size(), Dim(1))), s));
  }

  int build(int x) {
    const Node& n = g_.nodes[x];
    if (!is_float(n.dtype) || n.op == Op::Input || n.op == Op::Const) return abs(x);
    auto in = [&](size_t i) { return n.inputs[i]; };
    // Plus the op's own rounding, |result|.
    auto rounded = [&](int scale) { return add(scale, abs(x)); };
    switch (n.op) {
      case Op::Neg: return of(in(0));
      case Op::Cast: return is_float(g_.nodes[in(0)].dtype) ? rounded(of(in(0))) : abs(x);
      case Op::Add:
      case Op::Sub: return rounded(add(of(in(0)), of(in(1))));
      case Op::Mul: return rounded(mul(of(in(0)), of(in(1))));  // |b| Ma + |a| Mb <= 2 Ma Mb
      case Op::Max:
      case Op::Min: return m_.binary(Op::Max, of(in(0)), of(in(1)));
      case Op::Sin: return rounded(of(in(0)));  // |sin'| <= 1
      case Op::Exp2: return rounded(mul(abs(x), scaled(of(in(0)), std::numbers::ln2)));
      case Op::Log2: return rounded(div(scaled(of(in(0)), std::numbers::log2e), abs(in(0))));
      case Op::Sqrt: return rounded(div(scaled(of(in(0)), 0.5), abs(x)));
      case Op::Recip: {
        int a = abs(in(0));
        return rounded(div(of(in(0)), mul(a, a)));
      }
      case Op::Div: {  // Ma / |b| + |a| Mb / b^2
        int b = abs(in(1));
        return rounded(add(div(of(in(0)), b), div(mul(abs(in(0)), of(in(1))), mul(b, b))));
      }
      case Op::Where: return m_.where(in(0), of(in(1)), of(in(2)));
      case Op::ReduceSum: return m_.reduce(Op::ReduceSum, of(in(0)), n.axes);
      case Op::ReduceMax: return m_.reduce(Op::ReduceMax, of(in(0)), n.axes);
      case Op::Contract: return m_.contract(of(in(0)), of(in(1)));
      case Op::Reshape:
      case Op::Permute:
      case Op::Expand:
      case Op::Slice:
      case Op::Flip:
      case Op::Pad: {  // the same view of the operand's scales
        Node v = n;
        v.inputs[0] = of(in(0));
        v.dtype = f32;
        v.value = std::fabs(n.value);
        return m_.add(v);
      }
      default: return abs(x);  // gathers and the rest: their own rounding only
    }
  }

  const Graph& g_;
  Graph m_;
  std::vector<int> done_;  // node -> its scale's node in m_
};

}  // namespace

std::optional<Graph> magnitude_graph(const Graph& g, int node) {
  if (!is_float(g.nodes.at(node).dtype)) return std::nullopt;
  Magnitudes m(g, node);
  int out = m.of(node);
  return m.take(out);
}

}  // namespace kiln
