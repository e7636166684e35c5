#include "codegen/ir_util.h"

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

}  // namespace kiln
