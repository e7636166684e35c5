#include "codegen/emit/gpu_nest.h"

#include <string>
#include <utility>

#include "kiln/error.h"

namespace kiln {

namespace {

[[noreturn]] void fail(const Kernel& k, std::string_view backend, const std::string& what) {
  throw Error(std::string(backend) + ": kernel '" + k.name + "': " + what);
}

[[noreturn]] void not_scheduled(const Kernel& k, std::string_view backend, const std::string& why) {
  fail(k, backend, "not scheduled for the GPU: " + why);
}

bool is_bound(const Stmt& s) {
  return s && s->kind == StmtKind::For && (s->loop == LoopKind::GpuBlock || s->loop == LoopKind::GpuThread);
}

std::string kind_name(const StmtNode& loop) { return std::string(loopkind_name(loop.loop)); }

// A block of one statement is only a wrapper.
const std::vector<Stmt>* unwrap(const std::vector<Stmt>* stmts) {
  while (stmts->size() == 1 && (*stmts)[0] && (*stmts)[0]->kind == StmtKind::Block) stmts = &(*stmts)[0]->body;
  return stmts;
}

// Per-thread code has no parallel or bound loop, and allreduces only where
// every thread reaches them (`top`: inside blocks only).
void reject_unscheduled(const Kernel& k, std::string_view backend, const std::vector<Stmt>& stmts, bool top) {
  for (const Stmt& s : stmts) {
    if (!s) fail(k, backend, "missing statement");
    if (s->kind == StmtKind::AllReduce && !top)
      not_scheduled(k, backend, "allreduce over '" + s->var + "' is inside a loop or condition");
    if (s->kind == StmtKind::For && s->loop == LoopKind::Parallel)
      not_scheduled(k, backend, "parallel loop '" + s->var + "' must be bound to gpu_block and gpu_thread loops");
    if (is_bound(s))
      not_scheduled(k, backend, kind_name(*s) + " loop '" + s->var +
                                    "' is not in the nest of bound loops at the top of the kernel");
    reject_unscheduled(k, backend, s->body, top && s->kind == StmtKind::Block);
  }
}

void check_allreduce(const Kernel& k, std::string_view backend, const StmtNode& s, GpuNest* nest) {
  const GpuLoop* over = nullptr;
  for (const GpuLoop& l : nest->loops)
    if (l.stmt->loop == LoopKind::GpuThread && l.stmt->var == s.var) over = &l;
  if (!over) not_scheduled(k, backend, "allreduce over '" + s.var + "', which is not a gpu_thread loop");
  int64_t total = 1;
  for (const GpuLoop& l : nest->loops) {
    if (l.stmt->loop != LoopKind::GpuThread) continue;
    const Expr& e = l.stmt->extent;
    if (e->kind != ExprKind::Const || e->ival < 1 || e->ival > 1024)
      not_scheduled(k, backend, "allreduce over '" + s.var + "' needs constant thread counts in 1..1024");
    total *= e->ival;
    nest->block_threads[l.axis] = e->ival;
  }
  if (total > 1024) not_scheduled(k, backend, "allreduce over '" + s.var + "' needs at most 1024 threads a block");
  if (nest->allreduce_threads > 0 && nest->allreduce_axis != over->axis)
    not_scheduled(k, backend, "allreduces over different gpu_thread loops");
  if (s.buffer < 0 || s.buffer >= int(k.buffers.size())) fail(k, backend, "allreduce of a buffer out of range");
  const BufferDecl& b = k.buffers[s.buffer];
  ValType t = valtype_of(b.dtype);
  if (b.scope != MemScope::Local || (b.dtype != f32 && b.dtype != i32))
    fail(k, backend, "allreduce of '" + b.name + "': needs a local f32 or i32 buffer");
  nest->allreduce_types.insert(t);
  nest->allreduce_threads = over->stmt->extent->ival;
  nest->allreduce_axis = over->axis;
}

void find_allreduces(const Kernel& k, std::string_view backend, const std::vector<Stmt>& stmts, GpuNest* nest) {
  for (const Stmt& s : stmts) {
    if (s->kind == StmtKind::AllReduce) check_allreduce(k, backend, *s, nest);
    if (s->kind == StmtKind::Block) find_allreduces(k, backend, s->body, nest);
  }
}

// Whether the launch can evaluate `e` with evaluate_index() from the params.
bool launch_computable(const Kernel& k, const Expr& e) {
  if (!e || e->type != ValType::i64) return false;
  switch (e->kind) {
    case ExprKind::Const: return true;
    case ExprKind::Var:
      for (const std::string& p : k.params)
        if (p == e->name) return true;
      return false;
    case ExprKind::Binary:
      switch (e->binop) {
        case BinOp::Add: case BinOp::Sub: case BinOp::Mul: case BinOp::Div: case BinOp::Mod:
        case BinOp::Max: case BinOp::Min:
          return launch_computable(k, e->args[0]) && launch_computable(k, e->args[1]);
        default: return false;
      }
    default: return false;
  }
}

}  // namespace

GpuNest find_gpu_nest(const Kernel& k, std::string_view backend) {
  if (!k.body || k.body->kind != StmtKind::Block) fail(k, backend, "the kernel body must be a block");
  GpuNest nest;
  int count[2] = {0, 0};  // gpu_block, gpu_thread loops
  const std::vector<Stmt>* stmts = unwrap(&k.body->body);
  while (stmts->size() == 1 && is_bound((*stmts)[0])) {
    const StmtNode& loop = *(*stmts)[0];
    bool thread = loop.loop == LoopKind::GpuThread;
    if (!thread && count[1] > 0)
      not_scheduled(k, backend, "gpu_block loop '" + loop.var + "' is inside a gpu_thread loop");
    if (count[thread] == 3) not_scheduled(k, backend, "more than three " + kind_name(loop) + " loops");
    if (!launch_computable(k, loop.extent))
      not_scheduled(k, backend, "the extent of " + kind_name(loop) + " loop '" + loop.var +
                                    "' must be integer arithmetic on the kernel's params");
    ++count[thread];
    nest.loops.push_back({&loop, 0});
    stmts = unwrap(&loop.body);
  }
  reject_unscheduled(k, backend, *stmts, true);
  // Counting down from the outermost loop of each kind, the innermost gets axis 0 (x).
  for (GpuLoop& l : nest.loops) l.axis = --count[l.stmt->loop == LoopKind::GpuThread];
  find_allreduces(k, backend, *stmts, &nest);
  nest.body = stmts;
  return nest;
}

GpuGrid gpu_grid(const GpuNest& nest) {
  GpuGrid g;
  g.blocks = g.threads = {idx(1), idx(1), idx(1)};
  for (const GpuLoop& l : nest.loops)
    (l.stmt->loop == LoopKind::GpuBlock ? g.blocks : g.threads)[l.axis] = l.stmt->extent;
  return g;
}

GpuGrid gpu_grid(const Kernel& k, std::string_view backend) { return gpu_grid(find_gpu_nest(k, backend)); }

TileBody tile_body(const Kernel& k, const GpuNest& nest,
                   const std::function<std::optional<HalfProduct>(const Kernel&, const Stmt&)>& product,
                   const std::function<void(const std::string&)>& refuse) {
  auto no = [&](const std::string& why) {
    refuse(why);
    throw Error("array_tile: " + why);  // for a `refuse` that returns
  };
  for (const GpuLoop& l : nest.loops)
    if (l.stmt->loop != LoopKind::GpuBlock) no("thread loop '" + l.stmt->var + "'; only block loops may be bound");
  auto single = [&](const std::vector<Stmt>& b) -> const Stmt& {
    const std::vector<Stmt>* x = &b;
    while (x->size() == 1 && (*x)[0]->kind == StmtKind::Block) x = &(*x)[0]->body;
    if (x->size() != 1 || (*x)[0]->kind != StmtKind::For) no("the tile is not two loops around the reduction");
    return (*x)[0];
  };
  const Stmt& outer = single(*nest.body);
  const Stmt& inner = single(outer->body);
  std::vector<Stmt> stmts = inner->body;
  while (stmts.size() == 1 && stmts[0]->kind == StmtKind::Block) stmts = stmts[0]->body;
  if (stmts.size() < 2 || stmts[0]->kind != StmtKind::Store || stmts[1]->kind != StmtKind::For)
    no("the tile's body is not `acc = 0; for r { ... }; ...`");
  std::optional<HalfProduct> p = product(k, stmts[1]);
  if (!p) no("the reduction is not acc += a * b of operands this tile takes");
  const Stmt& init = stmts[0];
  if (init->buffer != p->acc || init->value->kind != ExprKind::Const || init->value->fval != 0)
    no("the accumulator does not start at 0");
  TileBody t;
  t.epilogue.assign(stmts.begin() + 2, stmts.end());
  for (const Stmt& e : t.epilogue)
    visit(e, [&](const Stmt& x) {
      if (x->kind == StmtKind::Store && (loads_buffer(p->a, x->buffer) || loads_buffer(p->b, x->buffer)))
        no("the epilogue writes an operand");
      if (x->kind == StmtKind::For && x->var == stmts[1]->var) no("the epilogue reuses the reduction's loop");
    });
  auto constant = [&](const Stmt& l) {
    if (l->extent->kind != ExprKind::Const) no("loop '" + l->var + "' has no constant extent");
    return l->extent->ival;
  };
  t.i = outer->var;
  t.j = inner->var;
  t.r = stmts[1]->var;
  t.rows = constant(outer);
  t.cols = constant(inner);
  t.depth = constant(stmts[1]);
  if (uses_var(p->a, t.j) || uses_var(p->b, t.i)) std::swap(p->a, p->b);
  if (uses_var(p->a, t.j) || uses_var(p->b, t.i)) no("an operand moves with both output loops");
  if (k.array_tile.m != t.rows || k.array_tile.n != t.cols)
    no("array_tile's rows and columns are not the tile loops' extents");
  t.product = *p;
  return t;
}

}  // namespace kiln
