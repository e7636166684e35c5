#include "kiln/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <numbers>
#include <numeric>

#include "kiln/compiled_graph.h"
#include "kiln/error.h"

namespace kiln {

// A lazy tensor: a graph node whose inputs are `srcs` (node.inputs holds their
// positions in srcs), or, once realized or made from host data, just `data`.
struct TensorNode {
  Node node;
  std::vector<Tensor> srcs;
  std::shared_ptr<HostTensor> data;
};

namespace {

std::mutex g_mu;
std::string g_device;

std::string default_device() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_device.empty()) {
    const char* env = std::getenv("KILN_DEVICE");
    g_device = env && *env ? env : "cpu";
  }
  return g_device;
}

// Compiled graphs by device and graph text: realizing the same expression on
// new data compiles nothing.
std::shared_ptr<CompiledGraph> compiled(const Graph& g, const std::string& dev) {
  static std::mutex mu;
  static auto& cache = *new std::map<std::string, std::shared_ptr<CompiledGraph>>();  // outlives nothing it holds
  std::string key = dev + "\n" + print(g);
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[key];
  if (!slot) slot = std::make_shared<CompiledGraph>(g, device(dev));
  return slot;
}

Shape to_shape(const std::vector<int64_t>& sizes) { return Shape(sizes.begin(), sizes.end()); }

Node node_of(Op op) {
  Node n;
  n.op = op;
  return n;
}

}  // namespace

void set_default_device(const std::string& which) {
  device(which);  // throws if there is no such device
  std::lock_guard<std::mutex> lock(g_mu);
  g_device = which;
}

Tensor Tensor::make(Node node, std::vector<Tensor> srcs) {
  Graph scratch;
  node.inputs.clear();
  for (size_t i = 0; i < srcs.size(); ++i) {
    Node in = node_of(Op::Input);
    in.name = "a" + std::to_string(i);
    in.dtype = srcs[i].dtype();
    in.shape = srcs[i].shape();
    scratch.nodes.push_back(in);
    node.inputs.push_back(int(i));
  }
  auto n = std::make_shared<TensorNode>();
  n->node = scratch.infer(std::move(node));
  n->srcs = std::move(srcs);
  return Tensor(n);
}

Tensor Tensor::from_host(HostTensor t) {
  auto n = std::make_shared<TensorNode>();
  n->node.op = Op::Input;
  n->node.dtype = t.dtype;
  n->node.shape = to_shape(t.sizes);
  n->data = std::make_shared<HostTensor>(std::move(t));
  return Tensor(n);
}

Tensor Tensor::full(std::vector<int64_t> sizes, double value, DType dtype) {
  Node n = node_of(Op::Const);
  n.dtype = dtype;
  n.shape = to_shape(sizes);
  n.value = round_to_dtype(value, dtype);
  return make(n, {});
}

Tensor Tensor::arange(int64_t count, DType dtype) {
  if (count < 0) throw Error("arange: count must be >= 0, got " + std::to_string(count));
  HostTensor h(dtype, {count});
  for (int64_t i = 0; i < count; ++i) h.set(i, double(i));
  return from_host(std::move(h));
}

Tensor Tensor::rand(std::vector<int64_t> sizes, DType dtype, uint64_t seed) {
  return from_host(HostTensor::random(dtype, std::move(sizes), seed));
}

DType Tensor::dtype() const { return n_->node.dtype; }
const Shape& Tensor::shape() const { return n_->node.shape; }
std::vector<int64_t> Tensor::sizes() const { return concrete(shape(), {}); }
int64_t Tensor::numel() const { return kiln::numel(shape()); }

Tensor Tensor::neg() const { return make(node_of(Op::Neg), {*this}); }
Tensor Tensor::exp2() const { return make(node_of(Op::Exp2), {*this}); }
Tensor Tensor::log2() const { return make(node_of(Op::Log2), {*this}); }
Tensor Tensor::sqrt() const { return make(node_of(Op::Sqrt), {*this}); }
Tensor Tensor::recip() const { return make(node_of(Op::Recip), {*this}); }
Tensor Tensor::sin() const { return make(node_of(Op::Sin), {*this}); }

Tensor Tensor::cast(DType to) const {
  Node n = node_of(Op::Cast);
  n.dtype = to;
  return make(n, {*this});
}

Tensor Tensor::scalar(double v) const {
  Node n = node_of(Op::Const);
  n.dtype = dtype();
  n.value = round_to_dtype(v, dtype());
  return make(n, {});
}

Tensor Tensor::binary(Op op, const Tensor& o) const {
  if (dtype() != o.dtype())
    throw Error(std::string(op_name(op)) + ": operands have different dtypes: " + std::string(dtype_name(dtype())) +
                shape_str(shape()) + " and " + std::string(dtype_name(o.dtype())) + shape_str(o.shape()) +
                " (cast one explicitly)");
  Shape out = broadcast_shapes(shape(), o.shape(), std::string(op_name(op)));
  return make(node_of(op), {expand(out), o.expand(out)});
}

Tensor Tensor::add(const Tensor& o) const { return binary(Op::Add, o); }
Tensor Tensor::sub(const Tensor& o) const { return binary(Op::Sub, o); }
Tensor Tensor::mul(const Tensor& o) const { return binary(Op::Mul, o); }
Tensor Tensor::div(const Tensor& o) const { return binary(Op::Div, o); }
Tensor Tensor::maximum(const Tensor& o) const { return binary(Op::Max, o); }
Tensor Tensor::minimum(const Tensor& o) const { return binary(Op::Min, o); }
Tensor Tensor::lt(const Tensor& o) const { return binary(Op::CmpLt, o); }
Tensor Tensor::eq(const Tensor& o) const { return binary(Op::CmpEq, o); }

Tensor Tensor::where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Shape out = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  return make(node_of(Op::Where), {cond.expand(out), a.expand(out), b.expand(out)});
}

Tensor Tensor::relu() const { return maximum(scalar(0)); }
Tensor Tensor::exp() const { return (*this * std::numbers::log2e).exp2(); }
Tensor Tensor::log() const { return log2() * std::numbers::ln2; }
Tensor Tensor::sigmoid() const { return (1.0 + (-*this).exp()).recip(); }
Tensor Tensor::silu() const { return *this * sigmoid(); }

Tensor Tensor::softmax(int64_t axis) const {
  Tensor shifted = *this - max(axis, true);
  Tensor e = shifted.exp();
  return e / e.sum(axis, true);
}

Tensor Tensor::reduce(Op op, std::vector<int64_t> axes, bool keepdim) const {
  Node n = node_of(op);
  n.axes = axes;
  Tensor r = make(n, {*this});
  if (keepdim) return r;
  Shape kept;
  const std::vector<int64_t>& reduced = r.n_->node.axes;  // normalized and sorted
  for (size_t i = 0; i < r.shape().size(); ++i)
    if (std::find(reduced.begin(), reduced.end(), int64_t(i)) == reduced.end()) kept.push_back(r.shape()[i]);
  return r.reshape(kept);
}

Tensor Tensor::sum(int64_t axis, bool keepdim) const { return reduce(Op::ReduceSum, {axis}, keepdim); }
Tensor Tensor::sum(std::vector<int64_t> axes, bool keepdim) const { return reduce(Op::ReduceSum, axes, keepdim); }
Tensor Tensor::sum() const {
  if (dim() == 0) return *this;
  std::vector<int64_t> all(dim());
  std::iota(all.begin(), all.end(), 0);
  return sum(all);
}
Tensor Tensor::max(int64_t axis, bool keepdim) const { return reduce(Op::ReduceMax, {axis}, keepdim); }
Tensor Tensor::max(std::vector<int64_t> axes, bool keepdim) const { return reduce(Op::ReduceMax, axes, keepdim); }

Tensor Tensor::mean(int64_t axis, bool keepdim) const {
  if (!is_float(dtype())) throw Error("mean: needs a float tensor, got " + std::string(dtype_name(dtype())));
  int64_t a = axis < 0 ? axis + dim() : axis;
  if (a < 0 || a >= dim()) throw Error("mean: axis " + std::to_string(axis) + " is out of range for " + shape_str(shape()));
  const Dim& d = shape()[a];
  if (!d.is_const()) throw Error("mean: axis " + std::to_string(axis) + " is symbolic (" + d.sym + ")");
  return sum(axis, keepdim) / double(d.value);
}

Tensor Tensor::reshape(Shape s) const {
  int infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i].is_const() && s[i].value == -1) {
      if (infer_at >= 0) throw Error("reshape: only one dim can be -1 in " + shape_str(s));
      infer_at = int(i);
    } else if (s[i].is_const()) {
      known *= s[i].value;
    }
  }
  if (infer_at >= 0) {
    if (!is_static(shape())) throw Error("reshape: -1 needs a static shape, got " + shape_str(shape()));
    if (known == 0 || numel() % known)
      throw Error("reshape: cannot reshape " + shape_str(shape()) + " to " + shape_str(s));
    s[infer_at] = Dim(numel() / known);
  }
  if (s == shape()) return *this;
  Node n = node_of(Op::Reshape);
  n.shape = s;
  return make(n, {*this});
}

Tensor Tensor::permute(std::vector<int64_t> perm) const {
  Node n = node_of(Op::Permute);
  n.axes = perm;
  return make(n, {*this});
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  int64_t r = dim();
  if (a < -r || a >= r || b < -r || b >= r)
    throw Error("transpose: axes " + std::to_string(a) + ", " + std::to_string(b) + " out of range for " + shape_str(shape()));
  std::vector<int64_t> perm(r);
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[(a + r) % r], perm[(b + r) % r]);
  return permute(perm);
}

Tensor Tensor::expand(Shape s) const {
  if (s == shape()) return *this;
  Shape out = broadcast_shapes(shape(), s, "expand");
  if (out != s) throw Error("expand: cannot broadcast " + shape_str(shape()) + " to " + shape_str(s));
  Tensor x = *this;
  if (x.dim() < int64_t(s.size())) {
    Shape padded(s.size() - x.dim(), Dim(1));
    padded.insert(padded.end(), x.shape().begin(), x.shape().end());
    x = x.reshape(padded);
  }
  if (x.shape() == s) return x;
  Node n = node_of(Op::Expand);
  n.shape = s;
  return make(n, {x});
}

Tensor Tensor::slice(int64_t axis, int64_t start, int64_t stop, int64_t step) const {
  int64_t r = dim();
  if (axis < -r || axis >= r) throw Error("slice: axis " + std::to_string(axis) + " is out of range for " + shape_str(shape()));
  axis = (axis + r) % r;
  std::vector<int64_t> starts(r, 0), stops(r, kSliceEnd), steps(r, 1);
  const Dim& d = shape()[axis];
  if (d.is_const()) {  // Python-style negative and past-the-end bounds
    if (start < 0) start += d.value;
    if (stop != kSliceEnd && stop < 0) stop += d.value;
    if (stop != kSliceEnd && stop > d.value) stop = d.value;
  }
  starts[axis] = start;
  stops[axis] = stop;
  steps[axis] = step;
  Node n = node_of(Op::Slice);
  n.starts = starts;
  n.stops = stops;
  n.steps = steps;
  return make(n, {*this});
}

Tensor Tensor::pad(std::vector<int64_t> lo, std::vector<int64_t> hi, double value) const {
  Node n = node_of(Op::Pad);
  n.pad_lo = lo;
  n.pad_hi = hi;
  n.value = round_to_dtype(value, dtype());
  return make(n, {*this});
}

Tensor Tensor::flip(std::vector<int64_t> axes) const {
  Node n = node_of(Op::Flip);
  n.axes = axes;
  return make(n, {*this});
}

Tensor Tensor::gather(const Tensor& indices, int64_t axis) const {
  Node n = node_of(Op::Gather);
  n.axes = {axis};
  return make(n, {*this, indices});
}

Tensor Tensor::matmul(const Tensor& o) const {
  if (dim() == 0 || o.dim() == 0) throw Error("matmul: operands must not be 0-d: " + shape_str(shape()) + " and " + shape_str(o.shape()));
  Tensor a = dim() == 1 ? reshape({Dim(1), shape()[0]}) : *this;
  Tensor b = o.dim() == 1 ? o.reshape({o.shape()[0], Dim(1)}) : o;
  Tensor y = make(node_of(Op::Contract), {a, b});
  Shape s = y.shape();
  if (o.dim() == 1) s.erase(s.end() - 1);
  if (dim() == 1) s.erase(s.end() - (o.dim() == 1 ? 1 : 2));
  return y.reshape(s);
}

Graph Tensor::graph(std::map<std::string, HostTensor>* inputs) const {
  Graph g;
  std::map<const TensorNode*, int> ids;
  // Iterative post-order walk: long chains must not overflow the stack.
  std::vector<std::pair<const TensorNode*, bool>> stack{{n_.get(), false}};
  while (!stack.empty()) {
    auto [t, expanded] = stack.back();
    stack.pop_back();
    if (ids.count(t)) continue;
    if (t->data) {
      std::string name = "t" + std::to_string(g.input_nodes().size());
      ids[t] = g.input(name, t->node.dtype, t->node.shape);
      if (inputs) (*inputs)[name] = *t->data;
      continue;
    }
    if (!expanded) {
      stack.push_back({t, true});
      for (auto it = t->srcs.rbegin(); it != t->srcs.rend(); ++it) stack.push_back({it->n_.get(), false});
      continue;
    }
    Node n = t->node;
    for (int& in : n.inputs) in = ids.at(t->srcs[in].n_.get());
    ids[t] = g.add(n);
  }
  g.outputs = {ids.at(n_.get())};
  return g;
}

const Tensor& Tensor::realize() const {
  if (n_->data) return *this;
  std::map<std::string, HostTensor> inputs;
  Graph g = graph(&inputs);
  std::vector<HostTensor> out = compiled(g, default_device())->run(inputs);
  n_->data = std::make_shared<HostTensor>(std::move(out.at(0)));
  n_->srcs.clear();  // the result stands for the whole expression now
  n_->node = Node{};
  n_->node.op = Op::Input;
  n_->node.dtype = n_->data->dtype;
  n_->node.shape = to_shape(n_->data->sizes);
  return *this;
}

HostTensor Tensor::to_host() const { return *realize().n_->data; }

Tensor operator+(const Tensor& a, const Tensor& b) { return a.add(b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return a.sub(b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return a.mul(b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return a.div(b); }
Tensor operator-(const Tensor& a) { return a.neg(); }
Tensor operator+(const Tensor& a, double b) { return a.add(a.scalar(b)); }
Tensor operator-(const Tensor& a, double b) { return a.sub(a.scalar(b)); }
Tensor operator*(const Tensor& a, double b) { return a.mul(a.scalar(b)); }
Tensor operator/(const Tensor& a, double b) { return a.div(a.scalar(b)); }
Tensor operator+(double a, const Tensor& b) { return b.scalar(a).add(b); }
Tensor operator-(double a, const Tensor& b) { return b.scalar(a).sub(b); }
Tensor operator*(double a, const Tensor& b) { return b.scalar(a).mul(b); }
Tensor operator/(double a, const Tensor& b) { return b.scalar(a).div(b); }

}  // namespace kiln
