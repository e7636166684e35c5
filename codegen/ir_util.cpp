#include "codegen/ir_util.h"

#include <numeric>

#include "kiln/error.h"

namespace kiln {

Expr substitute(const Expr& e, const std::map<std::string, Expr>& with) {
  if (!e) return e;
  if (e->kind == ExprKind::Var) {
    auto it = with.find(e->name);
    return it == with.end() ? e : it->second;
  }
  if (e->args.empty()) return e;
  std::vector<Expr> args;
  bool changed = false;
  for (const Expr& a : e->args) {
    args.push_back(substitute(a, with));
    changed |= args.back() != a;
  }
  if (!changed) return e;
  auto n = std::make_shared<ExprNode>(*e);
  n->args = std::move(args);
  return n;
}

Stmt with_body(const Stmt& s, std::vector<Stmt> body) {
  auto n = std::make_shared<StmtNode>(*s);
  n->body = std::move(body);
  return n;
}

Stmt substitute(const Stmt& s, const std::map<std::string, Expr>& with) {
  auto n = std::make_shared<StmtNode>(*s);
  n->extent = substitute(s->extent, with);
  n->index = substitute(s->index, with);
  n->value = substitute(s->value, with);
  n->cond = substitute(s->cond, with);
  for (Stmt& b : n->body) b = substitute(b, with);
  return n;
}

bool uses_var(const Expr& e, const std::string& v) {
  if (!e) return false;
  if (e->kind == ExprKind::Var && e->name == v) return true;
  for (const Expr& a : e->args)
    if (uses_var(a, v)) return true;
  return false;
}

bool uses_var(const Stmt& s, const std::string& v) {
  if (uses_var(s->extent, v) || uses_var(s->index, v) || uses_var(s->value, v) || uses_var(s->cond, v)) return true;
  for (const Stmt& b : s->body)
    if (uses_var(b, v)) return true;
  return false;
}

Stmt map_loops(const Stmt& s, const std::string& v, const std::function<Stmt(const Stmt&)>& f, int* count) {
  std::vector<Stmt> body;
  for (const Stmt& b : s->body) body.push_back(map_loops(b, v, f, count));
  Stmt rebuilt = with_body(s, std::move(body));
  if (s->kind == StmtKind::For && s->var == v) {
    ++*count;
    return f(rebuilt);
  }
  return rebuilt;
}

void visit(const Stmt& s, const std::function<void(const Stmt&)>& f) {
  f(s);
  for (const Stmt& b : s->body) visit(b, f);
}

bool loads_buffer(const Expr& e, int buffer) {
  if (!e) return false;
  if (e->kind == ExprKind::Load && e->buffer == buffer) return true;
  for (const Expr& a : e->args)
    if (loads_buffer(a, buffer)) return true;
  return false;
}

namespace {

bool is_accumulation(const Kernel& k, const StmtNode& s, Reduction* r) {
  const BufferDecl& b = k.buffers[s.buffer];
  const Expr& v = s.value;
  bool zero = s.index->kind == ExprKind::Const && s.index->ival == 0;
  if (b.scope != MemScope::Local || b.size != 1 || !zero || v->kind != ExprKind::Binary) return false;
  if (v->binop != BinOp::Add && v->binop != BinOp::Max && v->binop != BinOp::Min) return false;
  const Expr &cur = v->args[0], &term = v->args[1];
  bool reads_acc = cur->kind == ExprKind::Load && cur->buffer == s.buffer && equal(cur->args[0], s.index);
  if (!reads_acc || loads_buffer(term, s.buffer)) return false;
  if (r->acc >= 0 && (r->acc != s.buffer || r->op != v->binop)) return false;
  r->acc = s.buffer;
  r->op = v->binop;
  return true;
}

}  // namespace

std::optional<Reduction> reduction_of(const Kernel& k, const Stmt& loop) {
  if (loop->kind != StmtKind::For) return std::nullopt;
  Reduction r;
  bool ok = true;
  visit(loop, [&](const Stmt& s) {
    if (s->kind == StmtKind::Store) ok &= is_accumulation(k, *s, &r);
    if (s->kind == StmtKind::AllReduce) ok = false;
  });
  if (!ok || r.acc < 0) return std::nullopt;
  // No extent or condition may read the accumulator either.
  visit(loop, [&](const Stmt& s) { ok &= !loads_buffer(s->extent, r.acc) && !loads_buffer(s->cond, r.acc); });
  return ok ? std::optional<Reduction>(r) : std::nullopt;
}

namespace {

// acc[0] = add(acc[0], mul(a, b)) as the loop's one statement: {acc, a, b}.
std::optional<HalfProduct> product_of(const Kernel& k, const Stmt& loop) {
  if (!loop || loop->kind != StmtKind::For || loop->body.size() != 1) return std::nullopt;
  const Stmt& st = loop->body[0];
  std::optional<Reduction> red = reduction_of(k, loop);
  if (!red || red->op != BinOp::Add || st->kind != StmtKind::Store) return std::nullopt;
  const Expr& v = st->value;  // add(acc[0], mul(a, b)), in either order
  if (v->kind != ExprKind::Binary || v->binop != BinOp::Add) return std::nullopt;
  const Expr& term = loads_buffer(v->args[0], red->acc) ? v->args[1] : v->args[0];
  const Expr& self = loads_buffer(v->args[0], red->acc) ? v->args[0] : v->args[1];
  if (self->kind != ExprKind::Load || self->buffer != red->acc || term->kind != ExprKind::Binary ||
      term->binop != BinOp::Mul)
    return std::nullopt;
  return HalfProduct{red->acc, term->args[0], term->args[1], f16};
}

}  // namespace

std::optional<HalfProduct> f32_product(const Kernel& k, const Stmt& loop) {
  std::optional<HalfProduct> p = product_of(k, loop);
  if (!p) return std::nullopt;
  auto f32_load = [&](const Expr& e) {
    if (e->kind != ExprKind::Load || e->buffer < 0 || e->buffer >= int(k.buffers.size())) return false;
    const BufferDecl& b = k.buffers[size_t(e->buffer)];
    return b.scope == MemScope::Global && b.dtype == f32 && !loads_buffer(e->args[0], e->buffer);
  };
  if (!f32_load(p->a) || !f32_load(p->b) || k.buffers[size_t(p->acc)].dtype != f32) return std::nullopt;
  p->dtype = f32;
  return p;
}

std::optional<HalfProduct> half_product(const Kernel& k, const Stmt& loop) {
  std::optional<HalfProduct> product = product_of(k, loop);
  if (!product) return std::nullopt;
  HalfProduct p = *product;
  // Whether every load in e reads a global buffer (an operand is evaluated
  // where its tile is copied, away from the thread's local values).
  std::function<bool(const Expr&)> global_loads_only = [&](const Expr& e) {
    if (e->kind == ExprKind::Load &&
        (e->buffer < 0 || e->buffer >= int(k.buffers.size()) || k.buffers[size_t(e->buffer)].scope != MemScope::Global))
      return false;
    for (const Expr& a : e->args)
      if (!global_loads_only(a)) return false;
    return true;
  };
  // The operand's storage dtype, or f32 where a tensor core cannot take it as it is.
  auto storage = [&](const Expr& e) -> DType {
    bool rounded = e->kind == ExprKind::Round && (e->round_to == f16 || e->round_to == bf16);
    const Expr& c = rounded ? e->args[0] : e;
    bool widened = c->kind == ExprKind::Cast && c->type == ValType::f32;
    if (rounded) return c->type == ValType::f32 && global_loads_only(c) ? e->round_to : f32;
    const ExprNode& l = widened ? *c->args[0] : *c;
    if (l.kind != ExprKind::Load || l.buffer < 0 || l.buffer >= int(k.buffers.size())) return f32;
    const BufferDecl& b = k.buffers[size_t(l.buffer)];
    if (b.scope != MemScope::Global || loads_buffer(l.args[0], l.buffer)) return f32;
    if (widened) return b.dtype == i8 || b.dtype == u8 ? b.dtype : f32;
    return b.dtype == f16 || b.dtype == bf16 ? b.dtype : f32;
  };
  DType da = storage(p.a), db = storage(p.b);
  if (da == f32 || db == f32) return std::nullopt;
  bool fa = da == f16 || da == bf16, fb = db == f16 || db == bf16;
  if (fa && fb && da != db) return std::nullopt;
  p.dtype = fa ? da : fb ? db : f16;
  return p;
}


int64_t known_factor(const Expr& e) {
  if (!e) return 1;
  if (e->kind == ExprKind::Const) return e->ival > 0 ? e->ival : 1;
  if (e->kind != ExprKind::Binary) return 1;
  int64_t a = known_factor(e->args[0]), b = known_factor(e->args[1]);
  switch (e->binop) {
    case BinOp::Mul: return a <= (int64_t(1) << 40) / b ? a * b : 1;
    case BinOp::Add: case BinOp::Sub: return std::gcd(a, b);
    default: return 1;
  }
}

}  // namespace kiln
