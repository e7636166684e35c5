#include "kiln/graph.h"

#include <algorithm>
#include <map>

#include "kiln/error.h"

namespace kiln {

namespace {

struct OpInfo {
  Op op;
  const char* name;
  OpClass cls;
};

constexpr OpInfo kOps[] = {
    {Op::Input, "input", OpClass::Source},       {Op::Const, "const", OpClass::Source},
    {Op::Neg, "neg", OpClass::Unary},            {Op::Exp2, "exp2", OpClass::Unary},
    {Op::Log2, "log2", OpClass::Unary},          {Op::Sqrt, "sqrt", OpClass::Unary},
    {Op::Recip, "recip", OpClass::Unary},        {Op::Sin, "sin", OpClass::Unary},
    {Op::Cast, "cast", OpClass::Unary},          {Op::Add, "add", OpClass::Binary},
    {Op::Sub, "sub", OpClass::Binary},           {Op::Mul, "mul", OpClass::Binary},
    {Op::Div, "div", OpClass::Binary},           {Op::Max, "max", OpClass::Binary},
    {Op::Min, "min", OpClass::Binary},           {Op::CmpLt, "cmplt", OpClass::Binary},
    {Op::CmpEq, "cmpeq", OpClass::Binary},       {Op::Where, "where", OpClass::Ternary},
    {Op::ReduceSum, "reduce_sum", OpClass::Reduce}, {Op::ReduceMax, "reduce_max", OpClass::Reduce},
    {Op::Reshape, "reshape", OpClass::Movement}, {Op::Permute, "permute", OpClass::Movement},
    {Op::Expand, "expand", OpClass::Movement},   {Op::Slice, "slice", OpClass::Movement},
    {Op::Pad, "pad", OpClass::Movement},         {Op::Flip, "flip", OpClass::Movement},
    {Op::Gather, "gather", OpClass::Gather},     {Op::Contract, "contract", OpClass::Contract},
};

const OpInfo& info(Op op) {
  for (const OpInfo& i : kOps)
    if (i.op == op) return i;
  throw Error("unknown op");
}

[[noreturn]] void fail(Op op, const std::string& why) { throw Error(std::string(info(op).name) + ": " + why); }

std::string shapes_of(const Graph& g, const std::vector<int>& ins) {
  std::string s;
  for (size_t i = 0; i < ins.size(); ++i)
    s += (i ? " and " : "") + std::string(dtype_name(g.nodes[ins[i]].dtype)) + shape_str(g.nodes[ins[i]].shape);
  return s;
}

int64_t normalize_axis(Op op, int64_t axis, size_t rank) {
  int64_t r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r) fail(op, "axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(r));
  return axis < 0 ? axis + r : axis;
}

void check_axes_unique(Op op, std::vector<int64_t>& axes, size_t rank) {
  for (int64_t& a : axes) a = normalize_axis(op, a, rank);
  std::vector<int64_t> sorted = axes;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) fail(op, "repeated axis");
}

// Product of a shape as a constant part and a sorted list of symbols, so that
// reshapes of symbolic shapes can be checked for equal element counts.
std::pair<int64_t, std::vector<std::string>> factor(const Shape& s) {
  int64_t c = 1;
  std::vector<std::string> syms;
  for (const Dim& d : s) {
    if (d.is_const()) c *= d.value;
    else syms.push_back(d.sym);
  }
  std::sort(syms.begin(), syms.end());
  return {c, syms};
}

void check_shape_valid(Op op, const Shape& s) {
  for (const Dim& d : s) {
    if (d.is_const() && d.value < 0) fail(op, "negative dim in " + shape_str(s));
    if (!d.is_const() && (d.lo < 1 || d.hi < d.lo)) fail(op, "symbolic dim '" + d.sym + "' has bad bounds");
  }
}

// Infers n's dtype and shape from its op, inputs and attributes, checking every
// operand. Sources, casts, reshapes and expands keep the dtype/shape they carry.
Node infer_node(const Graph& g, Node n) {
  const OpInfo& oi = info(n.op);
  size_t want_inputs = 0;
  switch (oi.cls) {
    case OpClass::Source: want_inputs = 0; break;
    case OpClass::Unary: case OpClass::Reduce: case OpClass::Movement: want_inputs = 1; break;
    case OpClass::Binary: case OpClass::Gather: case OpClass::Contract: want_inputs = 2; break;
    case OpClass::Ternary: want_inputs = 3; break;
  }
  if (n.immutable && n.op != Op::Input) fail(n.op, "cannot be immutable (only an input can)");
  if (n.inputs.size() != want_inputs)
    fail(n.op, "takes " + std::to_string(want_inputs) + " operands, got " + std::to_string(n.inputs.size()));
  for (int in : n.inputs)
    if (in < 0 || in >= int(g.nodes.size())) fail(n.op, "operand %" + std::to_string(in) + " does not exist");
  auto in = [&](size_t i) -> const Node& { return g.nodes[n.inputs[i]]; };

  switch (oi.cls) {
    case OpClass::Source:
      if (n.op == Op::Input && n.name.empty()) fail(n.op, "needs a name");
      check_shape_valid(n.op, n.shape);
      return n;
    case OpClass::Unary: {
      const Node& x = in(0);
      n.shape = x.shape;
      if (n.op == Op::Cast) return n;
      if (n.op == Op::Neg ? x.dtype == boolean : !is_float(x.dtype))
        fail(n.op, "does not take " + std::string(dtype_name(x.dtype)) + " (operand " + shapes_of(g, n.inputs) + ")");
      n.dtype = x.dtype;
      return n;
    }
    case OpClass::Binary: {
      const Node &a = in(0), &b = in(1);
      if (a.dtype != b.dtype) fail(n.op, "operands have different dtypes: " + shapes_of(g, n.inputs));
      if (a.shape != b.shape) fail(n.op, "operands have different shapes: " + shapes_of(g, n.inputs));
      bool bool_ok = n.op == Op::Max || n.op == Op::Min || n.op == Op::CmpEq || n.op == Op::CmpLt;
      if (a.dtype == boolean && !bool_ok) fail(n.op, "does not take bool operands");
      n.shape = a.shape;
      n.dtype = (n.op == Op::CmpLt || n.op == Op::CmpEq) ? boolean : a.dtype;
      return n;
    }
    case OpClass::Ternary: {
      const Node &c = in(0), &a = in(1), &b = in(2);
      if (c.dtype != boolean) fail(n.op, "condition must be bool, got " + std::string(dtype_name(c.dtype)));
      if (a.dtype != b.dtype) fail(n.op, "arms have different dtypes: " + shapes_of(g, n.inputs));
      if (c.shape != a.shape || a.shape != b.shape) fail(n.op, "operands have different shapes: " + shapes_of(g, n.inputs));
      n.shape = a.shape;
      n.dtype = a.dtype;
      return n;
    }
    case OpClass::Reduce: {
      const Node& x = in(0);
      if (x.dtype == boolean) fail(n.op, "does not take bool");
      if (n.axes.empty()) fail(n.op, "needs at least one axis");
      check_axes_unique(n.op, n.axes, x.shape.size());
      std::sort(n.axes.begin(), n.axes.end());
      n.dtype = x.dtype;
      n.shape = x.shape;
      for (int64_t a : n.axes) n.shape[a] = Dim(1);
      return n;
    }
    case OpClass::Movement: break;
    case OpClass::Gather: {
      const Node &x = in(0), &ix = in(1);
      if (ix.dtype != i32) fail(n.op, "indices must be i32, got " + std::string(dtype_name(ix.dtype)));
      if (n.axes.size() != 1) fail(n.op, "needs exactly one axis");
      if (x.shape.empty()) fail(n.op, "cannot gather from a scalar");
      int64_t ax = normalize_axis(n.op, n.axes[0], x.shape.size());
      n.axes = {ax};
      n.dtype = x.dtype;
      n.shape.assign(x.shape.begin(), x.shape.begin() + ax);
      n.shape.insert(n.shape.end(), ix.shape.begin(), ix.shape.end());
      n.shape.insert(n.shape.end(), x.shape.begin() + ax + 1, x.shape.end());
      return n;
    }
    case OpClass::Contract: {
      const Node &a = in(0), &b = in(1);
      if (a.dtype != b.dtype) fail(n.op, "operands have different dtypes: " + shapes_of(g, n.inputs));
      if (a.dtype == boolean || a.dtype == i8 || a.dtype == u8)
        fail(n.op, "does not take " + std::string(dtype_name(a.dtype)) + " (use f32, f16, bf16 or i32)");
      if (a.shape.size() < 2 || b.shape.size() < 2) fail(n.op, "operands need rank >= 2: " + shapes_of(g, n.inputs));
      const Dim& ka = a.shape[a.shape.size() - 1];
      const Dim& kb = b.shape[b.shape.size() - 2];
      if (ka != kb) fail(n.op, "inner dims differ (" + ka.str() + " vs " + kb.str() + "): " + shapes_of(g, n.inputs));
      Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
      n.shape = broadcast_shapes(ba, bb, "contract");
      n.shape.push_back(a.shape[a.shape.size() - 2]);
      n.shape.push_back(b.shape.back());
      n.dtype = a.dtype;
      return n;
    }
  }

  // Movement ops.
  const Node& x = in(0);
  n.dtype = x.dtype;
  size_t rank = x.shape.size();
  switch (n.op) {
    case Op::Reshape: {
      check_shape_valid(n.op, n.shape);
      if (factor(n.shape) != factor(x.shape))
        fail(n.op, "cannot reshape " + shape_str(x.shape) + " to " + shape_str(n.shape) + " (element counts differ)");
      return n;
    }
    case Op::Permute: {
      if (n.axes.size() != rank)
        fail(n.op, "permutation has " + std::to_string(n.axes.size()) + " axes for rank " + std::to_string(rank));
      check_axes_unique(n.op, n.axes, rank);
      n.shape.clear();
      for (int64_t a : n.axes) n.shape.push_back(x.shape[a]);
      return n;
    }
    case Op::Expand: {
      if (n.shape.size() != rank)
        fail(n.op, "cannot expand " + shape_str(x.shape) + " to " + shape_str(n.shape) + " (ranks differ)");
      for (size_t i = 0; i < rank; ++i)
        if (x.shape[i] != n.shape[i] && !x.shape[i].is_one())
          fail(n.op, "cannot expand " + shape_str(x.shape) + " to " + shape_str(n.shape) + " (dim " +
                         std::to_string(i) + " is not 1)");
      return n;
    }
    case Op::Slice: {
      if (n.starts.size() != rank || n.stops.size() != rank || n.steps.size() != rank)
        fail(n.op, "needs start, stop and step for each of " + std::to_string(rank) + " axes");
      n.shape.clear();
      for (size_t i = 0; i < rank; ++i) {
        const Dim& d = x.shape[i];
        int64_t start = n.starts[i], stop = n.stops[i], step = n.steps[i];
        if (step < 1) fail(n.op, "step must be >= 1, got " + std::to_string(step));
        if (!d.is_const()) {
          if (start != 0 || stop != kSliceEnd || step != 1)
            fail(n.op, "a symbolic dim (" + d.sym + ") can only be kept whole (0:end:1)");
          n.shape.push_back(d);
          continue;
        }
        if (stop == kSliceEnd) stop = d.value;
        if (start < 0 || start > d.value || stop < start || stop > d.value)
          fail(n.op, "range " + std::to_string(start) + ":" + std::to_string(stop) + " is out of bounds for dim " +
                         std::to_string(i) + " of " + shape_str(x.shape));
        n.stops[i] = stop;
        n.shape.push_back(Dim((stop - start + step - 1) / step));
      }
      return n;
    }
    case Op::Pad: {
      if (n.pad_lo.size() != rank || n.pad_hi.size() != rank)
        fail(n.op, "needs a low and high pad for each of " + std::to_string(rank) + " axes");
      n.shape.clear();
      for (size_t i = 0; i < rank; ++i) {
        if (n.pad_lo[i] < 0 || n.pad_hi[i] < 0) fail(n.op, "pads must be >= 0");
        const Dim& d = x.shape[i];
        if (!d.is_const() && (n.pad_lo[i] || n.pad_hi[i])) fail(n.op, "cannot pad a symbolic dim (" + d.sym + ")");
        n.shape.push_back(d.is_const() ? Dim(d.value + n.pad_lo[i] + n.pad_hi[i]) : d);
      }
      return n;
    }
    case Op::Flip: {
      check_axes_unique(n.op, n.axes, rank);
      std::sort(n.axes.begin(), n.axes.end());
      n.shape = x.shape;
      return n;
    }
    default: fail(n.op, "is not a movement op");
  }
}

}  // namespace

OpClass op_class(Op op) { return info(op).cls; }
std::string_view op_name(Op op) { return info(op).name; }

Op parse_op(std::string_view name) {
  for (const OpInfo& i : kOps)
    if (name == i.name) return i.op;
  throw Error("unknown op '" + std::string(name) + "'");
}

bool is_elementwise(Op op) {
  OpClass c = op_class(op);
  return c == OpClass::Unary || c == OpClass::Binary || c == OpClass::Ternary;
}

Node Graph::infer(Node n) const { return infer_node(*this, std::move(n)); }

int Graph::add(Node n) {
  Node inferred = infer_node(*this, n);
  if (inferred.dtype != n.dtype || inferred.shape != n.shape)
    fail(n.op, "node says " + std::string(dtype_name(n.dtype)) + shape_str(n.shape) + " but its operands give " +
                   std::string(dtype_name(inferred.dtype)) + shape_str(inferred.shape));
  // Symbolic dims of one name must agree on their bounds across the graph
  // (looked up only for nodes that have one, so building stays linear).
  bool symbolic = !is_static(inferred.shape);
  for (const Dim& s : symbolic ? symbols() : std::vector<Dim>{})
    for (const Dim& d : inferred.shape)
      if (!d.is_const() && d.sym == s.sym && (d.lo != s.lo || d.hi != s.hi))
        fail(n.op, "symbolic dim '" + d.sym + "' is declared with two different bounds");
  nodes.push_back(std::move(inferred));
  return int(nodes.size()) - 1;
}

namespace {

Node make_node(Op op, std::vector<int> inputs) {
  Node n;
  n.op = op;
  n.inputs = std::move(inputs);
  return n;
}

}  // namespace

// Builders fill in what inference derives, then go through add().
#define KILN_BUILD(node_expr)                      \
  do {                                             \
    Node n_ = infer_node(*this, node_expr);           \
    return add(std::move(n_));                     \
  } while (0)

int Graph::input(std::string name, DType dtype, Shape shape) {
  Node n = make_node(Op::Input, {});
  n.name = std::move(name);
  n.dtype = dtype;
  n.shape = std::move(shape);
  for (const Node& o : nodes)
    if (o.op == Op::Input && o.name == n.name) fail(Op::Input, "two inputs are named '" + n.name + "'");
  KILN_BUILD(n);
}

int Graph::immutable_input(std::string name, DType dtype, Shape shape) {
  int i = input(std::move(name), dtype, std::move(shape));
  nodes[size_t(i)].immutable = true;
  return i;
}

int Graph::constant(double value, DType dtype, Shape shape) {
  Node n = make_node(Op::Const, {});
  n.value = round_to_dtype(value, dtype);
  n.dtype = dtype;
  n.shape = std::move(shape);
  KILN_BUILD(n);
}

int Graph::unary(Op op, int x) {
  if (op_class(op) != OpClass::Unary || op == Op::Cast) fail(op, "is not a unary op");
  KILN_BUILD(make_node(op, {x}));
}

int Graph::cast(int x, DType to) {
  Node n = make_node(Op::Cast, {x});
  n.dtype = to;
  KILN_BUILD(n);
}

int Graph::binary(Op op, int a, int b) {
  if (op_class(op) != OpClass::Binary) fail(op, "is not a binary op");
  KILN_BUILD(make_node(op, {a, b}));
}

int Graph::where(int cond, int a, int b) { KILN_BUILD(make_node(Op::Where, {cond, a, b})); }

int Graph::reduce(Op op, int x, std::vector<int64_t> axes) {
  if (op_class(op) != OpClass::Reduce) fail(op, "is not a reduction");
  Node n = make_node(op, {x});
  n.axes = std::move(axes);
  KILN_BUILD(n);
}

int Graph::reshape(int x, Shape shape) {
  Node n = make_node(Op::Reshape, {x});
  n.shape = std::move(shape);
  KILN_BUILD(n);
}

int Graph::permute(int x, std::vector<int64_t> perm) {
  Node n = make_node(Op::Permute, {x});
  n.axes = std::move(perm);
  KILN_BUILD(n);
}

int Graph::expand(int x, Shape shape) {
  Node n = make_node(Op::Expand, {x});
  n.shape = std::move(shape);
  KILN_BUILD(n);
}

int Graph::slice(int x, std::vector<int64_t> starts, std::vector<int64_t> stops, std::vector<int64_t> steps) {
  Node n = make_node(Op::Slice, {x});
  n.starts = std::move(starts);
  n.stops = std::move(stops);
  n.steps = std::move(steps);
  KILN_BUILD(n);
}

int Graph::pad(int x, std::vector<int64_t> lo, std::vector<int64_t> hi, double value) {
  Node n = make_node(Op::Pad, {x});
  n.pad_lo = std::move(lo);
  n.pad_hi = std::move(hi);
  if (x >= 0 && x < int(nodes.size())) value = round_to_dtype(value, nodes[x].dtype);
  n.value = value;
  KILN_BUILD(n);
}

int Graph::flip(int x, std::vector<int64_t> axes) {
  Node n = make_node(Op::Flip, {x});
  n.axes = std::move(axes);
  KILN_BUILD(n);
}

int Graph::gather(int x, int idx, int64_t axis) {
  Node n = make_node(Op::Gather, {x, idx});
  n.axes = {axis};
  KILN_BUILD(n);
}

int Graph::contract(int a, int b) { KILN_BUILD(make_node(Op::Contract, {a, b})); }

#undef KILN_BUILD

std::vector<int> Graph::input_nodes() const {
  std::vector<int> out;
  for (int i = 0; i < int(nodes.size()); ++i)
    if (nodes[i].op == Op::Input) out.push_back(i);
  return out;
}

std::vector<Dim> Graph::symbols() const {
  std::map<std::string, Dim> seen;
  for (const Node& n : nodes)
    for (const Dim& d : n.shape)
      if (!d.is_const()) seen.emplace(d.sym, d);
  std::vector<Dim> out;
  for (auto& [name, d] : seen) out.push_back(d);
  return out;
}

}  // namespace kiln
