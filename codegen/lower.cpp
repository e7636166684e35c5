#include "codegen/lower.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "kiln/error.h"

namespace kiln {

namespace {

using Index = std::vector<Expr>;

bool owns_buffer(const Node& n) {
  OpClass c = op_class(n.op);
  return n.op == Op::Input || (c != OpClass::Source && c != OpClass::Movement);
}

// Builds one kernel: declares buffers and params on demand and turns graph
// values at symbolic indices into Kernel IR expressions.
class KernelBuilder {
 public:
  KernelBuilder(const Graph& g, std::string name, const std::set<std::string>& symbols)
      : g_(g), symbols_(symbols) {
    k_.name = std::move(name);
  }

  // The extent of a dim as an i64 expression; symbolic dims become params.
  Expr extent(const Dim& d) {
    if (d.is_const()) return idx(d.value);
    if (std::find(k_.params.begin(), k_.params.end(), d.sym) == k_.params.end()) k_.params.push_back(d.sym);
    return var(d.sym);
  }

  // A fresh loop variable name that no symbolic dim uses.
  std::string loop_var(const std::string& base) {
    std::string name = base + std::to_string(vars_++);
    while (symbols_.count(name)) name += "_";
    return name;
  }

  int buffer_of(int node, bool output) {
    auto it = node_buffer_.find(node);
    if (it != node_buffer_.end()) return it->second;
    const Node& n = g_.nodes[node];
    BufferDecl b;
    b.name = unique(n.op == Op::Input ? sanitize(n.name) : "t" + std::to_string(node));
    b.dtype = n.dtype;
    b.output = output;
    k_.buffers.push_back(b);
    args_.push_back(node);
    return node_buffer_[node] = int(k_.buffers.size()) - 1;
  }

  int local(const std::string& name, DType dtype, int64_t size) {
    BufferDecl b;
    b.name = unique(name);
    b.dtype = dtype;
    b.scope = MemScope::Local;
    b.size = size;
    k_.buffers.push_back(b);
    return int(k_.buffers.size()) - 1;
  }

  // Row-major offset of `at`, in Horner form: (i0 * d1 + i1) * d2 + i2.
  Expr linear(const Shape& shape, const Index& at) {
    Expr lin = idx(0);
    for (size_t i = 0; i < shape.size(); ++i) lin = lin * extent(shape[i]) + at[i];
    return lin;
  }

  // The value of graph node `node` at index `at`: a load if it owns a buffer,
  // otherwise the constant or view composed down to one.
  Expr value(int node, const Index& at) {
    const Node& n = g_.nodes[node];
    if (owns_buffer(n)) return load(buffer_of(node, false), valtype_of(n.dtype), linear(n.shape, at));
    if (n.op == Op::Const) return constant(n.value, n.dtype);
    const Node& x = g_.nodes[n.inputs[0]];
    Index in(x.shape.size());
    switch (n.op) {
      case Op::Reshape: {
        Expr lin = linear(n.shape, at);
        Expr stride = idx(1);
        for (int i = int(x.shape.size()) - 1; i >= 0; --i) {
          Expr q = lin / stride;
          in[i] = i == 0 ? q : q % extent(x.shape[i]);
          stride = stride * extent(x.shape[i]);
        }
        break;
      }
      case Op::Permute:
        for (size_t i = 0; i < n.axes.size(); ++i) in[n.axes[i]] = at[i];
        break;
      case Op::Expand:
        for (size_t i = 0; i < in.size(); ++i) in[i] = x.shape[i].is_one() ? idx(0) : at[i];
        break;
      case Op::Slice:
        for (size_t i = 0; i < in.size(); ++i) in[i] = idx(n.starts[i]) + at[i] * idx(n.steps[i]);
        break;
      case Op::Flip:
        for (size_t i = 0; i < in.size(); ++i) in[i] = at[i];
        for (int64_t a : n.axes) in[a] = extent(x.shape[a]) - idx(1) - at[a];
        break;
      case Op::Pad: return padded(n, x, at);
      default: throw Error("lower: unexpected op " + std::string(op_name(n.op)));
    }
    return value(n.inputs[0], in);
  }

  Expr constant(double v, DType t) {
    ValType vt = valtype_of(t);
    if (vt == ValType::f32) return const_f32(v);
    return const_int(vt, static_cast<int64_t>(v));
  }

  Kernel finish(Stmt body, std::vector<int>* args) {
    k_.body = block({std::move(body)});
    *args = args_;
    return k_;
  }

  const Graph& graph() const { return g_; }

 private:
  // Reads outside the source take the pad value; the index is clamped so the
  // load that select() evaluates anyway stays in bounds.
  Expr padded(const Node& n, const Node& x, const Index& at) {
    Index in(x.shape.size());
    Expr inside;
    for (size_t i = 0; i < in.size(); ++i) {
      if (!n.pad_lo[i] && !n.pad_hi[i]) {
        in[i] = at[i];
        continue;
      }
      Expr dim = extent(x.shape[i]);
      Expr shifted = at[i] - idx(n.pad_lo[i]);
      Expr ok = binary(BinOp::And, unary(UnOp::Not, binary(BinOp::CmpLt, shifted, idx(0))),
                       binary(BinOp::CmpLt, shifted, dim));
      inside = inside ? binary(BinOp::And, inside, ok) : ok;
      in[i] = binary(BinOp::Max, binary(BinOp::Min, shifted, dim - idx(1)), idx(0));
    }
    Expr v = value(n.inputs[0], in);
    return inside ? select(inside, v, constant(n.value, n.dtype)) : v;
  }

  // Buffer names are unique within a kernel and never shadow a param or loop.
  std::string unique(std::string name) {
    auto taken = [&](const std::string& s) {
      if (symbols_.count(s)) return true;
      for (const BufferDecl& b : k_.buffers)
        if (b.name == s) return true;
      return false;
    };
    std::string base = name;
    for (int i = 1; taken(name); ++i) name = base + "_" + std::to_string(i);
    return name;
  }

  static std::string sanitize(const std::string& s) {
    std::string out;
    for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0]))) out = "in_" + out;
    return out;
  }

  const Graph& g_;
  const std::set<std::string>& symbols_;
  Kernel k_;
  std::map<int, int> node_buffer_;
  std::vector<int> args_;
  int vars_ = 0;
};

// Loops over `shape` around `inner`: dims of constant extent 1 get no loop and
// index 0; the outermost loop is parallel.
Stmt loop_nest(KernelBuilder& kb, const Shape& shape, const Index& at, Stmt inner) {
  Stmt s = std::move(inner);
  int outermost = -1;
  for (size_t i = 0; i < shape.size(); ++i)
    if (!shape[i].is_one()) {
      outermost = int(i);
      break;
    }
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    if (shape[i].is_one()) continue;
    LoopKind kind = i == outermost ? LoopKind::Parallel : LoopKind::Serial;
    s = for_loop(at[i]->name, kb.extent(shape[i]), kind, {s});
  }
  return s;
}

Index loop_vars(KernelBuilder& kb, const Shape& shape, const std::string& base) {
  Index at;
  for (const Dim& d : shape) at.push_back(d.is_one() ? idx(0) : var(kb.loop_var(base)));
  return at;
}

BinOp binop_of(Op op) {
  switch (op) {
    case Op::Add: return BinOp::Add;
    case Op::Sub: return BinOp::Sub;
    case Op::Mul: return BinOp::Mul;
    case Op::Div: return BinOp::Div;
    case Op::Max: return BinOp::Max;
    case Op::Min: return BinOp::Min;
    case Op::CmpLt: return BinOp::CmpLt;
    case Op::CmpEq: return BinOp::CmpEq;
    default: throw Error("lower: not a binary op");
  }
}

UnOp unop_of(Op op) {
  switch (op) {
    case Op::Neg: return UnOp::Neg;
    case Op::Exp2: return UnOp::Exp2;
    case Op::Log2: return UnOp::Log2;
    case Op::Sqrt: return UnOp::Sqrt;
    case Op::Recip: return UnOp::Recip;
    case Op::Sin: return UnOp::Sin;
    default: throw Error("lower: not a unary op");
  }
}

Expr elementwise(KernelBuilder& kb, const Node& n, const Index& at) {
  std::vector<Expr> in;
  for (int i : n.inputs) in.push_back(kb.value(i, at));
  switch (op_class(n.op)) {
    case OpClass::Unary:
      if (n.op == Op::Cast) return round_to(n.dtype, cast(valtype_of(n.dtype), in[0]));
      return unary(unop_of(n.op), in[0]);
    case OpClass::Binary: return binary(binop_of(n.op), in[0], in[1]);
    case OpClass::Ternary: return select(in[0], in[1], in[2]);
    default: throw Error("lower: not elementwise");
  }
}

double lowest(DType t) {
  switch (t) {
    case i32: return std::numeric_limits<int32_t>::min();
    case i8: return -128;
    case u8: return 0;
    default: return -std::numeric_limits<double>::infinity();
  }
}

// acc = init; for r...: acc = combine(acc, term(r)); out = acc
Stmt accumulate(KernelBuilder& kb, DType dtype, BinOp combine, double init, const std::vector<Expr>& rvars,
                const Shape& rshape, const std::function<Expr()>& term, int out, Expr out_index) {
  DType acc_t = compute_type(dtype);
  int acc = kb.local("acc", acc_t, 1);
  ValType vt = valtype_of(acc_t);
  Expr cur = load(acc, vt, idx(0));
  Stmt body = store(acc, idx(0), binary(combine, cur, term()));
  for (int i = int(rvars.size()) - 1; i >= 0; --i)
    body = for_loop(rvars[i]->name, kb.extent(rshape[i]), LoopKind::Serial, {body});
  return block({store(acc, idx(0), kb.constant(init, acc_t)), body, store(out, std::move(out_index), cur)});
}

Kernel lower_node(const Graph& g, int id, const std::set<std::string>& symbols, int kernel_no,
                  std::vector<int>* args) {
  const Node& n = g.nodes[id];
  std::string name = "k" + std::to_string(kernel_no) + "_" + std::string(op_name(n.op));
  KernelBuilder kb(g, name, symbols);
  int out = kb.buffer_of(id, true);
  Index at = loop_vars(kb, n.shape, "i");
  Expr out_index = kb.linear(n.shape, at);
  Stmt inner;
  switch (op_class(n.op)) {
    case OpClass::Unary: case OpClass::Binary: case OpClass::Ternary:
      inner = store(out, out_index, elementwise(kb, n, at));
      break;
    case OpClass::Reduce: {
      const Node& x = g.nodes[n.inputs[0]];
      Index in = at;
      std::vector<Expr> rvars;
      Shape rshape;
      for (int64_t a : n.axes) {
        in[a] = var(kb.loop_var("r"));
        rvars.push_back(in[a]);
        rshape.push_back(x.shape[a]);
      }
      bool sum = n.op == Op::ReduceSum;
      inner = accumulate(kb, n.dtype, sum ? BinOp::Add : BinOp::Max, sum ? 0.0 : lowest(n.dtype), rvars, rshape,
                         [&] { return kb.value(n.inputs[0], in); }, out, out_index);
      break;
    }
    case OpClass::Contract: {
      const Node &a = g.nodes[n.inputs[0]], &b = g.nodes[n.inputs[1]];
      size_t r = n.shape.size();
      Expr k = var(kb.loop_var("r"));
      // Batch dims broadcast like expand: a dim of 1 reads index 0.
      auto operand_index = [&](const Node& x, Expr row, Expr col) {
        size_t xr = x.shape.size();
        Index in(xr);
        for (size_t i = 0; i + 2 < xr; ++i) in[i] = x.shape[i].is_one() ? idx(0) : at[r - xr + i];
        in[xr - 2] = std::move(row);
        in[xr - 1] = std::move(col);
        return in;
      };
      Index ia = operand_index(a, at[r - 2], k), ib = operand_index(b, k, at[r - 1]);
      inner = accumulate(kb, n.dtype, BinOp::Add, 0.0, {k}, {a.shape.back()},
                         [&] { return binary(BinOp::Mul, kb.value(n.inputs[0], ia), kb.value(n.inputs[1], ib)); },
                         out, out_index);
      break;
    }
    case OpClass::Gather: {
      const Node &x = g.nodes[n.inputs[0]], &ix = g.nodes[n.inputs[1]];
      size_t axis = size_t(n.axes[0]), ir = ix.shape.size();
      Index where_idx(at.begin() + axis, at.begin() + axis + ir);
      Expr i = cast(ValType::i64, kb.value(n.inputs[1], where_idx));
      Expr dim = kb.extent(x.shape[axis]);
      i = select(binary(BinOp::CmpLt, i, idx(0)), i + dim, i);
      i = binary(BinOp::Max, binary(BinOp::Min, i, dim - idx(1)), idx(0));
      Index in(at.begin(), at.begin() + axis);
      in.push_back(i);
      in.insert(in.end(), at.begin() + axis + ir, at.end());
      inner = store(out, out_index, kb.value(n.inputs[0], in));
      break;
    }
    default:  // an output that is a view or a constant: materialize it
      inner = store(out, out_index, kb.value(id, at));
  }
  return kb.finish(loop_nest(kb, n.shape, at, inner), args);
}

}  // namespace

Program lower(const Graph& g) {
  Program p;
  p.graph = g;
  std::set<std::string> symbols;
  for (const Dim& d : g.symbols()) symbols.insert(d.sym);
  std::set<int> outputs(g.outputs.begin(), g.outputs.end());
  for (int id = 0; id < int(g.nodes.size()); ++id) {
    const Node& n = g.nodes[id];
    if (n.op == Op::Input) {
      p.buffers.push_back(id);
      continue;
    }
    if (!owns_buffer(n) && !outputs.count(id)) continue;
    Launch l;
    l.kernel = int(p.kernels.size());
    p.kernels.push_back(lower_node(g, id, symbols, l.kernel, &l.args));
    p.kernel_ops.push_back({id});
    p.launches.push_back(std::move(l));
    p.buffers.push_back(id);
  }
  return p;
}

std::string describe_kernels(const Program& p) {
  std::string out;
  for (size_t k = 0; k < p.kernels.size(); ++k) {
    out += p.kernels[k].name + ":";
    for (int id : p.kernel_ops[k]) {
      const Node& n = p.graph.nodes[id];
      out += " %" + std::to_string(id) + " " + std::string(op_name(n.op)) + " " + std::string(dtype_name(n.dtype)) +
             shape_str(n.shape);
    }
    out += " <-";
    for (int a : p.launches[k].args)
      if (std::find(p.kernel_ops[k].begin(), p.kernel_ops[k].end(), a) == p.kernel_ops[k].end())
        out += " %" + std::to_string(a);
    out += "\n";
  }
  return out;
}

}  // namespace kiln
