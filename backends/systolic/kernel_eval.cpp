#include "backends/systolic/kernel_eval.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln::systolic {

namespace {

const StmtNode* only_child(const StmtNode* s) {
  while (s && s->kind == StmtKind::Block && s->body.size() == 1) s = s->body[0].get();
  return s;
}

void vars_of(const Expr& e, std::set<std::string>* out) {
  if (e->kind == ExprKind::Var) out->insert(e->name);
  for (const Expr& a : e->args) vars_of(a, out);
}

bool reads_local(const Expr& e, const Kernel& k) {
  if (e->kind == ExprKind::Load && k.buffers[size_t(e->buffer)].scope != MemScope::Global) return true;
  for (const Expr& a : e->args)
    if (reads_local(a, k)) return true;
  return false;
}

int64_t count_ops(const Expr& e) {
  int64_t n = (e->kind == ExprKind::Unary || e->kind == ExprKind::Binary || e->kind == ExprKind::Select ||
               e->kind == ExprKind::Cast || e->kind == ExprKind::Round) &&
              e->type != ValType::i64;
  for (const Expr& a : e->args) n += count_ops(a);
  return n;
}

bool is_acc_load(const Expr& e, int acc) {
  return e->kind == ExprKind::Load && e->buffer == acc && e->args[0]->kind == ExprKind::Const && e->args[0]->ival == 0;
}

// The index as coefficients of `vars` plus a constant (last), in wrapping
// i64 arithmetic like the evaluator's; nullopt if it is not affine.
std::optional<std::vector<uint64_t>> affine(const Expr& e, const std::vector<std::string>& vars,
                                            const std::map<std::string, int64_t>& params) {
  if (e->type != ValType::i64) return std::nullopt;
  std::vector<uint64_t> f(vars.size() + 1, 0);
  switch (e->kind) {
    case ExprKind::Const: f.back() = uint64_t(e->ival); return f;
    case ExprKind::Var: {
      auto v = std::find(vars.begin(), vars.end(), e->name);
      if (v != vars.end()) f[size_t(v - vars.begin())] = 1;
      else if (auto p = params.find(e->name); p != params.end()) f.back() = uint64_t(p->second);
      else return std::nullopt;
      return f;
    }
    case ExprKind::Binary: {
      if (e->binop != BinOp::Add && e->binop != BinOp::Sub && e->binop != BinOp::Mul) return std::nullopt;
      auto a = affine(e->args[0], vars, params), b = affine(e->args[1], vars, params);
      if (!a || !b) return std::nullopt;
      auto constant = [](const std::vector<uint64_t>& x) {
        return std::all_of(x.begin(), x.end() - 1, [](uint64_t c) { return c == 0; });
      };
      if (e->binop == BinOp::Mul) {
        if (!constant(*a) && !constant(*b)) return std::nullopt;
        if (!constant(*a)) std::swap(a, b);
        for (size_t j = 0; j < f.size(); ++j) f[j] = a->back() * (*b)[j];
        return f;
      }
      for (size_t j = 0; j < f.size(); ++j) f[j] = e->binop == BinOp::Add ? (*a)[j] + (*b)[j] : (*a)[j] - (*b)[j];
      return f;
    }
    default: return std::nullopt;
  }
}

}  // namespace

std::unique_ptr<Contraction> find_contraction(const Kernel& k) {
  auto c = std::make_unique<Contraction>();
  const StmtNode* s = only_child(k.body.get());
  while (s && s->kind == StmtKind::For) {
    c->loops.push_back(s->var);
    if (s->body.size() != 1) return nullptr;
    s = only_child(s->body[0].get());
  }
  if (!s || s->kind != StmtKind::Block) return nullptr;
  size_t j = 0;
  for (; j + 1 < s->body.size(); j += 2) {
    const StmtNode* init = s->body[j].get();
    const StmtNode* loop = s->body[j + 1].get();
    if (init->kind != StmtKind::Store || loop->kind != StmtKind::For || loop->body.size() != 1) break;
    ContractionStage st;
    st.acc = init->buffer;
    const BufferDecl& decl = k.buffers[size_t(st.acc)];
    if (decl.scope != MemScope::Local || decl.dtype != f32 || decl.size != 1) break;
    if (init->value->kind != ExprKind::Const || init->value->fval != 0) break;
    const StmtNode* update = only_child(loop->body[0].get());
    if (!update || update->kind != StmtKind::Store || update->buffer != st.acc) break;
    const Expr& v = update->value;
    if (v->kind != ExprKind::Binary || v->binop != BinOp::Add) break;
    Expr product = is_acc_load(v->args[0], st.acc) ? v->args[1] : is_acc_load(v->args[1], st.acc) ? v->args[0] : nullptr;
    if (!product || product->kind != ExprKind::Binary || product->binop != BinOp::Mul) break;
    st.reduction = loop->var;
    st.extent_k = loop->extent;
    st.a = product->args[0];
    st.b = product->args[1];
    if (reads_local(st.a, k) || reads_local(st.b, k)) return nullptr;
    std::set<std::string> va, vb;
    vars_of(st.a, &va);
    vars_of(st.b, &vb);
    for (size_t l = 0; l < c->loops.size(); ++l) {
      if (va.count(c->loops[l])) st.a_loops.push_back(int(l));
      if (vb.count(c->loops[l])) st.b_loops.push_back(int(l));
    }
    c->stages.push_back(std::move(st));
  }
  if (c->stages.empty()) return nullptr;
  // Loop extents must not depend on other loops (the nest is a box).
  std::set<std::string> loop_names(c->loops.begin(), c->loops.end());
  for (const ContractionStage& st : c->stages) loop_names.insert(st.reduction);
  for (const StmtNode* f = only_child(k.body.get()); f && f->kind == StmtKind::For; f = only_child(f->body[0].get())) {
    std::set<std::string> ve;
    vars_of(f->extent, &ve);
    for (const std::string& n : ve)
      if (loop_names.count(n)) return nullptr;
  }
  for (const ContractionStage& st : c->stages) {
    std::set<std::string> vk;
    vars_of(st.extent_k, &vk);
    for (const std::string& n : vk)
      if (loop_names.count(n)) return nullptr;
  }
  for (; j < s->body.size(); ++j) {
    const StmtNode* e = s->body[j].get();
    if (e->kind != StmtKind::Store) return nullptr;
    c->epilogue_ops += count_ops(e->value);
  }
  return c;
}

// Values in the compute types.
union Val {
  float f;
  int32_t i;
  int64_t l;
  bool b;
};

struct CNode {
  ExprKind kind;
  ValType type;
  UnOp un = UnOp::Neg;
  BinOp bin = BinOp::Add;
  DType round = f32;
  int a = -1, b = -1, c = -1;
  int slot = -1;  // Var
  int buf = -1;   // Load
  Val k{};        // Const
};

struct CStmt {
  StmtKind kind;
  int slot = -1;  // For
  int extent = -1, index = -1, value = -1, cond = -1;
  int buf = -1;
  bool contraction = false;  // the block whose sum comes from the table
  std::vector<CStmt> body;
};

struct KernelEval::Impl {
  const Kernel k;
  std::map<std::string, int> slots;
  std::vector<CNode> nodes;
  CStmt root;
  std::unique_ptr<Contraction> contraction;
  std::vector<int> nest_slots;  // the contraction's loops
  // Per run:
  std::vector<int64_t> vars;
  std::vector<void*> bufs;
  std::vector<int64_t> buf_elems;
  std::vector<std::vector<std::byte>> locals;
  int64_t ops = 0;
  const std::vector<std::vector<float>>* sums = nullptr;
  std::vector<int64_t> nest_extent;

  // The contraction's block when it only stores its one sum to a global f32
  // buffer (a plain GEMM's epilogue): the sums are then written directly.
  const StmtNode* sink = nullptr;

  explicit Impl(const Kernel& kernel) : k(kernel) {
    for (const std::string& p : k.params) slot(p);
    contraction = find_contraction(k);
    root = compile(k.body, 0);
    if (contraction)
      for (const std::string& l : contraction->loops) nest_slots.push_back(slot(l));
    if (contraction && contraction->stages.size() == 1) {
      const StmtNode* s = only_child(k.body.get());
      while (s && s->kind == StmtKind::For) s = only_child(s->body[0].get());
      if (s && s->kind == StmtKind::Block && s->body.size() == 3) {
        const StmtNode* st = s->body[2].get();
        if (st->kind == StmtKind::Store && st->buffer >= 0 && size_t(st->buffer) < k.buffers.size() &&
            k.buffers[size_t(st->buffer)].scope == MemScope::Global && k.buffers[size_t(st->buffer)].dtype == f32 &&
            st->value->type == ValType::f32 && is_acc_load(st->value, contraction->stages[0].acc))
          sink = st;
      }
    }
  }

  // Writes the sums where the plain epilogue would store them, in nest order;
  // false (nothing written) if its index is not affine or leaves the buffer.
  bool store_sums_directly(const std::vector<int64_t>& params) {
    if (!sink || !sums || sums->size() != 1 || nest_extent.empty()) return false;
    std::map<std::string, int64_t> pv;
    for (size_t j = 0; j < params.size(); ++j) pv[k.params[j]] = params[j];
    auto f = affine(sink->index, contraction->loops, pv);
    if (!f) return false;
    int64_t total = 1;
    __int128 lo = int64_t(f->back()), hi = lo;
    for (size_t l = 0; l < nest_extent.size(); ++l) {
      if (nest_extent[l] <= 0) return false;
      total *= nest_extent[l];
      __int128 span = __int128(int64_t((*f)[l])) * (nest_extent[l] - 1);
      (span < 0 ? lo : hi) += span;
    }
    int buf = sink->buffer;
    if (lo < 0 || hi >= buf_elems[size_t(buf)] || int64_t((*sums)[0].size()) != total) return false;
    float* out = static_cast<float*>(bufs[size_t(buf)]);
    const float* in = (*sums)[0].data();
    size_t depth = nest_extent.size();
    std::vector<int64_t> idx(depth, 0);
    int64_t at = int64_t(f->back());  // the index at idx (odometer, innermost loop fastest)
    uint64_t inner = depth ? (*f)[depth - 1] : 0;
    int64_t inner_n = depth ? nest_extent[depth - 1] : 1;
    for (int64_t flat = 0; flat < total; flat += inner_n) {
      for (int64_t j = 0; j < inner_n; ++j) out[int64_t(uint64_t(at) + uint64_t(j) * inner)] = in[flat + j];
      for (size_t l = depth - 1; l-- > 0;) {  // carry into the outer loops
        at = int64_t(uint64_t(at) + (*f)[l]);
        if (++idx[l] < nest_extent[l]) break;
        at = int64_t(uint64_t(at) - (*f)[l] * uint64_t(nest_extent[l]));
        idx[l] = 0;
      }
    }
    return true;
  }

  int slot(const std::string& name) {
    auto it = slots.find(name);
    if (it != slots.end()) return it->second;
    int s = int(slots.size());
    slots[name] = s;
    return s;
  }

  int compile(const Expr& e) {
    CNode n{e->kind, e->type};
    n.un = e->unop;
    n.bin = e->binop;
    n.round = e->round_to;
    if (e->kind == ExprKind::Const) {
      if (e->type == ValType::f32) n.k.f = float(e->fval);
      else if (e->type == ValType::i32) n.k.i = int32_t(e->ival);
      else if (e->type == ValType::i64) n.k.l = e->ival;
      else n.k.b = e->ival != 0;
    }
    if (e->kind == ExprKind::Var) n.slot = slot(e->name);
    if (e->kind == ExprKind::Load) {
      if (e->buffer < 0 || size_t(e->buffer) >= k.buffers.size()) throw Error("systolic: load of no buffer");
      n.buf = e->buffer;
    }
    int ids[3] = {-1, -1, -1};
    for (size_t j = 0; j < e->args.size() && j < 3; ++j) ids[j] = compile(e->args[j]);
    n.a = ids[0], n.b = ids[1], n.c = ids[2];
    nodes.push_back(n);
    return int(nodes.size()) - 1;
  }

  CStmt compile(const Stmt& s, int depth) {
    CStmt c;
    c.kind = s->kind;
    switch (s->kind) {
      case StmtKind::For:
        c.slot = slot(s->var);
        c.extent = compile(s->extent);
        break;
      case StmtKind::Store:
        c.buf = s->buffer;
        c.index = compile(s->index);
        c.value = compile(s->value);
        break;
      case StmtKind::If: c.cond = compile(s->cond); break;
      case StmtKind::AllReduce: throw Error("systolic: allreduce is for GPU schedules");
      case StmtKind::Block: break;
    }
    for (const Stmt& b : s->body) c.body.push_back(compile(b, depth + 1));
    if (contraction && s->kind == StmtKind::Block && !c.contraction && is_contraction_block(s)) c.contraction = true;
    return c;
  }

  bool is_contraction_block(const Stmt& s) const {
    if (s->body.size() < 2 || s->body[1]->kind != StmtKind::For) return false;
    return s->body[1]->var == contraction->stages[0].reduction && s->body[0]->kind == StmtKind::Store;
  }

  [[noreturn]] void out_of_bounds(int buf, int64_t i) const {
    throw Error("systolic: kernel '" + k.name + "' reads or writes " + k.buffers[size_t(buf)].name + "[" +
                std::to_string(i) + "], outside its " + std::to_string(buf_elems[size_t(buf)]) + " elements");
  }

  Val load(int buf, int64_t i, ValType t) {
    if (i < 0 || i >= buf_elems[size_t(buf)]) out_of_bounds(buf, i);
    DType d = k.buffers[size_t(buf)].dtype;
    const std::byte* p = static_cast<const std::byte*>(bufs[size_t(buf)]) + i * int64_t(dtype_size(d));
    Val v{};
    switch (d) {
      case f32: std::memcpy(&v.f, p, 4); break;
      case i32: std::memcpy(&v.i, p, 4); break;
      default: {
        double x = load_as_double(p, d);
        if (t == ValType::f32) v.f = float(x);
        else if (t == ValType::b1) v.b = x != 0;
        else v.i = int32_t(x);
      }
    }
    return v;
  }

  void store(int buf, int64_t i, Val v, ValType t) {
    if (i < 0 || i >= buf_elems[size_t(buf)]) out_of_bounds(buf, i);
    DType d = k.buffers[size_t(buf)].dtype;
    std::byte* p = static_cast<std::byte*>(bufs[size_t(buf)]) + i * int64_t(dtype_size(d));
    if (d == f32 && t == ValType::f32) return (void)std::memcpy(p, &v.f, 4);
    if (d == i32 && t == ValType::i32) return (void)std::memcpy(p, &v.i, 4);
    double x = t == ValType::f32 ? double(v.f) : t == ValType::i32 ? double(v.i) : t == ValType::i64 ? double(v.l) : v.b;
    if (t == ValType::i32 && (d == i8 || d == u8)) {
      uint8_t byte = uint8_t(uint32_t(v.i) & 0xff);
      return (void)std::memcpy(p, &byte, 1);
    }
    store_from_double(p, d, x);
  }

  template <typename I>
  static I int_div(I a, I b, bool mod) {
    if (b == 0) return 0;
    if (b == -1) return mod ? 0 : I(std::make_unsigned_t<I>(0) - std::make_unsigned_t<I>(a));
    return mod ? a % b : a / b;
  }

  template <typename I>
  static I int_binary(BinOp op, I a, I b) {
    using U = std::make_unsigned_t<I>;
    switch (op) {
      case BinOp::Add: return I(U(a) + U(b));
      case BinOp::Sub: return I(U(a) - U(b));
      case BinOp::Mul: return I(U(a) * U(b));
      case BinOp::Div: return int_div(a, b, false);
      case BinOp::Mod: return int_div(a, b, true);
      case BinOp::Max: return std::max(a, b);
      case BinOp::Min: return std::min(a, b);
      default: return 0;
    }
  }

  template <typename I>
  static I saturate(float f) {
    if (std::isnan(f)) return 0;
    double t = std::trunc(double(f));
    if (t <= double(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
    if (t >= double(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
    return I(t);
  }

  Val eval(int id) {
    const CNode& n = nodes[size_t(id)];
    Val v{};
    switch (n.kind) {
      case ExprKind::Const: return n.k;
      case ExprKind::Var: v.l = vars[size_t(n.slot)]; return v;
      case ExprKind::Load: return load(n.buf, eval(n.a).l, n.type);
      case ExprKind::Select: ops += n.type != ValType::i64; return eval(n.a).b ? eval(n.b) : eval(n.c);
      case ExprKind::Unary: {
        ops += n.type != ValType::i64;
        Val a = eval(n.a);
        if (n.type == ValType::f32) {
          switch (n.un) {
            case UnOp::Neg: v.f = -a.f; break;
            case UnOp::Exp2: v.f = std::exp2(a.f); break;
            case UnOp::Log2: v.f = std::log2(a.f); break;
            case UnOp::Sqrt: v.f = std::sqrt(a.f); break;
            case UnOp::Recip: v.f = 1.0f / a.f; break;
            case UnOp::Sin: v.f = std::sin(a.f); break;
            case UnOp::Not: v.f = a.f == 0; break;
          }
        } else if (n.type == ValType::i32) {
          v.i = n.un == UnOp::Neg ? int32_t(0u - uint32_t(a.i)) : int32_t(a.i == 0);
        } else if (n.type == ValType::i64) {
          v.l = n.un == UnOp::Neg ? int64_t(0ull - uint64_t(a.l)) : int64_t(a.l == 0);
        } else {
          v.b = n.un == UnOp::Not ? !a.b : a.b;
        }
        return v;
      }
      case ExprKind::Binary: {
        ops += n.type != ValType::i64;
        Val a = eval(n.a), b = eval(n.b);
        ValType t = nodes[size_t(n.a)].type;
        switch (t) {
          case ValType::f32:
            switch (n.bin) {
              case BinOp::Add: v.f = a.f + b.f; break;
              case BinOp::Sub: v.f = a.f - b.f; break;
              case BinOp::Mul: v.f = a.f * b.f; break;
              case BinOp::Div: v.f = a.f / b.f; break;
              case BinOp::Mod: v.f = std::fmod(a.f, b.f); break;
              case BinOp::Max: v.f = std::fmax(a.f, b.f); break;
              case BinOp::Min: v.f = std::fmin(a.f, b.f); break;
              case BinOp::CmpLt: v.b = a.f < b.f; break;
              case BinOp::CmpEq: v.b = a.f == b.f; break;
              default: throw Error("systolic: " + std::string(binop_name(n.bin)) + " does not take f32");
            }
            break;
          case ValType::i32:
            if (n.bin == BinOp::CmpLt) v.b = a.i < b.i;
            else if (n.bin == BinOp::CmpEq) v.b = a.i == b.i;
            else v.i = int_binary<int32_t>(n.bin, a.i, b.i);
            break;
          case ValType::i64:
            if (n.bin == BinOp::CmpLt) v.b = a.l < b.l;
            else if (n.bin == BinOp::CmpEq) v.b = a.l == b.l;
            else v.l = int_binary<int64_t>(n.bin, a.l, b.l);
            break;
          case ValType::b1:
            switch (n.bin) {
              case BinOp::Max: case BinOp::Or: v.b = a.b || b.b; break;
              case BinOp::Min: case BinOp::And: v.b = a.b && b.b; break;
              case BinOp::CmpLt: v.b = !a.b && b.b; break;
              case BinOp::CmpEq: v.b = a.b == b.b; break;
              default: throw Error("systolic: " + std::string(binop_name(n.bin)) + " does not take bool");
            }
            break;
        }
        return v;
      }
      case ExprKind::Cast: {
        ops += n.type != ValType::i64;
        Val a = eval(n.a);
        ValType from = nodes[size_t(n.a)].type;
        double x = from == ValType::f32 ? a.f : from == ValType::i32 ? a.i : from == ValType::i64 ? double(a.l) : a.b;
        switch (n.type) {
          case ValType::f32:
            v.f = from == ValType::i64 ? float(a.l) : float(x);
            break;
          case ValType::i32:
            v.i = from == ValType::f32 ? saturate<int32_t>(a.f) : from == ValType::i64 ? int32_t(uint64_t(a.l)) : int32_t(x);
            break;
          case ValType::i64:
            v.l = from == ValType::f32 ? saturate<int64_t>(a.f) : from == ValType::i64 ? a.l : int64_t(x);
            break;
          case ValType::b1:
            v.b = from == ValType::i64 ? a.l != 0 : x != 0;
            break;
        }
        return v;
      }
      case ExprKind::Round: {
        ops += 1;
        Val a = eval(n.a);
        if (n.type == ValType::f32) {
          if (n.round == f16) a.f = f16_bits_to_f32(f32_to_f16_bits(a.f));
          else if (n.round == bf16) a.f = bf16_bits_to_f32(f32_to_bf16_bits(a.f));
        } else if (n.type == ValType::i32) {
          if (n.round == i8) a.i = int8_t(uint8_t(uint32_t(a.i) & 0xff));
          else if (n.round == u8) a.i = int32_t(uint32_t(a.i) & 0xff);
        }
        return a;
      }
    }
    return v;
  }

  int64_t nest_index() const {
    int64_t idx = 0;
    for (size_t l = 0; l < nest_slots.size(); ++l) idx = idx * nest_extent[l] + vars[size_t(nest_slots[l])];
    return idx;
  }

  void exec(const CStmt& s) {
    switch (s.kind) {
      case StmtKind::For: {
        int64_t n = eval(s.extent).l;
        for (int64_t i = 0; i < n; ++i) {
          vars[size_t(s.slot)] = i;
          for (const CStmt& b : s.body) exec(b);
        }
        return;
      }
      case StmtKind::Store: store(s.buf, eval(s.index).l, eval(s.value), nodes[size_t(s.value)].type); return;
      case StmtKind::If:
        if (eval(s.cond).b)
          for (const CStmt& b : s.body) exec(b);
        return;
      case StmtKind::Block:
        if (s.contraction && sums) {
          // The sum comes from the array: store it where the loop would have.
          int64_t at = nest_index();
          size_t n = contraction->stages.size();
          for (size_t st = 0; st < n; ++st) {
            Val v{};
            v.f = (*sums)[st][size_t(at)];
            store(s.body[2 * st].buf, 0, v, ValType::f32);
          }
          for (size_t j = 2 * n; j < s.body.size(); ++j) exec(s.body[j]);
          return;
        }
        for (const CStmt& b : s.body) exec(b);
        return;
      case StmtKind::AllReduce: return;
    }
  }

  void bind(const std::vector<HostBuf>& globals, const std::vector<int64_t>& params) {
    std::vector<int> g = k.global_buffers();
    if (globals.size() != g.size() || params.size() != k.params.size())
      throw Error("systolic: kernel '" + k.name + "' takes " + std::to_string(g.size()) + " buffers and " +
                  std::to_string(k.params.size()) + " params");
    vars.assign(slots.size(), 0);
    for (size_t j = 0; j < params.size(); ++j) vars[size_t(slots.at(k.params[j]))] = params[j];
    bufs.assign(k.buffers.size(), nullptr);
    buf_elems.assign(k.buffers.size(), 0);
    locals.resize(k.buffers.size());
    for (size_t j = 0; j < g.size(); ++j) {
      bufs[size_t(g[j])] = globals[j].data;
      buf_elems[size_t(g[j])] = globals[j].bytes / int64_t(dtype_size(k.buffers[size_t(g[j])].dtype));
    }
    for (size_t b = 0; b < k.buffers.size(); ++b) {
      if (k.buffers[b].scope == MemScope::Global) continue;
      locals[b].assign(size_t(k.buffers[b].size * int64_t(dtype_size(k.buffers[b].dtype))), std::byte{0});
      bufs[b] = locals[b].data();
      buf_elems[b] = k.buffers[b].size;
    }
  }
};

KernelEval::KernelEval(const Kernel& k) : impl_(std::make_unique<Impl>(k)) {}
KernelEval::~KernelEval() = default;

int64_t KernelEval::run(const std::vector<HostBuf>& globals, const std::vector<int64_t>& params,
                        const std::vector<std::vector<float>>* sums) {
  Impl& m = *impl_;
  m.bind(globals, params);
  m.ops = 0;
  m.sums = sums;
  m.nest_extent.clear();
  if (sums && m.contraction) {
    const StmtNode* s = only_child(m.k.body.get());
    for (; s && s->kind == StmtKind::For; s = only_child(s->body[0].get()))
      m.nest_extent.push_back(evaluate_index(s->extent, [&] {
        std::map<std::string, int64_t> v;
        for (size_t j = 0; j < params.size(); ++j) v[m.k.params[j]] = params[j];
        return v;
      }()));
  }
  if (m.store_sums_directly(params)) return 0;  // the plain epilogue does no element operations
  m.exec(m.root);
  return m.ops;
}

namespace {

class ProbeImpl : public KernelEval::Probe {
 public:
  ProbeImpl(KernelEval::Impl& m, int node, std::vector<int> slots) : m_(m), node_(node), slots_(std::move(slots)) {}
  float at(const int64_t* values) override {
    for (size_t j = 0; j < slots_.size(); ++j) m_.vars[size_t(slots_[j])] = values[j];
    return m_.eval(node_).f;
  }

 private:
  KernelEval::Impl& m_;
  int node_;
  std::vector<int> slots_;
};

}  // namespace

std::unique_ptr<KernelEval::Probe> KernelEval::probe(const Expr& e, const std::vector<std::string>& vars,
                                                     const std::vector<HostBuf>& globals,
                                                     const std::vector<int64_t>& params) {
  Impl& m = *impl_;
  int node = m.compile(e);
  std::vector<int> slots;
  for (const std::string& v : vars) slots.push_back(m.slot(v));
  m.bind(globals, params);
  return std::make_unique<ProbeImpl>(m, node, std::move(slots));
}


std::optional<AffineLoad> KernelEval::affine_load(const Expr& e, const std::vector<std::string>& vars,
                                                  const std::vector<int64_t>& extents,
                                                  const std::vector<HostBuf>& globals,
                                                  const std::vector<int64_t>& params) {
  Impl& m = *impl_;
  if (e->kind != ExprKind::Load || e->type != ValType::f32 || e->args.size() != 1 || extents.size() != vars.size())
    return std::nullopt;
  if (e->buffer < 0 || size_t(e->buffer) >= m.k.buffers.size()) return std::nullopt;
  const BufferDecl& decl = m.k.buffers[size_t(e->buffer)];
  if (decl.scope != MemScope::Global || decl.dtype != f32) return std::nullopt;
  std::vector<int> g = m.k.global_buffers();
  auto at = std::find(g.begin(), g.end(), e->buffer);
  if (at == g.end() || globals.size() != g.size() || params.size() != m.k.params.size()) return std::nullopt;
  const HostBuf& buf = globals[size_t(at - g.begin())];
  std::map<std::string, int64_t> pv;
  for (size_t j = 0; j < params.size(); ++j) pv[m.k.params[j]] = params[j];
  auto f = affine(e->args[0], vars, pv);
  if (!f) return std::nullopt;
  // Every index in the box, exactly (no wrap), inside the buffer.
  __int128 lo = int64_t(f->back()), hi = lo;
  for (size_t j = 0; j < vars.size(); ++j) {
    if (extents[j] <= 0) return std::nullopt;
    __int128 span = __int128(int64_t((*f)[j])) * (extents[j] - 1);
    (span < 0 ? lo : hi) += span;
  }
  if (lo < 0 || hi >= buf.bytes / 4) return std::nullopt;
  AffineLoad a;
  a.data = static_cast<const float*>(buf.data);
  a.offset = int64_t(f->back());
  for (size_t j = 0; j < vars.size(); ++j) a.coeff.push_back(int64_t((*f)[j]));
  return a;
}

}  // namespace kiln::systolic
