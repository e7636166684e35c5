#include "codegen/emit/vector_loads.h"

#include <algorithm>
#include <functional>
#include <set>

#include "codegen/ir_util.h"
#include "kiln/error.h"

namespace kiln {

Expr offset_base(const Expr& e, const std::string& v) {
  if (e->kind == ExprKind::Var && e->name == v) return idx(0);
  if (e->kind != ExprKind::Binary || e->binop != BinOp::Add) return nullptr;
  bool a = uses_var(e->args[0], v), b = uses_var(e->args[1], v);
  if (a == b) return nullptr;
  const Expr &moving = a ? e->args[0] : e->args[1], &fixed = a ? e->args[1] : e->args[0];
  Expr base = offset_base(moving, v);
  if (!base) return nullptr;
  return base->kind == ExprKind::Const && base->ival == 0 ? fixed : base + fixed;
}

bool split_offset(const Expr& e, const std::string& v, Expr* base, Expr* off) {
  if (e->kind == ExprKind::Binary && e->binop == BinOp::Add) {
    Expr b0, o0, b1, o1;
    if (!split_offset(e->args[0], v, &b0, &o0) || !split_offset(e->args[1], v, &b1, &o1)) return false;
    *base = !b0 ? b1 : !b1 ? b0 : b0 + b1;
    *off = !o0 ? o1 : !o1 ? o0 : o0 + o1;
    return true;
  }
  if (!uses_var(e, v)) {
    *base = e, *off = nullptr;
    return true;
  }
  // A term that uses v must use nothing else (and load nothing).
  bool alone = true;
  std::function<void(const Expr&)> check = [&](const Expr& x) {
    if (!x) return;
    if (x->kind == ExprKind::Load || (x->kind == ExprKind::Var && x->name != v)) alone = false;
    for (const Expr& a : x->args) check(a);
  };
  check(e);
  if (!alone) return false;
  *base = nullptr, *off = e;
  return true;
}

bool multiple_of(const Expr& e, int64_t n) {
  if (e->kind == ExprKind::Const) return e->ival % n == 0;
  if (e->kind != ExprKind::Binary) return false;
  switch (e->binop) {
    case BinOp::Mul: return multiple_of(e->args[0], n) || multiple_of(e->args[1], n);
    case BinOp::Add: case BinOp::Sub: return multiple_of(e->args[0], n) && multiple_of(e->args[1], n);
    default: return false;
  }
}

std::vector<VectorLoad> find_vector_loads(const Kernel& k, const StmtNode& loop, bool sixteen_only,
                                          int64_t max_bytes) {
  std::vector<VectorLoad> out;
  int64_t w = 0;
  if (loop.loop != LoopKind::Unrolled || loop.extent->kind != ExprKind::Const || (w = loop.extent->ival) < 2) return out;
  std::set<int> stored;
  bool simple = true;
  std::vector<const ExprNode*> loads;
  std::function<void(const Expr&)> find = [&](const Expr& e) {
    if (!e) return;
    if (e->kind == ExprKind::Load) loads.push_back(e.get());
    for (const Expr& a : e->args) find(a);
  };
  std::function<void(const std::vector<Stmt>&)> walk = [&](const std::vector<Stmt>& body) {
    for (const Stmt& x : body) {
      if (x->kind == StmtKind::Block) walk(x->body);
      else if (x->kind != StmtKind::Store) simple = false;
      else {
        stored.insert(x->buffer);
        find(x->index);
        find(x->value);
      }
    }
  };
  walk(loop.body);
  if (!simple) return out;
  for (const ExprNode* e : loads) {
    if (e->buffer < 0 || e->buffer >= int(k.buffers.size()) || e->args.size() != 1) continue;
    const BufferDecl& b = k.buffers[e->buffer];
    if (b.scope != MemScope::Global || stored.count(e->buffer) || b.dtype == boolean) continue;
    Expr base = offset_base(e->args[0], loop.var), element;
    int64_t elems = w;
    if (!base) {
      // base + off(v) with off in [0, P) for every v: P elements read at once.
      Expr off;
      if (!split_offset(e->args[0], loop.var, &base, &off) || !base || !off) continue;
      int64_t hi = -1, lo = w;
      bool fits = true;
      for (int64_t c = 0; c < w && fits; ++c) {
        int64_t x = -1;
        try {
          x = evaluate_index(off, {{loop.var, c}});
        } catch (const Error&) {
          fits = false;
        }
        fits = fits && x >= 0 && x < w;
        hi = std::max(hi, x);
        lo = std::min(lo, x);
      }
      if (!fits) continue;
      elems = 1;
      while (elems <= hi) elems *= 2;
      // The first and the last element are ones an iteration reads, so all
      // between are in bounds.
      if (lo != 0 || hi + 1 != elems) continue;
      element = off;
    }
    int64_t bytes = elems * dtype_size(b.dtype);
    bool size_ok = sixteen_only ? bytes % 16 == 0 : (bytes == 4 || bytes == 8 || bytes % 16 == 0);
    if (!multiple_of(base, elems) || !size_ok || bytes > max_bytes) continue;
    size_t first = out.size();
    for (size_t i = 0; i < out.size() && first == out.size(); ++i)
      if (out[i].load->buffer == e->buffer && out[i].elems == elems && equal(out[i].base, base)) first = i;
    out.push_back({e, base, elems, bytes, element, first});
  }
  return out;
}

}  // namespace kiln
