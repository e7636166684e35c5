// The Kernel IR's text form:
//   kernel add_0(seq) {
//     buffer x: f32 global
//     buffer y: f16 global out
//     parallel for i0 in seq {
//       y[i0] = round<f16>(add(x[i0], 1.5f))
//     }
//   }
// The parser rebuilds nodes with the raw constructors (never the folding
// operators), so parse_kernel(print(k)) has exactly k's tree.
#include <algorithm>
#include <cstdint>
#include <optional>

#include "ir/text_parser.h"
#include "kiln/kernel.h"

namespace kiln {

namespace {

using text::Tok;
using text::Token;

// The enumerator of E called `s`; E's values run from 0 to `last`.
template <class E>
std::optional<E> lookup(std::string_view s, std::string_view (*name)(E), E last) {
  for (int i = 0; i <= int(last); ++i)
    if (name(E(i)) == s) return E(i);
  return std::nullopt;
}

// How tightly an expression binds as printed: i64 + and - loosest, then * / %,
// then everything else (calls, loads, atoms).
int precedence(const Expr& e) {
  if (e->kind != ExprKind::Binary || e->type != ValType::i64) return 3;
  switch (e->binop) {
    case BinOp::Add: case BinOp::Sub: return 1;
    case BinOp::Mul: case BinOp::Div: case BinOp::Mod: return 2;
    default: return 3;
  }
}

const char* infix(BinOp op) {
  switch (op) {
    case BinOp::Add: return "+";
    case BinOp::Sub: return "-";
    case BinOp::Mul: return "*";
    case BinOp::Div: return "/";
    default: return "%";
  }
}

int tree_depth(const Expr& e) {
  int d = 0;
  for (const Expr& a : e->args) d = std::max(d, tree_depth(a));
  return d + 1;
}

std::string buffer_name(int b, const Kernel& k) {
  if (b < 0 || b >= int(k.buffers.size())) return "<buffer " + std::to_string(b) + ">";
  return k.buffers[b].name;
}

std::string constant(const ExprNode& e) {
  switch (e.type) {
    case ValType::f32: return text::format_float(static_cast<float>(e.fval)) + "f";
    case ValType::i32: return std::to_string(e.ival) + "i32";
    case ValType::i64: return std::to_string(e.ival);
    case ValType::b1: return e.ival ? "true" : "false";
  }
  return "?";
}

// `e` as an operand of an infix operator of precedence `min`: parenthesized
// when it binds more loosely, so the text keeps the exact tree.
std::string operand(const Expr& e, const Kernel& k, int min) {
  std::string s = print(e, k);
  return precedence(e) < min ? "(" + s + ")" : s;
}

std::string print_call(const std::string& name, const std::vector<Expr>& args, const Kernel& k) {
  std::string s = name + "(";
  for (size_t i = 0; i < args.size(); ++i) s += (i ? ", " : "") + print(args[i], k);
  return s + ")";
}

void print_stmt(std::string& out, const Stmt& s, const Kernel& k, int depth);

void print_stmts(std::string& out, const std::vector<Stmt>& body, const Kernel& k, int depth) {
  for (const Stmt& s : body) print_stmt(out, s, k, depth);
}

void print_stmt(std::string& out, const Stmt& s, const Kernel& k, int depth) {
  std::string pad(2 * depth, ' ');
  switch (s->kind) {
    case StmtKind::For:
      out += pad + std::string(loopkind_name(s->loop)) + " for " + s->var + " in " + print(s->extent, k) + " {\n";
      break;
    case StmtKind::Store:
      out += pad + buffer_name(s->buffer, k) + "[" + print(s->index, k) + "] = " + print(s->value, k) + "\n";
      return;
    case StmtKind::Block: out += pad + "block {\n"; break;
    case StmtKind::If: out += pad + "if " + print(s->cond, k) + " {\n"; break;
    case StmtKind::AllReduce:
      out += pad + "allreduce " + buffer_name(s->buffer, k) + "[0] " + std::string(binop_name(s->binop)) + " over " +
             s->var + "\n";
      return;
  }
  print_stmts(out, s->body, k, depth + 1);
  out += pad + "}\n";
}

class KernelParser : text::Parser {
 public:
  explicit KernelParser(std::string_view text) : Parser(text, "kernel") {}
  Kernel parse();

 private:
  void param();
  void buffer();
  void array_tile();
  std::vector<Stmt> statements();
  std::vector<Stmt> braced();
  Stmt statement();
  Stmt loop(LoopKind kind);
  Stmt assignment();
  Stmt allreduce();
  Expr expr();
  Expr term();
  Expr primary();
  Expr literal();
  Expr call(const Token& name);
  Expr conversion(const Token& name);
  std::vector<Expr> args(size_t n);
  int buffer_ref(const Token& name) const;
  Expr variable(const Token& name) const;

  template <class E>
  E expect_enum(std::string_view (*name)(E), E last, const std::string& what) {
    std::optional<E> e = peek().kind == Tok::Ident ? lookup(peek().text, name, last) : std::nullopt;
    if (!e) expected(what);
    next();
    return *e;
  }

  // Runs a constructor, adding `t`'s position to its errors and bounding the
  // tree's depth (infix chains deepen it without nesting the parser).
  template <class F>
  Expr build(const Token& t, F&& f) {
    Expr e = at(t, f);
    if (tree_depth(e) > text::kMaxDepth)
      fail(t, "expression is nested deeper than " + std::to_string(text::kMaxDepth) + " levels");
    return e;
  }

  Kernel k_;
  std::vector<std::string> scope_;  // params, then the enclosing loop variables
};

Kernel KernelParser::parse() {
  expect("kernel");
  k_.name = expect_ident("a kernel name");
  expect("(");
  comma_list(")", [&] { param(); });
  expect("{");
  // `buffer[` would start a store to a buffer named "buffer".
  while (peek_is("buffer") && peek(1).kind == Tok::Ident) buffer();
  if (peek_is("array_tile") && (peek(1).kind == Tok::Number || peek_is("-", 1))) array_tile();
  k_.body = block(statements());
  expect_end();
  return std::move(k_);
}

void KernelParser::param() {
  Token t = peek();
  std::string name = expect_ident("a parameter name");
  if (std::count(k_.params.begin(), k_.params.end(), name)) fail(t, "parameter '" + name + "' is declared twice");
  k_.params.push_back(name);
  scope_.push_back(name);
}

// `array_tile M, K, N` or `array_tile M, K, N, STAGES`, then maybe `wgmma`
// and after it maybe `tma`
void KernelParser::array_tile() {
  next();
  int64_t* sizes[] = {&k_.array_tile.m, &k_.array_tile.k, &k_.array_tile.n, &k_.array_tile.stages};
  for (int i = 0; i < 4; ++i) {
    if (i == 3 && !peek_is(",")) break;
    if (i) expect(",");
    Token t = peek();
    *sizes[i] = expect_int("an array tile size");
    if (*sizes[i] < 0) fail(t, "expected an array tile size >= 0");
  }
  if (peek_is("wgmma")) {
    next();
    k_.array_tile.warpgroup = true;
    if (peek_is("tma")) {
      next();
      k_.array_tile.tma = true;
    }
  }
}

// `buffer name: dtype scope[size] out` (or `immutable` for `out`)
void KernelParser::buffer() {
  next();
  Token t = peek();
  BufferDecl b;
  b.name = expect_ident("a buffer name");
  for (const BufferDecl& o : k_.buffers)
    if (o.name == b.name) fail(t, "buffer '" + b.name + "' is declared twice");
  expect(":");
  b.dtype = expect_dtype();
  b.scope = expect_enum(memscope_name, MemScope::Local, "a memory scope (global, shared or local)");
  if (accept("[")) {
    Token size_at = peek();
    b.size = expect_int("a buffer size");
    if (b.size < 0) fail(size_at, "expected a buffer size >= 0");
    expect("]");
  }
  // `out[` would start a store to a buffer named "out".
  b.output = peek_is("out") && !peek_is("[", 1) && accept("out");
  // Likewise `immutable[` would start a store.
  if (!b.output && peek_is("immutable") && !peek_is("[", 1) && accept("immutable")) {
    if (b.scope != MemScope::Global) fail(t, "only a global buffer can be immutable");
    b.immutable = true;
  }
  k_.buffers.push_back(b);
}

// Statements up to and including the closing '}'.
std::vector<Stmt> KernelParser::statements() {
  std::vector<Stmt> body;
  while (!accept("}")) body.push_back(statement());
  return body;
}

std::vector<Stmt> KernelParser::braced() {
  expect("{");
  return statements();
}

Stmt KernelParser::statement() {
  Nest nest(*this);
  Token t = peek();
  if (t.kind == Tok::Ident && peek_is("[", 1)) return assignment();
  if (accept("block")) return block(braced());
  if (peek_is("allreduce")) return allreduce();
  if (accept("if")) {
    Expr cond = expr();
    std::vector<Stmt> body = braced();
    return at(t, [&] { return if_then(cond, body); });
  }
  std::optional<LoopKind> kind = lookup(t.text, loopkind_name, LoopKind::GpuThread);
  if (t.kind == Tok::Ident && kind && peek_is("for", 1)) return loop(*kind);
  expected("a statement (a loop, 'if', 'block' or a store) or '}'");
}

// `kind for v in extent { body }`; v is visible in the body only.
Stmt KernelParser::loop(LoopKind kind) {
  Token t = next();
  expect("for");
  std::string v = expect_ident("a loop variable");
  expect("in");
  Expr extent = expr();
  scope_.push_back(v);
  std::vector<Stmt> body = braced();
  scope_.pop_back();
  return at(t, [&] { return for_loop(v, extent, kind, body); });
}

// `buf[index] = value`
Stmt KernelParser::assignment() {
  Token t = next();
  int b = buffer_ref(t);
  expect("[");
  Expr index = expr();
  expect("]");
  expect("=");
  Expr value = expr();
  return at(t, [&] { return store(b, index, value); });
}

// `allreduce acc[0] max over t`: acc is a local buffer, t an enclosing loop.
Stmt KernelParser::allreduce() {
  Token t = next();
  Token name = next();
  int b = buffer_ref(name);
  if (k_.buffers[b].scope != MemScope::Local) fail(name, "allreduce needs a local buffer, not '" + name.text + "'");
  expect("[");
  Token at0 = peek();
  if (expect_int("0") != 0) fail(at0, "allreduce combines element 0");
  expect("]");
  BinOp op = expect_enum(binop_name, BinOp::Or, "add, max or min");
  expect("over");
  Token v = peek();
  std::string thread = expect_ident("a thread loop variable");
  if (std::find(scope_.begin() + k_.params.size(), scope_.end(), thread) == scope_.end())
    fail(v, "'" + thread + "' is not an enclosing loop variable");
  return at(t, [&] { return all_reduce(b, op, thread); });
}

Expr KernelParser::expr() {
  Expr e = term();
  while (peek_is("+") || peek_is("-")) {
    Token op = next();
    Expr rhs = term();
    e = build(op, [&] { return binary(op.text == "+" ? BinOp::Add : BinOp::Sub, e, rhs); });
  }
  return e;
}

Expr KernelParser::term() {
  Expr e = primary();
  while (peek_is("*") || peek_is("/") || peek_is("%")) {
    Token op = next();
    Expr rhs = primary();
    BinOp b = op.text == "*" ? BinOp::Mul : op.text == "/" ? BinOp::Div : BinOp::Mod;
    e = build(op, [&] { return binary(b, e, rhs); });
  }
  return e;
}

Expr KernelParser::primary() {
  Nest nest(*this);
  if (accept("(")) {
    Expr e = expr();
    expect(")");
    return e;
  }
  if (peek().kind == Tok::Number || peek_is("-") || peek_is("inff") || peek_is("nanf")) return literal();
  if (peek().kind != Tok::Ident) expected("an expression");
  Token name = next();
  if (name.text == "true" || name.text == "false") return const_int(ValType::b1, name.text == "true");
  if ((name.text == "cast" || name.text == "round") && peek_is("<")) return conversion(name);
  if (peek_is("(")) return call(name);
  if (!accept("[")) return variable(name);
  int b = buffer_ref(name);
  Expr index = expr();
  expect("]");
  return build(name, [&] { return load(b, valtype_of(k_.buffers[b].dtype), index); });
}

// `42` (i64), `-3i32`, `1.5f`, `-inff`, `nanf`.
Expr KernelParser::literal() {
  bool negative = accept("-");
  bool special = peek_is("inff") || peek_is("nanf");
  if (peek().kind != Tok::Number && !special) expected("a number");
  Token t = next();
  if (special) {
    t.text.pop_back();
    t.suffix = "f";
  }
  if (t.suffix == "f") return const_f32(number<float>(t, negative));
  if (t.suffix == "i32") {
    int64_t v = number<int64_t>(t, negative);
    if (v < INT32_MIN || v > INT32_MAX) fail(t, "number " + t.text + " is out of range for i32");
    return const_int(ValType::i32, v);
  }
  if (!t.suffix.empty())
    fail(t, "unknown number suffix '" + t.suffix + "' (expected none for i64, 'i32', or 'f' for f32)");
  return idx(number<int64_t>(t, negative));
}

// `op(args)`: a unary or binary op by name, or select.
Expr KernelParser::call(const Token& name) {
  if (std::optional<UnOp> op = lookup(name.text, unop_name, UnOp::Not)) {
    std::vector<Expr> a = args(1);
    return build(name, [&] { return unary(*op, a[0]); });
  }
  if (std::optional<BinOp> op = lookup(name.text, binop_name, BinOp::Or)) {
    std::vector<Expr> a = args(2);
    return build(name, [&] { return binary(*op, a[0], a[1]); });
  }
  if (name.text != "select")
    fail(name, "unknown function '" + name.text + "' (expected an op such as add, exp2 or select)");
  std::vector<Expr> a = args(3);
  return build(name, [&] { return select(a[0], a[1], a[2]); });
}

// `cast<valtype>(a)` or `round<dtype>(a)`. A no-op conversion builds no node,
// so text that claims one could not round-trip.
Expr KernelParser::conversion(const Token& name) {
  expect("<");
  bool is_cast = name.text == "cast";
  ValType to = ValType::f32;
  DType storage = f32;
  if (is_cast) to = expect_enum(valtype_name, ValType::b1, "a value type (f32, i32, i64 or bool)");
  else storage = expect_dtype();
  expect(">");
  Expr a = args(1)[0];
  Expr e = build(name, [&] { return is_cast ? cast(to, a) : round_to(storage, a); });
  if (e == a)
    fail(name, is_cast ? "cast to the type the value already has (a no-op)"
                       : "round to " + std::string(dtype_name(storage)) + " is a no-op (expected f16, bf16, i8 or u8)");
  return e;
}

std::vector<Expr> KernelParser::args(size_t n) {
  expect("(");
  std::vector<Expr> out;
  for (size_t i = 0; i < n; ++i) {
    if (i) expect(",");
    out.push_back(expr());
  }
  expect(")");
  return out;
}

int KernelParser::buffer_ref(const Token& name) const {
  for (size_t i = 0; i < k_.buffers.size(); ++i)
    if (k_.buffers[i].name == name.text) return int(i);
  fail(name, "unknown buffer '" + name.text + "'");
}

Expr KernelParser::variable(const Token& name) const {
  if (std::find(scope_.begin(), scope_.end(), name.text) == scope_.end())
    fail(name, "unknown variable '" + name.text + "' (expected a kernel parameter or an enclosing loop variable)");
  return var(name.text);
}

}  // namespace

std::string print(const Expr& e, const Kernel& k) {
  switch (e->kind) {
    case ExprKind::Const: return constant(*e);
    case ExprKind::Var: return e->name;
    case ExprKind::Load: return buffer_name(e->buffer, k) + "[" + print(e->args[0], k) + "]";
    case ExprKind::Unary: return print_call(std::string(unop_name(e->unop)), e->args, k);
    case ExprKind::Binary: {
      int p = precedence(e);
      if (p == 3) return print_call(std::string(binop_name(e->binop)), e->args, k);
      return operand(e->args[0], k, p) + " " + infix(e->binop) + " " + operand(e->args[1], k, p + 1);
    }
    case ExprKind::Select: return print_call("select", e->args, k);
    case ExprKind::Cast: return print_call("cast<" + std::string(valtype_name(e->type)) + ">", e->args, k);
    case ExprKind::Round: return print_call("round<" + std::string(dtype_name(e->round_to)) + ">", e->args, k);
  }
  return "?";
}

std::string print(const Kernel& k) {
  std::string s = "kernel " + k.name + "(";
  for (size_t i = 0; i < k.params.size(); ++i) s += (i ? ", " : "") + k.params[i];
  s += ") {\n";
  for (const BufferDecl& b : k.buffers) {
    s += "  buffer " + b.name + ": " + std::string(dtype_name(b.dtype)) + " " + std::string(memscope_name(b.scope));
    if (b.scope != MemScope::Global || b.size != 0) s += "[" + std::to_string(b.size) + "]";
    s += b.output ? " out\n" : b.immutable ? " immutable\n" : "\n";
  }
  const ArrayTile& t = k.array_tile;
  if (t.any())
    s += "  array_tile " + std::to_string(t.m) + ", " + std::to_string(t.k) + ", " + std::to_string(t.n) +
         (t.stages ? ", " + std::to_string(t.stages) : "") + (t.warpgroup ? " wgmma" : "") + (t.tma ? " tma" : "") + "\n";
  // The body is a Block whose statements sit directly in the kernel's braces.
  if (k.body && k.body->kind == StmtKind::Block) print_stmts(s, k.body->body, k, 1);
  else if (k.body) print_stmt(s, k.body, k, 1);
  return s + "}\n";
}

Kernel parse_kernel(std::string_view text) { return KernelParser(text).parse(); }

}  // namespace kiln
