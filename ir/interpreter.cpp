#include "kiln/interpreter.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "kiln/error.h"

namespace kiln {

namespace {

using Sizes = std::vector<int64_t>;

// A node's value: dense, row-major, concrete sizes.
struct Value {
  DType dtype;
  Sizes sizes;
  std::vector<double> data;
};

int64_t product(const Sizes& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Sizes unravel(int64_t flat, const Sizes& sizes) {
  Sizes idx(sizes.size());
  for (size_t i = sizes.size(); i-- > 0;) {
    idx[i] = flat % sizes[i];
    flat /= sizes[i];
  }
  return idx;
}

int64_t ravel(const Sizes& idx, const Sizes& sizes) {
  int64_t flat = 0;
  for (size_t i = 0; i < sizes.size(); ++i) flat = flat * sizes[i] + idx[i];
  return flat;
}

// [f(0), ..., f(count - 1)]
template <class F>
std::vector<double> each(int64_t count, F f) {
  std::vector<double> out(count);
  for (int64_t i = 0; i < count; ++i) out[i] = f(i);
  return out;
}

// The elements of a tensor of `sizes`, each f(its multi-index).
template <class F>
std::vector<double> tabulate(const Sizes& sizes, F f) {
  return each(product(sizes), [&](int64_t i) { return f(unravel(i, sizes)); });
}

// Kernels compute integers in i32 (compute_type), so integer results keep their
// low 32 bits; round_to_dtype then narrows to i8/u8. Unsigned arithmetic makes
// wrap-around well defined.
double wrap_i32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

// Cast is the identity here: rounding to the node's dtype afterwards is the cast.
double unary(Op op, double x, DType t) {
  switch (op) {
    case Op::Neg: return is_integer(t) ? wrap_i32(-static_cast<int64_t>(x)) : -x;
    case Op::Exp2: return std::exp2(x);
    case Op::Log2: return std::log2(x);
    case Op::Sqrt: return std::sqrt(x);
    case Op::Recip: return 1 / x;
    case Op::Sin: return std::sin(x);
    case Op::Cast: return x;
    default: throw Error(std::string(op_name(op)) + " is not a unary op");
  }
}

double int_binary(Op op, int64_t a, int64_t b) {
  switch (op) {
    case Op::Add: return wrap_i32(a + b);
    case Op::Sub: return wrap_i32(a - b);
    case Op::Mul: return wrap_i32(a * b);  // |a * b| <= 2^62: exact
    case Op::Div: return b == 0 ? 0 : wrap_i32(a / b);  // x/0 == 0 by definition
    case Op::Max: return std::max(a, b);
    case Op::Min: return std::min(a, b);
    case Op::CmpLt: return a < b;
    case Op::CmpEq: return a == b;
    default: throw Error(std::string(op_name(op)) + " is not a binary op");
  }
}

double float_binary(Op op, double a, double b) {
  switch (op) {
    case Op::Add: return a + b;
    case Op::Sub: return a - b;
    case Op::Mul: return a * b;
    case Op::Div: return a / b;
    case Op::Max: return std::fmax(a, b);
    case Op::Min: return std::fmin(a, b);
    case Op::CmpLt: return a < b;
    case Op::CmpEq: return a == b;
    default: throw Error(std::string(op_name(op)) + " is not a binary op");
  }
}

// Bool operands take the float path: only max/min/compare accept them, and
// those are exact on 0/1 in double.
double binary(Op op, double a, double b, DType t) {
  if (is_integer(t)) return int_binary(op, static_cast<int64_t>(a), static_cast<int64_t>(b));
  return float_binary(op, a, b);
}

double fold_sum(const std::vector<double>& vals, DType t) {
  if (is_integer(t)) {
    uint64_t acc = 0;
    for (double v : vals) acc += static_cast<uint64_t>(static_cast<int64_t>(v));
    return wrap_i32(acc);
  }
  double acc = 0;
  for (double v : vals) acc += v;
  return acc;
}

double lowest(DType t) {
  switch (t) {
    case i32: return std::numeric_limits<int32_t>::min();
    case i8: return std::numeric_limits<int8_t>::min();
    case u8: return 0;
    default: return -std::numeric_limits<double>::infinity();
  }
}

// fmax like the binary max: NaNs are skipped. Integers are exact in double.
double fold_max(const std::vector<double>& vals, DType t) {
  double m = lowest(t);
  for (double v : vals) m = std::fmax(m, v);
  return m;
}

std::vector<double> reduce(const Node& n, const Value& x, const Sizes& out) {
  Sizes box(x.sizes.size(), 1);  // the extents each output element folds over
  for (int64_t a : n.axes) box[a] = x.sizes[a];
  int64_t folded = product(box);
  return tabulate(out, [&](const Sizes& o) {
    std::vector<double> vals;
    for (int64_t j = 0; j < folded; ++j) {
      Sizes idx = unravel(j, box);
      for (size_t k = 0; k < idx.size(); ++k) idx[k] += o[k];  // o is 0 on reduced axes
      vals.push_back(x.data[ravel(idx, x.sizes)]);
    }
    return n.op == Op::ReduceSum ? fold_sum(vals, x.dtype) : fold_max(vals, x.dtype);
  });
}

// The input index that output index `o` reads, or nothing where pad fills in.
std::optional<Sizes> source_index(const Node& n, const Sizes& in, const Sizes& o) {
  Sizes s = o;
  switch (n.op) {
    case Op::Permute:
      for (size_t i = 0; i < o.size(); ++i) s[n.axes[i]] = o[i];
      return s;
    case Op::Expand:
      for (size_t i = 0; i < o.size(); ++i)
        if (in[i] == 1) s[i] = 0;
      return s;
    case Op::Slice:
      for (size_t i = 0; i < o.size(); ++i) s[i] = n.starts[i] + o[i] * n.steps[i];
      return s;
    case Op::Pad:
      for (size_t i = 0; i < o.size(); ++i) {
        s[i] = o[i] - n.pad_lo[i];
        if (s[i] < 0 || s[i] >= in[i]) return std::nullopt;
      }
      return s;
    case Op::Flip:
      for (int64_t a : n.axes) s[a] = in[a] - 1 - o[a];
      return s;
    default: throw Error(std::string(op_name(n.op)) + " is not an index map");
  }
}

std::vector<double> movement(const Node& n, const Value& x, const Sizes& out) {
  if (n.op == Op::Reshape) return x.data;  // row-major order is unchanged
  return tabulate(out, [&](const Sizes& o) {
    std::optional<Sizes> src = source_index(n, x.sizes, o);
    return src ? x.data[ravel(*src, x.sizes)] : n.value;
  });
}

// numpy.take's index, wrapped once if negative, then clamped into the axis.
int64_t take_index(double v, int64_t extent) {
  if (extent == 0) throw Error("gather: cannot take from an axis of extent 0");
  int64_t i = static_cast<int64_t>(v);
  if (i < 0) i += extent;
  return std::clamp<int64_t>(i, 0, extent - 1);
}

// out[pre..., idx..., post...] = x[pre..., take(idx[idx...]), post...]
std::vector<double> gather(const Node& n, const Value& x, const Value& idx, const Sizes& out) {
  auto axis = static_cast<ptrdiff_t>(n.axes[0]);
  auto idx_end = axis + static_cast<ptrdiff_t>(idx.sizes.size());
  return tabulate(out, [&](const Sizes& o) {
    Sizes at(o.begin() + axis, o.begin() + idx_end);
    Sizes src(o.begin(), o.begin() + axis);
    src.push_back(take_index(idx.data[ravel(at, idx.sizes)], x.sizes[axis]));
    src.insert(src.end(), o.begin() + idx_end, o.end());
    return x.data[ravel(src, x.sizes)];
  });
}

// Flat index of (row, col) in a contract operand; its batch dims align with
// the output's from the right and broadcast where they are 1.
int64_t operand_index(const Sizes& s, const Sizes& out_batch, int64_t row, int64_t col) {
  size_t nb = s.size() - 2, shift = out_batch.size() - nb;
  Sizes idx(s.size());
  for (size_t j = 0; j < nb; ++j) idx[j] = s[j] == 1 ? 0 : out_batch[j + shift];
  idx[nb] = row;
  idx[nb + 1] = col;
  return ravel(idx, s);
}

std::vector<double> contract(const Value& a, const Value& b, const Sizes& out) {
  int64_t k_extent = a.sizes.back();
  return tabulate(out, [&](const Sizes& o) {
    Sizes batch(o.begin(), o.end() - 2);
    int64_t m = o[o.size() - 2], n = o.back();
    auto a_at = [&](int64_t k) { return a.data[operand_index(a.sizes, batch, m, k)]; };
    auto b_at = [&](int64_t k) { return b.data[operand_index(b.sizes, batch, k, n)]; };
    if (is_integer(a.dtype)) {
      uint64_t acc = 0;  // mod 2^64 keeps the low 32 bits exact
      for (int64_t k = 0; k < k_extent; ++k)
        acc += static_cast<uint64_t>(static_cast<int64_t>(a_at(k))) * static_cast<uint64_t>(static_cast<int64_t>(b_at(k)));
      return wrap_i32(acc);
    }
    double acc = 0;
    for (int64_t k = 0; k < k_extent; ++k) acc += a_at(k) * b_at(k);
    return acc;
  });
}

std::string describe(DType t, const Sizes& sizes) {
  HostTensor shape_only;  // describe() reads only dtype and sizes
  shape_only.dtype = t;
  shape_only.sizes = sizes;
  return describe(shape_only);
}

std::vector<double> read_input(const Node& n, const Sizes& sizes, const std::map<std::string, HostTensor>& inputs) {
  auto it = inputs.find(n.name);
  if (it == inputs.end()) throw Error("missing input '" + n.name + "'");
  const HostTensor& t = it->second;
  if (t.dtype != n.dtype || t.sizes != sizes)
    throw Error("input '" + n.name + "': expected " + describe(n.dtype, sizes) + ", got " + describe(t));
  auto bytes = static_cast<size_t>(t.numel() * dtype_size(t.dtype));
  if (t.data.size() != bytes)
    throw Error("input '" + n.name + "': " + describe(t) + " needs " + std::to_string(bytes) + " bytes, has " +
                std::to_string(t.data.size()));
  return each(t.numel(), [&](int64_t i) { return t.get(i); });
}

// The node's elements before rounding to its dtype; `out` is its concrete shape.
std::vector<double> evaluate(const Node& n, const std::vector<Value>& vals, const Sizes& out,
                             const std::map<std::string, HostTensor>& inputs) {
  auto arg = [&](size_t i) -> const Value& { return vals[n.inputs[i]]; };
  int64_t count = product(out);
  switch (op_class(n.op)) {
    case OpClass::Source:
      if (n.op == Op::Input) return read_input(n, out, inputs);
      return std::vector<double>(count, n.value);
    case OpClass::Unary:
      return each(count, [&](int64_t i) { return unary(n.op, arg(0).data[i], arg(0).dtype); });
    case OpClass::Binary:
      return each(count, [&](int64_t i) { return binary(n.op, arg(0).data[i], arg(1).data[i], arg(0).dtype); });
    case OpClass::Ternary:
      return each(count, [&](int64_t i) { return arg(0).data[i] != 0 ? arg(1).data[i] : arg(2).data[i]; });
    case OpClass::Reduce: return reduce(n, arg(0), out);
    case OpClass::Movement: return movement(n, arg(0), out);
    case OpClass::Gather: return gather(n, arg(0), arg(1), out);
    case OpClass::Contract: return contract(arg(0), arg(1), out);
  }
  throw Error("unknown op class");
}

// A Graph assembled by hand skips the builders' checks; adding every node to a
// fresh graph verifies it (operands, attributes, shapes) and normalizes axes.
Graph verified(const Graph& g) {
  Graph v;
  for (const Node& n : g.nodes) v.add(n);
  for (int o : g.outputs)
    if (o < 0 || o >= int(g.nodes.size())) throw Error("output %" + std::to_string(o) + " does not exist");
  v.outputs = g.outputs;
  return v;
}

HostTensor to_host(const Value& v) {
  HostTensor t(v.dtype, v.sizes);
  for (size_t i = 0; i < v.data.size(); ++i) t.set(int64_t(i), v.data[i]);
  return t;
}

}  // namespace

std::vector<HostTensor> interpret(const Graph& graph, const std::map<std::string, HostTensor>& inputs,
                                  const Bindings& symbols) {
  Graph g = verified(graph);
  std::vector<Value> vals;
  vals.reserve(g.nodes.size());
  for (const Node& n : g.nodes) {
    Value v{n.dtype, concrete(n.shape, symbols), {}};
    v.data = evaluate(n, vals, v.sizes, inputs);
    for (double& e : v.data) e = round_to_dtype(e, n.dtype);
    vals.push_back(std::move(v));
  }
  std::vector<HostTensor> outs;
  for (int o : g.outputs) outs.push_back(to_host(vals[o]));
  return outs;
}

}  // namespace kiln
