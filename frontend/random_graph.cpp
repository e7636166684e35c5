#include "frontend/random_graph.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <sstream>

#include "frontend/workloads.h"
#include "kiln/error.h"

namespace kiln {

namespace {

constexpr int kMaxNodes = 25;
constexpr int64_t kMaxElements = 2048;         // the interpreter is slow: keep tensors small
constexpr int64_t kMaxContractWork = 1 << 15;  // multiply-adds of one contraction
constexpr double kInt32Range = 2147483648.0;

// What the generator knows of a node's values.
struct Info {
  // Computed without rounding that may differ between implementations (no
  // float arithmetic, which kernels may contract into fma or reassociate):
  // safe to compare or to cast to an integer.
  bool exact = true;
  double bound = 1;  // an upper bound of |value| (inf when unknown)
};

// The largest magnitude an approximate float may reach: well below overflow,
// so that rounding differences cannot turn into inf on one side only.
double limit(DType t) { return t == f16 ? 1e4 : 1e15; }

int64_t extent(const Dim& d) { return d.is_const() ? d.value : d.hi; }

int64_t max_elements(const Shape& s) {
  int64_t n = 1;
  for (const Dim& d : s) n *= extent(d);
  return n;
}

[[noreturn]] void refuse(const std::string& why) { throw Error("random graph: " + why); }

void require(bool ok, const std::string& why) {
  if (!ok) refuse(why);
}

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  RandomGraph run(uint64_t seed);

 private:
  using Filter = std::function<bool(int)>;

  // Randomness.
  int64_t uniform(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <class T>
  T pick(const std::vector<T>& v) { return v[uniform(0, int64_t(v.size()) - 1)]; }
  DType random_dtype();
  DType random_float() { return pick<DType>({f32, f32, f16, bf16}); }
  Dim random_dim();
  Shape random_shape(int min_rank = 0);
  std::vector<int64_t> random_axes(size_t rank);

  // Node bookkeeping.
  const Node& node(int id) const { return g_.nodes[id]; }
  int note(int id, bool exact, double bound);
  int note_float(int id, bool exact, double bound);
  bool exact(int id) const { return info_[id].exact; }
  double bound(int id) const { return info_[id].bound; }

  // Operands.
  int input(DType t, Shape s);  // a graph input named x0, x1, ...
  int fresh(DType t, Shape s);
  int constant(DType t, Shape s, double v);
  int operand(const Filter& ok, const std::function<int()>& make);
  int like(Shape s, DType t);
  int broadcast_to(Shape s, DType t);
  std::pair<int, double> positive(int x);

  // One random op, with its operands; throws kiln::Error when it cannot be made.
  int grow();
  int make_unary();
  int make_cast();
  int make_binary();
  int make_where();
  int make_reduce();
  int make_reshape();
  int make_permute();
  int make_expand();
  int make_slice();
  int make_pad();
  int make_flip();
  int make_gather();
  int make_contract();
  int make_tile_contract();
  int make_scale();

  void declare_symbols();
  void choose_outputs();

  std::mt19937_64 rng_;
  Graph g_;
  std::vector<Info> info_;
  std::vector<Dim> syms_;
  Bindings values_;
  int names_ = 0;
};

DType Generator::random_dtype() { return pick<DType>({f32, f32, f16, bf16, i32, i32, i8, u8, boolean}); }

// Mostly small or odd sizes (never a multiple of a tile by design), some 1s
// to broadcast, and the graph's symbols.
Dim Generator::random_dim() {
  if (!syms_.empty() && chance(0.2)) return pick(syms_);
  if (chance(0.15)) return Dim(1);
  return Dim(chance(0.6) ? uniform(2, 9) : uniform(10, 70));
}

Shape Generator::random_shape(int min_rank) {
  int rank = std::max<int>(min_rank, int(pick<int64_t>({0, 1, 1, 2, 2, 2, 3, 3, 4})));
  Shape s;
  for (int i = 0; i < rank; ++i) s.push_back(random_dim());
  // Shrink the largest dims until the tensor is small enough.
  while (max_elements(s) > kMaxElements) {
    auto it = std::max_element(s.begin(), s.end(), [](const Dim& a, const Dim& b) { return extent(a) < extent(b); });
    *it = Dim(std::max<int64_t>(1, extent(*it) / 3));
  }
  return s;
}

// A non-empty set of distinct axes, some written as negative numbers.
std::vector<int64_t> Generator::random_axes(size_t rank) {
  std::vector<int64_t> axes;
  for (size_t a = 0; a < rank; ++a)
    if (chance(0.5)) axes.push_back(chance(0.3) ? int64_t(a) - int64_t(rank) : int64_t(a));
  if (axes.empty()) axes.push_back(uniform(0, int64_t(rank) - 1));
  std::shuffle(axes.begin(), axes.end(), rng_);
  return axes;
}

int Generator::note(int id, bool exact, double bound) {
  info_.resize(g_.nodes.size());
  info_[id] = {exact, bound};
  return id;
}

// Like note(), for float arithmetic: refuses results that could grow near overflow.
int Generator::note_float(int id, bool exact, double bound) {
  DType t = node(id).dtype;
  if (is_float(t)) require(exact || bound <= limit(t), "result could overflow");
  else if (t != boolean) bound = std::min(bound, kInt32Range);
  return note(id, exact, bound);
}

// Every other input is immutable (as model weights are), without drawing from
// the generator, so that seeds give the graphs they gave before the flag.
int Generator::input(DType t, Shape s) {
  int i = names_++;
  std::string name = "x" + std::to_string(i);
  return i % 2 ? g_.immutable_input(name, t, std::move(s)) : g_.input(name, t, std::move(s));
}

int Generator::fresh(DType t, Shape s) {
  require(max_elements(s) <= kMaxElements, "tensor too large");
  int id = input(t, std::move(s));
  // HostTensor::random: floats in [-1, 1), i8/i32 in [-20, 20], u8 in [0, 40].
  return note(id, true, t == u8 ? 40 : is_integer(t) ? 20 : 1);
}

// A constant of shape s: directly, or as a scalar expanded (broadcasting).
int Generator::constant(DType t, Shape s, double v) {
  int c;
  if (chance(0.5)) {
    c = g_.constant(v, t, s);
  } else {
    c = g_.constant(v, t, Shape(s.size(), Dim(1)));
    c = g_.expand(c, s);
  }
  return note(c, true, std::fabs(round_to_dtype(v, t)));
}

// An existing node that passes `ok` (recent ones more often, so that graphs
// grow deep), or else a new one from `make`.
int Generator::operand(const Filter& ok, const std::function<int()>& make) {
  std::vector<int> found;
  for (int id = 0; id < int(g_.nodes.size()); ++id)
    if (ok(id)) found.push_back(id);
  if (found.empty() || chance(0.2)) {
    int id = make();
    require(ok(id), "made an operand that does not fit");
    return id;
  }
  if (found.size() > 4 && chance(0.7)) found.erase(found.begin(), found.end() - 4);
  return pick(found);
}

// A value of shape s and dtype t: an existing one, a cast of one, a broadcast,
// a constant or a new input.
int Generator::like(Shape s, DType t) {
  std::vector<int> same, castable;
  for (int id = 0; id < int(g_.nodes.size()); ++id) {
    if (node(id).shape != s) continue;
    if (node(id).dtype == t) same.push_back(id);
    else if (is_float(t) || !is_float(node(id).dtype) || exact(id)) castable.push_back(id);
  }
  int r = int(uniform(0, 9));
  if (r < 4 && !same.empty()) return pick(same);
  if (r < 6 && !castable.empty()) {
    int x = pick(castable);
    bool is_exact = !is_float(t) || exact(x);
    double b = t == boolean ? 1 : bound(x);
    return note_float(g_.cast(x, t), is_exact, b);
  }
  if (r < 8) return broadcast_to(s, t);
  if (r < 9) return constant(t, s, pick<double>({0, 1, -1, 0.5, 2, -3.25, 7}));
  return fresh(t, s);
}

// A new input with some dims of s set to 1, expanded to s.
int Generator::broadcast_to(Shape s, DType t) {
  Shape small = s;
  for (Dim& d : small)
    if (chance(0.5)) d = Dim(1);
  int x = fresh(t, small);
  return note(g_.expand(x, s), true, bound(x));
}

// |x| + c for a constant c > 0: an argument that keeps log2, sqrt, recip and
// division well conditioned even when x carries rounding error.
std::pair<int, double> Generator::positive(int x) {
  DType t = node(x).dtype;
  double c = pick<double>({0.25, 0.5, 1, 2});
  int abs = note(g_.binary(Op::Max, x, note(g_.unary(Op::Neg, x), exact(x), bound(x))), exact(x), bound(x));
  int sum = g_.binary(Op::Add, abs, constant(t, node(x).shape, c));
  return {note_float(sum, false, bound(x) + c), c};
}

int Generator::make_unary() {
  Op op = pick<Op>({Op::Neg, Op::Exp2, Op::Log2, Op::Sqrt, Op::Recip, Op::Sin});
  if (op == Op::Neg) {
    int x = operand([&](int id) { return node(id).dtype != boolean; },
                    [&] { return fresh(pick<DType>({f32, f16, bf16, i32, i8, u8}), random_shape()); });
    return note(g_.unary(op, x), exact(x), bound(x));
  }
  double max_arg = op == Op::Exp2 ? 12 : op == Op::Sin ? 30 : INFINITY;
  int x = operand([&](int id) { return is_float(node(id).dtype) && bound(id) <= max_arg; },
                  [&] { return fresh(random_float(), random_shape()); });
  if (op == Op::Exp2) return note_float(g_.unary(op, x), false, std::exp2(bound(x)));
  if (op == Op::Sin) return note_float(g_.unary(op, x), false, 1);
  // log2, sqrt, recip: an exact argument may be anything (0, negative: both
  // sides give the same inf or NaN); an approximate one is made positive.
  if (exact(x) && chance(0.5)) {
    double b = op == Op::Sqrt ? std::sqrt(bound(x)) : INFINITY;
    return note(g_.unary(op, x), false, b);
  }
  auto [arg, c] = positive(x);
  double b = op == Op::Sqrt ? std::sqrt(bound(arg))
             : op == Op::Recip ? 1 / c
                               : std::max(std::fabs(std::log2(c)), std::log2(bound(arg))) + 1;
  return note_float(g_.unary(op, arg), false, b);
}

int Generator::make_cast() {
  // Uniform dtypes, half the time from a new input: covers every pair.
  auto any_dtype = [&] { return kAllDTypes[uniform(0, std::size(kAllDTypes) - 1)]; };
  DType to = any_dtype();
  int x = chance(0.5) ? fresh(any_dtype(), random_shape())
                      : operand([&](int) { return true; }, [&] { return fresh(random_dtype(), random_shape()); });
  bool to_discrete = !is_float(to);
  require(!is_float(node(x).dtype) || !to_discrete || exact(x), "would truncate a rounded value");
  double b = to == boolean ? 1 : to == u8 ? std::min(bound(x), 255.0) : to == i8 ? std::min(bound(x), 128.0) : bound(x);
  return note_float(g_.cast(x, to), !is_float(node(x).dtype) || exact(x), b);
}

int Generator::make_binary() {
  int a = operand([](int) { return true; }, [&] { return fresh(random_dtype(), random_shape()); });
  DType t = node(a).dtype;
  std::vector<Op> ops = {Op::Max, Op::Min, Op::CmpLt, Op::CmpEq};
  if (t != boolean) ops.insert(ops.end(), {Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Add, Op::Mul});
  Op op = pick(ops);
  bool cmp = op == Op::CmpLt || op == Op::CmpEq;
  if (!is_float(t)) {
    int b = like(node(a).shape, t);
    double ba = bound(a), bb = bound(b);
    double r = op == Op::Mul ? ba * bb : op == Op::Add || op == Op::Sub ? ba + bb : std::max(ba, bb);
    return note_float(g_.binary(op, a, b), true, cmp || t == boolean ? 1 : r);
  }
  if (op == Op::Div) {
    auto [den, c] = positive(like(node(a).shape, t));
    return note_float(g_.binary(op, a, den), false, bound(a) / c);
  }
  int b = like(node(a).shape, t);
  bool both_exact = exact(a) && exact(b);
  if (cmp) {
    require(both_exact, "compares rounded values");
    return note(g_.binary(op, a, b), true, 1);
  }
  double ba = bound(a), bb = bound(b);
  if (op == Op::Max || op == Op::Min) return note_float(g_.binary(op, a, b), both_exact, std::max(ba, bb));
  return note_float(g_.binary(op, a, b), false, op == Op::Mul ? ba * bb : ba + bb);
}

int Generator::make_where() {
  int a = operand([](int) { return true; }, [&] { return fresh(random_dtype(), random_shape()); });
  int cond = like(node(a).shape, boolean);
  int b = like(node(a).shape, node(a).dtype);
  return note(g_.where(cond, a, b), exact(a) && exact(b), std::max(bound(a), bound(b)));
}

int Generator::make_reduce() {
  int x = operand([&](int id) { return node(id).dtype != boolean && !node(id).shape.empty(); },
                  [&] { return fresh(pick<DType>({f32, f16, bf16, i32, i8, u8}), random_shape(1)); });
  std::vector<int64_t> axes = random_axes(node(x).shape.size());
  if (chance(0.5)) return note(g_.reduce(Op::ReduceMax, x, axes), exact(x), bound(x));
  int64_t count = 1;
  for (int64_t a : axes) count *= extent(node(x).shape[a < 0 ? a + int64_t(node(x).shape.size()) : a]);
  return note_float(g_.reduce(Op::ReduceSum, x, axes), !is_float(node(x).dtype), bound(x) * double(count));
}

// A new shape of the same element count: the constant part refactored at
// random, symbolic dims kept (a reshape cannot split or merge them).
int Generator::make_reshape() {
  int x = operand([](int) { return true; }, [&] { return fresh(random_dtype(), random_shape()); });
  int64_t n = 1;
  std::vector<Dim> syms;
  for (const Dim& d : node(x).shape) {
    if (d.is_const()) n *= d.value;
    else syms.push_back(d);
  }
  Shape s(size_t(uniform(n > 1 ? 1 : 0, 3)), Dim(1));
  for (int64_t p = 2; n > 1; ++p)
    for (; n % p == 0; n /= p) s[uniform(0, int64_t(s.size()) - 1)].value *= p;
  for (const Dim& d : syms) s.insert(s.begin() + uniform(0, int64_t(s.size())), d);
  return note(g_.reshape(x, s), exact(x), bound(x));
}

int Generator::make_permute() {
  int x = operand([&](int id) { return node(id).shape.size() >= 2; },
                  [&] { return fresh(random_dtype(), random_shape(2)); });
  std::vector<int64_t> perm(node(x).shape.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = int64_t(i);
  std::shuffle(perm.begin(), perm.end(), rng_);
  return note(g_.permute(x, perm), exact(x), bound(x));
}

// Broadcasts dims of extent 1 (adding one by a reshape if there is none).
int Generator::make_expand() {
  int x = operand([](int) { return true; }, [&] { return fresh(random_dtype(), random_shape()); });
  Shape s = node(x).shape;
  if (std::none_of(s.begin(), s.end(), [](const Dim& d) { return d.is_one(); })) {
    s.insert(s.begin() + uniform(0, int64_t(s.size())), Dim(1));
    x = note(g_.reshape(x, s), exact(x), bound(x));
  }
  for (Dim& d : s)
    if (d.is_one() && chance(0.7)) d = random_dim();
  require(max_elements(s) <= kMaxElements, "tensor too large");
  return note(g_.expand(x, s), exact(x), bound(x));
}

// Odd starts, stops and steps on constant dims; symbolic dims kept whole.
int Generator::make_slice() {
  int x = operand([&](int id) { return !node(id).shape.empty(); },
                  [&] { return fresh(random_dtype(), random_shape(1)); });
  std::vector<int64_t> starts, stops, steps;
  for (const Dim& d : node(x).shape) {
    if (!d.is_const() || chance(0.2)) {
      starts.push_back(0), stops.push_back(kSliceEnd), steps.push_back(1);
      continue;
    }
    int64_t start = uniform(0, std::max<int64_t>(0, d.value - 1));
    starts.push_back(start);
    stops.push_back(chance(0.3) ? kSliceEnd : uniform(std::min(start + 1, d.value), d.value));
    steps.push_back(chance(0.4) ? 1 : uniform(2, 5));
  }
  return note(g_.slice(x, starts, stops, steps), exact(x), bound(x));
}

int Generator::make_pad() {
  int x = operand([&](int id) { return !node(id).shape.empty(); },
                  [&] { return fresh(random_dtype(), random_shape(1)); });
  std::vector<int64_t> lo, hi;
  for (const Dim& d : node(x).shape) {
    lo.push_back(d.is_const() && chance(0.6) ? uniform(0, 3) : 0);
    hi.push_back(d.is_const() && chance(0.6) ? uniform(0, 3) : 0);
  }
  double v = pick<double>({0, 1, -1.5, 3, -3});
  Shape padded = node(x).shape;
  for (size_t i = 0; i < padded.size(); ++i)
    if (padded[i].is_const()) padded[i] = Dim(padded[i].value + lo[i] + hi[i]);
  require(max_elements(padded) <= kMaxElements, "tensor too large");
  double b = std::max(bound(x), std::fabs(round_to_dtype(v, node(x).dtype)));
  return note(g_.pad(x, lo, hi, v), exact(x), b);
}

int Generator::make_flip() {
  int x = operand([&](int id) { return !node(id).shape.empty(); },
                  [&] { return fresh(random_dtype(), random_shape(1)); });
  return note(g_.flip(x, random_axes(node(x).shape.size())), exact(x), bound(x));
}

// Indices from new inputs (in [-20, 20]: negative and out of range) or from
// computed i32 values.
int Generator::make_gather() {
  int x = operand([&](int id) { return !node(id).shape.empty(); },
                  [&] { return fresh(random_dtype(), random_shape(1)); });
  int rank = int(node(x).shape.size());
  int64_t axis = uniform(-rank, rank - 1);
  auto small_i32 = [&](int id) { return node(id).dtype == i32 && max_elements(node(id).shape) <= 64; };
  int idx = operand(small_i32, [&] {
    Shape s;
    for (int64_t r = uniform(0, 2); r > 0; --r) s.push_back(Dim(uniform(1, 8)));
    return fresh(i32, s);
  });
  int y = g_.gather(x, idx, axis);
  require(max_elements(node(y).shape) <= kMaxElements, "tensor too large");
  return note(y, exact(x), bound(x));
}

// [..., M, K] x [..., K, N] with batch dims that broadcast, often followed by
// an epilogue (bias, relu, cast) that fusion folds into the kernel.
int Generator::make_contract() {
  auto ok = [&](int id) {
    DType t = node(id).dtype;
    return node(id).shape.size() >= 2 && (is_float(t) || t == i32);
  };
  int a = operand(ok, [&] { return fresh(pick<DType>({f32, f16, bf16, i32}), random_shape(2)); });
  const Shape sa = node(a).shape;  // a copy: new nodes move g_.nodes
  DType t = node(a).dtype;
  Shape sb;
  size_t batch_a = sa.size() - 2;
  for (size_t i = 0, rank = size_t(uniform(0, 2)); i < rank; ++i) {
    size_t from_end = rank - i;  // aligned with a's batch dims from the right
    const Dim* da = from_end <= batch_a ? &sa[batch_a - from_end] : nullptr;
    sb.push_back(da && !da->is_one() ? (chance(0.6) ? *da : Dim(1)) : Dim(uniform(1, 4)));
  }
  sb.push_back(sa.back());
  sb.push_back(random_dim());
  int b = like(sb, t);
  int y = g_.contract(a, b);
  const Shape sy = node(y).shape;
  require(max_elements(sy) * extent(sa.back()) <= kMaxContractWork, "contraction too large");
  y = note_float(y, !is_float(t), bound(a) * bound(b) * double(extent(sa.back())));
  if (chance(0.5)) y = note_float(g_.binary(Op::Add, y, like(sy, t)), !is_float(t), 2 * bound(y));
  if (chance(0.3)) y = note_float(g_.binary(Op::Max, y, constant(t, sy, 0)), exact(y), bound(y));
  return y;
}

// A contraction of the sizes tensor cores take (CUDA): f16 or bf16, output
// sides of 64 or 128, a reduction of 32 or 64; each operand maybe a transposed
// view, B maybe an int8 weight widened (q8); often an epilogue. Its inputs
// are larger than fresh() allows; whatever later reads the result keeps to
// the usual limits.
int Generator::make_tile_contract() {
  DType t = pick<DType>({f16, bf16});
  int64_t m = pick<int64_t>({64, 128}), n = pick<int64_t>({64, 128}), k = pick<int64_t>({32, 64});
  auto operand_input = [&](DType dt, Shape s) { return note(input(dt, std::move(s)), true, dt == i8 ? 20 : 1); };
  auto maybe_transposed = [&](DType dt, int64_t rows, int64_t cols) {
    if (chance(0.5)) return operand_input(dt, {Dim(rows), Dim(cols)});
    int x = operand_input(dt, {Dim(cols), Dim(rows)});
    return note(g_.permute(x, {1, 0}), true, bound(x));
  };
  int a = maybe_transposed(t, m, k);
  int b;
  if (chance(0.3)) {
    int w = operand_input(i8, {Dim(n), Dim(k)});
    b = note(g_.permute(note(g_.cast(w, t), true, 20), {1, 0}), true, 20);
  } else {
    b = maybe_transposed(t, k, n);
  }
  int y = note_float(g_.contract(a, b), false, bound(a) * bound(b) * double(k));
  if (chance(0.5)) y = note_float(g_.binary(Op::Max, y, constant(t, node(y).shape, 0)), false, bound(y));
  return y;
}

// Multiplies by a power of two: exact, and it takes floats past [-1, 1), so
// that casts to integers see more than zeros.
int Generator::make_scale() {
  int x = operand([&](int id) { return is_float(node(id).dtype); },
                  [&] { return fresh(random_float(), random_shape()); });
  double k = std::exp2(double(uniform(-3, 7)));
  int y = g_.binary(Op::Mul, x, constant(node(x).dtype, node(x).shape, k));
  return note_float(y, exact(x), bound(x) * k);
}

int Generator::grow() {
  switch (uniform(0, 15)) {
    case 0: return make_unary();
    case 1: case 2: return make_cast();
    case 3: case 4: case 5: return make_binary();
    case 6: return make_where();
    case 7: return make_reduce();
    case 8: return make_reshape();
    case 9: return make_permute();
    case 10: return make_expand();
    case 11: return make_slice();
    case 12: return make_pad();
    case 13: return make_flip();
    case 14: return make_gather();
    default: return chance(0.2) ? make_scale() : chance(0.15) ? make_tile_contract() : make_contract();
  }
}

// A third of the graphs have one or two symbolic dims, bound at run time.
void Generator::declare_symbols() {
  if (!chance(0.35)) return;
  for (const char* name : {"n", "m"}) {
    int64_t hi = uniform(2, 70);
    syms_.push_back(Dim::symbol(name, 1, hi));
    values_[name] = uniform(1, hi);
    if (chance(0.5)) break;
  }
}

// The last node, and up to three others (more often those nothing reads).
void Generator::choose_outputs() {
  int last = int(g_.nodes.size()) - 1;
  g_.outputs = {last};
  std::vector<bool> used(g_.nodes.size());
  for (const Node& n : g_.nodes)
    for (int in : n.inputs) used[in] = true;
  for (int64_t extra = uniform(0, 3); extra > 0; --extra) {
    int id = int(uniform(0, last));
    if (used[id] && chance(0.5)) continue;
    if (std::find(g_.outputs.begin(), g_.outputs.end(), id) == g_.outputs.end()) g_.outputs.push_back(id);
  }
}

RandomGraph Generator::run(uint64_t seed) {
  declare_symbols();
  int64_t target = uniform(2, kMaxNodes);
  for (int attempt = 0; attempt < 200 && int64_t(g_.nodes.size()) < target; ++attempt) {
    Graph saved = g_;
    std::vector<Info> saved_info = info_;
    try {
      grow();
      if (g_.nodes.size() <= size_t(kMaxNodes)) continue;
    } catch (const Error&) {
      // not valid, or not comparable: undo and draw again
    }
    g_ = std::move(saved);
    info_ = std::move(saved_info);
  }
  while (g_.nodes.size() < 2) g_.unary(Op::Neg, fresh(f32, {3}));
  choose_outputs();
  RandomGraph out{std::move(g_), {}, seed};
  for (const Dim& d : out.graph.symbols()) out.symbols[d.sym] = values_.at(d.sym);
  return out;
}

}  // namespace

RandomGraph random_graph(uint64_t seed) { return Generator(seed).run(seed); }

std::map<std::string, HostTensor> case_inputs(const RandomGraph& c) {
  return random_inputs(c.graph, c.symbols, c.seed);
}

std::string print_case(const RandomGraph& c, const std::vector<std::string>& notes) {
  std::string s = "# seed " + std::to_string(c.seed) + "\n# symbols";
  for (const auto& [name, v] : c.symbols) s += " " + name + "=" + std::to_string(v);
  s += "\n";
  for (const std::string& n : notes) {
    std::istringstream lines(n);
    for (std::string line; std::getline(lines, line);) s += "# " + line + "\n";
  }
  return s + print(c.graph);
}

namespace {

// "n=5" -> {"n", 5}
std::pair<std::string, int64_t> parse_binding(const std::string& item) {
  size_t eq = item.find('=');
  if (eq == std::string::npos || eq == 0) throw Error("fuzz case: bad symbol value '" + item + "'");
  try {
    return {item.substr(0, eq), std::stoll(item.substr(eq + 1))};
  } catch (const std::logic_error&) {
    throw Error("fuzz case: bad symbol value '" + item + "'");
  }
}

}  // namespace

RandomGraph parse_case(std::string_view text) {
  RandomGraph c;
  bool seen_seed = false;
  size_t pos = 0;
  while (pos < text.size() && text[pos] == '#') {
    size_t end = std::min(text.find('\n', pos), text.size());
    std::istringstream line{std::string(text.substr(pos + 1, end - pos - 1))};
    std::string key, item;
    line >> key;
    if (key == "seed") seen_seed = bool(line >> c.seed);
    if (key == "symbols")
      while (line >> item) c.symbols.insert(parse_binding(item));
    pos = end + 1;
  }
  if (!seen_seed) throw Error("fuzz case: no '# seed N' line before the graph");
  c.graph = parse_graph(text.substr(std::min(pos, text.size())));
  return c;
}

}  // namespace kiln
