#include "codegen/schedule.h"

#include <set>
#include <sstream>
#include <stdexcept>

#include "codegen/ir_util.h"
#include "codegen/rfactor.h"
#include "kiln/error.h"

namespace kiln {

namespace {

const char* prim_name(Prim p) {
  switch (p) {
    case Prim::Split: return "split";
    case Prim::Reorder: return "reorder";
    case Prim::Fuse: return "fuse";
    case Prim::Hoist: return "hoist";
    case Prim::CacheRead: return "cache_read";
    case Prim::Unroll: return "unroll";
    case Prim::Vectorize: return "vectorize";
    case Prim::Parallel: return "parallel";
    case Prim::Serial: return "serial";
    case Prim::Bind: return "bind";
    case Prim::Spread: return "spread";
    case Prim::Rfactor: return "rfactor";
    case Prim::ArrayTile: return "array_tile";
    case Prim::Pack: return "pack";
  }
  return "?";
}

std::string join(const std::vector<std::string>& v, size_t from = 0, size_t to = std::string::npos) {
  std::string out;
  for (size_t i = from; i < v.size() && i < to; ++i) out += (i > from ? ", " : "") + v[i];
  return out;
}

std::string step_text(const Step& s) {
  std::string t = prim_name(s.prim);
  switch (s.prim) {
    case Prim::Split: return t + " " + s.loops[0] + " by " + std::to_string(s.factor) + " -> " + join(s.loops, 1);
    case Prim::Fuse: return t + " " + join(s.loops, 0, 2) + " -> " + s.loops[2];
    case Prim::Hoist: return t + " " + s.loops[0] + " above " + s.loops[1];
    case Prim::CacheRead: case Prim::Pack: return t + " " + s.loops[0] + " at " + s.loops[1] + " -> " + s.loops[2];
    case Prim::Bind: return t + " " + s.loops[0] + " " + std::string(loopkind_name(s.kind));
    case Prim::Rfactor: return t + " " + s.loops[0] + " by " + std::to_string(s.factor) + " -> " + join(s.loops, 1);
    case Prim::Spread: return t + " " + s.loops[0] + " over " + std::to_string(s.factor) + " -> " + s.loops[1];
    case Prim::ArrayTile: {
      std::string sizes;
      for (int64_t v : s.sizes) sizes += (sizes.empty() ? "" : ", ") + std::to_string(v);
      return t + " " + join(s.loops) + " by " + sizes + (s.factor ? " wgmma" : "") + (s.factor == 2 ? " tma" : "");
    }
    default: return t + " " + join(s.loops);
  }
}

[[noreturn]] void refuse(const Step& s, const std::string& why) {
  throw Error("schedule step '" + step_text(s) + "': " + why);
}

bool is_ident(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

// Every name a new loop variable must not take.
std::set<std::string> taken_names(const Kernel& k) {
  std::set<std::string> names(k.params.begin(), k.params.end());
  for (const BufferDecl& b : k.buffers) names.insert(b.name);
  visit(k.body, [&](const Stmt& s) {
    if (s->kind == StmtKind::For) names.insert(s->var);
  });
  return names;
}

void check_new_name(const Kernel& k, const Step& st, const std::string& name) {
  if (!is_ident(name)) refuse(st, "'" + name + "' is not a valid loop name");
  if (taken_names(k).count(name)) refuse(st, "the name '" + name + "' is already used in the kernel");
}

bool is_const(const Expr& e, int64_t* v = nullptr) {
  if (e->kind != ExprKind::Const || e->type != ValType::i64) return false;
  if (v) *v = e->ival;
  return true;
}

// Rebuilds the kernel body, giving each loop named `v` to f; at least one must exist.
Kernel on_loops(const Kernel& k, const Step& st, const std::string& v, const std::function<Stmt(const Stmt&)>& f) {
  int count = 0;
  Kernel out = k;
  out.body = map_loops(k.body, v, f, &count);
  if (count == 0) refuse(st, "the kernel has no loop named '" + v + "'");
  return out;
}

Kernel split(const Kernel& k, const Step& st) {
  const std::string &v = st.loops[0], &vo = st.loops[1], &vi = st.loops[2];
  int64_t f = st.factor;
  if (f < 1) refuse(st, "the factor must be >= 1");
  check_new_name(k, st, vo);
  check_new_name(k, st, vi);
  if (vo == vi) refuse(st, "the two new loops need different names");
  return on_loops(k, st, v, [&](const Stmt& loop) {
    int64_t e = 0;
    bool known = is_const(loop->extent, &e);
    bool exact = known_factor(loop->extent) % f == 0;
    Expr outer_extent = known ? idx((e + f - 1) / f) : exact ? loop->extent / idx(f) : (loop->extent + idx(f - 1)) / idx(f);
    Expr at = var(vo) * idx(f) + var(vi);
    std::vector<Stmt> body;
    for (const Stmt& b : loop->body) body.push_back(substitute(b, {{v, at}}));
    // A tail that does not divide runs under a guard.
    if (!exact) body = {if_then(binary(BinOp::CmpLt, at, loop->extent), std::move(body))};
    LoopKind outer_kind = loop->loop == LoopKind::Unrolled || loop->loop == LoopKind::Vectorized ? LoopKind::Serial : loop->loop;
    return for_loop(vo, outer_extent, outer_kind, {for_loop(vi, idx(f), LoopKind::Serial, std::move(body))});
  });
}

// The perfect nest starting at `s` made of exactly the loops in `names`.
bool perfect_chain(const Stmt& s, const std::set<std::string>& names, std::vector<Stmt>* chain) {
  Stmt cur = s;
  while (cur->kind == StmtKind::For && names.count(cur->var)) {
    chain->push_back(cur);
    if (chain->size() == names.size()) return true;
    if (cur->body.size() != 1) return false;
    cur = cur->body[0];
  }
  return false;
}

Stmt reorder_in(const Stmt& s, const Step& st, const std::set<std::string>& names, int* done) {
  if (s->kind == StmtKind::For && names.count(s->var)) {
    std::vector<Stmt> chain;
    if (!perfect_chain(s, names, &chain))
      refuse(st, "the loops are not a perfect nest (each must hold only the next)");
    std::map<std::string, Stmt> by_name;
    for (const Stmt& l : chain) {
      by_name[l->var] = l;
      for (const std::string& n : names)
        if (uses_var(l->extent, n)) refuse(st, "the extent of '" + l->var + "' depends on '" + n + "'");
    }
    for (size_t i = 1; i < st.loops.size(); ++i)
      if (by_name.at(st.loops[i])->loop == LoopKind::Parallel)
        refuse(st, "the parallel loop '" + st.loops[i] + "' must stay outermost");
    std::vector<Stmt> body = chain.back()->body;
    for (auto it = st.loops.rbegin(); it != st.loops.rend(); ++it) {
      const Stmt& l = by_name.at(*it);
      body = {for_loop(l->var, l->extent, l->loop, std::move(body))};
    }
    ++*done;
    return body[0];
  }
  std::vector<Stmt> body;
  for (const Stmt& b : s->body) body.push_back(reorder_in(b, st, names, done));
  return with_body(s, std::move(body));
}

Kernel reorder(const Kernel& k, const Step& st) {
  std::set<std::string> names(st.loops.begin(), st.loops.end());
  if (names.size() != st.loops.size() || names.size() < 2) refuse(st, "needs at least two different loops");
  int done = 0;
  Kernel out = k;
  out.body = reorder_in(k.body, st, names, &done);
  if (!done) refuse(st, "the kernel has no loop named '" + st.loops[0] + "'");
  return out;
}

Kernel fuse(const Kernel& k, const Step& st) {
  const std::string &a = st.loops[0], &b = st.loops[1], &f = st.loops[2];
  check_new_name(k, st, f);
  return on_loops(k, st, a, [&](const Stmt& outer) {
    if (outer->body.size() != 1 || outer->body[0]->kind != StmtKind::For || outer->body[0]->var != b)
      refuse(st, "'" + b + "' must be the only statement inside '" + a + "'");
    const Stmt& inner = outer->body[0];
    if (uses_var(inner->extent, a)) refuse(st, "the extent of '" + b + "' depends on '" + a + "'");
    std::map<std::string, Expr> at = {{a, var(f) / inner->extent}, {b, var(f) % inner->extent}};
    std::vector<Stmt> body;
    for (const Stmt& s : inner->body) body.push_back(substitute(s, at));
    bool special = outer->loop == LoopKind::Unrolled || outer->loop == LoopKind::Vectorized;
    return for_loop(f, outer->extent * inner->extent, special ? LoopKind::Serial : outer->loop, std::move(body));
  });
}

// Rewrites acc[0] to acc[t] for the accumulator buffers in `accs`.
Expr retile(const Expr& e, const std::set<int>& accs, const Expr& t) {
  if (!e || e->args.empty()) return e;
  auto n = std::make_shared<ExprNode>(*e);
  for (Expr& a : n->args) a = retile(a, accs, t);
  if (e->kind == ExprKind::Load && accs.count(e->buffer)) n->args[0] = t;
  return n;
}

Stmt retile(const Stmt& s, const std::set<int>& accs, const Expr& t) {
  auto n = std::make_shared<StmtNode>(*s);
  n->extent = retile(s->extent, accs, t);
  n->value = retile(s->value, accs, t);
  n->cond = retile(s->cond, accs, t);
  n->index = retile(s->index, accs, t);
  if (s->kind == StmtKind::Store && accs.count(s->buffer)) n->index = t;
  for (Stmt& b : n->body) b = retile(b, accs, t);
  return n;
}

// Local buffers that `s` stores to or loads from, with every index checked to be 0.
void local_accesses(const Kernel& k, const Stmt& s, std::set<int>* used, bool* only_zero) {
  std::function<void(const Expr&)> expr = [&](const Expr& e) {
    if (!e) return;
    if (e->kind == ExprKind::Load && k.buffers[e->buffer].scope == MemScope::Local) {
      used->insert(e->buffer);
      *only_zero &= is_const(e->args[0]) && e->args[0]->ival == 0;
    }
    for (const Expr& a : e->args) expr(a);
  };
  visit(s, [&](const Stmt& x) {
    expr(x->extent);
    expr(x->index);
    expr(x->value);
    expr(x->cond);
    if (x->kind == StmtKind::Store && k.buffers[x->buffer].scope == MemScope::Local) {
      used->insert(x->buffer);
      *only_zero &= is_const(x->index) && x->index->ival == 0;
    }
  });
}

Kernel hoist(const Kernel& k, const Step& st) {
  const std::string &r = st.loops[0], &above = st.loops[1];
  std::set<int> accs;
  int64_t tile = 1;
  Kernel out = on_loops(k, st, above, [&](const Stmt& top) {
    std::vector<Stmt> chain = {top};
    while (chain.back()->body.size() == 1 && chain.back()->body[0]->kind == StmtKind::For) chain.push_back(chain.back()->body[0]);
    std::vector<Stmt> inner = chain.back()->body;
    if (inner.size() == 1 && inner[0]->kind == StmtKind::Block) inner = inner[0]->body;
    size_t at = inner.size();
    for (size_t i = 0; i < inner.size(); ++i)
      if (inner[i]->kind == StmtKind::For && inner[i]->var == r) at = i;
    if (at == inner.size()) refuse(st, "'" + r + "' is not the reduction loop inside the nest at '" + above + "'");
    tile = 1;
    Expr t = idx(0);
    for (const Stmt& l : chain) {
      int64_t e = 0;
      if (!is_const(l->extent, &e)) refuse(st, "loop '" + l->var + "' needs a constant extent");
      if (uses_var(inner[at]->extent, l->var)) refuse(st, "the extent of '" + r + "' depends on '" + l->var + "'");
      tile *= e;
      t = t * idx(e) + var(l->var);
    }
    if (tile > 4096) refuse(st, "a tile of " + std::to_string(tile) + " accumulators is too large");
    bool only_zero = true;
    for (const Stmt& s : inner) local_accesses(k, s, &accs, &only_zero);
    if (accs.empty() || !only_zero) refuse(st, "the nest does not accumulate into scalar local buffers");
    for (int a : accs)
      if (k.buffers[a].size != 1) refuse(st, "accumulator '" + k.buffers[a].name + "' is already a tile");
    // Wraps statements in a copy of the tile's loops, accumulators indexed by t.
    auto tiled = [&](std::vector<Stmt> body) {
      for (Stmt& s : body) s = retile(s, accs, t);
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) body = {for_loop((*it)->var, (*it)->extent, (*it)->loop, std::move(body))};
      return body[0];
    };
    const Stmt& red = inner[at];
    std::vector<Stmt> before(inner.begin(), inner.begin() + at), after(inner.begin() + at + 1, inner.end());
    std::vector<Stmt> result;
    if (!before.empty()) result.push_back(tiled(before));
    result.push_back(for_loop(red->var, red->extent, red->loop, {tiled(red->body)}));
    if (!after.empty()) result.push_back(tiled(after));
    return block(std::move(result));
  });
  for (int a : accs) out.buffers[a].size = tile;
  return out;
}

// The loads of `buf` under `s` with the loops that enclose each (outermost
// first); refuses a load under a condition (its copy could read out of bounds).
void find_loads(const Stmt& s, int buf, const Step& st, std::vector<Stmt>& loops,
                std::vector<std::pair<Expr, std::vector<Stmt>>>* found) {
  std::function<void(const Expr&)> expr = [&](const Expr& e) {
    if (!e) return;
    if (e->kind == ExprKind::Load && e->buffer == buf) found->push_back({e->args[0], loops});
    for (const Expr& a : e->args) expr(a);
  };
  expr(s->extent);
  expr(s->index);
  expr(s->value);
  expr(s->cond);
  bool is_loop = s->kind == StmtKind::For;
  if (is_loop) loops.push_back(s);
  size_t before = found->size();
  for (const Stmt& b : s->body) find_loads(b, buf, st, loops, found);
  if (s->kind == StmtKind::If && found->size() != before) refuse(st, "a read under a condition cannot be copied ahead");
  if (is_loop) loops.pop_back();
}

// `e` (or every expression of `s`) with each subexpression `match` accepts
// replaced by `with`.
using Match = std::function<bool(const ExprNode&)>;
Expr replace_matching(const Expr& e, const Match& match, const Expr& with) {
  if (!e) return e;
  if (match(*e)) return with;
  if (e->args.empty()) return e;
  auto n = std::make_shared<ExprNode>(*e);
  for (Expr& a : n->args) a = replace_matching(a, match, with);
  return n;
}

Stmt replace_matching(const Stmt& s, const Match& match, const Expr& with) {
  auto n = std::make_shared<StmtNode>(*s);
  n->extent = replace_matching(s->extent, match, with);
  n->index = replace_matching(s->index, match, with);
  n->value = replace_matching(s->value, match, with);
  n->cond = replace_matching(s->cond, match, with);
  for (Stmt& b : n->body) b = replace_matching(b, match, with);
  return n;
}

// The copy into local buffer `copy_buf` of `value` at every point of `span`
// (loops, outermost first, of constant extents), its loops renamed
// `local`_var: the copy statement, and in *lin the index of the current
// point of `span` (under the original names) and in *size the points.
Stmt copy_over(const Kernel& k, const Step& st, const std::vector<Stmt>& span, const std::string& local, int copy_buf,
               const Expr& value, Expr* lin, int64_t* size) {
  *lin = idx(0);
  *size = 1;
  std::map<std::string, Expr> rename;
  for (const Stmt& l : span) {
    if (l->extent->kind != ExprKind::Const) refuse(st, "loop '" + l->var + "' needs a constant extent");
    *size *= l->extent->ival;
    *lin = *lin * l->extent + var(l->var);
    rename[l->var] = var(local + "_" + l->var);
  }
  Stmt copy = store(copy_buf, substitute(*lin, rename), substitute(value, rename));
  for (auto it = span.rbegin(); it != span.rend(); ++it) {
    check_new_name(k, st, local + "_" + (*it)->var);
    copy = for_loop(local + "_" + (*it)->var, (*it)->extent, LoopKind::Serial, {copy});
  }
  return copy;
}

Kernel cache_read(const Kernel& k, const Step& st) {
  const std::string &name = st.loops[0], &at = st.loops[1], &local = st.loops[2];
  int buf = -1;
  for (int i = 0; i < int(k.buffers.size()); ++i)
    if (k.buffers[i].name == name) buf = i;
  if (buf < 0 || k.buffers[buf].scope != MemScope::Global) refuse(st, "the kernel has no global buffer '" + name + "'");
  check_new_name(k, st, local);
  int copy_buf = int(k.buffers.size());
  int64_t size = 1;
  Kernel out = on_loops(k, st, at, [&](const Stmt& loop) {
    std::vector<Stmt> stack;
    std::vector<std::pair<Expr, std::vector<Stmt>>> loads;
    for (const Stmt& b : loop->body) find_loads(b, buf, st, stack, &loads);
    if (loads.empty()) refuse(st, "loop '" + at + "' does not read '" + name + "'");
    const Expr& index = loads[0].first;
    // The loops inside `at` that the index uses, outermost first, span the copy.
    std::vector<Stmt> span;
    for (const Stmt& l : loads[0].second)
      if (uses_var(index, l->var)) span.push_back(l);
    for (const auto& [other, loops] : loads)
      if (!equal(other, index)) refuse(st, "'" + name + "' is read at more than one index inside '" + at + "'");
    Expr lin;
    Stmt copy = copy_over(k, st, span, local, copy_buf, load(buf, valtype_of(k.buffers[buf].dtype), index), &lin, &size);
    if (size * dtype_size(k.buffers[buf].dtype) > (int64_t(4) << 20)) refuse(st, "the copy would exceed 4 MiB");
    Expr read = load(copy_buf, valtype_of(k.buffers[buf].dtype), lin);
    std::vector<Stmt> body = {copy};
    auto reads_buf = [&](const ExprNode& e) { return e.kind == ExprKind::Load && e.buffer == buf; };
    for (const Stmt& b : loop->body) body.push_back(replace_matching(b, reads_buf, read));
    return for_loop(loop->var, loop->extent, loop->loop, std::move(body));
  });
  BufferDecl b;
  b.name = local;
  b.dtype = k.buffers[buf].dtype;
  b.scope = MemScope::Local;
  b.size = size;
  out.buffers.push_back(b);
  return out;
}

// The reduction's column operand, computed once per `at` into a local buffer:
// inside `at`, the reduction loop r (under loops of the row blocks, which the
// operand must not use) holds one store acc[...] = add(acc[...], mul(x, y))
// (under loops of the tile); of x and y, the one that uses r, none of the
// loops enclosing r inside `at`, and no buffer the kernel writes is the
// operand. The loops it uses from r inward (constant extents) span the copy,
// placed first in `at`'s body, as cache_read's is.
Kernel pack(const Kernel& k, const Step& st) {
  const std::string &r = st.loops[0], &at = st.loops[1], &local = st.loops[2];
  check_new_name(k, st, local);
  int copy_buf = int(k.buffers.size());
  int64_t size = 1;
  std::set<int> written;
  visit(k.body, [&](const Stmt& s) {
    if (s->kind == StmtKind::Store) written.insert(s->buffer);
  });
  Kernel out = on_loops(k, st, at, [&](const Stmt& loop) {
    // The path to r, then the stores under r with the loops around each.
    std::vector<Stmt> around_r, inner;
    Stmt red;
    std::function<bool(const Stmt&)> to_r = [&](const Stmt& s) {
      if (s->kind == StmtKind::For && s->var == r) return red = s, true;
      if (s->kind == StmtKind::If) return false;
      bool is_loop = s->kind == StmtKind::For;
      if (is_loop) around_r.push_back(s);
      for (const Stmt& b : s->body)
        if (to_r(b)) return true;
      if (is_loop) around_r.pop_back();
      return false;
    };
    for (const Stmt& b : loop->body)
      if (to_r(b)) break;
    if (!red) refuse(st, "loop '" + at + "' holds no loop '" + r + "' outside conditions");
    const StmtNode* update = nullptr;
    std::vector<Stmt> stack;
    std::function<void(const Stmt&)> find = [&](const Stmt& s) {
      if (s->kind == StmtKind::If) refuse(st, "the reduction's body has a condition");
      if (s->kind == StmtKind::Store) {
        if (update) refuse(st, "the reduction's body has more than one store");
        update = s.get();
        inner = stack;
        return;
      }
      if (s->kind == StmtKind::For) stack.push_back(s);
      for (const Stmt& b : s->body) find(b);
      if (s->kind == StmtKind::For) stack.pop_back();
    };
    for (const Stmt& b : red->body) find(b);
    const Expr& v = update ? update->value : nullptr;
    if (!v || v->kind != ExprKind::Binary || v->binop != BinOp::Add || v->args.size() != 2 ||
        v->args[0]->kind != ExprKind::Load || v->args[0]->buffer != update->buffer || v->args[1]->kind != ExprKind::Binary ||
        v->args[1]->binop != BinOp::Mul)
      refuse(st, "the reduction's store is not acc = add(acc, mul(a, b))");
    auto qualifies = [&](const Expr& e) {
      if (!uses_var(e, r)) return false;
      for (const Stmt& l : around_r)
        if (uses_var(e, l->var)) return false;
      bool ok = true;
      std::function<void(const Expr&)> reads = [&](const Expr& x) {
        if (x->kind == ExprKind::Load && (written.count(x->buffer) || k.buffers[x->buffer].scope != MemScope::Global))
          ok = false;
        for (const Expr& a : x->args) reads(a);
      };
      reads(e);
      return ok;
    };
    const Expr &x = v->args[1]->args[0], &y = v->args[1]->args[1];
    if (qualifies(x) == qualifies(y)) refuse(st, "not exactly one factor is a column operand");
    const Expr& operand = qualifies(x) ? x : y;
    if (operand->type != ValType::f32) refuse(st, "the operand is not f32");
    std::vector<Stmt> span{red};
    for (const Stmt& l : inner)
      if (uses_var(operand, l->var)) span.push_back(l);
    Expr lin;
    Stmt copy = copy_over(k, st, span, local, copy_buf, operand, &lin, &size);
    if (size * 4 > (int64_t(4) << 20)) refuse(st, "the copy would exceed 4 MiB");
    Expr read = load(copy_buf, ValType::f32, lin);
    std::vector<Stmt> body = {copy};
    const ExprNode* target = operand.get();
    for (const Stmt& b : loop->body)
      body.push_back(replace_matching(b, [&](const ExprNode& e) { return &e == target; }, read));
    return for_loop(loop->var, loop->extent, loop->loop, std::move(body));
  });
  BufferDecl b;
  b.name = local;
  b.dtype = f32;
  b.scope = MemScope::Local;
  b.size = size;
  out.buffers.push_back(b);
  return out;
}

Kernel set_kind(const Kernel& k, const Step& st, LoopKind kind) {
  const std::string& v = st.loops[0];
  bool top_level = false;
  for (const Stmt& s : k.body->body) top_level |= s->kind == StmtKind::For && s->var == v;
  return on_loops(k, st, v, [&](const Stmt& loop) {
    int64_t e = 0;
    if (kind == LoopKind::Unrolled || kind == LoopKind::Vectorized) {
      if (!is_const(loop->extent, &e)) refuse(st, "needs a constant extent");
      if (e > (kind == LoopKind::Unrolled ? 1024 : 64)) refuse(st, "extent " + std::to_string(e) + " is too large");
    }
    if (kind == LoopKind::Vectorized || kind == LoopKind::Parallel) {
      visit(loop, [&](const Stmt& s) {
        if (kind == LoopKind::Vectorized && s != loop && (s->kind == StmtKind::For || s->kind == StmtKind::If))
          refuse(st, "only an innermost loop without conditions can be vectorized");
        bool local = s->kind == StmtKind::Store && k.buffers[s->buffer].scope == MemScope::Local;
        if (s->kind == StmtKind::Store && !uses_var(s->index, v) && !(kind == LoopKind::Parallel && local))
          refuse(st, "the store to '" + k.buffers[s->buffer].name + "' does not depend on '" + v +
                         "' (a loop-carried dependence)");
      });
    }
    if (kind == LoopKind::Parallel && (!top_level || k.body->body.size() != 1))
      refuse(st, "only the kernel's one top-level loop can be parallel");
    return for_loop(loop->var, loop->extent, kind, loop->body);
  });
}

// How many loads and stores of `buf` there are under `s`.
int accesses(const Stmt& s, int buf) {
  std::function<int(const Expr&)> in = [&](const Expr& e) {
    if (!e) return 0;
    int n = e->kind == ExprKind::Load && e->buffer == buf;
    for (const Expr& a : e->args) n += in(a);
    return n;
  };
  int n = 0;
  visit(s, [&](const Stmt& x) {
    n += in(x->extent) + in(x->index) + in(x->value) + in(x->cond);
    n += (x->kind == StmtKind::Store || x->kind == StmtKind::AllReduce) && x->buffer == buf;
  });
  return n;
}

bool has_stmt(const Stmt& s, StmtKind kind) {
  bool found = false;
  visit(s, [&](const Stmt& x) { found |= x->kind == kind; });
  return found;
}

bool is_zero(const Expr& e) { return e && e->kind == ExprKind::Const && e->ival == 0 && e->fval == 0; }

// Rewrites the body of a spread loop for T threads of loop t (see schedule.h).
class Spreader {
 public:
  Spreader(const Kernel& k, const Step& st, const Stmt& body) : k_(k), st_(st), t_(st.loops[1]), n_(st.factor), body_(body) {}

  std::vector<Stmt> run() {
    check_no_races();
    std::vector<Stmt> out;
    for (const Stmt& s : body_->body) spread(s, &out);
    return out;
  }

 private:
  // Threads share no ordering: no statement may read a global buffer another writes.
  void check_no_races() {
    std::set<int> stored;
    visit(body_, [&](const Stmt& s) {
      if (s->kind == StmtKind::Store && k_.buffers[s->buffer].scope == MemScope::Global) stored.insert(s->buffer);
    });
    visit(body_, [&](const Stmt& s) {
      for (int b : stored)
        if (loads_buffer(s->extent, b) || loads_buffer(s->index, b) || loads_buffer(s->value, b) || loads_buffer(s->cond, b))
          refuse(st_, "the body reads global buffer '" + k_.buffers[b].name + "', which it writes");
    });
  }

  void spread(const Stmt& s, std::vector<Stmt>* out) {
    switch (s->kind) {
      case StmtKind::Block: {
        std::vector<Stmt> inner;
        for (const Stmt& b : s->body) spread(b, &inner);
        return out->push_back(block(std::move(inner)));
      }
      case StmtKind::For: return spread_loop(s, out);
      case StmtKind::Store:
        if (k_.buffers[s->buffer].scope == MemScope::Local) last_[s->buffer] = s->value;
        return out->push_back(first_thread_only(s));
      case StmtKind::If:
        if (has_stmt(s, StmtKind::For)) refuse(st_, "a loop under a condition cannot be spread");
        visit(s, [&](const Stmt& x) {
          if (x->kind == StmtKind::Store) last_[x->buffer] = nullptr;
        });
        return out->push_back(first_thread_only(s));
      case StmtKind::AllReduce: refuse(st_, "the body is already spread over threads");
    }
  }

  // Every thread holds the same values outside loops: one of them writes global memory.
  Stmt first_thread_only(const Stmt& s) {
    bool global = false;
    visit(s, [&](const Stmt& x) { global |= x->kind == StmtKind::Store && k_.buffers[x->buffer].scope == MemScope::Global; });
    return global ? if_then(binary(BinOp::CmpEq, var(t_), idx(0)), {s}) : s;
  }

  void spread_loop(const Stmt& loop, std::vector<Stmt>* out) {
    if (uses_var(loop, t_)) refuse(st_, "loop '" + loop->var + "' already uses '" + t_ + "'");
    std::optional<Reduction> r = reduction_of(k_, loop);
    if (!r) check_independent(loop);
    out->push_back(strided(loop));
    if (!r) return;
    // Every thread starts from the same value: for a sum only zero is counted once.
    if (r->op == BinOp::Add && !is_zero(last_[r->acc]))
      refuse(st_, "the sum into '" + k_.buffers[r->acc].name + "' does not start from 0 before loop '" + loop->var + "'");
    out->push_back(all_reduce(r->acc, r->op, t_));
    last_[r->acc] = nullptr;
  }

  // Iterations of a loop that is not a reduction run on different threads:
  // each must write its own global elements and keep its local buffers to itself.
  void check_independent(const Stmt& loop) {
    visit(loop, [&](const Stmt& s) {
      if (s->kind != StmtKind::Store) return;
      const BufferDecl& b = k_.buffers[s->buffer];
      if (b.scope == MemScope::Global && !uses_var(s->index, loop->var))
        refuse(st_, "the store to '" + b.name + "' in loop '" + loop->var + "' does not depend on '" + loop->var + "'");
      if (b.scope != MemScope::Global && accesses(body_, s->buffer) != accesses(loop, s->buffer))
        refuse(st_, "buffer '" + b.name + "' carries values out of loop '" + loop->var + "' across threads");
    });
  }

  // for v in ceil(E/T) { if (v*T + t < E) { body[v := v*T + t] } }
  Stmt strided(const Stmt& loop) {
    const std::string& v = loop->var;
    int64_t e = 0;
    bool exact = is_const(loop->extent, &e) && e % n_ == 0;
    Expr extent = is_const(loop->extent, &e) ? idx((e + n_ - 1) / n_) : (loop->extent + idx(n_ - 1)) / idx(n_);
    Expr at = var(v) * idx(n_) + var(t_);
    std::vector<Stmt> body;
    for (const Stmt& b : loop->body) body.push_back(substitute(b, {{v, at}}));
    if (!exact) body = {if_then(binary(BinOp::CmpLt, at, loop->extent), std::move(body))};
    return for_loop(v, extent, LoopKind::Serial, std::move(body));
  }

  const Kernel& k_;
  const Step& st_;
  const std::string& t_;
  int64_t n_;
  Stmt body_;
  std::map<int, Expr> last_;  // the value last stored to each local buffer outside loops; null if unknown
};

Kernel spread(const Kernel& k, const Step& st) {
  if (st.factor < 1 || st.factor > 1024) refuse(st, "the thread count must be in 1..1024");
  check_new_name(k, st, st.loops[1]);
  return on_loops(k, st, st.loops[0], [&](const Stmt& loop) {
    std::vector<Stmt> body = Spreader(k, st, block(loop->body)).run();
    return for_loop(loop->var, loop->extent, loop->loop, {for_loop(st.loops[1], idx(st.factor), LoopKind::Serial, std::move(body))});
  });
}

// Only records the tile on the kernel: the backend's emitter does the tiling.
Kernel array_tile(const Kernel& k, const Step& st) {
  if (st.sizes.size() != 3 && st.sizes.size() != 4)
    refuse(st, "takes three tile sizes (output rows, reduction, output columns) and optionally the stages");
  for (int64_t v : st.sizes)
    if (v < 0 || v > (int64_t(1) << 24)) refuse(st, "tile sizes must be in 0..16777216 (0: the backend's choice)");
  bool found = false;
  visit(k.body, [&](const Stmt& s) {
    found |= s->kind == StmtKind::For && s->var == st.loops[0] && reduction_of(k, s).has_value();
  });
  if (!found) refuse(st, "the kernel has no reduction loop named '" + st.loops[0] + "'");
  Kernel out = k;
  out.array_tile = {st.sizes[0], st.sizes[1], st.sizes[2], st.sizes.size() == 4 ? st.sizes[3] : 0, st.factor >= 1,
                    st.factor == 2};
  return out;
}

}  // namespace

Schedule& Schedule::split(std::string loop, int64_t factor, std::string outer, std::string inner) {
  steps.push_back({Prim::Split, {std::move(loop), std::move(outer), std::move(inner)}, factor});
  return *this;
}
Schedule& Schedule::reorder(std::vector<std::string> loops) {
  steps.push_back({Prim::Reorder, std::move(loops)});
  return *this;
}
Schedule& Schedule::fuse(std::string outer, std::string inner, std::string fused) {
  steps.push_back({Prim::Fuse, {std::move(outer), std::move(inner), std::move(fused)}});
  return *this;
}
Schedule& Schedule::hoist(std::string reduction, std::string above) {
  steps.push_back({Prim::Hoist, {std::move(reduction), std::move(above)}});
  return *this;
}
Schedule& Schedule::rfactor(std::string reduction, int64_t factor, std::string outer, std::string inner) {
  steps.push_back({Prim::Rfactor, {std::move(reduction), std::move(outer), std::move(inner)}, factor});
  return *this;
}
Schedule& Schedule::cache_read(std::string buffer, std::string at, std::string local) {
  steps.push_back({Prim::CacheRead, {std::move(buffer), std::move(at), std::move(local)}});
  return *this;
}
Schedule& Schedule::pack(std::string reduction, std::string at, std::string local) {
  steps.push_back({Prim::Pack, {std::move(reduction), std::move(at), std::move(local)}});
  return *this;
}
Schedule& Schedule::unroll(std::string loop) {
  steps.push_back({Prim::Unroll, {std::move(loop)}});
  return *this;
}
Schedule& Schedule::vectorize(std::string loop) {
  steps.push_back({Prim::Vectorize, {std::move(loop)}});
  return *this;
}
Schedule& Schedule::parallel(std::string loop) {
  steps.push_back({Prim::Parallel, {std::move(loop)}});
  return *this;
}
Schedule& Schedule::serial(std::string loop) {
  steps.push_back({Prim::Serial, {std::move(loop)}});
  return *this;
}
Schedule& Schedule::spread(std::string loop, int64_t threads, std::string thread) {
  steps.push_back({Prim::Spread, {std::move(loop), std::move(thread)}, threads});
  return *this;
}
Schedule& Schedule::bind(std::string loop, LoopKind kind) {
  steps.push_back({Prim::Bind, {std::move(loop)}, 0, kind});
  return *this;
}
// The step's factor is 1 for warpgroup tiles (printed as a trailing `wgmma`),
// 2 for warpgroup tiles fed by the Tensor Memory Accelerator (`wgmma tma`).
Schedule& Schedule::array_tile(std::string reduction, int64_t m, int64_t k, int64_t n, int64_t stages, bool warpgroup,
                               bool tma) {
  std::vector<int64_t> sizes = {m, k, n};
  if (stages) sizes.push_back(stages);
  steps.push_back({Prim::ArrayTile, {std::move(reduction)}, warpgroup ? (tma ? 2 : 1) : 0, LoopKind::Serial,
                   std::move(sizes)});
  return *this;
}

std::string print(const Schedule& s) {
  std::string out;
  for (const Step& st : s.steps) out += step_text(st) + "\n";
  return out;
}

uint64_t hash(const Schedule& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : print(s)) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

// Unrolled loops multiply the code: nested ones are bounded together so that a
// schedule cannot make a kernel that takes minutes to compile.
int64_t unrolled_copies(const Stmt& s) {
  int64_t inner = 1;
  for (const Stmt& b : s->body) inner = std::max(inner, unrolled_copies(b));
  bool copies = s->kind == StmtKind::For && s->loop == LoopKind::Unrolled;
  return copies && is_const(s->extent) ? inner * s->extent->ival : inner;
}

Kernel apply_step(const Kernel& k, const Step& st);

// A vectorized loop stays innermost, with no condition inside, whatever step
// moves loops around it.
void check_vectorized_innermost(const Stmt& s, const Step& st) {
  if (s->kind == StmtKind::For && s->loop == LoopKind::Vectorized)
    visit(s, [&](const Stmt& in) {
      if (in != s && (in->kind == StmtKind::For || in->kind == StmtKind::If))
        refuse(st, "vectorized loop '" + s->var + "' would no longer be innermost");
    });
  for (const Stmt& b : s->body) check_vectorized_innermost(b, st);
}

Kernel apply(const Kernel& k, const Step& st) {
  Kernel out = apply_step(k, st);
  if (unrolled_copies(out.body) > 256) refuse(st, "nested unrolled loops would copy the body over 256 times");
  check_vectorized_innermost(out.body, st);
  return out;
}

Kernel apply_step(const Kernel& k, const Step& st) {
  size_t want = st.prim == Prim::Split || st.prim == Prim::Fuse || st.prim == Prim::CacheRead || st.prim == Prim::Rfactor ||
                        st.prim == Prim::Pack
                    ? 3
                : st.prim == Prim::Hoist || st.prim == Prim::Spread ? 2
                : st.prim == Prim::Reorder ? 0 : 1;
  if (want && st.loops.size() != want) refuse(st, "takes " + std::to_string(want) + " loop names");
  switch (st.prim) {
    case Prim::Split: return split(k, st);
    case Prim::Reorder: return reorder(k, st);
    case Prim::Fuse: return fuse(k, st);
    case Prim::Hoist: return hoist(k, st);
    case Prim::CacheRead: return cache_read(k, st);
    case Prim::Pack: return pack(k, st);
    case Prim::Unroll: return set_kind(k, st, LoopKind::Unrolled);
    case Prim::Vectorize: return set_kind(k, st, LoopKind::Vectorized);
    case Prim::Parallel: return set_kind(k, st, LoopKind::Parallel);
    case Prim::Serial: return set_kind(k, st, LoopKind::Serial);
    case Prim::Spread: return spread(k, st);
    case Prim::Rfactor: return rfactor(k, st);
    case Prim::ArrayTile: return array_tile(k, st);
    case Prim::Bind:
      if (st.kind != LoopKind::GpuBlock && st.kind != LoopKind::GpuThread) refuse(st, "binds to gpu_block or gpu_thread");
      return set_kind(k, st, st.kind);
  }
  refuse(st, "unknown primitive");
}

Kernel apply(const Kernel& k, const Schedule& s) {
  Kernel out = k;
  for (const Step& st : s.steps) out = apply(out, st);
  return out;
}

namespace {

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
    out.push_back(b == std::string::npos ? "" : item.substr(b, e - b + 1));
  }
  return out;
}

Step parse_step(const std::string& line) {
  std::stringstream ss(line);
  std::string word;
  ss >> word;
  Step st;
  bool found = false;
  for (Prim p : {Prim::Split, Prim::Reorder, Prim::Fuse, Prim::Hoist, Prim::CacheRead, Prim::Unroll, Prim::Vectorize, Prim::Parallel,
                 Prim::Serial, Prim::Bind, Prim::Spread, Prim::Rfactor, Prim::ArrayTile, Prim::Pack})
    if (word == prim_name(p)) {
      st.prim = p;
      found = true;
    }
  if (!found) throw Error("unknown primitive '" + word + "'");
  std::string rest;
  std::getline(ss, rest);
  auto expect = [&](bool ok, const char* form) {
    if (!ok) throw Error(std::string("expected '") + form + "'");
  };
  std::string a, b, c, d;
  std::stringstream rs(rest);
  switch (st.prim) {
    case Prim::Split: case Prim::Rfactor: {
      rs >> a >> b >> st.factor >> c;
      std::string names;
      std::getline(rs, names);
      auto outs = split_names(names);
      expect(b == "by" && c == "->" && !rs.bad() && outs.size() == 2 && st.factor > 0, "LOOP by N -> OUTER, INNER");
      st.loops = {a, outs[0], outs[1]};
      break;
    }
    case Prim::Fuse: {
      size_t arrow = rest.find("->");
      expect(arrow != std::string::npos, "fuse OUTER, INNER -> FUSED");
      auto ins = split_names(rest.substr(0, arrow));
      auto outs = split_names(rest.substr(arrow + 2));
      expect(ins.size() == 2 && outs.size() == 1, "fuse OUTER, INNER -> FUSED");
      st.loops = {ins[0], ins[1], outs[0]};
      break;
    }
    case Prim::Hoist:
      rs >> a >> b >> c;
      expect(b == "above" && !c.empty() && !(rs >> d), "hoist REDUCTION above LOOP");
      st.loops = {a, c};
      break;
    case Prim::CacheRead: case Prim::Pack: {
      std::string arrow, local, extra;
      rs >> a >> b >> c >> arrow >> local;
      expect(b == "at" && arrow == "->" && !local.empty() && !(rs >> extra),
             st.prim == Prim::Pack ? "pack REDUCTION at LOOP -> LOCAL" : "cache_read BUFFER at LOOP -> LOCAL");
      st.loops = {a, c, local};
      break;
    }
    case Prim::Spread: {
      std::string over, arrow, extra;
      rs >> a >> over >> st.factor >> arrow >> b;
      expect(over == "over" && arrow == "->" && !rs.fail() && st.factor > 0 && !(rs >> extra), "spread LOOP over N -> THREAD");
      st.loops = {a, b};
      break;
    }
    case Prim::ArrayTile: {
      rs >> a >> b;
      std::string sizes;
      std::getline(rs, sizes);
      auto strip = [&](const std::string& unit) {
        while (!sizes.empty() && std::isspace(static_cast<unsigned char>(sizes.back()))) sizes.pop_back();
        if (sizes.size() <= unit.size() || sizes.compare(sizes.size() - unit.size(), unit.size(), unit) != 0)
          return false;
        sizes.resize(sizes.size() - unit.size());
        return true;
      };
      bool tma = strip(" tma");
      if (strip(" wgmma")) st.factor = tma ? 2 : 1;
      else expect(!tma, "array_tile REDUCTION by M, K, N[, STAGES][ wgmma[ tma]]");
      for (const std::string& v : split_names(sizes)) {
        size_t used = 0;
        try {
          st.sizes.push_back(std::stoll(v, &used));
        } catch (const std::logic_error&) {
          used = std::string::npos;
        }
        expect(used == v.size(), "array_tile REDUCTION by M, K, N[, STAGES][ wgmma[ tma]]");
      }
      expect(b == "by" && (st.sizes.size() == 3 || st.sizes.size() == 4), "array_tile REDUCTION by M, K, N[, STAGES][ wgmma[ tma]]");
      st.loops = {a};
      break;
    }
    case Prim::Bind:
      rs >> a >> b;
      expect(!b.empty() && !(rs >> d), "bind LOOP gpu_block|gpu_thread");
      st.kind = b == "gpu_block" ? LoopKind::GpuBlock : b == "gpu_thread" ? LoopKind::GpuThread : LoopKind::Serial;
      expect(st.kind != LoopKind::Serial, "bind LOOP gpu_block|gpu_thread");
      st.loops = {a};
      break;
    default:
      st.loops = split_names(rest);
      expect(!st.loops.empty(), "a loop name");
  }
  for (const std::string& n : st.loops) expect(is_ident(n), "loop names made of letters, digits and _");
  return st;
}

}  // namespace

Schedule parse_schedule(std::string_view text) {
  Schedule s;
  std::stringstream ss{std::string(text)};
  std::string line;
  for (int no = 1; std::getline(ss, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      s.steps.push_back(parse_step(line));
    } catch (const Error& e) {
      throw Error("schedule text: line " + std::to_string(no) + ": " + e.what());
    }
  }
  return s;
}

}  // namespace kiln
