#include "codegen/rfactor.h"

#include <limits>
#include <string>
#include <vector>

#include "codegen/ir_util.h"
#include "kiln/error.h"

namespace kiln {

namespace {

[[noreturn]] void refuse(const Step& st, const std::string& why) {
  throw Error("schedule step 'rfactor " + st.loops[0] + " by " + std::to_string(st.factor) + "': " + why);
}

bool reads_buffer(const Expr& e, int buf) {
  if (!e) return false;
  if (e->kind == ExprKind::Load && e->buffer == buf) return true;
  for (const Expr& a : e->args)
    if (reads_buffer(a, buf)) return true;
  return false;
}

Expr identity(BinOp op, ValType t) {
  bool f = t == ValType::f32;
  double inf = std::numeric_limits<double>::infinity();
  switch (op) {
    case BinOp::Add: return f ? const_f32(0) : const_int(t, 0);
    case BinOp::Max: return f ? const_f32(-inf) : const_int(t, std::numeric_limits<int32_t>::min());
    default: return f ? const_f32(inf) : const_int(t, std::numeric_limits<int32_t>::max());
  }
}

}  // namespace

// for r in E { acc[0] = op(acc[0], term(r)) } becomes
//   for ri in F { acc_rf[ri] = identity }
//   for ro in E/F { for ri in F { acc_rf[ri] = op(acc_rf[ri], term(ro*F + ri)) } }
//   for ri_fold in F { acc[0] = op(acc[0], acc_rf[ri_fold]) }
// and where F is a power of two the partials fold as a tree, halving each
// round (a chain of F dependent adds per output point took as long as the
// reduction itself in a CPU GEMV row of 768):
//   for ri_fold in F/2 { acc_rf[ri_fold] = op(acc_rf[ri_fold], acc_rf[ri_fold + F/2]) }
//   for ri_fold_1 in F/4 { ... }  ...  acc[0] = op(acc[0], acc_rf[0])
Kernel rfactor(const Kernel& k, const Step& st) {
  const std::string &r = st.loops[0], &ro = st.loops[1], &ri = st.loops[2];
  int64_t f = st.factor;
  if (f < 2) refuse(st, "the factor must be >= 2");
  std::string fold = ri + "_fold";
  int acc = -1, partial = int(k.buffers.size());
  int found = 0;
  Kernel out = k;
  out.body = map_loops(k.body, r, [&](const Stmt& loop) {
    if (loop->extent->kind != ExprKind::Const || loop->extent->ival % f != 0)
      refuse(st, "the extent of '" + r + "' must be a constant multiple of " + std::to_string(f));
    if (loop->body.size() != 1 || loop->body[0]->kind != StmtKind::Store) refuse(st, "'" + r + "' must hold one accumulation");
    const Stmt& s = loop->body[0];
    const BufferDecl& b = k.buffers[s->buffer];
    const Expr& v = s->value;
    bool shape = b.scope == MemScope::Local && b.size == 1 && s->index->kind == ExprKind::Const &&
                 v->kind == ExprKind::Binary && v->args[0]->kind == ExprKind::Load && v->args[0]->buffer == s->buffer &&
                 !reads_buffer(v->args[1], s->buffer);
    if (!shape) refuse(st, "'" + r + "' does not accumulate into a scalar local buffer");
    if (v->binop != BinOp::Add && v->binop != BinOp::Max && v->binop != BinOp::Min)
      refuse(st, "only add, max and min reductions can be reassociated");
    if (acc >= 0 && acc != s->buffer) refuse(st, "loops named '" + r + "' accumulate into different buffers");
    acc = s->buffer;
    ++found;
    ValType t = v->type;
    Expr lane = load(partial, t, var(ri));
    Expr term = substitute(v->args[1], {{r, var(ro) * idx(f) + var(ri)}});
    std::vector<Stmt> body = {
        for_loop(ri, idx(f), LoopKind::Serial, {store(partial, var(ri), identity(v->binop, t))}),
        for_loop(ro, idx(loop->extent->ival / f), loop->loop,
                 {for_loop(ri, idx(f), LoopKind::Serial, {store(partial, var(ri), binary(v->binop, lane, term))})}),
    };
    if ((f & (f - 1)) != 0) {
      body.push_back(for_loop(fold, idx(f), LoopKind::Serial,
                              {store(acc, idx(0), binary(v->binop, load(acc, t, idx(0)), load(partial, t, var(fold))))}));
    } else {
      int round = 0;
      for (int64_t half = f / 2; half >= 1; half /= 2, ++round) {
        std::string h = round ? fold + "_" + std::to_string(round) : fold;
        Expr other = load(partial, t, var(h) + idx(half));
        body.push_back(for_loop(h, idx(half), LoopKind::Serial,
                                {store(partial, var(h), binary(v->binop, load(partial, t, var(h)), other))}));
      }
      body.push_back(store(acc, idx(0), binary(v->binop, load(acc, t, idx(0)), load(partial, t, idx(0)))));
    }
    return block(body);
  }, &found);
  if (acc < 0) refuse(st, "the kernel has no loop named '" + r + "'");
  BufferDecl b = k.buffers[acc];
  b.name = k.buffers[acc].name + "_rf";
  for (const BufferDecl& o : k.buffers)
    if (o.name == b.name) refuse(st, "the name '" + b.name + "' is already used");
  b.size = f;
  out.buffers.push_back(b);
  return out;
}

}  // namespace kiln
