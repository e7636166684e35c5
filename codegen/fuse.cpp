#include "codegen/fuse.h"

#include <algorithm>
#include <set>

namespace kiln {

namespace {

constexpr int64_t kVectorOperand = 16384;  // elements
constexpr int kVectorExpression = 8;       // nodes
constexpr int kSharedLeaf = 32;            // nodes

bool is_stage_op(Op op) { return op_class(op) == OpClass::Reduce || op == Op::Contract; }

bool inlinable(Op op) {
  OpClass c = op_class(op);
  return op != Op::Input && (c == OpClass::Source || c == OpClass::Movement || c == OpClass::Gather || is_elementwise(op));
}

// The largest p (<= shape rank) such that a stage of `stage_shape` can be
// computed once per point of the first p dims of `shape`: equal dims before p,
// extent 1 from p on. Returns -1 if ranks differ or no p works.
int stage_prefix(const Shape& stage_shape, const Shape& shape) {
  if (stage_shape.size() != shape.size()) return -1;
  int p = int(shape.size());
  while (p > 0 && stage_shape[p - 1].is_one() && !shape[p - 1].is_one()) --p;
  for (int i = 0; i < p; ++i)
    if (stage_shape[i] != shape[i]) return -1;
  return p;
}

bool compatible(const Shape& stage_shape, const Shape& shape, int p) {
  if (stage_shape.size() != shape.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i)
    if (int(i) < p ? stage_shape[i] != shape[i] : !stage_shape[i].is_one()) return false;
  return true;
}

// Output `i` (a reshape or slice) as a run of the first stored node below it:
// {that node, the run's first element}, or {i, 0} where a slice on the way
// does not keep the run contiguous.
std::pair<int, int64_t> contiguous_run(const Graph& g, int i, const std::vector<bool>& materialized) {
  int x = i;
  int64_t offset = 0;
  while (x == i || !materialized[x]) {
    const Node& n = g.nodes[x];
    if (n.op == Op::Slice) {
      // Contiguous when every dim inside the outermost partial one is whole
      // and every dim outside it keeps a single index.
      const Shape& in = g.nodes[n.inputs[0]].shape;
      if (!is_static(in)) return {i, 0};
      bool inside_whole = true;
      int64_t stride = 1;
      for (size_t d = in.size(); d-- > 0;) {
        int64_t size = in[d].value, extent = n.shape[d].value;
        if ((!inside_whole && extent != 1) || (extent > 1 && n.steps[d] != 1)) return {i, 0};
        offset += n.starts[d] * stride;
        inside_whole = inside_whole && extent == size;
        stride *= size;
      }
    } else if (n.op != Op::Reshape) {
      break;
    }
    x = n.inputs[0];
  }
  return {x, offset};
}

// A contraction's epilogue (the elementwise ops after it, one consumer each,
// through reshapes) whose result is then sliced (parts of one product read at
// different places: a stacked gate and up, or q, k and v) or reshaped into a
// shape no kernel could compute the contraction under (a GEMV's [out, 1]
// column read as a [1, out] row). Its last op is stored, so that the
// contraction, the epilogue and the stages it reads (a folded norm's sum of
// squares) make one kernel; otherwise the consumer would take the epilogue
// and leave the contraction, and those stages, kernels of their own.
std::set<int> cut_epilogues(const Graph& g, const std::vector<std::vector<int>>& consumers) {
  std::set<int> ends;
  for (int c = 0; c < int(g.nodes.size()); ++c) {
    if (g.nodes[c].op != Op::Contract) continue;
    const Shape& shape = g.nodes[c].shape;
    int x = c, last = c;
    bool cut = false;
    while (consumers[x].size() == 1 && !cut) {
      const Node& next = g.nodes[consumers[x][0]];
      if (next.op == Op::Reshape) {
        cut = stage_prefix(shape, next.shape) < 0;
      } else if (!(is_elementwise(next.op) && next.shape == g.nodes[x].shape)) {
        break;
      } else {
        last = consumers[x][0];
      }
      x = consumers[x][0];
    }
    cut = cut || std::any_of(consumers[x].begin(), consumers[x].end(),
                             [&](int u) { return g.nodes[u].op == Op::Slice; });
    if (cut && last != c) ends.insert(last);
  }
  return ends;
}

}  // namespace

FusionPlan plan_fusion(const Graph& g, const FusionOptions& opt) {
  int n = int(g.nodes.size());
  std::vector<std::vector<int>> consumers(n);
  for (int i = 0; i < n; ++i)
    for (int in : g.nodes[i].inputs) consumers[in].push_back(i);
  std::set<int> outputs(g.outputs.begin(), g.outputs.end());

  // What owns a buffer: inputs, outputs, reductions and contractions (until a
  // kernel absorbs them), elementwise ops when fusion is off or they grow too big.
  FusionPlan plan;
  plan.materialized.assign(n, false);
  std::vector<int> size(n, 1);
  std::set<int> alias_targets;
  std::set<int> epilogue_ends = cut_epilogues(g, consumers);
  for (int i = 0; i < n; ++i) {
    const Node& node = g.nodes[i];
    bool m = node.op == Op::Input || outputs.count(i) || !inlinable(node.op) || (opt.enabled && epilogue_ends.count(i));
    // An output that is a contiguous run of a computed result (a decode
    // step's new key or value row, reshaped or sliced out of a larger
    // product) shares its buffer: the same elements in the same order. The
    // result is stored for it if it is not already and others read it too.
    if (opt.enabled && outputs.count(i) && (node.op == Op::Reshape || node.op == Op::Slice)) {
      auto [x, offset] = contiguous_run(g, i, plan.materialized);
      const Node& src = g.nodes[x];
      if (src.op != Op::Input && !outputs.count(x) && src.dtype == node.dtype &&
          (plan.materialized[x] || consumers[x].size() > 1)) {
        plan.materialized[x] = true;
        plan.aliases[i] = {x, offset};
        alias_targets.insert(x);  // must keep its buffer: never staged into a kernel
        m = false;
      }
    }
    if (!opt.enabled && op_class(node.op) != OpClass::Source && op_class(node.op) != OpClass::Movement) m = true;
    if (!m) {
      // A large elementwise value read by several ops (a model's residual
      // stream) counts as one load: it is stored if several kernels read it
      // (below), and otherwise it would not have made this expression big.
      auto leaf = [&](int in) {
        std::set<int> distinct(consumers[in].begin(), consumers[in].end());
        return plan.materialized[in] || (is_elementwise(g.nodes[in].op) && distinct.size() > 1 && size[in] > kSharedLeaf);
      };
      for (int in : node.inputs) size[i] += leaf(in) ? 1 : size[in];
      m = size[i] > opt.max_inline_size;
    }
    plan.materialized[i] = m;
  }

  // A contraction reads each operand element many times: an elementwise operand
  // is inlined only when it reads graph inputs (a dequantizing prologue) and
  // small graph outputs (stored anyway: a decode step's new key, selected into
  // its row of the cache); one that reads other computed values is stored, as
  // the epilogue of its producer.
  auto small_output = [&](int id) {
    return (outputs.count(id) || alias_targets.count(id)) && is_static(g.nodes[id].shape) && numel(g.nodes[id].shape) <= 4096;
  };
  std::vector<bool> reads_computed(n, false), reads_costly(n, false);
  for (int i = 0; i < n; ++i)
    for (int in : g.nodes[i].inputs) {
      if (plan.materialized[in] ? g.nodes[in].op != Op::Input : reads_computed[in]) reads_computed[i] = true;
      if (plan.materialized[in] ? g.nodes[in].op != Op::Input && !small_output(in) : reads_costly[in])
        reads_costly[i] = true;
    }
  // A matrix-vector product's vector is the exception: each of its elements
  // meets one weight per output row, whose load costs far more than a short
  // expression (a norm's gain times the residual stream) computed again there.
  // The expression counts its nodes down to stored values, inputs and shared
  // computed values (read elsewhere too: the residual stream), which are
  // stored; a longer one (a gated MLP's silu(gate) * up) is stored itself.
  auto vector_leaves = [&](int o, std::vector<int>* shared) {
    int count = 0;
    std::vector<int> todo{o};
    while (!todo.empty() && count <= kVectorExpression) {
      int u = todo.back();
      todo.pop_back();
      if (plan.materialized[u]) continue;
      if (u != o && reads_costly[u] && consumers[u].size() > 1 && op_class(g.nodes[u].op) != OpClass::Movement) {
        shared->push_back(u);
        continue;
      }
      ++count;
      for (int in : g.nodes[u].inputs) todo.push_back(in);
    }
    return count;
  };
  auto wide_dims = [](const Shape& s) {
    return std::count_if(s.begin(), s.end(), [](const Dim& d) { return !d.is_one(); });
  };
  auto small = [&](int u) { return is_static(g.nodes[u].shape) && numel(g.nodes[u].shape) <= kVectorOperand; };
  auto row_products = [&](int c) { return wide_dims(g.nodes[c].shape) <= 1; };  // a GEMV
  auto vector_operand = [&](int c, int o, std::vector<int>* shared) {
    return row_products(c) && small(o) && vector_leaves(o, shared) <= kVectorExpression;
  };
  // One wide dim: a vector, never a weight.
  auto small_vector = [&](int u) { return small(u) && wide_dims(g.nodes[u].shape) <= 1; };
  auto long_expression = [&](int u) {
    std::vector<int> shared;
    return vector_leaves(u, &shared) > kVectorExpression;
  };
  for (int i = 0; i < n && opt.enabled; ++i) {
    if (g.nodes[i].op != Op::Contract) continue;
    for (int o : g.nodes[i].inputs) {
      while (!plan.materialized[o] && op_class(g.nodes[o].op) == OpClass::Movement) o = g.nodes[o].inputs[0];
      if (plan.materialized[o]) continue;
      // A vector computed from inputs alone by more than a short expression
      // (a token's dequantized q4 embedding row, the first layer's x) is
      // stored once, not computed again for every output row: the CPU's
      // stories110M q4 decode spent 2.1 of 9.2 ms a step there. Where a long
      // part of it (itself such a vector) is read elsewhere too (x, whose
      // squares a folded norm sums along every row as well), that part is
      // stored, and the rest (x times the norm's gain) only if still long.
      if (!reads_costly[o] && row_products(i) && small_vector(o) && long_expression(o)) {
        std::vector<int> todo{o};
        std::set<int> seen;
        while (!todo.empty()) {
          int u = todo.back();
          todo.pop_back();
          if (plan.materialized[u] || !seen.insert(u).second) continue;
          if (u != o && consumers[u].size() > 1 && small_vector(u) && long_expression(u)) {
            plan.materialized[u] = true;
            continue;
          }
          for (int in : g.nodes[u].inputs) todo.push_back(in);
        }
        if (long_expression(o)) plan.materialized[o] = true;
      }
      if (!reads_costly[o]) continue;
      std::vector<int> shared;
      if (vector_operand(i, o, &shared))
        for (int u : shared) plan.materialized[u] = true;
      else
        plan.materialized[o] = true;
    }
  }

  // A reduction over extents of 1 only is a copy into another layout (an s24
  // GEMV's spread vector). Its operand, where computed from reductions or
  // contractions that only it reads (the gate's and up's sums in silu(gate) * up), is
  // stored in its own layout: the kernel that stores it takes those as
  // stages, which the copy's kernel, of another shape, could not.
  auto reads_stage = [&](int o) {
    std::vector<int> todo{o};
    std::set<int> seen;
    while (!todo.empty()) {
      int u = todo.back();
      todo.pop_back();
      if (!seen.insert(u).second) continue;
      if (is_stage_op(g.nodes[u].op)) return true;  // (stored until a kernel takes it as a stage)
      // Stored values, and values that others read too (a residual stream,
      // stored once below), end the search.
      if (u != o && (plan.materialized[u] || consumers[u].size() > 1)) continue;
      for (int in : g.nodes[u].inputs) todo.push_back(in);
    }
    return false;
  };
  for (int i = 0; i < n && opt.enabled; ++i) {
    const Node& r = g.nodes[i];
    if (op_class(r.op) != OpClass::Reduce) continue;
    const Shape& in = g.nodes[r.inputs[0]].shape;
    if (!std::all_of(r.axes.begin(), r.axes.end(), [&](int64_t a) { return in[size_t(a)].is_one(); })) continue;
    int o = r.inputs[0];
    while (!plan.materialized[o] && op_class(g.nodes[o].op) == OpClass::Movement) o = g.nodes[o].inputs[0];
    if (!plan.materialized[o] && is_elementwise(g.nodes[o].op) && reads_stage(o)) plan.materialized[o] = true;
  }

  // Consumers before producers: each node learns which kernels evaluate it, and a
  // stage-able node read by exactly one compatible kernel joins that kernel.
  std::vector<std::set<int>> evaluated_by(n);
  std::vector<int> kernel_of(n, -1);  // anchor -> index into plan.kernels
  std::vector<FusedKernel> kernels;
  for (int i = n - 1; i >= 0; --i) {
    const Node& node = g.nodes[i];
    if (node.op == Op::Input) continue;
    std::set<int> users;
    for (int c : consumers[i]) users.insert(evaluated_by[c].begin(), evaluated_by[c].end());
    // An elementwise value computed from stored results and read by several
    // kernels is stored once rather than recomputed in each (a model's
    // residual stream would otherwise be re-added in every later kernel).
    if (!plan.materialized[i] && opt.enabled && is_elementwise(node.op) && reads_computed[i] && users.size() > 1)
      plan.materialized[i] = true;
    if (!plan.materialized[i]) {
      evaluated_by[i] = users;
      continue;
    }
    // One contraction a kernel: a schedule tiles a kernel around its one
    // contraction (two, like a prefill's gate and up, would not tile). Row
    // products (one wide output dim: a decode step's GEMVs) are the exception:
    // their reductions run side by side along each output point, so a gated
    // MLP's gate and up share a kernel and its silu(gate) * up epilogue.
    auto is_contract = [&](int n) { return g.nodes[n].op == Op::Contract; };
    auto is_row_product = [&](int n) {
      const Shape& s = g.nodes[n].shape;
      return is_contract(n) && std::count_if(s.begin(), s.end(), [](const Dim& d) { return !d.is_one(); }) <= 1;
    };
    auto holds_contract = [&](const FusedKernel& k) {
      auto tiled = [&](int n) { return is_contract(n) && !(is_row_product(n) && is_row_product(i)); };
      return tiled(k.anchor) || std::any_of(k.stages.begin(), k.stages.end(), tiled);
    };
    if (opt.enabled && is_stage_op(node.op) && !outputs.count(i) && !opt.never_stage.count(i) && !alias_targets.count(i) &&
        users.size() == 1 && !(is_contract(i) && holds_contract(kernels[kernel_of[*users.begin()]]))) {
      FusedKernel& k = kernels[kernel_of[*users.begin()]];
      const Shape& shape = g.nodes[k.anchor].shape;
      int p = k.stages.empty() && !is_stage_op(g.nodes[k.anchor].op) ? stage_prefix(node.shape, shape) : k.outer;
      if (p >= 0 && compatible(node.shape, shape, p)) {
        k.outer = p;
        k.stages.push_back(i);
        evaluated_by[i] = users;
        plan.materialized[i] = false;
        continue;
      }
    }
    FusedKernel k;
    k.anchor = i;
    k.outer = int(node.shape.size());
    kernel_of[i] = int(kernels.size());
    kernels.push_back(k);
    evaluated_by[i] = {i};
  }
  // Execution order: producers first; stages in each kernel likewise.
  for (auto it = kernels.rbegin(); it != kernels.rend(); ++it) {
    std::reverse(it->stages.begin(), it->stages.end());
    plan.kernels.push_back(*it);
  }
  return plan;
}

}  // namespace kiln
