#include "kiln/kernel.h"

#include <algorithm>

#include "kiln/error.h"

namespace kiln {

std::string_view valtype_name(ValType t) {
  switch (t) {
    case ValType::f32: return "f32";
    case ValType::i32: return "i32";
    case ValType::i64: return "i64";
    case ValType::b1: return "bool";
  }
  return "?";
}

ValType valtype_of(DType storage) {
  if (is_float(storage)) return ValType::f32;
  if (is_integer(storage)) return ValType::i32;
  return ValType::b1;
}

std::string_view unop_name(UnOp op) {
  switch (op) {
    case UnOp::Neg: return "neg";
    case UnOp::Exp2: return "exp2";
    case UnOp::Log2: return "log2";
    case UnOp::Sqrt: return "sqrt";
    case UnOp::Recip: return "recip";
    case UnOp::Sin: return "sin";
    case UnOp::Not: return "not";
  }
  return "?";
}

std::string_view binop_name(BinOp op) {
  switch (op) {
    case BinOp::Add: return "add";
    case BinOp::Sub: return "sub";
    case BinOp::Mul: return "mul";
    case BinOp::Div: return "div";
    case BinOp::Mod: return "mod";
    case BinOp::Max: return "max";
    case BinOp::Min: return "min";
    case BinOp::CmpLt: return "cmplt";
    case BinOp::CmpEq: return "cmpeq";
    case BinOp::And: return "and";
    case BinOp::Or: return "or";
  }
  return "?";
}

std::string_view loopkind_name(LoopKind k) {
  switch (k) {
    case LoopKind::Serial: return "serial";
    case LoopKind::Parallel: return "parallel";
    case LoopKind::Unrolled: return "unrolled";
    case LoopKind::Vectorized: return "vectorized";
    case LoopKind::GpuBlock: return "gpu_block";
    case LoopKind::GpuThread: return "gpu_thread";
  }
  return "?";
}

std::string_view memscope_name(MemScope s) {
  switch (s) {
    case MemScope::Global: return "global";
    case MemScope::Shared: return "shared";
    case MemScope::Local: return "local";
  }
  return "?";
}

namespace {

std::shared_ptr<ExprNode> make(ExprKind kind, ValType type) {
  auto e = std::make_shared<ExprNode>();
  e->kind = kind;
  e->type = type;
  return e;
}

bool is_int_const(const Expr& e, int64_t* v = nullptr) {
  if (e->kind != ExprKind::Const || e->type == ValType::f32) return false;
  if (v) *v = e->ival;
  return true;
}

void require(const Expr& e, const char* what) {
  if (!e) throw Error(std::string("kernel IR: ") + what + " has no operand");
}

}  // namespace

Expr const_f32(double v) {
  auto e = make(ExprKind::Const, ValType::f32);
  e->fval = static_cast<float>(v);
  return e;
}

Expr const_int(ValType t, int64_t v) {
  if (t == ValType::f32) return const_f32(static_cast<double>(v));
  auto e = make(ExprKind::Const, t);
  e->ival = t == ValType::b1 ? (v != 0) : t == ValType::i32 ? static_cast<int32_t>(v) : v;
  return e;
}

Expr idx(int64_t v) { return const_int(ValType::i64, v); }

Expr var(std::string name) {
  auto e = make(ExprKind::Var, ValType::i64);
  e->name = std::move(name);
  return e;
}

Expr load(int buffer, ValType type, Expr index) {
  require(index, "load");
  if (index->type != ValType::i64) throw Error("kernel IR: a load index must be i64");
  auto e = make(ExprKind::Load, type);
  e->buffer = buffer;
  e->args = {std::move(index)};
  return e;
}

Expr unary(UnOp op, Expr a) {
  require(a, "unary");
  if (op == UnOp::Not ? a->type != ValType::b1 : (op != UnOp::Neg && a->type != ValType::f32))
    throw Error(std::string("kernel IR: ") + std::string(unop_name(op)) + " does not take " +
                std::string(valtype_name(a->type)));
  auto e = make(ExprKind::Unary, a->type);
  e->unop = op;
  e->args = {std::move(a)};
  return e;
}

Expr binary(BinOp op, Expr a, Expr b) {
  require(a, "binary");
  require(b, "binary");
  if (a->type != b->type)
    throw Error(std::string("kernel IR: ") + std::string(binop_name(op)) + " of " +
                std::string(valtype_name(a->type)) + " and " + std::string(valtype_name(b->type)));
  bool logical = op == BinOp::And || op == BinOp::Or;
  bool ok = logical ? a->type == ValType::b1
            : a->type == ValType::b1
                ? (op == BinOp::CmpEq || op == BinOp::CmpLt || op == BinOp::Max || op == BinOp::Min)
                : !(op == BinOp::Mod && a->type == ValType::f32);
  if (!ok)
    throw Error(std::string("kernel IR: ") + std::string(binop_name(op)) + " does not take " +
                std::string(valtype_name(a->type)));
  bool cmp = op == BinOp::CmpLt || op == BinOp::CmpEq;
  auto e = make(ExprKind::Binary, cmp ? ValType::b1 : a->type);
  e->binop = op;
  e->args = {std::move(a), std::move(b)};
  return e;
}

Expr select(Expr cond, Expr a, Expr b) {
  require(cond, "select");
  require(a, "select");
  require(b, "select");
  if (cond->type != ValType::b1) throw Error("kernel IR: select needs a bool condition");
  if (a->type != b->type) throw Error("kernel IR: select arms have different types");
  auto e = make(ExprKind::Select, a->type);
  e->args = {std::move(cond), std::move(a), std::move(b)};
  return e;
}

Expr cast(ValType to, Expr a) {
  require(a, "cast");
  if (a->type == to) return a;
  auto e = make(ExprKind::Cast, to);
  e->args = {std::move(a)};
  return e;
}

Expr round_to(DType storage, Expr a) {
  require(a, "round");
  if (a->type != valtype_of(storage))
    throw Error("kernel IR: round to " + std::string(dtype_name(storage)) + " of a " +
                std::string(valtype_name(a->type)) + " value");
  if (storage == f32 || storage == i32 || storage == boolean) return a;
  auto e = make(ExprKind::Round, a->type);
  e->round_to = storage;
  e->args = {std::move(a)};
  return e;
}

namespace {

// (x / c) * c + x % c == x for truncating division, whatever the sign of x:
// what a reshape of a reshape leaves behind in an index.
bool is_div_mod_pair(const Expr& a, const Expr& b, Expr* x) {
  auto is = [](const Expr& e, BinOp op) { return e->kind == ExprKind::Binary && e->binop == op; };
  if (!is(a, BinOp::Mul) || !is(b, BinOp::Mod) || !is(a->args[0], BinOp::Div)) return false;
  int64_t c1, c2, c3;
  const Expr& div = a->args[0];
  if (!is_int_const(div->args[1], &c1) || !is_int_const(a->args[1], &c2) || !is_int_const(b->args[1], &c3))
    return false;
  if (c1 != c2 || c1 != c3 || c1 == 0 || !equal(div->args[0], b->args[0])) return false;
  *x = b->args[0];
  return true;
}

}  // namespace

Expr operator+(const Expr& a, const Expr& b) {
  int64_t x, y;
  if (is_int_const(a, &x) && is_int_const(b, &y)) return const_int(a->type, x + y);
  Expr whole;
  if (is_div_mod_pair(a, b, &whole) || is_div_mod_pair(b, a, &whole)) return whole;
  if (is_int_const(a, &x) && x == 0) return b;
  if (is_int_const(b, &y) && y == 0) return a;
  return binary(BinOp::Add, a, b);
}

Expr operator-(const Expr& a, const Expr& b) {
  int64_t x, y;
  if (is_int_const(a, &x) && is_int_const(b, &y)) return const_int(a->type, x - y);
  if (is_int_const(b, &y) && y == 0) return a;
  return binary(BinOp::Sub, a, b);
}

Expr operator*(const Expr& a, const Expr& b) {
  int64_t x, y;
  if (is_int_const(a, &x) && is_int_const(b, &y)) return const_int(a->type, x * y);
  if (is_int_const(a, &x) && (x == 0 || x == 1)) return x == 0 ? a : b;
  if (is_int_const(b, &y) && (y == 0 || y == 1)) return y == 0 ? b : a;
  return binary(BinOp::Mul, a, b);
}

Expr operator/(const Expr& a, const Expr& b) {
  int64_t x, y;
  if (is_int_const(a, &x) && is_int_const(b, &y) && y != 0) return const_int(a->type, x / y);
  if (is_int_const(b, &y) && y == 1) return a;
  return binary(BinOp::Div, a, b);
}

Expr operator%(const Expr& a, const Expr& b) {
  int64_t x, y;
  if (is_int_const(a, &x) && is_int_const(b, &y) && y != 0) return const_int(a->type, x % y);
  if (is_int_const(b, &y) && y == 1) return const_int(a->type, 0);
  return binary(BinOp::Mod, a, b);
}

Stmt for_loop(std::string v, Expr extent, LoopKind kind, std::vector<Stmt> body) {
  require(extent, "for");
  if (extent->type != ValType::i64) throw Error("kernel IR: a loop extent must be i64");
  auto s = std::make_shared<StmtNode>();
  s->kind = StmtKind::For;
  s->var = std::move(v);
  s->extent = std::move(extent);
  s->loop = kind;
  s->body = std::move(body);
  return s;
}

Stmt store(int buffer, Expr index, Expr value) {
  require(index, "store");
  require(value, "store");
  if (index->type != ValType::i64) throw Error("kernel IR: a store index must be i64");
  auto s = std::make_shared<StmtNode>();
  s->kind = StmtKind::Store;
  s->buffer = buffer;
  s->index = std::move(index);
  s->value = std::move(value);
  return s;
}

Stmt block(std::vector<Stmt> body) {
  auto s = std::make_shared<StmtNode>();
  s->kind = StmtKind::Block;
  s->body = std::move(body);
  return s;
}

Stmt if_then(Expr cond, std::vector<Stmt> body) {
  require(cond, "if");
  if (cond->type != ValType::b1) throw Error("kernel IR: an if condition must be bool");
  auto s = std::make_shared<StmtNode>();
  s->kind = StmtKind::If;
  s->cond = std::move(cond);
  s->body = std::move(body);
  return s;
}

Stmt all_reduce(int buffer, BinOp op, std::string thread_var) {
  if (op != BinOp::Add && op != BinOp::Max && op != BinOp::Min)
    throw Error("kernel IR: allreduce combines with add, max or min, not " + std::string(binop_name(op)));
  auto s = std::make_shared<StmtNode>();
  s->kind = StmtKind::AllReduce;
  s->buffer = buffer;
  s->binop = op;
  s->var = std::move(thread_var);
  return s;
}

std::vector<int> Kernel::global_buffers() const {
  std::vector<int> out;
  for (int i = 0; i < int(buffers.size()); ++i)
    if (buffers[i].scope == MemScope::Global) out.push_back(i);
  return out;
}

int64_t evaluate_index(const Expr& e, const std::map<std::string, int64_t>& vars) {
  switch (e->kind) {
    case ExprKind::Const:
      if (e->type == ValType::f32) break;
      return e->ival;
    case ExprKind::Var: {
      auto it = vars.find(e->name);
      if (it == vars.end()) throw Error("kernel IR: variable '" + e->name + "' has no value");
      return it->second;
    }
    case ExprKind::Binary: {
      int64_t a = evaluate_index(e->args[0], vars), b = evaluate_index(e->args[1], vars);
      switch (e->binop) {
        case BinOp::Add: return a + b;
        case BinOp::Sub: return a - b;
        case BinOp::Mul: return a * b;
        case BinOp::Div: case BinOp::Mod:
          if (b == 0) throw Error("kernel IR: division by zero in an index expression");
          return e->binop == BinOp::Div ? a / b : a % b;
        case BinOp::Max: return std::max(a, b);
        case BinOp::Min: return std::min(a, b);
        default: break;
      }
      break;
    }
    default: break;
  }
  throw Error("kernel IR: expression is not integer arithmetic on variables");
}

bool equal(const Expr& a, const Expr& b) {
  if (a == b) return true;
  if (!a || !b) return false;
  if (a->kind != b->kind || a->type != b->type || a->fval != b->fval || a->ival != b->ival ||
      a->name != b->name || a->buffer != b->buffer || a->unop != b->unop || a->binop != b->binop ||
      a->round_to != b->round_to || a->args.size() != b->args.size())
    return false;
  for (size_t i = 0; i < a->args.size(); ++i)
    if (!equal(a->args[i], b->args[i])) return false;
  return true;
}

bool equal(const Stmt& a, const Stmt& b) {
  if (a == b) return true;
  if (!a || !b) return false;
  if (a->kind != b->kind || a->var != b->var || a->loop != b->loop || a->buffer != b->buffer || a->binop != b->binop ||
      !equal(a->extent, b->extent) || !equal(a->index, b->index) || !equal(a->value, b->value) ||
      !equal(a->cond, b->cond) || a->body.size() != b->body.size())
    return false;
  for (size_t i = 0; i < a->body.size(); ++i)
    if (!equal(a->body[i], b->body[i])) return false;
  return true;
}

bool operator==(const Kernel& a, const Kernel& b) {
  if (a.name != b.name || a.params != b.params || a.buffers.size() != b.buffers.size() || !(a.array_tile == b.array_tile))
    return false;
  for (size_t i = 0; i < a.buffers.size(); ++i) {
    const BufferDecl &x = a.buffers[i], &y = b.buffers[i];
    if (x.name != y.name || x.dtype != y.dtype || x.scope != y.scope || x.size != y.size || x.output != y.output ||
        x.immutable != y.immutable)
      return false;
  }
  return equal(a.body, b.body);
}

}  // namespace kiln
