// The default schedule per target: what kiln runs when nothing was tuned.
// Each choice the heuristics make is a knob (codegen/schedule_space.h) that
// the autotuner may turn; the defaults are the heuristics' own choices.
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <set>

#include "codegen/ir_util.h"
#include "codegen/schedule.h"
#include "codegen/schedule_space.h"
#include "kiln/error.h"

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

// The loops directly inside the chain's innermost loop when it holds only
// loops and stores (one reduction, or several side by side); empty otherwise.
std::vector<std::string> reduction_loops(const std::vector<Stmt>& chain) {
  std::vector<Stmt> inner = chain.back()->body;
  if (inner.size() == 1 && inner[0]->kind == StmtKind::Block) inner = inner[0]->body;
  std::vector<std::string> r;
  for (const Stmt& s : inner) {
    if (s->kind == StmtKind::For) r.push_back(s->var);
    else if (s->kind != StmtKind::Store) return {};
  }
  return r;
}

// The body inside the chain is [acc init..., for r {...}, stores...]: a
// reduction; returns r's name.
std::string reduction_loop(const std::vector<Stmt>& chain) {
  std::vector<std::string> r = reduction_loops(chain);
  return r.size() == 1 ? r[0] : "";
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

// The loads in the factor of the reduction r's update acc += a * b that uses
// the column variable `col` (0 where there is no such update).
int64_t column_operand_loads(const Kernel& k, const std::string& r, const std::string& col) {
  int64_t loads = 0;
  std::function<int64_t(const Expr&)> count = [&](const Expr& e) -> int64_t {
    int64_t n = e->kind == ExprKind::Load;
    for (const Expr& a : e->args) n += count(a);
    return n;
  };
  visit(k.body, [&](const Stmt& st) {
    if (st->kind != StmtKind::For || st->var != r) return;
    for (const Stmt& b : st->body)
      visit(b, [&](const Stmt& x) {
        const Expr& v = x->value;
        if (x->kind != StmtKind::Store || !v || v->kind != ExprKind::Binary || v->binop != BinOp::Add ||
            v->args[1]->kind != ExprKind::Binary || v->args[1]->binop != BinOp::Mul)
          return;
        for (const Expr& f : v->args[1]->args)
          if (uses_var(f, col)) loads = std::max(loads, count(f));
      });
  });
  return loads;
}

int64_t largest_divisor(int64_t n, std::initializer_list<int64_t> options) {
  for (int64_t o : options)
    if (n % o == 0) return o;
  return 0;
}

std::vector<int64_t> divisors_among(int64_t n, std::initializer_list<int64_t> options) {
  std::vector<int64_t> out;
  for (int64_t o : options)
    if (o > 0 && n % o == 0) out.push_back(o);
  return out;
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

// Reductions over a constant extent keep one partial accumulator per vector
// lane (rfactor), so that max and sum vectorize whatever LLVM's fast-math rules;
// up to `vectors` vectors of them (fewer where the extent takes fewer), so that
// consecutive steps' adds do not wait for each other.
void vectorize_reductions(const Kernel& k, int lanes, int vectors, Schedule* s) {
  if (lanes <= 0) return;
  std::set<std::string> done;
  visit(k.body, [&](const Stmt& loop) {
    if (loop->kind != StmtKind::For || done.count(loop->var) || loop->body.size() != 1) return;
    const Stmt& acc = loop->body[0];
    bool scalar_acc = acc->kind == StmtKind::Store && k.buffers[acc->buffer].scope == MemScope::Local &&
                      k.buffers[acc->buffer].size == 1 && k.buffers[acc->buffer].dtype == f32;
    int64_t e = 0;
    if (!scalar_acc || !const_extent(loop, &e) || e % lanes != 0 || e < 4 * lanes) return;
    int64_t f = lanes * std::max(vectors, 1);
    while (f > lanes && (e % f != 0 || e < 4 * f)) f /= 2;
    // Vectors no wider than the period of the loads' indices: a 4-bit
    // matrix's bytes are read at (r / 32) * 16 + r % 16, one contiguous load
    // (the nibble's choice uniform) over 16 lanes but a gather over 64
    // (stories110M q4 decode: 29-32 tok/s with 64-lane gathers, 105 with four
    // 16-lane vectors). The partials stay f wide, as vectors of `period` lanes
    // side by side (unrolled); where the period does not fit that, the
    // partials narrow to it instead.
    int64_t period = std::numeric_limits<int64_t>::max();
    std::function<void(const Expr&, bool)> scan = [&](const Expr& x, bool in_index) {
      if (in_index && x->kind == ExprKind::Binary && (x->binop == BinOp::Div || x->binop == BinOp::Mod) &&
          x->args[1]->kind == ExprKind::Const && x->args[1]->ival > 1 && uses_var(x->args[0], loop->var))
        period = std::min(period, x->args[1]->ival);
      for (const Expr& a : x->args) scan(a, in_index || x->kind == ExprKind::Load);
    };
    scan(acc->value, false);
    bool side_by_side = f > period && period >= lanes && f % period == 0;
    while (f > lanes && f > period && !side_by_side) f /= 2;
    std::string o = fresh(k, loop->var + "o"), i = fresh(k, loop->var + "i");
    if (side_by_side) {
      std::string v = fresh(k, loop->var + "v"), l = fresh(k, loop->var + "l");
      s->rfactor(loop->var, f, o, i).split(i, period, v, l).unroll(v).vectorize(l);
    } else {
      s->rfactor(loop->var, f, o, i).vectorize(i);
    }
    // The partials' tree (rfactor's fold rounds: f/2, f/4, ... lanes) as
    // vector adds of halves, not scalar code for LLVM to piece together.
    int round = 0;
    for (int64_t half = f / 2; half >= 2; half /= 2, ++round)
      s->vectorize(i + "_fold" + (round ? "_" + std::to_string(round) : ""));
    done.insert(loop->var);
  });
}

// Kernels without a register tile: reductions vectorized by partial
// accumulators (knobs: how many lanes, 0 for none, and how many vectors of
// them: four took a stories110M q8 decode step from 20.2 to 16.5 ms on the
// 2-core CPU, f32 from 34.6 to 32.9), and the top loop parallel as
// lowering made it, or serial where a thread pool costs more than it gives.
Schedule cpu_plain(const Kernel& k, int lanes, Knobs& kn, Schedule s = {}) {
  vectorize_reductions(k, int(kn.pick("rlanes", {0, lanes / 2, lanes, 2 * lanes}, lanes)),
                       int(kn.pick("rvectors", {1, 2, 4}, 4)), &s);
  // The top loop where lowering made it parallel (the one the `serial` knob
  // takes back to a single thread).
  const Stmt* top = nullptr;
  if (k.body->body.size() == 1 && k.body->body[0]->kind == StmtKind::For && k.body->body[0]->loop == LoopKind::Parallel)
    top = &k.body->body[0];
  std::string parallel = top ? (*top)->var : "";
  // A few parallel rows (an attention's heads) over a loop of symbolic
  // extent (the cached positions): the positions outermost and parallel, so
  // that each thread reads its share of the cache in order, every head of a
  // position's row together, not one head's 128 bytes of each 1.5 KB row.
  // stories110M q8 decode, 2-core CPU (session 22): the scores kernels 809,
  // 1182 -> 582, 544 us a step; 141.6 -> 166.7 tok/s (medians of 3 rounds).
  int64_t heads = 0, positions_extent = 0;
  if (top && const_extent(*top, &heads) && heads <= 64 && (*top)->body.size() == 1 &&
      (*top)->body[0]->kind == StmtKind::For && !const_extent((*top)->body[0], &positions_extent) &&
      kn.pick("positions_first", true)) {
    const std::string& positions = (*top)->body[0]->var;
    Schedule swapped = s;
    swapped.serial(parallel).reorder({positions, parallel}).parallel(positions);
    try {
      apply(k, swapped);
      s = swapped;
      parallel = positions;
    } catch (const Error&) {
      // As lowering made it.
    }
  }
  if (top && kn.pick("serial", false)) s.serial(parallel);
  return s;
}

// Register tiles for contractions: an MR x NR tile of f32 accumulators kept in
// vector registers across the reduction, NR a multiple of the vector width.
// Threads take column panels; each packs its NR-wide panel of the right operand
// (read with a row stride) into a contiguous local buffer first.
// Knobs: the tile (mr, nr), the loop order (column panels outermost, rows
// outermost, or blocks of row_block tiles of rows outermost), packing, the
// unrolling of the tile's rows and of the reduction (kunroll).
Schedule cpu_schedule(const Kernel& k, const DeviceInfo& t, Knobs& kn) {
  Schedule s;
  int lanes = std::max(4, t.vector_bits / 32);
  std::vector<Stmt> chain = top_chain(k);
  std::string r = chain.size() < 2 ? "" : reduction_loop(chain);
  if (r.empty()) return cpu_plain(k, lanes, kn);
  for (const BufferDecl& b : k.buffers)
    if (b.scope == MemScope::Local && b.dtype != f32) return s;
  // The tile's loops go inside the reduction's one loop: a reduction over
  // several axes (a max over dims 0 and 2) keeps its inner loops innermost,
  // where the tile's columns could not vectorize (kiln fuzz, seed 2014101).
  bool nested = false;
  visit(k.body, [&](const Stmt& st) {
    if (st->kind == StmtKind::For && st->var == r)
      for (const Stmt& b : st->body) visit(b, [&](const Stmt& x) { nested |= x->kind == StmtKind::For; });
  });
  if (nested) return cpu_plain(k, lanes, kn);
  const Stmt &rows = chain[chain.size() - 2], &cols = chain.back();
  int64_t m = 0, n = 0, nr = 0, mr = 0;
  if (const_extent(rows, &m) && const_extent(cols, &n)) {
    nr = largest_divisor(n, {2 * lanes, lanes});
    mr = largest_divisor(m, {lanes >= 16 ? 12 : 6, 8, 6, 4, 3, 2, 1});
  }
  if (!nr || !mr) return cpu_plain(k, lanes, kn);  // no register tile fits: vectorize the reduction alone
  nr = kn.pick("nr", divisors_among(n, {lanes, 2 * lanes, 3 * lanes, 4 * lanes}), nr);
  mr = kn.pick("mr", divisors_among(m, {1, 2, 3, 4, 6, 8, 12, 16}), mr);
  bool outer_pair = chain.size() == 2;  // no batch loops: panels can be the parallel loop
  constexpr int64_t kPanels = 0, kRows = 1, kRowBlocks = 2;
  int64_t order = outer_pair ? kn.pick("order", {kPanels, kRows, kRowBlocks}, kPanels) : kRows;
  int64_t row_block = outer_pair ? kn.pick("row_block", {4, 8, 16, 32}, 8) : 0;
  if (order == kRowBlocks && (m / mr) % row_block) order = kRows;
  std::string io = fresh(k, rows->var + "o"), ii = fresh(k, rows->var + "i");
  std::string jo = fresh(k, cols->var + "o"), ji = fresh(k, cols->var + "i");
  s.split(rows->var, mr, io, ii).split(cols->var, nr, jo, ji);
  std::string top = outer_pair ? io : chain[0]->var;
  if (order == kPanels) {
    s.serial(io).reorder({jo, io, ii, ji}).parallel(jo);
    top = jo;
  } else if (order == kRows) {
    s.reorder({io, jo, ii, ji});
  } else {
    std::string ib = fresh(k, rows->var + "b"), iw = fresh(k, rows->var + "w");
    s.split(io, row_block, ib, iw).reorder({ib, jo, iw, ii, ji});
    top = ib;
  }
  s.hoist(r, ii);
  // A packed panel needs a reduction of fixed depth.
  bool packable = false;
  visit(k.body, [&](const Stmt& st) {
    int64_t depth = 0;
    if (st->kind == StmtKind::For && st->var == r) packable = outer_pair && const_extent(st, &depth);
  });
  if (packable && kn.pick("pack", true)) {
    // A column operand computed from several loads (a q4 weight's byte and
    // scale, a 2:4 weight's two kept values and their positions) is computed
    // once per panel (pack), not once per row block: stories110M's 512-token
    // prefill, 2-core CPU: q4 TTFT 2.0 -> 0.71 s, q4z 3.9 -> 0.8 s, s24 7.0 ->
    // 0.80 s (f32 0.70 s).
    bool packed_operand = false;
    if (column_operand_loads(k, r, cols->var) > 1) {
      std::string pw = fresh(k, "pw");
      Schedule computed = s;
      computed.pack(r, jo, pw).vectorize(pw + "_" + ji);
      try {
        apply(k, computed);
        s = computed;
        packed_operand = true;
      } catch (const Error&) {
        // Left to cache_read.
      }
    }
    // Otherwise the operand whose index moves with the columns is the one to
    // pack, unless the panel's loops read it at another index too (an
    // epilogue that reads the weight at the output's point: kiln fuzz, seeds
    // 2004469 and 2006272), which cache_read refuses: then nothing is packed.
    for (const BufferDecl& b : k.buffers)
      if (!packed_operand && b.scope == MemScope::Global && !b.output && packs_with(k, b.name, cols->var)) {
        std::string pb = fresh(k, "p" + b.name);
        Schedule packed = s;
        packed.cache_read(b.name, jo, pb).vectorize(pb + "_" + ji);
        try {
          apply(k, packed);
          s = packed;
        } catch (const Error&) {
          // Left unpacked.
        }
        break;
      }
  }
  int64_t ku = kn.pick("kunroll", {1, 2, 4}, 1);
  if (ku > 1) {
    std::string ro = fresh(k, r + "o"), ri = fresh(k, r + "i");
    s.split(r, ku, ro, ri).unroll(ri);
  }
  if (kn.pick("unroll", true)) s.unroll(ii);
  s.vectorize(ji);
  if (kn.pick("serial", false)) s.serial(top);
  return s;
}

// Whether index `e` moves by one element a step over `n` steps of `v` from 0
// (other variables at 0, params at an arbitrary size).
bool unit_run(const Expr& e, const std::string& v, const Kernel& k, int64_t n) {
  std::map<std::string, int64_t> at;
  for (const std::string& p : k.params) at[p] = 64;
  visit(k.body, [&](const Stmt& s) {
    if (s->kind == StmtKind::For) at[s->var] = 0;
  });
  try {
    int64_t base = evaluate_index(e, at);
    for (int64_t i = 1; i < n; ++i) {
      at[v] = i;
      if (evaluate_index(e, at) - base != i) return false;
    }
    return true;
  } catch (const Error&) {
    return false;  // a gathered index: no pattern to rely on
  }
}

// Whether index `e` moves by one element when `v` does: threads along v then
// read neighbouring elements.
bool unit_stride(const Expr& e, const std::string& v, const Kernel& k) { return unit_run(e, v, k, 2); }

// The body holds reduction loops, and no load in them moves with the
// innermost output loop `v` (rows reduced along their length, not columns or
// matrix products, whose neighbouring outputs already read neighbouring data).
bool reduces(const Kernel& k, const Stmt& body, const std::string& v, bool want_columns) {
  bool any = false, columns = false;
  std::string r;  // the reduction loop's variable: loads that do not move with it (a row's scale) are read once
  std::function<void(const Expr&)> expr = [&](const Expr& e) {
    if (!e) return;
    if (e->kind == ExprKind::Load && k.buffers[e->buffer].scope == MemScope::Global && uses_var(e->args[0], r))
      columns |= unit_stride(e->args[0], v, k);
    for (const Expr& a : e->args) expr(a);
  };
  visit(body, [&](const Stmt& s) {
    if (!reduction_of(k, s)) return;
    any = true;
    r = s->var;
    visit(s, [&](const Stmt& x) { expr(x->value); });
  });
  return any && columns == want_columns;
}

bool reduces_rows(const Kernel& k, const Stmt& body, const std::string& v) { return reduces(k, body, v, false); }
// Reductions whose loads move by one element with the output loop `v`: the
// attention's `probabilities x V`, a column sum.
bool reduces_columns(const Kernel& k, const Stmt& body, const std::string& v) { return reduces(k, body, v, true); }

// Whether `body` loads a global byte buffer (u8/i8) inside reduction loop `r`
// at an index that does not move by one element with it over 32 steps
// (packed 4-bit pairs: 16 bytes hold 32 elements).
bool packs_bytes(const Kernel& k, const Stmt& body, const std::string& r) {
  bool found = false;
  std::function<void(const Expr&)> expr = [&](const Expr& e) {
    if (!e) return;
    if (e->kind == ExprKind::Load) {
      const BufferDecl& b = k.buffers[e->buffer];
      if (b.scope == MemScope::Global && (b.dtype == u8 || b.dtype == i8) && uses_var(e->args[0], r) &&
          !unit_run(e->args[0], r, k, 32))
        found = true;
    }
    for (const Expr& a : e->args) expr(a);
  };
  visit(body, [&](const Stmt& s) {
    if (s->kind == StmtKind::For && s->var == r) visit(s, [&](const Stmt& x) { expr(x->value), expr(x->index); });
  });
  return found;
}

// A GPU reads a row in 16-byte pieces when every reduction loop of `body`
// has the same constant extent and all their global loads move by one element
// with them: the elements a piece holds of the narrowest such load (8 for
// f16), and the loops in *loops. 0 otherwise.
int64_t vector_width(const Kernel& k, const Stmt& body, std::vector<std::string>* loops) {
  std::vector<const StmtNode*> found;
  visit(body, [&](const Stmt& s) {
    if (reduction_of(k, s)) found.push_back(s.get());
  });
  if (found.empty()) return 0;
  int64_t e = 0;
  for (const StmtNode* f : found)
    if (f->extent->kind != ExprKind::Const || f->extent->ival <= 0 || (e && f->extent->ival != e)) return 0;
    else e = f->extent->ival;
  int64_t narrowest = 0;
  bool ok = true, dot = false;
  for (const StmtNode* f : found) {
    std::set<int> read;  // global buffers loaded along f
    std::function<void(const Expr&)> expr = [&](const Expr& x) {
      if (!x) return;
      if (x->kind == ExprKind::Load && k.buffers[x->buffer].scope == MemScope::Global && uses_var(x->args[0], f->var)) {
        ok &= unit_stride(x->args[0], f->var, k);
        int64_t size = dtype_size(k.buffers[x->buffer].dtype);
        narrowest = narrowest ? std::min(narrowest, size) : size;
        read.insert(x->buffer);
      }
      for (const Expr& a : x->args) expr(a);
    };
    for (const Stmt& s : f->body) visit(s, [&](const Stmt& x) {
      if (x->kind == StmtKind::If || x->kind == StmtKind::For) ok = false;
      expr(x->value);
      expr(x->index);
    });
    dot = dot || read.size() >= 2;
  }
  // Several loops side by side only beside a dot product (a loop reading two
  // buffers along it: a GEMV's weight and vector, next to a folded norm's sum
  // of squares); a softmax's or a layernorm's passes keep their schedule.
  if (!ok || narrowest == 0 || (found.size() > 1 && !dot)) return 0;
  loops->clear();
  for (const StmtNode* f : found) loops->push_back(f->var);
  return 16 / narrowest;
}

bool has_reduction(const Kernel& k, const Stmt& body) {
  bool any = false;
  visit(body, [&](const Stmt& s) { any = any || bool(reduction_of(k, s)); });
  return any;
}

// The longest reduction in `body` when every reduction loop has a constant
// extent; 0 when one is symbolic (a decode step's attention over its cache).
int64_t longest_reduction(const Kernel& k, const Stmt& body) {
  int64_t longest = 0;
  bool symbolic = false;
  visit(body, [&](const Stmt& s) {
    int64_t e = 0;
    if (!reduction_of(k, s)) return;
    if (const_extent(s, &e)) longest = std::max(longest, e);
    else symbolic = true;
  });
  return symbolic ? 0 : longest;
}

// Row reductions: a block per output point, its threads sharing the row.
// Everything else: one thread per output point, the top loops fused and split
// into blocks.
// A contraction with 64 x 64 output tiles per block of 16 x 16 threads, each
// thread keeping a 4 x 4 tile of accumulators in registers. Neighbouring
// threads take neighbouring columns, so loads of the right operand coalesce.
// Knobs: the threads along each side of a block (tile_threads) and the
// accumulators along each side of a thread (tile_regs).
Schedule gpu_contraction_tiles(const Kernel& k, const std::vector<Stmt>& chain, Knobs& kn) {
  Schedule s;
  std::string r = chain.size() == 2 ? reduction_loop(chain) : "";
  int64_t m = 0, n = 0;
  if (r.empty() || !const_extent(chain[0], &m) || !const_extent(chain[1], &n) || m % 64 || n % 64) return s;
  if (!kn.pick("tiles", true)) return s;
  int64_t th = kn.pick("tile_threads", {8, 16}, 16);
  int64_t rg = kn.pick("tile_regs", {2, 4, 8}, 4);
  if (m % (th * rg) || n % (th * rg)) return s;
  const std::string &i = chain[0]->var, &j = chain[1]->var;
  auto name = [&](const std::string& v, const char* suffix) { return fresh(k, v + suffix); };
  std::string ia = name(i, "a"), it = name(i, "t"), ib = name(i, "b"), ir = name(i, "r");
  std::string ja = name(j, "a"), jt = name(j, "t"), jb = name(j, "b"), jr = name(j, "r");
  s.split(i, th, ia, it).split(ia, rg, ib, ir).split(j, th, ja, jt).split(ja, rg, jb, jr);
  s.reorder({ib, jb, it, jt, ir, jr}).hoist(r, ir).unroll(ir).unroll(jr);
  s.bind(ib, LoopKind::GpuBlock).bind(jb, LoopKind::GpuBlock).bind(it, LoopKind::GpuThread).bind(jt, LoopKind::GpuThread);
  return s;
}

// The compute capability of a CUDA device ("sm_90" -> 90; 0 if unknown).
int cuda_capability(const DeviceInfo& t) {
  if (t.backend != "cuda" || t.features.rfind("sm_", 0) != 0) return 0;
  int cc = 0;
  for (char c : t.features.substr(3)) {
    if (c < '0' || c > '9') break;
    cc = cc * 10 + (c - '0');
  }
  return cc;
}

// The steps of a tile: batch loops fused into one (a block index), the
// output loops split by the tile and bound to blocks, the array_tile.
Schedule tile_steps(const Kernel& k, Schedule s, const std::vector<Stmt>& chain, size_t n, const Stmt& rows,
                    const Stmt& cols, const std::string& r, int64_t bm, int64_t bk, int64_t bn, int64_t stages,
                    bool warpgroup, bool tma = false) {
  std::string batch;
  for (size_t i = 0; i + 2 < n; ++i) {
    if (batch.empty()) {
      batch = chain[i]->var;
      continue;
    }
    std::string f = fresh(k, "b" + std::to_string(i));
    s.fuse(batch, chain[i]->var, f);
    batch = f;
  }
  const std::string &i = rows->var, &j = cols->var;
  std::string io = fresh(k, i + "o"), ii = fresh(k, i + "i"), jo = fresh(k, j + "o"), ji = fresh(k, j + "i");
  s.split(i, bm, io, ii).split(j, bn, jo, ji);
  std::vector<std::string> order;
  if (!batch.empty()) order.push_back(batch);
  for (const std::string& v : {io, jo, ii, ji}) order.push_back(v);
  s.reorder(order);
  if (!batch.empty()) s.bind(batch, LoopKind::GpuBlock);
  s.bind(io, LoopKind::GpuBlock).bind(jo, LoopKind::GpuBlock).array_tile(r, bm, bk, bn, stages, warpgroup, tma);
  return s;
}

// A contraction of f16 or bf16 operands on tensor cores (CUDA, sm_80 and up):
// a block of 8 warps per BM x BN outputs, the batch loops (fused) along z, the
// reduction in steps of BK (`array_tile r by BM, BK, BN`): the emitter stages
// each step's operand tiles in shared memory and multiplies them with
// mma.sync. Output sides must divide by the tile and the reduction by BK.
// Knobs: tensor_cores (on/off), mma_bm and mma_bn (the block's tile), mma_bk
// (its depth) and mma_stages (how many steps the copies run ahead, plus one).
// f32 contractions take the same tiles on the CUDA cores, and on Vulkan
// (knobs simt_tiles and simt_bk for the depth).
Schedule gpu_tensor_core_tiles(const Kernel& k, const std::vector<Stmt>& chain, const DeviceInfo& t, Knobs& kn) {
  Schedule s;
  constexpr int64_t kDepth = 32;
  const bool cuda = cuda_capability(t) >= 80, vulkan = t.backend == "vulkan";
  if (!(cuda || vulkan) || chain.size() < 2) return s;
  std::string r = reduction_loop(chain);
  if (r.empty()) return s;
  std::vector<Stmt> inner = chain.back()->body;
  if (inner.size() == 1 && inner[0]->kind == StmtKind::Block) inner = inner[0]->body;
  std::optional<HalfProduct> p;
  int64_t depth = 0;
  for (const Stmt& st : inner)
    if (st->kind == StmtKind::For && st->var == r) {
      p = half_product(k, st);
      if (!p) p = f32_product(k, st);
      if (!const_extent(st, &depth)) return s;
    }
  // f32 operands: the same tiles, multiplied on the CUDA cores (the emitter's
  // SIMT tile: 8 x 8 outputs a thread from shared memory), in steps of 8 or more.
  const bool simt = p && p->dtype == f32;
  if (!p || depth % (simt ? 8 : kDepth) || (vulkan && !simt)) return s;
  // The output loops: rows move only A's load, columns only B's; any others
  // (outside them) are batches that both may use.
  size_t n = chain.size();
  const Stmt &x = chain[n - 2], &y = chain[n - 1];
  auto only = [&](const Stmt& l, const Expr& mine, const Expr& other) {
    return uses_var(mine->args[0], l->var) && !uses_var(other->args[0], l->var);
  };
  const Stmt* rows = only(x, p->a, p->b) && only(y, p->b, p->a) ? &x : only(y, p->a, p->b) && only(x, p->b, p->a) ? &y : nullptr;
  if (!rows) return s;
  const Stmt& cols = rows == &x ? y : x;
  int64_t m = 0, nn = 0, e = 0;
  if (!const_extent(*rows, &m) || !const_extent(cols, &nn)) return s;
  for (size_t i = 0; i + 2 < n; ++i)
    if (!const_extent(chain[i], &e)) return s;
  std::vector<int64_t> bms = divisors_among(m, {128, 64});
  std::vector<int64_t> bns = simt ? divisors_among(nn, {128, 64}) : divisors_among(nn, {128, 64, 256});
  if (bms.empty() || bns.empty() || !kn.pick(simt ? "simt_tiles" : "tensor_cores", true)) return s;
  // 128 x 128 tiles, halved (columns first) while that leaves over half the SMs idle.
  int64_t batches = 1, dm = bms[0], dn = bns[0] == 256 ? 128 : bns[0];
  for (size_t i = 0; i + 2 < n; ++i) batches *= chain[i]->extent->ival;
  auto blocks = [&] { return batches * (m / dm) * (nn / dn); };
  if (2 * blocks() < t.cores && dn == 128 && nn % 64 == 0) dn = 64;
  if (2 * blocks() < t.cores && dm == 128 && m % 64 == 0) dm = 64;
  // Hopper (sm_90): warpgroup tiles (wgmma) of 128 x 256 (columns halved
  // while that leaves over half the SMs idle), 64 deep (or 128), four stages
  // (or as many as fit).
  // Operands that are not plain 16-bit loads (int8 or dequantized weights,
  // written into shared memory element by element) stay on mma.sync by
  // default, whose copies of them were faster (TinyLlama q8 prefill 15.9 vs
  // 23.2 ms, q4 21 vs 53 ms).
  const bool loads = p->a->kind == ExprKind::Load && p->b->kind == ExprKind::Load;
  if (!simt && cuda_capability(t) == 90 && depth % 64 == 0 && m % 128 == 0 && nn % 64 == 0 &&
      kn.pick("wgmma", loads)) {
    std::vector<int64_t> wbns = divisors_among(nn, {256, 128, 64});
    int64_t wn = wbns[0];  // a multiple of 64 whose half divides nn too
    while (2 * batches * (m / 128) * (nn / wn) < t.cores && wn > 64) wn /= 2;
    int64_t wm = kn.pick("mma_bm", divisors_among(m, {128, 256}), 128);
    std::erase_if(wbns, [&](int64_t v) { return wm == 256 && v > 128; });
    wn = kn.pick("mma_bn", wbns, std::min(wn, wbns[0]));
    int64_t wk = kn.pick("mma_bk", divisors_among(depth, {64, 128}), 64);
    std::vector<int64_t> fits;
    for (int64_t st : {2, 3, 4, 5, 6})
      if (st * (wm + wn) * wk * 2 + 1024 <= 227 * 1024) fits.push_back(st);
    if (fits.empty()) return s;
    int64_t stages = kn.pick("mma_stages", fits, std::min<int64_t>(4, fits.back()));
    // Copies by the Tensor Memory Accelerator where the operands allow
    // (the emitter checks; cp.async otherwise): the default and a tuning
    // candidate since session 16 (every tile shape of the GPU test right on
    // the H100; 4096^3 f16 0.276 -> 0.252 ms). KILN_CUDA_TMA=0 turns it off
    // (cp.async only) unless a schedule names it.
    const char* tma_env = std::getenv("KILN_CUDA_TMA");
    const bool tma_on = !(tma_env && std::string(tma_env) == "0");
    bool tma = (tma_on || kn.values().count("tma")) && kn.pick("tma", loads && tma_on);
    return tile_steps(k, s, chain, n, *rows, cols, r, wm, wk, wn, stages, true, tma);
  }
  int64_t bm = kn.pick("mma_bm", bms, dm), bn = kn.pick("mma_bn", bns, dn);
  // SIMT: steps of 8, four stages (tuned on the H100: 3.16 ms for an f32
  // 4096^3 matmul, against 3.45 with steps of 16 and three stages).
  // Vulkan's f32 tiles have two stages (registers carry the next step), in
  // steps of 8 or 16 within 32 KiB of shared memory.
  std::vector<int64_t> simt_depths = divisors_among(depth, {8, 16, 32});
  if (vulkan)
    std::erase_if(simt_depths, [&](int64_t d) { return d == 32 || 4 * 2 * d * (bm + 4 + bn + 4) > 32768; });
  int64_t bk = simt ? kn.pick("simt_bk", simt_depths, 8) : kn.pick("mma_bk", divisors_among(depth, {32, 64}), kDepth);
  int64_t stages = vulkan ? 2 : kn.pick("mma_stages", {2, 3, 4}, simt ? 4 : 3);
  return tile_steps(k, s, chain, n, *rows, cols, r, bm, bk, bn, stages, false);
}

// The first n (output) loops of the chain with those of symbolic extent (the
// cache's length) first, so that once fused each index comes from the fused
// one by constant divisions (which the bounds simplify: q[head * 64 + r], not
// a 64-bit division by `past` and three more in every element's index): the
// order in *order and the steps that make it (none where it is already so).
Schedule symbols_outermost(const std::vector<Stmt>& chain, size_t n, std::vector<std::string>* order) {
  order->clear();
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < n; ++i)
      if ((chain[i]->extent->kind == ExprKind::Const) == (pass == 1)) order->push_back(chain[i]->var);
  Schedule s;
  if ((*order)[0] != chain[0]->var) {
    if (chain[0]->loop == LoopKind::Parallel) s.serial(chain[0]->var);  // a parallel loop stays outermost
    s.reorder(*order);
  }
  return s;
}

// Knobs: the threads per block, and whether a block shares each output
// point's reduction (spread) where the heuristic would.
Schedule gpu_schedule(const Kernel& k, const DeviceInfo& t, Knobs& kn) {
  Schedule s;
  std::vector<Stmt> chain = top_chain(k);
  if (chain.empty()) return s;
  Schedule tensor = gpu_tensor_core_tiles(k, chain, t, kn);
  if (!tensor.steps.empty()) return tensor;
  Schedule tiles = gpu_contraction_tiles(k, chain, kn);
  if (!tiles.steps.empty()) return tiles;
  // Only the output loops: a reduction's loops stay serial inside each thread.
  size_t n = 1;
  while (n < chain.size() && chain[n - 1]->body.size() == 1 && chain[n]->loop == LoopKind::Serial) ++n;
  // Vulkan: loops of symbolic extent outermost before the output loops are
  // fused (the GLSL counterpart of the CUDA lane_rows order below: Vulkan's
  // attention scores took 28 us a layer on the H100 without it).
  std::vector<std::string> order;
  Schedule symbols_first = symbols_outermost(chain, n, &order);
  bool reordered = false;
  if (t.backend == "vulkan" && !symbols_first.steps.empty() && kn.pick("symbols_outermost", true)) {
    try {
      apply(k, symbols_first);
      s = symbols_first;
      reordered = true;
    } catch (const Error&) {
      // Fused in their own order.
    }
  }
  if (!reordered) {
    order.clear();
    for (size_t i = 0; i < n; ++i) order.push_back(chain[i]->var);
  }
  std::string cur = order[0];
  for (size_t i = 1; i < n; ++i) {
    std::string f = fresh(k, "f" + std::to_string(i));
    s.fuse(cur, order[i], f);
    cur = f;
  }
  int64_t max_threads = t.max_threads > 0 ? t.max_threads : 256;
  int64_t threads = std::min<int64_t>(256, max_threads);
  std::vector<int64_t> counts;
  for (int64_t c : {32, 64, 128, 256, 512, 1024})
    if (c <= max_threads) counts.push_back(c);
  threads = kn.pick("threads", counts, threads);
  int64_t points = 1, e = 0;
  for (size_t i = 0; i < n; ++i) points = const_extent(chain[i], &e) ? points * e : 0;
  // Vulkan guarantees 65535 workgroups along x.
  // Few output points (a decode step's attention over its cache): a thread
  // each would leave most of the GPU idle, so a block shares each point's
  // reduction even where its loads do not coalesce.
  Stmt body = block(chain[n - 1]->body);
  bool few = points > 0 && points <= 4096 && has_reduction(k, body);
  // Few points whose reductions read columns: neighbouring threads (x) take
  // neighbouring output points so their loads coalesce, and the threads
  // along y share each point's reduction.
  int64_t factor = 1;
  for (size_t i = 0; i < n; ++i) factor *= known_factor(chain[i]->extent);
  if (few && reduces_columns(k, body, chain[n - 1]->var) && kn.pick("columns", true)) {
    int64_t cols = kn.pick("cols", {16, 32, 64}, 16);
    // Each thread sums its share of the rows one after another, so more
    // parts make shorter chains: on the H100, TinyLlama's P x V over ~600
    // rows took 7.6 us at 32 parts and 6.9 us at 64 (1024 threads);
    // elsewhere 32 at most.
    // A short constant reduction takes no more parts than it has rows (at
    // least 8): more would idle and lengthen the allreduce (deps:200's
    // 16-long steps had 1024-thread blocks, 48 of 64 parts idle).
    std::vector<int64_t> fitting;
    int64_t most = t.backend == "cuda" ? 64 : 32, preferred = 0;
    int64_t rows = longest_reduction(k, body);
    if (rows > 0) most = std::min(most, std::max<int64_t>(8, rows));
    for (int64_t p : {8, 16, 32, 64})
      if (cols * p <= max_threads) {
        fitting.push_back(p);
        if (p <= most) preferred = p;
      }
    int64_t parts = fitting.empty() ? 0 : kn.pick("parts", fitting, preferred);
    if (parts > 0 && factor % cols == 0) {
      Schedule c = s;
      std::string outer = fresh(k, "colb"), col = fresh(k, "col"), part = fresh(k, "part");
      c.split(cur, cols, outer, col).spread(col, parts, part).reorder({part, col});
      c.bind(outer, LoopKind::GpuBlock).bind(part, LoopKind::GpuThread).bind(col, LoopKind::GpuThread);
      try {
        apply(k, c);
        return c;
      } catch (const Error&) {
        // Not legal here: the schedules below.
      }
    }
  }
  // CUDA, short contiguous rows (an attention head's 64-long dot products,
  // one per cached position): a thread a row, reading it in 16-byte pieces,
  // rather than a warp sharing 64 elements and paying for the allreduce.
  // (On Vulkan, whose GLSL has no shuffles, a knob that is off.)
  bool cuda = t.backend == "cuda";
  std::vector<std::string> reds;  // the reduction loops that vector_width() found
  int64_t vec = vector_width(k, body, &reds), r = longest_reduction(k, body);
  // The schedules of short rows below take one reduction; rows a warp take
  // several side by side (a GEMV with a folded norm's sum of squares).
  std::string red = reds.size() == 1 ? reds[0] : "";
  // Better still on CUDA: the row's pieces spread over as many lanes (8 for a
  // 64-long f16 row), so a warp reads 4 whole rows in one coalesced step and a
  // decode step's 20,000 scores run as 160,000 threads, not 20,000 whose
  // serial loads keep 80 blocks busy; a butterfly of 3 shuffles combines them.
  // Rows a block: as many as fill `threads` and divide the output points, in
  // whole warps (the shuffles take every lane of a warp).
  int64_t lanes = !red.empty() && vec > 1 && r > 0 && r % vec == 0 ? r / vec : 0, lane_rows = 1;
  while (lanes > 0 && lane_rows * 2 * lanes <= threads && factor % (lane_rows * 2) == 0) lane_rows *= 2;
  if (lanes >= 2 && lanes <= 16 && (lanes & (lanes - 1)) == 0 && (points == 0 || points >= 1024) &&
      lane_rows * lanes % 32 == 0 && kn.pick("lane_rows", cuda)) {
    std::vector<std::string> order;
    Schedule c = symbols_outermost(chain, n, &order);
    std::string fused = order[0];
    for (size_t i = 1; i < order.size(); ++i) {
      std::string f = fresh(k, "f" + std::to_string(i));
      c.fuse(fused, order[i], f);
      fused = f;
    }
    std::string outer = fresh(k, "rowb"), row = fresh(k, "row"), th = fresh(k, "lane");
    std::string ro = fresh(k, red + "o"), rv = fresh(k, red + "v");
    c.split(red, vec, ro, rv).unroll(rv);
    c.split(fused, lane_rows, outer, row).spread(row, lanes, th);
    c.bind(outer, LoopKind::GpuBlock).bind(row, LoopKind::GpuThread).bind(th, LoopKind::GpuThread);
    try {
      apply(k, c);
      return c;
    } catch (const Error&) {
      // The schedules below.
    }
  }
  if (!red.empty() && vec > 1 && r > 0 && r % vec == 0 && r * 16 / vec <= 256 && (points == 0 || points >= 1024) &&
      kn.pick("thread_rows", cuda)) {
    Schedule c = s;
    std::string b = fresh(k, "blk"), th = fresh(k, "thr"), ro = fresh(k, red + "o"), rv = fresh(k, red + "v");
    // Both loops unrolled, so that every piece's load is in flight at once.
    c.split(red, vec, ro, rv).unroll(rv).unroll(ro);
    c.split(cur, threads, b, th).bind(b, LoopKind::GpuBlock).bind(th, LoopKind::GpuThread);
    try {
      apply(k, c);
      return c;
    } catch (const Error&) {
      // The schedules below.
    }
  }
  if (points <= 65535 && (few || reduces_rows(k, body, chain[n - 1]->var)) && kn.pick("spread", true)) {
    Schedule rows = s;
    std::string th = fresh(k, "thr");
    // A short reduction (a head's 64-long dot product) shared by 256 threads
    // leaves most of them idle and pays the allreduce for nothing: a block
    // gets about one thread for every 2 elements, a warp at least.
    int64_t spread_threads = threads;
    while (r > 0 && spread_threads > 32 && spread_threads > r / 2) spread_threads /= 2;
    // CUDA: a warp a row reading 16 bytes a thread a step (the GEMVs of a
    // decode step), when the row is a whole number of such steps. Fewer rows
    // than keep the GPU busy a warp each (a norm's one row) keep a block a
    // row, with as many threads as the row has pieces for.
    // Knob `row_lanes`: the threads a row of `pieces` 16-byte pieces takes
    // (whole warps that divide its pieces). A warp by default; 128 where that
    // leaves each thread at least 2 pieces of a plain (not 4-bit) row: on the
    // H100 (session 16, run 89) TinyLlama's f16 decode went 789 -> 843 tok/s
    // (its 2048-long rows: 256 pieces), gemv:11008x4096 f16 37.4 -> 36.7 us;
    // q4 rows (64 pieces) at 64 threads fell 934 -> 799 tok/s.
    auto row_lanes = [&](int64_t pieces, bool plain) {
      std::vector<int64_t> lanes;
      for (int64_t l : {32, 64, 128})
        if (l <= threads && pieces % l == 0) lanes.push_back(l);
      bool wide = plain && 128 <= threads && pieces % 128 == 0 && pieces / 128 >= 2;
      return kn.pick("row_lanes", lanes, int64_t(wide ? 128 : 32));
    };
    std::string vec_outer;
    std::vector<std::string> vec_outers, packed = vec > 1 ? std::vector<std::string>{} : reduction_loops(chain);
    // Side by side loops (a folded norm's sum of squares beside the product)
    // must have the row's length; one of them must read packed bytes.
    bool packs = r > 0 && r % 32 == 0 && !packed.empty();
    visit(body, [&](const Stmt& l) {
      int64_t e = 0;
      if (l->kind == StmtKind::For && std::count(packed.begin(), packed.end(), l->var))
        packs = packs && const_extent(l, &e) && e == r;
    });
    if (!(packs && std::any_of(packed.begin(), packed.end(), [&](const std::string& l) { return packs_bytes(k, body, l); })))
      packed.clear();
    if (!packed.empty() && kn.pick("packed_rows", cuda)) {
      // A 4-bit weight (two elements a byte, 32 a group) has no unit-stride
      // index, but 32 elements are 16 whole bytes: a warp a row, each lane
      // 32 elements a step, which the emitter reads as one 16-byte load of
      // the weight (and 64 bytes of the activations).
      for (const std::string& loop : packed) {
        std::string ro = fresh(k, loop + "o"), rv = fresh(k, loop + "v");
        rows.split(loop, 32, ro, rv).unroll(rv);
        vec_outers.push_back(ro);
      }
      vec_outer = vec_outers[0];
      spread_threads = row_lanes(r / 32, false);
      vec = 32;
    } else if (vec > 1 && r % (vec * 32) == 0 && kn.pick("vector_rows", true)) {
      for (const std::string& loop : reds) {
        std::string ro = fresh(k, loop + "o"), rv = fresh(k, loop + "v");
        rows.split(loop, vec, ro, rv).unroll(rv);
        vec_outers.push_back(ro);
      }
      vec_outer = vec_outers[0];
      int64_t many = 4 * std::max<int64_t>(t.cores, 32);
      if (cuda && points > 0 && points * 4 <= t.cores) {
        // A few rows for the whole GPU (a greedy argmax over 32,000 logits:
        // 8,000 pieces): the most whole warps that divide the row's pieces,
        // up to the block limit (800 threads, 10 pieces each). The powers of
        // two below gave it 64 threads and 125 pieces each: 17 us on the
        // H100 (session 22, run 108).
        spread_threads = 32;
        for (int64_t n = max_threads / 32 * 32; n > 32; n -= 32)
          if ((r / vec) % n == 0) {
            spread_threads = n;
            break;
          }
      } else if (points > 0 && points < many) {
        spread_threads = threads;
        while (spread_threads > 32 && r % (vec * spread_threads)) spread_threads /= 2;
      } else {
        spread_threads = row_lanes(r / vec, true);
      }
    }
    // CUDA, a few long rows or rows of symbolic length (a decode step's
    // softmax over the cache: 32 rows of `past`; its greedy argmax over the
    // vocabulary): twice the threads a row, so that each thread's passes over
    // its share are half as long (TinyLlama's softmax, run 31: 3.4 -> 3.1 us a
    // layer at 512 threads; 1024 gave 3.4).
    // A constant length takes the most whole warps up to the limit that
    // divide it, so no thread's share is ragged (32,000 logits: 800 threads,
    // 40 each, no guard).
    if (cuda && (r == 0 || r >= 8192) && points > 0 && points * 4 <= t.cores && spread_threads == threads &&
        vec_outer.empty()) {
      spread_threads = std::min<int64_t>(2 * threads, max_threads);
      for (int64_t n = max_threads / 32 * 32; r > 0 && n > threads; n -= 32)
        if (r % n == 0) {
          spread_threads = n;
          break;
        }
    }
    // Such short rows share a block (a warp each, rows along y), so that a
    // block does not do a single 64-long dot product: as many as fill
    // `threads`, dividing the output points so no row is partial.
    int64_t fit = 1;
    while (fit * 2 * spread_threads <= threads && factor % (fit * 2) == 0) fit *= 2;
    std::vector<int64_t> fits;
    for (int64_t f = 1; f <= fit; f *= 2) fits.push_back(f);
    int64_t per_block = kn.pick("rows", fits, fit);
    if (per_block > 1) {
      std::string outer = fresh(k, "rowb"), row = fresh(k, "row");
      rows.split(cur, per_block, outer, row).spread(row, spread_threads, th);
      rows.bind(outer, LoopKind::GpuBlock).bind(row, LoopKind::GpuThread).bind(th, LoopKind::GpuThread);
    } else {
      rows.spread(cur, spread_threads, th).bind(cur, LoopKind::GpuBlock).bind(th, LoopKind::GpuThread);
    }
    // A thread's pieces of a row (8 for a 2048-long f16 row on a warp) all
    // in flight at once.
    if (!vec_outer.empty() && r / (vec * spread_threads) <= 32 && kn.pick("unroll_pieces", true))
      for (const std::string& loop : vec_outers) rows.unroll(loop);
    try {
      apply(k, rows);
      return rows;
    } catch (const Error&) {
      // A body spread refuses keeps one thread per output point.
    }
  }
  std::string b = fresh(k, "blk"), th = fresh(k, "thr");
  // Elementwise kernels: each thread may take several consecutive points
  // (knob `elems`), an unrolled loop whose loads the GPU emitters read as one
  // vector and whose blocks are that many times fewer. Large ones take 8
  // bytes of output a thread: on the H100 the chain:268435456 (f32) took
  // 1.275 ms at one point a thread and 1.057 at two, the best of 17 tuned
  // candidates (session 11, run 63: 1.01x a device copy of the same bytes).
  // Small ones keep one a thread, so that their few blocks are not fewer.
  if (points > 0 && !has_reduction(k, body)) {
    std::vector<int64_t> per;
    for (int64_t e : {1, 2, 4, 8})
      if (points % (threads * e) == 0) per.push_back(e);
    int64_t out_bytes = 4;
    for (const BufferDecl& buf : k.buffers)
      if (buf.output) out_bytes = dtype_size(buf.dtype);
    int64_t wide = points >= (int64_t(1) << 20) ? 8 / out_bytes : 1;
    if (std::find(per.begin(), per.end(), wide) == per.end()) wide = 1;
    int64_t elems = per.empty() ? 1 : kn.pick("elems", per, wide);
    if (elems > 1) {
      Schedule several = s;
      std::string rest = fresh(k, "pts"), pt = fresh(k, "pt");
      several.split(cur, elems, rest, pt).split(rest, threads, b, th).unroll(pt);
      several.bind(b, LoopKind::GpuBlock).bind(th, LoopKind::GpuThread);
      try {
        apply(k, several);
        return several;
      } catch (const Error&) {
        // One point a thread.
      }
    }
  }
  s.split(cur, threads, b, th).bind(b, LoopKind::GpuBlock).bind(th, LoopKind::GpuThread);
  return s;
}

// Sizes a matrix unit's tile may take along one side besides 0 (the
// emitter's own choice): the powers of two from 1/64 of the largest tile (at
// least 16) up to it.
std::vector<int64_t> tile_sizes(int64_t largest) {
  std::vector<int64_t> out;
  for (int64_t v = 16; v <= largest; v *= 2)
    if (v * 64 >= largest) out.push_back(v);
  return out;
}

// Whether reduction loop `r` of the chain sums products (acc += a * b): a
// contraction, which a matrix unit takes.
bool sums_products(const Kernel& k, const std::vector<Stmt>& chain, const std::string& r) {
  bool products = false;
  visit(chain.back(), [&](const Stmt& s) {
    if (s->kind != StmtKind::For || s->var != r) return;
    std::optional<Reduction> red = reduction_of(k, s);
    if (!red || red->op != BinOp::Add) return;
    visit(s, [&](const Stmt& st) {
      if (st->kind != StmtKind::Store || st->value->kind != ExprKind::Binary) return;
      for (const Expr& a : st->value->args) products |= a->kind == ExprKind::Binary && a->binop == BinOp::Mul;
    });
  });
  return products;
}

// A contraction on the systolic array: the schedule says how it is tiled
// (the array_tile step; the emitter sizes the DMAs, weight loads and matmul
// instructions by it). Knobs: the tile's output rows (sys_tm), reduction
// depth (sys_tk) and output columns (sys_tn); with all three at 0 the emitter
// picks (emit/systolic's resolve_tiling) and the schedule stays empty.
Schedule systolic_schedule(const Kernel& k, const DeviceInfo& t, Knobs& kn) {
  Schedule s;
  std::vector<Stmt> chain = top_chain(k);
  std::string r = chain.empty() ? "" : reduction_loop(chain);
  if (r.empty() || !sums_products(k, chain, r)) return s;
  if (t.matrix_tile_m <= 0 || t.matrix_tile_k <= 0 || t.matrix_tile_n <= 0) return s;
  int64_t tm = kn.pick("sys_tm", tile_sizes(t.matrix_tile_m), 0);
  int64_t tk = kn.pick("sys_tk", tile_sizes(t.matrix_tile_k), 0);
  int64_t tn = kn.pick("sys_tn", tile_sizes(t.matrix_tile_n), 0);
  if (tm || tk || tn) s.array_tile(r, tm, tk, tn);
  return s;
}

}  // namespace

Schedule schedule_with(const Kernel& k, const DeviceInfo& target, Knobs& knobs) {
  if (target.backend == "cpu") return cpu_schedule(k, target, knobs);
  if (target.backend == "cuda" || target.backend == "vulkan") return gpu_schedule(k, target, knobs);
  if (target.backend == "systolic") return systolic_schedule(k, target, knobs);
  return {};
}

Schedule default_schedule(const Kernel& k, const DeviceInfo& target) {
  Knobs defaults;
  return schedule_with(k, target, defaults);
}

}  // namespace kiln
