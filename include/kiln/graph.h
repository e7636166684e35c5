// The Graph IR: what to compute. A Graph is a list of Nodes in topological
// order; a node's inputs are indices of earlier nodes. Ops are a small primitive
// set (ARCHITECTURE.md); composites such as softmax are built from them by the
// frontend. Binary and ternary ops take operands of one shape: broadcasting is
// explicit (reshape + expand), which the Tensor API inserts.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/shape.h"

namespace kiln {

enum class Op : uint8_t {
  // sources
  Input,  // a named tensor bound at run time
  Const,  // every element equals `value`
  // unary elementwise
  Neg, Exp2, Log2, Sqrt, Recip, Sin, Cast,
  // binary elementwise
  Add, Sub, Mul, Div, Max, Min, CmpLt, CmpEq,
  // ternary elementwise: where(cond, a, b)
  Where,
  // reductions over `axes`; reduced axes keep extent 1
  ReduceSum, ReduceMax,
  // movement: views, lowered to index arithmetic, never copies
  Reshape, Permute, Expand, Slice, Pad, Flip,
  // gather(x, idx) along `axes[0]`, numpy.take semantics
  Gather,
  // contract(a [..., M, K], b [..., K, N]) -> [..., M, N]; batch dims broadcast
  Contract,
};

enum class OpClass : uint8_t { Source, Unary, Binary, Ternary, Reduce, Movement, Gather, Contract };

OpClass op_class(Op op);
std::string_view op_name(Op op);   // "add", "reduce_sum", ...
Op parse_op(std::string_view name);  // throws kiln::Error
bool is_elementwise(Op op);

// Slice stop meaning "to the end of the axis" (also works for symbolic dims).
inline constexpr int64_t kSliceEnd = std::numeric_limits<int64_t>::max();

struct Node {
  Op op = Op::Input;
  DType dtype = f32;
  Shape shape;
  std::vector<int> inputs;
  // Attributes; which ones an op uses is listed in graph.cpp's verifier.
  std::string name;                // Input
  // Input: the host sets it before any program reads it, no kernel writes it,
  // and it does not change while a program that reads it runs (model weights).
  // GPU kernels may then read it early and through read-only caches.
  bool immutable = false;
  double value = 0;                // Const, Pad (pad value)
  std::vector<int64_t> axes;       // ReduceSum/Max, Permute (the permutation), Flip, Gather (axis)
  std::vector<int64_t> starts, stops, steps;  // Slice, one per axis
  std::vector<int64_t> pad_lo, pad_hi;        // Pad, one per axis

  bool operator==(const Node& o) const = default;
};

struct Graph {
  std::string name = "main";
  std::vector<Node> nodes;
  std::vector<int> outputs;

  bool operator==(const Graph& o) const = default;

  // Builders: each infers the result's dtype and shape, checks the operands and
  // throws kiln::Error naming the op and the shapes on bad input. They return
  // the new node's index.
  int input(std::string name, DType dtype, Shape shape);
  int immutable_input(std::string name, DType dtype, Shape shape);  // see Node::immutable
  int constant(double value, DType dtype, Shape shape = {});
  int unary(Op op, int x);
  int cast(int x, DType to);
  int binary(Op op, int a, int b);
  int where(int cond, int a, int b);
  int reduce(Op op, int x, std::vector<int64_t> axes);
  int reshape(int x, Shape shape);
  int permute(int x, std::vector<int64_t> perm);
  int expand(int x, Shape shape);
  int slice(int x, std::vector<int64_t> starts, std::vector<int64_t> stops,
            std::vector<int64_t> steps);
  int pad(int x, std::vector<int64_t> lo, std::vector<int64_t> hi, double value = 0);
  int flip(int x, std::vector<int64_t> axes);
  int gather(int x, int idx, int64_t axis);
  int contract(int a, int b);

  // Appends a node built elsewhere (the parser): infers its shape and dtype
  // from op, inputs and attributes and checks that they match what the node
  // says. Throws kiln::Error on any mismatch.
  int add(Node n);
  // What add() would append, without appending it: `n` with its dtype and shape
  // inferred from its operands (sources, casts, reshapes and expands keep theirs).
  Node infer(Node n) const;

  // Names of inputs in node order, and every symbolic dim used (name -> dim).
  std::vector<int> input_nodes() const;
  std::vector<Dim> symbols() const;
};

// Text form (ir/graph_text.cpp). print(parse(t)) == t for printed text, and
// parse(print(g)) == g.
std::string print(const Graph& g);
Graph parse_graph(std::string_view text);  // throws kiln::Error with line:col

}  // namespace kiln
