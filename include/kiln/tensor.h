// The Tensor API: lazy tensors. Each operation records a graph node (checking
// shapes and dtypes at once); realize() or to_vector() compiles the pending
// graph for the default device, runs it and keeps the result.
//
//   auto a = kiln::Tensor::rand({512, 1024}, kiln::f32, 1);
//   auto b = kiln::Tensor::rand({1024, 256}, kiln::f32, 2);
//   auto y = (a.matmul(b) + 1.0f).relu().sum(1);
//   std::vector<float> out = y.to_vector<float>();
//
// Binary operations broadcast like NumPy. Operands must have one dtype (cast
// explicitly); a C++ scalar takes the tensor's dtype.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/graph.h"
#include "kiln/error.h"
#include "kiln/host_tensor.h"

namespace kiln {

struct TensorNode;

class Tensor {
 public:
  // Creation.
  static Tensor from_host(HostTensor t);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, std::vector<int64_t> sizes, DType dtype = f32);
  static Tensor full(std::vector<int64_t> sizes, double value, DType dtype = f32);
  static Tensor zeros(std::vector<int64_t> sizes, DType dtype = f32) { return full(std::move(sizes), 0, dtype); }
  static Tensor ones(std::vector<int64_t> sizes, DType dtype = f32) { return full(std::move(sizes), 1, dtype); }
  static Tensor arange(int64_t n, DType dtype = f32);
  static Tensor rand(std::vector<int64_t> sizes, DType dtype = f32, uint64_t seed = 0);

  DType dtype() const;
  const Shape& shape() const;
  std::vector<int64_t> sizes() const;
  int64_t dim() const { return int64_t(shape().size()); }
  int64_t numel() const;

  // Elementwise.
  Tensor neg() const;
  Tensor exp2() const;
  Tensor log2() const;
  Tensor sqrt() const;
  Tensor recip() const;
  Tensor sin() const;
  Tensor cast(DType to) const;
  Tensor add(const Tensor& o) const;
  Tensor sub(const Tensor& o) const;
  Tensor mul(const Tensor& o) const;
  Tensor div(const Tensor& o) const;
  Tensor maximum(const Tensor& o) const;
  Tensor minimum(const Tensor& o) const;
  Tensor lt(const Tensor& o) const;
  Tensor eq(const Tensor& o) const;
  static Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
  Tensor scalar(double v) const;  // a 0-d tensor of this tensor's dtype

  // Composites of the primitives.
  Tensor relu() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sigmoid() const;
  Tensor silu() const;
  Tensor softmax(int64_t axis = -1) const;

  // Reductions; keepdim=false drops the reduced axes.
  Tensor sum(int64_t axis, bool keepdim = false) const;
  Tensor sum(std::vector<int64_t> axes, bool keepdim = false) const;
  Tensor sum() const;  // over every axis, to a 0-d tensor
  Tensor max(int64_t axis, bool keepdim = false) const;
  Tensor max(std::vector<int64_t> axes, bool keepdim = false) const;
  Tensor mean(int64_t axis, bool keepdim = false) const;

  // Movement (views; no copies).
  Tensor reshape(Shape shape) const;  // one dim may be -1
  Tensor permute(std::vector<int64_t> perm) const;
  Tensor transpose(int64_t a = -2, int64_t b = -1) const;
  Tensor expand(Shape shape) const;  // NumPy broadcasting to `shape`
  Tensor slice(int64_t axis, int64_t start, int64_t stop, int64_t step = 1) const;
  Tensor pad(std::vector<int64_t> lo, std::vector<int64_t> hi, double value = 0) const;
  Tensor flip(std::vector<int64_t> axes) const;
  Tensor gather(const Tensor& indices, int64_t axis = 0) const;

  // Batched matmul with NumPy's matmul rules (1-d operands, broadcast batches).
  Tensor matmul(const Tensor& o) const;

  // Computes the tensor (and what it depends on) if not done yet.
  const Tensor& realize() const;
  HostTensor to_host() const;
  template <class T>
  std::vector<T> to_vector() const;

  // The graph that realize() would compile, with this tensor its one output;
  // realized tensors and host data appear as inputs named t0, t1, ...
  Graph graph(std::map<std::string, HostTensor>* inputs = nullptr) const;

 private:
  explicit Tensor(std::shared_ptr<TensorNode> n) : n_(std::move(n)) {}
  static Tensor make(Node node, std::vector<Tensor> srcs);
  Tensor binary(Op op, const Tensor& o) const;
  Tensor reduce(Op op, std::vector<int64_t> axes, bool keepdim) const;

  std::shared_ptr<TensorNode> n_;
};

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);

// The device realize() uses: "cpu" unless set (or KILN_DEVICE in the environment).
void set_default_device(const std::string& which);

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, std::vector<int64_t> sizes, DType dtype) {
  HostTensor h(dtype, std::move(sizes));
  if (int64_t(values.size()) != h.numel())
    throw Error("from_vector: " + std::to_string(values.size()) + " values for " + describe(h));
  for (int64_t i = 0; i < h.numel(); ++i) h.set(i, static_cast<double>(values[i]));
  return from_host(std::move(h));
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  HostTensor h = to_host();
  std::vector<T> out(h.numel());
  for (int64_t i = 0; i < h.numel(); ++i) out[i] = static_cast<T>(h.get(i));
  return out;
}

}  // namespace kiln
