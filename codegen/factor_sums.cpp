#include "codegen/factor_sums.h"

#include <vector>

#include "codegen/ir_util.h"

namespace kiln {

namespace {

// `e` without its factors that do not use `v`, which go to `fixed`; the
// product's other subtrees are kept as they are (a norm's x * gain stays one
// product, the same expression for a gate's sum and an up's). Null where
// every factor is fixed.
Expr strip_fixed(const Expr& e, const std::string& v, std::vector<Expr>* fixed) {
  if (e->kind == ExprKind::Binary && e->binop == BinOp::Mul && e->type == ValType::f32) {
    Expr a = strip_fixed(e->args[0], v, fixed), b = strip_fixed(e->args[1], v, fixed);
    if (a == e->args[0] && b == e->args[1]) return e;
    return !a ? b : !b ? a : a * b;
  }
  if (uses_var(e, v)) return e;
  fixed->push_back(e);
  return nullptr;
}

class Factorer {
 public:
  explicit Factorer(Kernel& k) : k_(k) {}

  Stmt stmt(const Stmt& s) {
    if (s->kind == StmtKind::For) {
      if (Stmt f = factored(s)) return f;
    }
    if (s->kind != StmtKind::For && s->kind != StmtKind::If && s->kind != StmtKind::Block) return s;
    std::vector<Stmt> body;
    body.reserve(s->body.size());
    for (const Stmt& x : s->body) body.push_back(stmt(x));
    return with_body(s, std::move(body));
  }

 private:
  // The loop as {part = 0; for v { part += b(v) }; acc[0] += a * part}, or
  // null where it is not such a sum.
  Stmt factored(const Stmt& loop) {
    if (loop->loop != LoopKind::Unrolled || loop->extent->kind != ExprKind::Const || loop->extent->ival < 2 ||
        loop->body.size() != 1 || loop->body[0]->kind != StmtKind::Store)
      return nullptr;
    std::optional<Reduction> red = reduction_of(k_, loop);
    if (!red || red->op != BinOp::Add) return nullptr;
    const BufferDecl& acc = k_.buffers[size_t(red->acc)];
    if (acc.scope != MemScope::Local || acc.dtype != f32) return nullptr;
    const Stmt& st = loop->body[0];
    const Expr& v = st->value;
    if (v->kind != ExprKind::Binary || v->binop != BinOp::Add || v->type != ValType::f32) return nullptr;
    bool self_first = v->args[0]->kind == ExprKind::Load && v->args[0]->buffer == red->acc;
    const Expr& self = self_first ? v->args[0] : v->args[1];
    const Expr& term = self_first ? v->args[1] : v->args[0];
    if (self->kind != ExprKind::Load || self->buffer != red->acc || loads_buffer(term, red->acc)) return nullptr;
    std::vector<Expr> fixed;
    Expr moving = strip_fixed(term, loop->var, &fixed);
    if (fixed.empty() || !moving) return nullptr;
    Expr scale = fixed[0];
    for (size_t i = 1; i < fixed.size(); ++i) scale = scale * fixed[i];
    int part = int(k_.buffers.size());
    k_.buffers.push_back({"part", f32, MemScope::Local, 1});
    Expr here = load(part, ValType::f32, idx(0));
    return block({store(part, idx(0), const_f32(0.0)),
                  with_body(loop, {store(part, idx(0), here + moving)}),
                  store(red->acc, st->index, self + scale * here)});
  }

  Kernel& k_;
};

}  // namespace

Kernel factor_sums(const Kernel& k) {
  if (k.array_tile.any()) return k;
  Kernel out = k;
  Factorer f(out);
  out.body = f.stmt(k.body);
  return out;
}

}  // namespace kiln
