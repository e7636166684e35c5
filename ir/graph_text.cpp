// The Graph IR's text form:
//   graph main(seq in [1, 4096]) {
//     %0 = input "x" : f32[seq, 1024]
//     %1 = reduce_sum %0 {axes=[1]} : f32[seq, 1]
//     return %1
//   }
// The parser rebuilds every node through Graph::add, so a parsed graph passes
// the same checks as one built with the builders.
#include <map>

#include "ir/text_parser.h"
#include "kiln/graph.h"

namespace kiln {

namespace {

using text::Tok;
using text::Token;

bool uses_axes(Op op) {
  return op_class(op) == OpClass::Reduce || op == Op::Permute || op == Op::Flip || op == Op::Gather;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string int_list(const std::vector<int64_t>& v, bool stops = false) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? ", " : "") + (stops && v[i] == kSliceEnd ? std::string("end") : std::to_string(v[i]));
  return s + "]";
}

std::string attributes(const Node& n) {
  if (n.op == Op::Input && n.immutable) return " {immutable}";
  if (uses_axes(n.op)) return " {axes=" + int_list(n.axes) + "}";
  if (n.op == Op::Slice)
    return " {starts=" + int_list(n.starts) + ", stops=" + int_list(n.stops, true) + ", steps=" + int_list(n.steps) +
           "}";
  if (n.op == Op::Pad)
    return " {lo=" + int_list(n.pad_lo) + ", hi=" + int_list(n.pad_hi) + ", value=" + text::format_double(n.value) +
           "}";
  return "";
}

std::string print_node(int id, const Node& n) {
  std::string s = "  %" + std::to_string(id) + " = " + std::string(op_name(n.op));
  if (n.op == Op::Input) s += " " + quote(n.name);
  if (n.op == Op::Const) s += " " + text::format_double(n.value);
  for (size_t i = 0; i < n.inputs.size(); ++i) s += (i ? ", %" : " %") + std::to_string(n.inputs[i]);
  return s + attributes(n) + " : " + std::string(dtype_name(n.dtype)) + shape_str(n.shape) + "\n";
}

class GraphParser : text::Parser {
 public:
  explicit GraphParser(std::string_view text) : Parser(text, "graph") {}
  Graph parse();

 private:
  struct Symbol {
    Dim dim;
    Token at;
  };

  void symbol();
  void node();
  int operand();
  Shape shape();
  Dim dim();
  void attributes(Node& n);
  std::vector<int64_t> ints(std::string_view key);
  void check_symbols_used() const;

  Graph g_;
  std::map<std::string, Symbol> symbols_;
};

Graph GraphParser::parse() {
  expect("graph");
  g_.name = expect_ident("a graph name");
  expect("(");
  comma_list(")", [&] { symbol(); });
  expect("{");
  while (!peek_is("return")) node();
  next();
  comma_list("}", [&] { g_.outputs.push_back(operand()); });
  expect_end();
  check_symbols_used();
  return std::move(g_);
}

// `name in [lo, hi]`
void GraphParser::symbol() {
  Token t = peek();
  std::string name = expect_ident("a symbolic dim name");
  expect("in");
  expect("[");
  int64_t lo = expect_int("a lower bound");
  expect(",");
  int64_t hi = expect_int("an upper bound");
  expect("]");
  if (symbols_.count(name)) fail(t, "symbolic dim '" + name + "' is declared twice");
  symbols_.emplace(name, Symbol{at(t, [&] { return Dim::symbol(name, lo, hi); }), t});
}

// `%N = op operands {attributes} : dtype[shape]`
void GraphParser::node() {
  if (!peek_is("%")) expected("a node ('%" + std::to_string(g_.nodes.size()) + " = ...') or 'return'");
  next();
  const Token& id = peek();
  if (id.kind != Tok::Number || !id.suffix.empty() || id.text != std::to_string(g_.nodes.size()))
    expected("node number " + std::to_string(g_.nodes.size()) + " (nodes are numbered in order)");
  next();
  expect("=");
  Token op_at = peek();
  std::string op = expect_ident("an op name");
  Node n;
  n.op = at(op_at, [&] { return parse_op(op); });
  Token name_at = peek();
  if (n.op == Op::Input) n.name = expect_string("an input name");
  if (n.op == Op::Const) n.value = expect_double("a constant value");
  if (op_class(n.op) != OpClass::Source) do n.inputs.push_back(operand()); while (accept(","));
  attributes(n);
  expect(":");
  n.dtype = expect_dtype();
  n.shape = shape();
  for (const Node& o : g_.nodes)
    if (n.op == Op::Input && o.op == Op::Input && o.name == n.name)
      fail(name_at, "two inputs are named " + quote(n.name));
  at(op_at, [&] { return g_.add(n); });
}

// `%N`, a node defined above.
int GraphParser::operand() {
  if (!accept("%")) expected("an operand ('%N')");
  const Token& t = peek();
  if (t.kind != Tok::Number || !t.suffix.empty()) expected("a node number");
  int64_t id = number<int64_t>(t, false);
  if (id >= int64_t(g_.nodes.size())) fail(t, "%" + t.text + " is not defined above (expected an earlier node)");
  next();
  return int(id);
}

Shape GraphParser::shape() {
  expect("[");
  Shape s;
  comma_list("]", [&] { s.push_back(dim()); });
  return s;
}

Dim GraphParser::dim() {
  if (peek().kind != Tok::Ident) return Dim(expect_int("a dim"));
  Token t = next();
  auto it = symbols_.find(t.text);
  if (it == symbols_.end()) fail(t, "unknown symbolic dim '" + t.text + "' (declare it in the graph header)");
  return it->second.dim;
}

void GraphParser::attributes(Node& n) {
  bool slice = n.op == Op::Slice, pad = n.op == Op::Pad;
  if (n.op == Op::Input && accept("{")) {
    expect("immutable");
    n.immutable = true;
    expect("}");
    return;
  }
  if (!uses_axes(n.op) && !slice && !pad) return;
  expect("{");
  if (uses_axes(n.op)) n.axes = ints("axes");
  if (slice) {
    n.starts = ints("starts");
    expect(",");
    n.stops = ints("stops");
    expect(",");
    n.steps = ints("steps");
  }
  if (pad) {
    n.pad_lo = ints("lo");
    expect(",");
    n.pad_hi = ints("hi");
    expect(",");
    expect("value");
    expect("=");
    n.value = expect_double("a pad value");
  }
  expect("}");
}

// `key=[i, ...]`; slice stops may say `end`.
std::vector<int64_t> GraphParser::ints(std::string_view key) {
  expect(key);
  expect("=");
  expect("[");
  std::vector<int64_t> v;
  bool end_ok = key == "stops";
  comma_list("]", [&] { v.push_back(end_ok && accept("end") ? kSliceEnd : expect_int("an integer")); });
  return v;
}

// print() lists exactly the symbols the nodes use, so text must too.
void GraphParser::check_symbols_used() const {
  std::vector<Dim> used = g_.symbols();
  for (const auto& [name, s] : symbols_) {
    bool found = false;
    for (const Dim& d : used) found = found || d.sym == name;
    if (!found) fail(s.at, "symbolic dim '" + name + "' is declared but no node uses it");
  }
}

}  // namespace

std::string print(const Graph& g) {
  std::string s = "graph " + g.name + "(";
  std::vector<Dim> syms = g.symbols();
  for (size_t i = 0; i < syms.size(); ++i)
    s += (i ? ", " : "") + syms[i].sym + " in [" + std::to_string(syms[i].lo) + ", " + std::to_string(syms[i].hi) + "]";
  s += ") {\n";
  for (size_t i = 0; i < g.nodes.size(); ++i) s += print_node(int(i), g.nodes[i]);
  s += "  return";
  for (size_t i = 0; i < g.outputs.size(); ++i) s += (i ? ", %" : " %") + std::to_string(g.outputs[i]);
  return s + "\n}\n";
}

Graph parse_graph(std::string_view text) { return GraphParser(text).parse(); }

}  // namespace kiln
