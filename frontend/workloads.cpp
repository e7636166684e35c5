#include "frontend/workloads.h"

#include <charconv>
#include <sstream>

#include "frontend/models/llm.h"
#include "kiln/error.h"

namespace kiln {

namespace {

const char* kKnown =
    "add:N, chain:N, matmul:MxKxN, gemv:MxK, softmax:RxC, mlp:BATCH, deps:N, llm-prefill:CONFIG:SEQ, "
    "llm-decode:CONFIG:PAST (both with an optional :q8, :q4 or :q4z for quantized matrices, :s24 for 2:4-sparse ones)";

std::vector<int64_t> parse_dims(const std::string& spec, const std::string& text, size_t want) {
  std::vector<int64_t> dims;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('x', pos);
    if (end == std::string::npos) end = text.size();
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(text.data() + pos, text.data() + end, v);
    if (ec != std::errc() || ptr != text.data() + end || v < 1)
      throw Error("workload '" + spec + "': '" + text.substr(pos, end - pos) + "' is not a size >= 1");
    dims.push_back(v);
    pos = end + 1;
  }
  if (dims.size() != want)
    throw Error("workload '" + spec + "' needs " + std::to_string(want) + " sizes separated by 'x'");
  return dims;
}

// y = relu(x @ w + b) for each layer: the demo's small MLP.
void build_mlp(Workload& w, int64_t batch, DType dt) {
  Graph& g = w.graph;
  const int64_t widths[] = {256, 512, 512, 10};
  int x = g.input("x", dt, {batch, widths[0]});
  for (int l = 0; l < 3; ++l) {
    int64_t in = widths[l], out = widths[l + 1];
    std::string s = std::to_string(l);
    int wt = g.input("w" + s, dt, {in, out});
    int b = g.input("b" + s, dt, {1, out});
    int y = g.binary(Op::Add, g.contract(x, wt), g.expand(b, {batch, out}));
    x = l < 2 ? g.binary(Op::Max, y, g.expand(g.constant(0, dt, {1, 1}), {batch, out})) : y;
    w.flops += 2.0 * batch * in * out;
  }
  g.outputs = {x};
}

// x <- x + (x @ w[i]) / W for i in 0..n, x [1, W]: n tiny dependent steps. Each
// contraction reads the stored result of the one before, which fusion never
// inlines into a contraction, so there is one kernel per step (the residual
// and the scale are its epilogue). The 1/W keeps x near its start's size. W is
// small enough that a step costs the GPU about what a launch does (on the H100,
// 1.2 us a step replayed; 2.7 us at W = 64, where the serial loads dominate).
void build_deps(Workload& w, int64_t steps, DType dt) {
  const int64_t width = 16;
  Graph& g = w.graph;
  int x = g.input("x", dt, {1, width});
  int weights = g.input("w", dt, {steps, width, width});
  int scale = g.expand(g.constant(1.0 / double(width), dt, {1, 1}), {1, width});
  for (int64_t i = 0; i < steps; ++i) {
    int wi = g.reshape(g.slice(weights, {i, 0, 0}, {i + 1, width, width}, {1, 1, 1}), {width, width});
    x = g.binary(Op::Add, x, g.binary(Op::Mul, g.contract(x, wi), scale));
  }
  g.outputs = {x};
  double es = double(dtype_size(dt));
  w.flops = double(steps) * (2.0 * width * width + 2.0 * width);
  w.bytes = es * (double(steps) * width * width + 2.0 * width);
}

}  // namespace

std::map<std::string, HostTensor> random_inputs(const Graph& g, const Bindings& symbols, uint64_t seed) {
  std::map<std::string, HostTensor> out;
  for (int id : g.input_nodes()) {
    const Node& n = g.nodes[id];
    out[n.name] = HostTensor::random(n.dtype, concrete(n.shape, symbols), seed++);
  }
  return out;
}

Workload make_workload(const std::string& spec, DType dt, uint64_t seed) {
  Workload w;
  w.spec = spec;
  size_t colon = spec.find(':');
  std::string kind = spec.substr(0, colon);
  std::string args = colon == std::string::npos ? "" : spec.substr(colon + 1);
  Graph& g = w.graph;
  g.name = kind;
  double es = double(dtype_size(dt));
  if (kind == "add") {
    int64_t n = parse_dims(spec, args, 1)[0];
    int a = g.input("a", dt, {n});
    int b = g.input("b", dt, {n});
    g.outputs = {g.binary(Op::Add, a, b)};
    w.flops = double(n);
    w.bytes = 3 * es * n;
  } else if (kind == "chain") {  // ((x*2+1).exp2()*y).relu(): an elementwise chain for fusion
    int64_t n = parse_dims(spec, args, 1)[0];
    int x = g.input("x", dt, {n}), y = g.input("y", dt, {n});
    auto c = [&](double v) { return g.expand(g.reshape(g.constant(v, dt), {1}), {n}); };
    int t = g.binary(Op::Add, g.binary(Op::Mul, x, c(2)), c(1));
    t = g.binary(Op::Mul, g.unary(Op::Exp2, t), y);
    g.outputs = {g.binary(Op::Max, t, c(0))};
    w.flops = 5.0 * n;
    w.bytes = 3 * es * n;
  } else if (kind == "matmul") {
    auto d = parse_dims(spec, args, 3);
    int a = g.input("a", dt, {d[0], d[1]});
    int b = g.input("b", dt, {d[1], d[2]});
    g.outputs = {g.contract(a, b)};
    w.flops = 2.0 * d[0] * d[1] * d[2];
    w.bytes = es * (d[0] * d[1] + d[1] * d[2] + d[0] * d[2]);
  } else if (kind == "gemv") {  // y = A x with A [M, K] row-major, as a decode step reads weights
    auto d = parse_dims(spec, args, 2);
    int a = g.input("a", dt, {d[0], d[1]});
    int x = g.input("x", dt, {d[1], 1});
    g.outputs = {g.contract(a, x)};
    w.flops = 2.0 * d[0] * d[1];
    w.bytes = es * (d[0] * d[1] + d[1] + d[0]);
  } else if (kind == "softmax") {
    auto d = parse_dims(spec, args, 2);
    int x = g.input("x", dt, {d[0], d[1]});
    int m = g.expand(g.reduce(Op::ReduceMax, x, {1}), {d[0], d[1]});
    int e = g.unary(Op::Exp2, g.binary(Op::Sub, x, m));
    int s = g.expand(g.reduce(Op::ReduceSum, e, {1}), {d[0], d[1]});
    g.outputs = {g.binary(Op::Div, e, s)};
    w.flops = 5.0 * d[0] * d[1];
    w.bytes = 2 * es * d[0] * d[1];
  } else if (kind == "mlp") {
    build_mlp(w, parse_dims(spec, args, 1)[0], dt);
  } else if (kind == "deps") {
    build_deps(w, parse_dims(spec, args, 1)[0], dt);
  } else if (kind == "llm-prefill" || kind == "llm-decode") {
    // CONFIG:SEQ (prefill) or CONFIG:PAST (decode: inputs for a cache of PAST
    // tokens), then optionally the matrices' format: llm-decode:tinyllama-1.1b:600:q4
    std::vector<std::string> parts;
    for (size_t pos = 0;;) {
      size_t end = args.find(':', pos);
      parts.push_back(args.substr(pos, end - pos));
      if (end == std::string::npos) break;
      pos = end + 1;
    }
    if (parts.size() < 2 || parts.size() > 3)
      throw Error("workload '" + spec + "' needs " + kind + (kind == "llm-decode" ? ":CONFIG:PAST" : ":CONFIG:SEQ") +
                  "[:q8|q4|q4z|s24]");
    WeightFormat wf = parts.size() == 3 ? parse_weight_format(parts[2]) : WeightFormat::dense;
    int64_t n = parse_dims(spec, parts[1], 1)[0];
    LlmConfig c = llm_config(parts[0]);
    if (kind == "llm-prefill") {
      g = llm_prefill_graph(c, dt, n, wf);
    } else {
      g = llm_decode_graph(c, dt, wf);
      w.inputs = random_inputs(g, {{"past", n}}, seed);
      return w;
    }
  } else {
    throw Error("unknown workload '" + spec + "' (known: " + kKnown + ")");
  }
  w.inputs = random_inputs(g, {}, seed);
  return w;
}

}  // namespace kiln
