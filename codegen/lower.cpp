#include "codegen/lower.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "kiln/error.h"

namespace kiln {

namespace {

using Index = std::vector<Expr>;

// A stage read at an index other than the kernel's own point cannot live in a
// register; lowering then asks fusion to store it instead.
struct StageMismatch {
  int node;
};

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

double lowest(DType t) {
  switch (t) {
    case i32: return std::numeric_limits<int32_t>::min();
    case i8: return -128;
    case u8: return 0;
    default: return -std::numeric_limits<double>::infinity();
  }
}

// Builds one fused kernel: declares buffers and params on demand and turns
// graph values at symbolic indices into Kernel IR expressions.
class KernelBuilder {
 public:
  KernelBuilder(const Graph& g, const FusionPlan& plan, const std::set<std::string>& symbols, std::string name)
      : g_(g), plan_(plan), symbols_(symbols) {
    k_.name = std::move(name);
  }

  Kernel build(const FusedKernel& fk, std::vector<int>* args) {
    const Node& a = g_.nodes[fk.anchor];
    int out = buffer_of(fk.anchor, true);
    Index at = loop_vars(a.shape, "i");
    outer_.assign(at.begin(), at.begin() + fk.outer);
    std::vector<Stmt> body;
    for (int s : fk.stages) {
      std::vector<Stmt> st = stage(s);
      body.insert(body.end(), st.begin(), st.end());
    }
    if (op_class(a.op) == OpClass::Reduce || a.op == Op::Contract) {
      std::vector<Stmt> st = stage(fk.anchor);
      body.insert(body.end(), st.begin(), st.end());
      body.push_back(store(out, linear(a.shape, at), stage_value(fk.anchor, outer_)));
    } else {
      Shape inner_shape(a.shape.begin() + fk.outer, a.shape.end());
      Index inner(at.begin() + fk.outer, at.end());
      body.push_back(loop_nest(inner_shape, inner, {store(out, linear(a.shape, at), compute(fk.anchor, at))},
                               body.empty()));
    }
    Shape outer_shape(a.shape.begin(), a.shape.begin() + fk.outer);
    Stmt nest = loop_nest(outer_shape, outer_, body, true);
    // Reductions at a single outer point (a decode step's norms, a sum to a
    // scalar) still get a loop around them, of extent 1: it is what a GPU
    // schedule spreads over a block's threads.
    bool reduces = !fk.stages.empty() || op_class(a.op) == OpClass::Reduce || a.op == Op::Contract;
    if (reduces && nest->kind != StmtKind::For) nest = for_loop(loop_var("i"), idx(1), LoopKind::Parallel, {nest});
    k_.body = block({nest});
    *args = args_;
    return k_;
  }

 private:
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

  // Dims of extent 1 get index 0 and no loop.
  Index loop_vars(const Shape& shape, const std::string& base) {
    Index at;
    for (const Dim& d : shape) at.push_back(d.is_one() ? idx(0) : var(loop_var(base)));
    return at;
  }

  // Loops over `shape` around `body`; the outermost is parallel if asked.
  Stmt loop_nest(const Shape& shape, const Index& at, std::vector<Stmt> body, bool parallel) {
    int outermost = -1;
    for (size_t i = 0; i < shape.size() && outermost < 0; ++i)
      if (!shape[i].is_one()) outermost = int(i);
    Stmt s = body.size() == 1 ? body[0] : block(std::move(body));
    for (int i = int(shape.size()) - 1; i >= 0; --i) {
      if (shape[i].is_one()) continue;
      LoopKind kind = parallel && i == outermost ? LoopKind::Parallel : LoopKind::Serial;
      s = for_loop(at[i]->name, extent(shape[i]), kind, {s});
    }
    return s;
  }

  int buffer_of(int node, bool output) {
    auto it = node_buffer_.find(node);
    if (it != node_buffer_.end()) return it->second;
    const Node& n = g_.nodes[node];
    BufferDecl b;
    b.name = unique(n.op == Op::Input ? sanitize(n.name) : "t" + std::to_string(node));
    b.dtype = n.dtype;
    b.output = output;
    b.immutable = !output && n.op == Op::Input && n.immutable;
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

  Expr constant(double v, DType t) {
    ValType vt = valtype_of(t);
    if (vt == ValType::f32) return const_f32(v);
    return const_int(vt, static_cast<int64_t>(v));
  }

  // The value of `node` at `at`: a load if it owns a buffer, its accumulator if
  // it is a stage of this kernel, else computed in place.
  Expr value(int node, const Index& at) {
    if (stage_acc_.count(node)) return stage_value(node, at);
    const Node& n = g_.nodes[node];
    if (plan_.materialized[node]) return load(buffer_of(node, false), valtype_of(n.dtype), linear(n.shape, at));
    return compute(node, at);
  }

  // Every computed value is rounded to its node's dtype, as the interpreter
  // does: an inlined u8 add wraps and an f16 add rounds before any consumer
  // (found by kiln fuzz: tests/fuzz/regressions).
  Expr compute(int node, const Index& at) {
    const Node& n = g_.nodes[node];
    switch (op_class(n.op)) {
      case OpClass::Source: return constant(n.value, n.dtype);
      case OpClass::Unary: {
        Expr x = value(n.inputs[0], at);
        if (n.op == Op::Cast) {
          // 8-bit integers and bools are exact in f16 and bf16: no rounding
          // (a q8 weight's conversion, once per weight element in a GEMV).
          DType from = g_.nodes[n.inputs[0]].dtype;
          bool exact = (from == i8 || from == u8 || from == boolean) && (n.dtype == f16 || n.dtype == bf16);
          return exact ? cast(valtype_of(n.dtype), x) : round_to(n.dtype, cast(valtype_of(n.dtype), x));
        }
        return round_to(n.dtype, unary(unop_of(n.op), x));
      }
      case OpClass::Binary:
        return round_to(n.dtype, binary(binop_of(n.op), value(n.inputs[0], at), value(n.inputs[1], at)));
      case OpClass::Ternary:
        return select(value(n.inputs[0], at), value(n.inputs[1], at), value(n.inputs[2], at));
      case OpClass::Movement: return view(n, at);
      case OpClass::Gather: return gathered(n, at);
      default: throw Error("lower: " + std::string(op_name(n.op)) + " cannot be computed in place");
    }
  }

  Expr view(const Node& n, const Index& at) {
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

  // numpy.take; negative indices count from the end, the rest are clamped.
  Expr gathered(const Node& n, const Index& at) {
    const Node &x = g_.nodes[n.inputs[0]], &ix = g_.nodes[n.inputs[1]];
    size_t axis = size_t(n.axes[0]), ir = ix.shape.size();
    Index where_idx(at.begin() + axis, at.begin() + axis + ir);
    Expr i = cast(ValType::i64, value(n.inputs[1], where_idx));
    Expr dim = extent(x.shape[axis]);
    i = select(binary(BinOp::CmpLt, i, idx(0)), i + dim, i);
    i = binary(BinOp::Max, binary(BinOp::Min, i, dim - idx(1)), idx(0));
    Index in(at.begin(), at.begin() + axis);
    in.push_back(i);
    in.insert(in.end(), at.begin() + axis + ir, at.end());
    return value(n.inputs[0], in);
  }

  // A stage is read at the kernel's own outer point (index 0 in its other dims).
  Expr stage_value(int node, const Index& at) {
    for (size_t i = 0; i < at.size(); ++i) {
      bool same = i < outer_.size() ? equal(at[i], outer_[i])
                                    : at[i]->kind == ExprKind::Const && at[i]->ival == 0;
      if (!same) throw StageMismatch{node};
    }
    // The accumulator is wider than a narrow dtype: its value rounds on reading.
    const Node& n = g_.nodes[node];
    return round_to(n.dtype, load(stage_acc_.at(node), valtype_of(compute_type(n.dtype)), idx(0)));
  }

  // acc = init; for r...: acc = combine(acc, term(r)), at the kernel's outer point.
  std::vector<Stmt> stage(int node) {
    const Node& n = g_.nodes[node];
    Index at = outer_;
    for (size_t i = at.size(); i < n.shape.size(); ++i) at.push_back(idx(0));
    Index rvars;
    Shape rshape;
    Expr term;
    BinOp combine = BinOp::Add;
    double init = 0;
    if (n.op == Op::Contract) {
      const Node &a = g_.nodes[n.inputs[0]], &b = g_.nodes[n.inputs[1]];
      Expr k = var(loop_var("r"));
      rvars = {k};
      rshape = {a.shape.back()};
      size_t r = n.shape.size();
      // Batch dims broadcast like expand: a dim of 1 reads index 0.
      auto operand_index = [&](const Node& x, Expr row, Expr col) {
        size_t xr = x.shape.size();
        Index in(xr);
        for (size_t i = 0; i + 2 < xr; ++i) in[i] = x.shape[i].is_one() ? idx(0) : at[r - xr + i];
        in[xr - 2] = std::move(row);
        in[xr - 1] = std::move(col);
        return in;
      };
      term = binary(BinOp::Mul, value(n.inputs[0], operand_index(a, at[r - 2], k)),
                    value(n.inputs[1], operand_index(b, k, at[r - 1])));
    } else {
      const Node& x = g_.nodes[n.inputs[0]];
      Index in = at;
      for (int64_t a : n.axes) {
        in[a] = var(loop_var("r"));
        rvars.push_back(in[a]);
        rshape.push_back(x.shape[a]);
      }
      term = value(n.inputs[0], in);
      if (n.op == Op::ReduceMax) {
        combine = BinOp::Max;
        init = lowest(n.dtype);
      }
    }
    DType acc_t = compute_type(n.dtype);
    int acc = local("acc", acc_t, 1);
    stage_acc_[node] = acc;
    Expr cur = load(acc, valtype_of(acc_t), idx(0));
    Stmt body = store(acc, idx(0), binary(combine, cur, term));
    for (int i = int(rvars.size()) - 1; i >= 0; --i)
      body = for_loop(rvars[i]->name, extent(rshape[i]), LoopKind::Serial, {body});
    return {store(acc, idx(0), constant(init, acc_t)), body};
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
  const FusionPlan& plan_;
  const std::set<std::string>& symbols_;
  Kernel k_;
  std::map<int, int> node_buffer_;
  std::map<int, int> stage_acc_;
  Index outer_;
  std::vector<int> args_;
  int vars_ = 0;
};

std::string kernel_name(const Graph& g, const FusedKernel& fk, int number) {
  std::string name = "k" + std::to_string(number) + "_" + std::string(op_name(g.nodes[fk.anchor].op));
  for (int s : fk.stages) name += "_" + std::string(op_name(g.nodes[s].op));
  return name;
}

// Graph nodes a kernel computes: its anchor, its stages and what it inlines.
std::vector<int> computed_nodes(const Graph& g, const FusionPlan& plan, const FusedKernel& fk) {
  std::set<int> seen;
  std::vector<int> todo = {fk.anchor};
  todo.insert(todo.end(), fk.stages.begin(), fk.stages.end());
  while (!todo.empty()) {
    int n = todo.back();
    todo.pop_back();
    if (!seen.insert(n).second) continue;
    for (int in : g.nodes[n].inputs)
      if (!plan.materialized[in] && g.nodes[in].op != Op::Input) todo.push_back(in);
  }
  return {seen.begin(), seen.end()};
}

}  // namespace

Graph canonicalize_gemv(const Graph& g) {
  int n = int(g.nodes.size());
  std::vector<std::vector<int>> consumers(n);
  for (int i = 0; i < n; ++i)
    for (int in : g.nodes[i].inputs) consumers[in].push_back(i);
  std::set<int> outputs(g.outputs.begin(), g.outputs.end());
  auto is_gemv = [&](int i) {
    const Node& c = g.nodes[i];
    if (c.op != Op::Contract || c.shape.size() != 2 || !c.shape[1].is_one() || c.shape[0].is_one()) return false;
    if (outputs.count(i) || consumers[i].empty()) return false;
    Shape row = {Dim(1), c.shape[0]};
    for (int u : consumers[i])
      if (g.nodes[u].op != Op::Reshape || g.nodes[u].shape != row) return false;
    return true;
  };
  Graph out;
  out.name = g.name;
  std::vector<int> id(n, -1);
  std::vector<bool> rewritten(n, false);
  for (int i = 0; i < n; ++i) {
    const Node& node = g.nodes[i];
    // The reshape after a rewritten product is now the identity: dropped, so
    // that its consumers index the product directly.
    if (node.op == Op::Reshape && rewritten[node.inputs[0]] && !outputs.count(i)) {
      id[i] = id[node.inputs[0]];
      continue;
    }
    if (is_gemv(i)) {
      rewritten[i] = true;
      int a = id[node.inputs[0]], b = id[node.inputs[1]];
      id[i] = out.contract(out.permute(b, {1, 0}), out.permute(a, {1, 0}));
      continue;
    }
    Node copy = node;
    for (int& in : copy.inputs) in = id[in];
    out.nodes.push_back(std::move(copy));
    id[i] = int(out.nodes.size()) - 1;
  }
  for (int o : g.outputs) out.outputs.push_back(id[o]);
  return out;
}

Program lower(const Graph& input, const FusionOptions& options) {
  Graph g = canonicalize_gemv(input);
  std::set<std::string> symbols;
  for (const Dim& d : g.symbols()) symbols.insert(d.sym);
  FusionOptions opt = options;
  for (;;) {
    FusionPlan plan = plan_fusion(g, opt);
    Program p;
    p.graph = g;
    p.aliases = plan.aliases;
    for (int id : g.input_nodes()) p.buffers.push_back(id);
    try {
      for (const FusedKernel& fk : plan.kernels) {
        Launch l;
        l.kernel = int(p.kernels.size());
        KernelBuilder kb(g, plan, symbols, kernel_name(g, fk, l.kernel));
        p.kernels.push_back(kb.build(fk, &l.args));
        p.kernel_ops.push_back(computed_nodes(g, plan, fk));
        p.launches.push_back(std::move(l));
        p.buffers.push_back(fk.anchor);
      }
    } catch (const StageMismatch& m) {
      opt.never_stage.insert(m.node);  // store it instead, and cut again
      continue;
    }
    return p;
  }
}

std::string describe_kernels(const Program& p) {
  std::string out;
  for (size_t k = 0; k < p.kernels.size(); ++k) {
    out += p.kernels[k].name + ":";
    for (int id : p.kernel_ops[k]) {
      const Node& n = p.graph.nodes[id];
      out += " %" + std::to_string(id) + " " + std::string(op_name(n.op));
    }
    const Node& a = p.graph.nodes[p.launches[k].args.front()];
    out += " -> " + std::string(dtype_name(a.dtype)) + shape_str(a.shape) + " <-";
    for (size_t i = 1; i < p.launches[k].args.size(); ++i) out += " %" + std::to_string(p.launches[k].args[i]);
    out += "\n";
  }
  return out;
}

}  // namespace kiln
