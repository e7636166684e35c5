// The default schedule per target: what kiln runs when nothing was tuned.
#include <functional>
#include <set>

#include "codegen/ir_util.h"
#include "codegen/schedule.h"

namespace kiln {

namespace {

bool const_extent(const Stmt& loop, int64_t* e) {
  if (loop->extent->kind != ExprKind::Const || loop->extent->type != ValType::i64) return false;
  *e = loop->extent->ival;
  return true;
}

// The loops at the top of the kernel that each hold only the next.
std::vector<Stmt> top_chain(const Kernel& k) {
  std::vector<Stmt> chain;
  if (k.body->body.size() != 1) return chain;
  Stmt cur = k.body->body[0];
  while (cur->kind == StmtKind::For) {
    chain.push_back(cur);
    if (cur->body.size() != 1) break;
    cur = cur->body[0];
  }
  return chain;
}

// The body inside the chain is [acc init..., for r {...}, stores...]: a
// reduction; returns r's name.
std::string reduction_loop(const std::vector<Stmt>& chain) {
  std::vector<Stmt> inner = chain.back()->body;
  if (inner.size() == 1 && inner[0]->kind == StmtKind::Block) inner = inner[0]->body;
  std::string r;
  for (const Stmt& s : inner) {
    if (s->kind == StmtKind::For) {
      if (!r.empty()) return "";
      r = s->var;
    } else if (s->kind != StmtKind::Store) {
      return "";
    }
  }
  return r;
}

// Whether some load of `buffer` moves with loop `v` (stride 1 along columns).
bool packs_with(const Kernel& k, const std::string& buffer, const std::string& v) {
  bool found = false;
  std::function<void(const Expr&)> expr = [&](const Expr& e) {
    if (!e) return;
    if (e->kind == ExprKind::Load && k.buffers[e->buffer].name == buffer && uses_var(e->args[0], v)) found = true;
    for (const Expr& a : e->args) expr(a);
  };
  visit(k.body, [&](const Stmt& s) {
    expr(s->value);
  });
  return found;
}

int64_t largest_divisor(int64_t n, std::initializer_list<int64_t> options) {
  for (int64_t o : options)
    if (n % o == 0) return o;
  return 0;
}

std::string fresh(const Kernel& k, const std::string& base) {
  std::set<std::string> names(k.params.begin(), k.params.end());
  for (const BufferDecl& b : k.buffers) names.insert(b.name);
  visit(k.body, [&](const Stmt& s) {
    if (s->kind == StmtKind::For) names.insert(s->var);
  });
  std::string n = base;
  while (names.count(n)) n += "_";
  return n;
}

// Register tiles for contractions: an MR x NR tile of f32 accumulators kept in
// vector registers across the reduction, NR a multiple of the vector width.
// Threads take column panels; each packs its NR-wide panel of the right operand
// (read with a row stride) into a contiguous local buffer first.
Schedule cpu_schedule(const Kernel& k, const DeviceInfo& t) {
  Schedule s;
  std::vector<Stmt> chain = top_chain(k);
  if (chain.size() < 2) return s;
  std::string r = reduction_loop(chain);
  if (r.empty()) return s;
  for (const BufferDecl& b : k.buffers)
    if (b.scope == MemScope::Local && b.dtype != f32) return s;
  const Stmt &rows = chain[chain.size() - 2], &cols = chain.back();
  int64_t m = 0, n = 0;
  if (!const_extent(rows, &m) || !const_extent(cols, &n)) return s;
  int lanes = std::max(4, t.vector_bits / 32);
  int64_t nr = largest_divisor(n, {2 * lanes, lanes});
  int64_t mr = largest_divisor(m, {lanes >= 16 ? 12 : 6, 8, 6, 4, 3, 2});
  if (!nr || !mr) return s;
  std::string io = fresh(k, rows->var + "o"), ii = fresh(k, rows->var + "i");
  std::string jo = fresh(k, cols->var + "o"), ji = fresh(k, cols->var + "i");
  s.split(rows->var, mr, io, ii).split(cols->var, nr, jo, ji);
  bool outer_pair = chain.size() == 2;  // no batch loops: panels can be the parallel loop
  if (outer_pair) s.serial(io).reorder({jo, io, ii, ji}).parallel(jo);
  else s.reorder({io, jo, ii, ji});
  s.hoist(r, ii);
  if (outer_pair) {
    // The operand whose index moves with the columns is the one to pack.
    for (const BufferDecl& b : k.buffers)
      if (b.scope == MemScope::Global && !b.output && packs_with(k, b.name, cols->var)) {
        std::string pb = fresh(k, "p" + b.name);
        s.cache_read(b.name, jo, pb).vectorize(pb + "_" + ji);
        break;
      }
  }
  s.unroll(ii).vectorize(ji);
  return s;
}

// One thread per output point: the top loops fused and split into blocks.
Schedule gpu_schedule(const Kernel& k, const DeviceInfo& t) {
  Schedule s;
  std::vector<Stmt> chain = top_chain(k);
  if (chain.empty()) return s;
  // Only the output loops: a reduction's loops stay serial inside each thread.
  size_t n = 1;
  while (n < chain.size() && chain[n - 1]->body.size() == 1 && chain[n]->loop == LoopKind::Serial) ++n;
  std::string cur = chain[0]->var;
  for (size_t i = 1; i < n; ++i) {
    std::string f = fresh(k, "f" + std::to_string(i));
    s.fuse(cur, chain[i]->var, f);
    cur = f;
  }
  int64_t threads = std::min<int64_t>(256, t.max_threads > 0 ? t.max_threads : 256);
  std::string b = fresh(k, "blk"), th = fresh(k, "thr");
  s.split(cur, threads, b, th).bind(b, LoopKind::GpuBlock).bind(th, LoopKind::GpuThread);
  return s;
}

}  // namespace

Schedule default_schedule(const Kernel& k, const DeviceInfo& target) {
  if (target.backend == "cpu") return cpu_schedule(k, target);
  if (target.backend == "cuda" || target.backend == "vulkan") return gpu_schedule(k, target);
  return {};
}

}  // namespace kiln
