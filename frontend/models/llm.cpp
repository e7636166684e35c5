#include "frontend/models/llm.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <numbers>
#include <numeric>
#include <tuple>

#include "kiln/error.h"
#include "runtime/thread_pool.h"

namespace kiln {

namespace {

LlmConfig llama(std::string name, int64_t dim, int64_t layers, int64_t heads, int64_t kv_heads, int64_t hidden,
                int64_t vocab, int64_t max_seq) {
  LlmConfig c;
  c.name = std::move(name);
  c.dim = dim;
  c.layers = layers;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.hidden = hidden;
  c.vocab = vocab;
  c.max_seq = max_seq;
  return c;
}

std::vector<LlmConfig> builtin_configs() {
  std::vector<LlmConfig> out;
  LlmConfig tiny = llama("tiny", 64, 2, 4, 2, 128, 256, 64);
  out.push_back(tiny);
  // llama2.c's TinyStories models share the embedding with the output head.
  LlmConfig s15 = llama("stories15m", 288, 6, 6, 6, 768, 32000, 256);
  s15.tied_embeddings = true;
  out.push_back(s15);
  LlmConfig s110 = llama("stories110m", 768, 12, 12, 12, 2048, 32000, 1024);
  s110.tied_embeddings = true;
  out.push_back(s110);
  LlmConfig gpt2 = llama("gpt2", 768, 12, 12, 12, 3072, 50257, 1024);
  gpt2.arch = "gpt2";
  gpt2.tied_embeddings = true;
  out.push_back(gpt2);
  out.push_back(llama("tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048));
  // The KV cache capacity of the two long-context models is capped at 4096
  // tokens (their trained contexts are 128k and 32k).
  LlmConfig l32 = llama("llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, 4096);
  l32.rope_theta = 500000;
  l32.rope_factor = 32;
  l32.tied_embeddings = true;
  out.push_back(l32);
  LlmConfig qwen = llama("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, 4096);
  qwen.rope_theta = 1000000;
  qwen.norm_eps = 1e-6;
  qwen.tied_embeddings = true;
  qwen.qkv_bias = true;
  out.push_back(qwen);
  return out;
}

std::string layer_prefix(const LlmConfig& c, int64_t l) {
  return (c.arch == "gpt2" ? "transformer.h." : "model.layers.") + std::to_string(l) + ".";
}

// Builds one model graph. Values are node ids of `g`; helpers name their
// operands' shapes in comments as [rows, cols].
class Builder {
 public:
  Builder(Graph& g, const LlmConfig& c, DType dt, WeightFormat wf) : g_(g), c_(c), dt_(dt), wf_(wf) {
    for (auto& [name, shape] : llm_weight_shapes(c)) shapes_[name] = shape;
    for (auto& [name, parts] : llm_stacked_weights(c)) {
      std::vector<int64_t> shape = shapes_.at(parts[0]);
      shape[0] = 0;
      for (const std::string& part : parts) shape[0] += shapes_.at(part)[0];
      shapes_[name] = shape;
    }
  }

  // The weight's value in the model's dtype; a q8 matrix is dequantized here
  // (inlined by fusion into whatever reads it). Weights (and the RoPE tables)
  // are immutable inputs: the session sets them once and no kernel writes them.
  int weight(const std::string& name) {
    auto it = weights_.find(name);
    if (it != weights_.end()) return it->second;
    auto s = shapes_.find(name);
    if (s == shapes_.end()) throw Error("llm: no weight named '" + name + "' in config " + c_.name);
    Shape shape(s->second.begin(), s->second.end());
    if (wf_ == WeightFormat::dense || shape.size() != 2 || (wf_ == WeightFormat::s24 && is_embedding_table(name)))
      return weights_[name] = g_.immutable_input(name, dt_, shape);
    if (wf_ == WeightFormat::s24) return weights_[name] = densify_2_4(name, shape);
    if (wf_ != WeightFormat::q8) return weights_[name] = dequantize_q4(name, shape);
    int q = g_.cast(quantized(name), f32);
    int scale = g_.reshape(scale_of(name), {shape[0], 1});
    return weights_[name] = to_dt(mul(q, bcast(scale, shape)));
  }

  // A q4 / q4z matrix [out, in] from its bytes "W" u8[out, in/2] and its
  // group scales (and minima). The IR has no bit ops: a byte's nibbles are
  // b / 16 and b - 16 * (b / 16) (unsigned, so division is floor), and a
  // where() on the half of the group (a [lo, hi] mask made by padding a
  // constant) picks the one each element holds. The views go through one
  // flat axis (groups of the whole matrix, [out * in/32, ...]), so that the
  // kernel's index arithmetic divides by powers of two only (32, 16, 2), not
  // by the row length.
  // A row of in % 32 != 0 inputs is dequantized whole groups long and
  // sliced to `in` (a view: the contraction reads its first `in` elements).
  int dequantize_q4(const std::string& name, const Shape& dims) {
    int64_t out = dims[0].value, in = dims[1].value, half = kQ4Group / 2, padded = q4_padded(in);
    int64_t groups = out * (padded / kQ4Group);
    int b = g_.reshape(g_.immutable_input(name, u8, {out, padded / 2}), {groups, 1, half});
    int hi = div(b, fill(16, u8, shape(b)));
    int lo = sub(b, mul(hi, fill(16, u8, shape(b))));
    Shape s3{groups, 2, half};
    int upper = bcast(g_.pad(g_.constant(1, boolean, {1, 1, 1}), {0, 1, 0}, {0, 0, 0}), s3);
    int v = g_.cast(g_.where(upper, bcast(hi, s3), bcast(lo, s3)), f32);
    auto group_param = [&](const std::string& suffix) {
      int p = g_.cast(g_.immutable_input(name + suffix, f16, {out, padded / kQ4Group}), f32);
      return bcast(g_.reshape(p, {groups, 1, 1}), s3);
    };
    int scale = group_param(".scale");
    v = wf_ == WeightFormat::q4 ? mul(sub(v, fill(8, f32, s3)), scale) : add(mul(v, scale), group_param(".min"));
    if (padded == in) return to_dt(g_.reshape(g_.reshape(v, {out * in}), dims));
    v = g_.reshape(g_.reshape(v, {out * padded}), {out, padded});
    return to_dt(g_.slice(v, {0, 0}, {out, in}, {1, 1}));
  }

  // An s24 matrix's kept values [out, in/2] and their positions (u8).
  std::pair<int, int> sparse_parts(const std::string& name) {
    const std::vector<int64_t>& s = shapes_.at(name);
    if (s[1] % 4)
      throw Error("llm: matrix '" + name + "' has " + std::to_string(s[1]) + " inputs; s24 needs a multiple of 4");
    auto it = weights_.find(name + "#vals");
    if (it == weights_.end()) {
      weights_[name + "#vals"] = g_.immutable_input(name, dt_, {s[0], s[1] / 2});
      weights_[name + ".sel"] = g_.immutable_input(name + ".sel", u8, {s[0], s[1] / 2});
    }
    return {weights_.at(name + "#vals"), weights_.at(name + ".sel")};
  }

  // An s24 matrix [out, in] as dense values: element 4g + c of a row is the
  // kept value of group g whose position is c, else 0 (a prologue that
  // fusion inlines into the matmul that reads it, like a q4 dequantization).
  int densify_2_4(const std::string& name, const Shape& dims) {
    int64_t out = dims[0].value, in = dims[1].value;
    auto [vals, sel] = sparse_parts(name);
    Shape s3{out, in / 4, 4};
    // The positions 0, 1, 2, 3 along the last axis.
    int pos = g_.constant(0, u8, {1, 1, 4});
    for (int64_t c = 1; c < 4; ++c) pos = add(pos, g_.pad(g_.constant(double(c), u8, {1, 1, 1}), {0, 0, c}, {0, 0, 3 - c}));
    pos = bcast(pos, s3);
    auto kept = [&](int node, int64_t k) {
      int v = g_.reshape(node, {out, in / 4, 2});
      return bcast(g_.slice(v, {0, 0, k}, {kSliceEnd, kSliceEnd, k + 1}, {1, 1, 1}), s3);
    };
    int zero = fill(0, dt_, s3);
    int w = g_.where(g_.binary(Op::CmpEq, kept(sel, 0), pos), kept(vals, 0),
                     g_.where(g_.binary(Op::CmpEq, kept(sel, 1), pos), kept(vals, 1), zero));
    return g_.reshape(w, dims);
  }

  // Rows [first, first + rows) of the s24 matrix times the row x [1, in], as
  // a row [1, rows]: only the kept values are read, each multiplying the x
  // its position picks. xe [4, in/2] holds x[4 * (j / 2) + c] in row c at
  // column j, stored once per x (a sum over one element: fusion stores a
  // reduction that no kernel can take as a stage), so that every load is
  // contiguous and the pick is three compares and selects, no gather. The
  // sum runs over the first axis of the product's transposed view, so the
  // result is a row and its epilogue (a residual add, silu(gate) * up) can
  // share its kernel.
  std::map<int, int> spread_;                              // x -> its xe
  std::map<std::pair<int, std::string>, int> gained_;      // (x, a norm's gain) -> g * x
  int sparse_row(int x, const std::string& w_name, int64_t first, int64_t rows) {
    auto [vals, sel] = sparse_parts(w_name);
    int64_t in = shapes_.at(w_name)[1], half = in / 2;
    if (first != 0 || shapes_.at(w_name)[0] != rows) {
      vals = g_.slice(vals, {first, 0}, {first + rows, kSliceEnd}, {1, 1});
      sel = g_.slice(sel, {first, 0}, {first + rows, kSliceEnd}, {1, 1});
    }
    if (!spread_.count(x)) {
      int xe = g_.expand(g_.reshape(x, {in / 4, 1, 4}), {in / 4, 2, 4});
      xe = g_.permute(g_.reshape(xe, {half, 4}), {1, 0});
      spread_[x] = g_.reshape(g_.reduce(Op::ReduceSum, g_.reshape(xe, {4, half, 1}), {2}), {4, half});
    }
    int xe = spread_.at(x);
    Shape s{rows, half};
    auto row = [&](int64_t c) { return bcast(g_.slice(xe, {c, 0}, {c + 1, kSliceEnd}, {1, 1}), s); };
    auto at = [&](int64_t c) { return g_.binary(Op::CmpEq, sel, fill(double(c), u8, s)); };
    int pick = g_.where(at(0), row(0), g_.where(at(1), row(1), g_.where(at(2), row(2), row(3))));
    return g_.reduce(Op::ReduceSum, g_.permute(mul(vals, pick), {1, 0}), {0});
  }

  int rope_table(const std::string& name) {
    auto it = weights_.find(name);
    if (it != weights_.end()) return it->second;
    return weights_[name] = g_.immutable_input(name, f32, {c_.max_seq, c_.head_dim() / 2});
  }

  // A constant of `t` broadcast to `shape`.
  int fill(double v, DType t, const Shape& shape) {
    return g_.expand(g_.reshape(g_.constant(v, t), Shape(shape.size(), Dim(1))), shape);
  }
  int bcast(int x, const Shape& shape) { return g_.expand(x, shape); }
  Shape shape(int x) const { return g_.nodes[x].shape; }  // a copy: adding nodes moves them
  int as(int x, DType t) { return g_.nodes[x].dtype == t ? x : g_.cast(x, t); }  // cast unless already t
  int f32_of(int x) { return as(x, f32); }
  int to_dt(int x) { return as(x, dt_); }
  int add(int a, int b) { return g_.binary(Op::Add, a, b); }
  int sub(int a, int b) { return g_.binary(Op::Sub, a, b); }
  int mul(int a, int b) { return g_.binary(Op::Mul, a, b); }
  int div(int a, int b) { return g_.binary(Op::Div, a, b); }
  int scale(int x, double v) { return mul(x, fill(v, g_.nodes[x].dtype, shape(x))); }
  int exp(int x) { return g_.unary(Op::Exp2, scale(x, std::numbers::log2e)); }

  // x [S, in] times the weight [out, in] (Hugging Face's layout) plus the
  // optional bias, -> [S, out]. One row is a GEMV that reads the weight
  // along its rows; more rows are a matmul against its transposed view.
  // A q8 matrix's row scales multiply the result (once per output) rather
  // than every weight: sum_j q[o, j] s[o] x[j] = s[o] sum_j q[o, j] x[j].
  int linear(int x, const std::string& w_name, const std::string& b_name = "") {
    if (auto it = pending_norm_.find(x); it != pending_norm_.end()) return normed_linear(it->second, w_name, b_name);
    bool q8 = wf_ == WeightFormat::q8;
    Dim rows = shape(x)[0];
    if (rows.is_one() && sparse(w_name)) {
      int64_t out = shapes_.at(w_name)[0];
      int y = sparse_row(x, w_name, 0, out);
      if (!b_name.empty()) y = add(y, bcast(g_.reshape(weight(b_name), {1, out}), shape(y)));
      return y;
    }
    int w = q8 ? g_.cast(quantized(w_name), dt_) : weight(w_name);
    Dim in = shape(x)[1], out = shape(w)[0];
    int y = rows.is_one() ? g_.reshape(g_.contract(w, g_.reshape(x, {in, 1})), {1, out})
                          : g_.contract(x, g_.permute(w, {1, 0}));
    if (q8) y = to_dt(mul(f32_of(y), bcast(g_.reshape(scale_of(w_name), {1, out}), shape(y))));
    if (!b_name.empty()) y = add(y, bcast(g_.reshape(weight(b_name), {1, out}), shape(y)));
    return y;
  }

  // A decode step's RMSNorm folded into the GEMV that reads it (one row: no
  // kernel of its own). With x the residual row, g the norm's gain and W the
  // matrix, y[o] = r * sum_j W[o, j] (g[j] x[j]), r = 1 / sqrt(mean(x^2) + eps).
  // The sum of squares is taken along every output row (the GEMV reads all of
  // x there anyway: one multiply-add more an element), and g * x is a short
  // expression of x that fusion computes where the GEMV loads its vector.
  struct PendingNorm {
    int x;               // the row [1, D] before the norm
    std::string gain;    // the norm's weight
  };
  std::map<int, PendingNorm> pending_norm_;  // normed value (a stand-in) -> what to fold

  // 1 / sqrt(mean(x^2) + eps) of the row x [1, D] as a column [rows, 1] (or,
  // `as_row`, a row [1, rows], for the s24 GEMVs' row results): the same sum
  // of squares along every output row of a GEMV (one for a gate and an up of
  // the same length).
  std::map<std::tuple<int, int64_t, bool>, int> norm_scales_;
  int norm_scale(int x, int64_t rows, bool as_row = false) {
    auto it = norm_scales_.find({x, rows, as_row});
    if (it != norm_scales_.end()) return it->second;
    int xf = f32_of(x);
    Dim d = shape(x)[1];
    int64_t axis = as_row ? 0 : 1;
    int sq = g_.reshape(mul(xf, xf), as_row ? Shape{d, Dim(1)} : Shape{Dim(1), d});
    int ss = g_.reduce(Op::ReduceSum, bcast(sq, as_row ? Shape{d, Dim(rows)} : Shape{Dim(rows), d}), {axis});
    int ms = scale(ss, 1.0 / double(c_.dim));
    return norm_scales_[{x, rows, as_row}] =
               g_.unary(Op::Recip, g_.unary(Op::Sqrt, add(ms, fill(c_.norm_eps, f32, shape(ms)))));
  }

  // Rows [first, first + rows) of W times the normed row, as a column
  // [rows, 1] in the model's dtype (a GEMV's natural layout: its epilogue and
  // its norm's sum of squares share the contraction's output points).
  int normed_column(const PendingNorm& n, const std::string& w_name, int64_t first, int64_t rows) {
    if (sparse(w_name)) {  // a row [1, rows]: every caller reshapes the column to one
      int x = n.x;
      auto key = std::make_pair(x, n.gain);
      if (!gained_.count(key)) gained_[key] = mul(x, bcast(g_.reshape(weight(n.gain), {1, shape(x)[1]}), shape(x)));
      return to_dt(mul(f32_of(sparse_row(gained_.at(key), w_name, first, rows)), norm_scale(x, rows, /*as_row=*/true)));
    }
    bool q8 = wf_ == WeightFormat::q8;
    int w = q8 ? g_.cast(quantized(w_name), dt_) : weight(w_name);
    int x = n.x;
    Dim in = shape(x)[1];
    if (first != 0 || shape(w)[0] != Dim(rows)) w = g_.slice(w, {first, 0}, {first + rows, kSliceEnd}, {1, 1});
    int xg = mul(x, bcast(g_.reshape(weight(n.gain), {1, in}), shape(x)));
    int dot = g_.contract(w, g_.reshape(xg, {in, 1}));  // [rows, 1]
    int y = mul(f32_of(dot), norm_scale(x, rows));
    if (q8) {
      int sc = g_.reshape(scale_of(w_name), {shapes_.at(w_name)[0], 1});
      if (first != 0 || shapes_.at(w_name)[0] != rows) sc = g_.slice(sc, {first, 0}, {first + rows, kSliceEnd}, {1, 1});
      y = mul(y, sc);
    }
    return to_dt(y);
  }

  // `f32_out`: the result (rounded to the model's dtype) in f32, cast before
  // the column becomes a row, so that the cast is the GEMV's epilogue.
  int normed_linear(const PendingNorm& n, const std::string& w_name, const std::string& b_name, bool f32_out = false) {
    int64_t out = shapes_.at(w_name)[0];
    int y = normed_column(n, w_name, 0, out);
    if (f32_out && b_name.empty()) y = f32_of(y);
    y = g_.reshape(y, {1, out});
    if (!b_name.empty()) y = add(y, bcast(g_.reshape(weight(b_name), {1, out}), shape(y)));
    return y;
  }

  // RMSNorm of x [S, D] by the gain `w_name`: for one row (decode) a stand-in
  // that the next linear() folds (normed_linear); otherwise rmsnorm().
  int rmsnorm_for_linear(int x, const std::string& w_name) {
    if (!shape(x)[0].is_one()) return rmsnorm(x, w_name);
    int stand_in = g_.reshape(x, shape(x));
    pending_norm_[stand_in] = {x, w_name};
    return stand_in;
  }

  // Whether `name` is a matrix this model stores as s24.
  bool sparse(const std::string& name) const {
    auto s = shapes_.find(name);
    return wf_ == WeightFormat::s24 && s != shapes_.end() && s->second.size() == 2 && !is_embedding_table(name);
  }

  int quantized(const std::string& name) {
    auto it = weights_.find(name + "#q");
    if (it != weights_.end()) return it->second;
    const std::vector<int64_t>& s = shapes_.at(name);
    return weights_[name + "#q"] = g_.immutable_input(name, i8, Shape(s.begin(), s.end()));
  }
  int scale_of(const std::string& name) {
    auto it = weights_.find(name + ".scale");
    if (it != weights_.end()) return it->second;
    return weights_[name + ".scale"] = g_.immutable_input(name + ".scale", f32, {shapes_.at(name)[0]});
  }

  // x [S, D] -> [S, D] in the model's dtype; statistics in f32.
  int rmsnorm(int x, const std::string& w_name) {
    Shape s = shape(x);
    int xf = f32_of(x);
    int ms = scale(g_.reduce(Op::ReduceSum, mul(xf, xf), {1}), 1.0 / double(c_.dim));
    int r = g_.unary(Op::Recip, g_.unary(Op::Sqrt, add(ms, fill(c_.norm_eps, f32, shape(ms)))));
    int y = mul(xf, bcast(r, s));
    return mul(to_dt(y), bcast(g_.reshape(weight(w_name), {1, c_.dim}), s));
  }

  int layernorm(int x, const std::string& prefix) {
    Shape s = shape(x);
    int xf = f32_of(x);
    int mean = scale(g_.reduce(Op::ReduceSum, xf, {1}), 1.0 / double(c_.dim));
    int xc = sub(xf, bcast(mean, s));
    int var = scale(g_.reduce(Op::ReduceSum, mul(xc, xc), {1}), 1.0 / double(c_.dim));
    int r = g_.unary(Op::Recip, g_.unary(Op::Sqrt, add(var, fill(c_.norm_eps, f32, shape(var)))));
    int y = mul(xc, bcast(r, s));
    y = mul(y, bcast(g_.reshape(f32_of(weight(prefix + ".weight")), {1, c_.dim}), s));
    y = add(y, bcast(g_.reshape(f32_of(weight(prefix + ".bias")), {1, c_.dim}), s));
    return to_dt(y);
  }

  // Rotates x [S, n, hd] by the angles of `positions` (Hugging Face's
  // rotate_half convention: the first half of each head pairs with the second).
  int rope(int x, int positions) {
    Dim seq = shape(x)[0], n = shape(x)[1];
    int64_t half = c_.head_dim() / 2;
    Shape hs{seq, n, Dim(half)};
    auto table = [&](const char* name) {
      int rows = g_.gather(rope_table(name), positions, 0);  // [S, half]
      return bcast(g_.reshape(rows, {seq, 1, half}), hs);
    };
    int cos = table("rope_cos"), sin = table("rope_sin");
    int xf = f32_of(x);
    int x1 = g_.slice(xf, {0, 0, 0}, {kSliceEnd, kSliceEnd, half}, {1, 1, 1});
    int x2 = g_.slice(xf, {0, 0, half}, {kSliceEnd, kSliceEnd, kSliceEnd}, {1, 1, 1});
    int a = sub(mul(x1, cos), mul(x2, sin));
    int b = add(mul(x2, cos), mul(x1, sin));
    int out = add(g_.pad(a, {0, 0, 0}, {0, 0, half}), g_.pad(b, {0, 0, half}, {0, 0, 0}));
    return to_dt(out);
  }

  // Softmax's numerator and denominator pieces are built by the callers;
  // this is the tanh-approximated GELU of GPT-2, in f32.
  int gelu(int x) {
    int xf = f32_of(x);
    Shape s = shape(xf);
    int inner = scale(add(xf, scale(mul(mul(xf, xf), xf), 0.044715)), std::sqrt(2.0 / std::numbers::pi));
    // tanh(u) = 1 - 2 / (exp(2u) + 1)
    int t = sub(fill(1, f32, s), div(fill(2, f32, s), add(exp(scale(inner, 2)), fill(1, f32, s))));
    return to_dt(mul(scale(xf, 0.5), add(t, fill(1, f32, s))));
  }

  int silu(int x) {
    int xf = f32_of(x);
    Shape s = shape(xf);
    return div(xf, add(fill(1, f32, s), exp(g_.unary(Op::Neg, xf))));
  }

  int mlp(int x, const std::string& p) {
    if (c_.arch == "gpt2") {
      int h = gelu(linear(x, p + "mlp.c_fc.weight", p + "mlp.c_fc.bias"));
      return linear(h, p + "mlp.c_proj.weight", p + "mlp.c_proj.bias");
    }
    // Decode (one row, its norm folded): one kernel computes the gate's and
    // the up's rows of the stacked matrix side by side and silu(gate) * up.
    std::string gate_up = p + "mlp.gate_up_proj.weight";
    if (auto it = pending_norm_.find(x); it != pending_norm_.end()) {
      int gate = silu(f32_of(normed_column(it->second, gate_up, 0, c_.hidden)));
      int up = f32_of(normed_column(it->second, gate_up, c_.hidden, c_.hidden));
      int h = g_.reshape(to_dt(mul(gate, up)), {1, c_.hidden});
      return linear(h, p + "mlp.down_proj.weight");
    }
    // Otherwise one GEMV (or matmul) for gate and up, then silu(gate) * up.
    int both = linear(x, gate_up);  // [S, 2 hidden]
    auto part = [&](int64_t i) { return g_.slice(both, {0, i * c_.hidden}, {kSliceEnd, (i + 1) * c_.hidden}, {1, 1}); };
    int gate = silu(part(0));
    int up = f32_of(part(1));
    return linear(to_dt(mul(gate, up)), p + "mlp.down_proj.weight");
  }

  struct Qkv {
    int q, k, v;  // q [S, H*hd]; k, v [S, KVH, hd] (k rotated)
  };

  Qkv qkv(int x, const std::string& p, int positions) {
    Dim seq = shape(x)[0];
    int64_t hd = c_.head_dim();
    int q, k, v;
    if (c_.arch == "gpt2") {
      int all = linear(x, p + "attn.c_attn.weight", p + "attn.c_attn.bias");  // [S, 3D]
      auto part = [&](int64_t i) {
        return g_.slice(all, {0, i * c_.dim}, {kSliceEnd, (i + 1) * c_.dim}, {1, 1});
      };
      q = part(0);
      k = g_.reshape(part(1), {seq, c_.kv_heads, hd});
      v = g_.reshape(part(2), {seq, c_.kv_heads, hd});
      return {q, k, v};
    }
    // One GEMV for q, k and v (their rows stacked), one RoPE for q and k.
    std::string qkv_bias = c_.qkv_bias ? p + "self_attn.qkv_proj.bias" : std::string();
    int all = linear(x, p + "self_attn.qkv_proj.weight", qkv_bias);  // [S, (H + 2 KVH) hd]
    int64_t rotated = c_.heads + c_.kv_heads;
    int qk = g_.reshape(g_.slice(all, {0, 0}, {kSliceEnd, rotated * hd}, {1, 1}), {seq, rotated, hd});
    qk = rope(qk, positions);
    q = g_.reshape(g_.slice(qk, {0, 0, 0}, {kSliceEnd, c_.heads, kSliceEnd}, {1, 1, 1}), {seq, c_.dim});
    k = g_.slice(qk, {0, c_.heads, 0}, {kSliceEnd, kSliceEnd, kSliceEnd}, {1, 1, 1});
    v = g_.reshape(g_.slice(all, {0, rotated * hd}, {kSliceEnd, kSliceEnd}, {1, 1}), {seq, c_.kv_heads, hd});
    return {q, k, v};
  }

  int attn_out(int o, const std::string& p) {
    if (c_.arch == "gpt2") return linear(o, p + "attn.c_proj.weight", p + "attn.c_proj.bias");
    return linear(o, p + "self_attn.o_proj.weight");
  }

  int norm1(int x, const std::string& p) {
    return c_.arch == "gpt2" ? layernorm(x, p + "ln_1") : rmsnorm_for_linear(x, p + "input_layernorm.weight");
  }
  int norm2(int x, const std::string& p) {
    return c_.arch == "gpt2" ? layernorm(x, p + "ln_2") : rmsnorm_for_linear(x, p + "post_attention_layernorm.weight");
  }

  // Token (and, for GPT-2, position) embeddings of tokens i32[S] -> [S, D].
  int embed(int tokens, int positions) {
    if (c_.arch == "gpt2")
      return add(g_.gather(weight("transformer.wte.weight"), tokens, 0),
                 g_.gather(weight("transformer.wpe.weight"), positions, 0));
    return g_.gather(weight("model.embed_tokens.weight"), tokens, 0);
  }

  // Every layer over the residual stream x [S, D]; `attention(l, q, k, v)`
  // gives a layer's attention output [S, D] (prefill and decode differ only
  // there); it also records the keys and values that go into the cache.
  int decoder(int x, int positions, const std::function<int(int64_t, int, int, int)>& attention) {
    for (int64_t l = 0; l < c_.layers; ++l) {
      std::string p = layer_prefix(c_, l);
      auto [q, k, v] = qkv(norm1(x, p), p, positions);
      x = add(x, attn_out(attention(l, q, k, v), p));
      x = add(x, mlp(norm2(x, p), p));
    }
    return x;
  }

  // Final norm and the output head for one row x [1, D] -> f32 [1, vocab].
  int logits(int x) {
    int h = c_.arch == "gpt2" ? layernorm(x, "transformer.ln_f") : rmsnorm_for_linear(x, "model.norm.weight");
    std::string head = c_.tied_embeddings
                           ? (c_.arch == "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight")
                           : "lm_head.weight";
    if (auto it = pending_norm_.find(h); it != pending_norm_.end()) return f32_of(normed_linear(it->second, head, "", true));
    return f32_of(linear(h, head));
  }

 private:
  Graph& g_;
  const LlmConfig& c_;
  DType dt_;
  WeightFormat wf_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, int> weights_;
};

}  // namespace

void LlmConfig::validate() const {
  auto fail = [&](const std::string& why) { throw Error("llm config '" + name + "': " + why); };
  if (arch != "llama" && arch != "gpt2") fail("unknown arch '" + arch + "' (llama, gpt2)");
  if (dim < 1 || layers < 1 || heads < 1 || kv_heads < 1 || hidden < 1 || vocab < 1 || max_seq < 2)
    fail("sizes must be positive (max_seq at least 2)");
  if (dim % heads) fail("dim " + std::to_string(dim) + " is not a multiple of heads " + std::to_string(heads));
  if (heads % kv_heads) fail("heads is not a multiple of kv_heads");
  if (head_dim() % 2) fail("head_dim must be even for RoPE");
  if (arch == "gpt2" && (kv_heads != heads || !tied_embeddings || qkv_bias))
    fail("gpt2 has as many kv_heads as heads, a tied output head and its own biases");
  if (!(rope_theta > 0) || !(norm_eps > 0)) fail("rope_theta and norm_eps must be positive");
  if (rope_factor != 0 && !(rope_factor > 0 && rope_low_freq > 0 && rope_high_freq > rope_low_freq &&
                            rope_original_max > 0))
    fail("rope scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position > 0");
}

LlmConfig llm_config(const std::string& name) {
  std::string known;
  for (const LlmConfig& c : builtin_configs()) {
    if (c.name == name) return c;
    known += (known.empty() ? "" : ", ") + c.name;
  }
  throw Error("unknown model config '" + name + "' (built in: " + known + ")");
}

std::vector<std::string> llm_config_names() {
  std::vector<std::string> out;
  for (const LlmConfig& c : builtin_configs()) out.push_back(c.name);
  return out;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> llm_weight_shapes(const LlmConfig& c) {
  c.validate();
  std::vector<std::pair<std::string, std::vector<int64_t>>> w;
  int64_t d = c.dim, hd = c.head_dim(), kv = c.kv_heads * hd;
  if (c.arch == "gpt2") {
    w.push_back({"transformer.wte.weight", {c.vocab, d}});
    w.push_back({"transformer.wpe.weight", {c.max_seq, d}});
    for (int64_t l = 0; l < c.layers; ++l) {
      std::string p = layer_prefix(c, l);
      for (const char* ln : {"ln_1", "ln_2"}) {
        w.push_back({p + ln + ".weight", {d}});
        w.push_back({p + ln + ".bias", {d}});
      }
      w.push_back({p + "attn.c_attn.weight", {3 * d, d}});
      w.push_back({p + "attn.c_attn.bias", {3 * d}});
      w.push_back({p + "attn.c_proj.weight", {d, d}});
      w.push_back({p + "attn.c_proj.bias", {d}});
      w.push_back({p + "mlp.c_fc.weight", {c.hidden, d}});
      w.push_back({p + "mlp.c_fc.bias", {c.hidden}});
      w.push_back({p + "mlp.c_proj.weight", {d, c.hidden}});
      w.push_back({p + "mlp.c_proj.bias", {d}});
    }
    w.push_back({"transformer.ln_f.weight", {d}});
    w.push_back({"transformer.ln_f.bias", {d}});
    return w;
  }
  w.push_back({"model.embed_tokens.weight", {c.vocab, d}});
  for (int64_t l = 0; l < c.layers; ++l) {
    std::string p = layer_prefix(c, l);
    w.push_back({p + "input_layernorm.weight", {d}});
    w.push_back({p + "self_attn.q_proj.weight", {d, d}});
    w.push_back({p + "self_attn.k_proj.weight", {kv, d}});
    w.push_back({p + "self_attn.v_proj.weight", {kv, d}});
    if (c.qkv_bias) {
      w.push_back({p + "self_attn.q_proj.bias", {d}});
      w.push_back({p + "self_attn.k_proj.bias", {kv}});
      w.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    w.push_back({p + "self_attn.o_proj.weight", {d, d}});
    w.push_back({p + "post_attention_layernorm.weight", {d}});
    w.push_back({p + "mlp.gate_proj.weight", {c.hidden, d}});
    w.push_back({p + "mlp.up_proj.weight", {c.hidden, d}});
    w.push_back({p + "mlp.down_proj.weight", {d, c.hidden}});
  }
  w.push_back({"model.norm.weight", {d}});
  if (!c.tied_embeddings) w.push_back({"lm_head.weight", {c.vocab, d}});
  return w;
}

std::vector<std::pair<std::string, std::vector<std::string>>> llm_stacked_weights(const LlmConfig& c) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  if (c.arch != "llama") return out;
  for (int64_t l = 0; l < c.layers; ++l) {
    std::string p = layer_prefix(c, l) + "self_attn.";
    for (std::string what : {".weight", ".bias"}) {
      if (what == ".bias" && !c.qkv_bias) continue;
      out.push_back({p + "qkv_proj" + what, {p + "q_proj" + what, p + "k_proj" + what, p + "v_proj" + what}});
    }
    std::string m = layer_prefix(c, l) + "mlp.";
    out.push_back({m + "gate_up_proj.weight", {m + "gate_proj.weight", m + "up_proj.weight"}});
  }
  return out;
}

HostTensor stack_rows(const std::vector<const HostTensor*>& parts) {
  if (parts.empty()) throw Error("stack_rows: nothing to stack");
  const HostTensor& first = *parts[0];
  if (first.sizes.empty()) throw Error("stack_rows: a scalar has no rows");
  std::vector<int64_t> sizes = first.sizes;
  sizes[0] = 0;
  for (const HostTensor* t : parts) {
    if (t->dtype != first.dtype || t->sizes.size() != first.sizes.size() ||
        !std::equal(t->sizes.begin() + 1, t->sizes.end(), first.sizes.begin() + 1))
      throw Error("stack_rows: " + describe(*t) + " does not stack with " + describe(first));
    sizes[0] += t->sizes[0];
  }
  HostTensor out(first.dtype, sizes);
  size_t at = 0;
  for (const HostTensor* t : parts) {
    std::copy(t->data.begin(), t->data.end(), out.data.begin() + ptrdiff_t(at));
    at += t->data.size();
  }
  return out;
}

std::map<std::string, HostTensor> stack_llm_weights(const LlmConfig& c, std::map<std::string, HostTensor> weights) {
  std::vector<std::string> suffixes{""};  // the matrix, then the tensors beside it
  suffixes.insert(suffixes.end(), std::begin(kWeightAuxSuffixes), std::end(kWeightAuxSuffixes));
  for (auto& [name, parts] : llm_stacked_weights(c))
    for (const std::string& suffix : suffixes) {
      std::vector<const HostTensor*> found;
      for (const std::string& part : parts)
        if (auto it = weights.find(part + suffix); it != weights.end()) found.push_back(&it->second);
      if (found.size() != parts.size()) continue;
      HostTensor stacked = stack_rows(found);
      for (const std::string& part : parts) weights.erase(part + suffix);
      weights.insert_or_assign(name + suffix, std::move(stacked));
    }
  return weights;
}

int64_t llm_param_count(const LlmConfig& c) {
  int64_t n = 0;
  for (auto& [name, s] : llm_weight_shapes(c)) {
    int64_t k = 1;
    for (int64_t v : s) k *= v;
    n += k;
  }
  return n;
}

std::map<std::string, HostTensor> random_llm_weights(const LlmConfig& c, DType dtype, uint64_t seed) {
  if (!is_float(dtype)) throw Error("random_llm_weights: weights must be f32, f16 or bf16");
  std::map<std::string, HostTensor> out;
  uint64_t tensor_seed = seed;
  for (auto& [name, sizes] : llm_weight_shapes(c)) {
    HostTensor t(dtype, sizes);
    bool gain = sizes.size() == 1 && name.find("weight") != std::string::npos;  // a norm's gain
    bool bias = sizes.size() == 1 && !gain;
    // Embeddings are read as activations (scale 1); a linear layer's weights
    // keep their output near the input's size (1/sqrt(fan_in)).
    bool embedding = name.find("embed") != std::string::npos || name.find("wte") != std::string::npos ||
                     name.find("wpe") != std::string::npos;
    float amp = embedding ? 1.0f : 1.0f / std::sqrt(float(sizes.back()));
    // Chunks of 64K elements, each from its own stream: the same weights on
    // any number of threads.
    const int64_t chunk = 1 << 16, n = t.numel();
    uint64_t base = ++tensor_seed * 0x9E3779B97F4A7C15ull;
    ThreadPool::global().parallel_for(0, (n + chunk - 1) / chunk, [&](int64_t cb, int64_t ce) {
      for (int64_t ci = cb; ci < ce; ++ci) {
        uint64_t state = base ^ (uint64_t(ci) * 0xD1B54A32D192ED03ull);
        for (int64_t i = ci * chunk; i < std::min(n, (ci + 1) * chunk); ++i) {
          uint64_t z = (state += 0x9E3779B97F4A7C15ull);  // splitmix64 -> uniform [-1, 1)
          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
          z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
          z ^= z >> 31;
          float u = float(double(z >> 11) * 0x1.0p-52 - 1.0);
          float v = gain ? 1.0f + 0.1f * u : bias ? 0.1f * u : amp * u;
          switch (dtype) {
            case DType::f32: t.ptr<float>()[i] = v; break;
            case DType::f16: t.ptr<uint16_t>()[i] = f32_to_f16_bits(v); break;
            default: t.ptr<uint16_t>()[i] = f32_to_bf16_bits(v); break;
          }
        }
      }
    });
    out.emplace(name, std::move(t));
  }
  return out;
}

std::map<std::string, HostTensor> quantize_q8(const std::map<std::string, HostTensor>& weights) {
  std::map<std::string, HostTensor> out;
  for (const auto& [name, w] : weights) {
    if (w.sizes.size() != 2) {
      out.emplace(name, w);
      continue;
    }
    if (!is_float(w.dtype)) throw Error("quantize_q8: weight '" + name + "' is " + describe(w) + ", not float");
    int64_t rows = w.sizes[0], cols = w.sizes[1];
    HostTensor q(i8, w.sizes), scale(f32, {rows});
    ThreadPool::global().parallel_for(0, rows, [&](int64_t rb, int64_t re) {
      std::vector<float> row(cols);
      for (int64_t r = rb; r < re; ++r) {
        float amax = 0;
        for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(row[j] = float(w.get(r * cols + j))));
        float s = amax > 0 ? amax / 127.0f : 1.0f;
        scale.ptr<float>()[r] = s;
        for (int64_t j = 0; j < cols; ++j)
          q.ptr<int8_t>()[r * cols + j] = int8_t(std::clamp(std::nearbyint(row[j] / s), -127.0f, 127.0f));
      }
    });
    out.emplace(name, std::move(q));
    out.emplace(name + ".scale", std::move(scale));
  }
  return out;
}

namespace {

// The nearest f16 at or above (below) v.
uint16_t f16_up(float v) {
  uint16_t h = f32_to_f16_bits(v);
  float r = f16_bits_to_f32(h);
  if (r >= v) return h;
  return (h & 0x8000) ? (h == 0x8000 ? uint16_t(0x0001) : uint16_t(h - 1)) : uint16_t(h + 1);
}
uint16_t f16_down(float v) { return f16_up(-v) ^ 0x8000; }

bool is_aux_name(const std::string& name) {
  return std::any_of(std::begin(kWeightAuxSuffixes), std::end(kWeightAuxSuffixes),
                     [&](const char* suffix) { return name.ends_with(suffix); });
}

// Quantizes every float matrix of `weights` to q4 (zero_point false) or q4z.
std::map<std::string, HostTensor> quantize_4bit(const std::map<std::string, HostTensor>& weights, bool zero_point) {
  const char* what = zero_point ? "quantize_q4z" : "quantize_q4";
  std::map<std::string, HostTensor> out;
  for (const auto& [name, w] : weights) {
    if (w.sizes.size() != 2 || is_aux_name(name)) {
      out.emplace(name, w);
      continue;
    }
    if (!is_float(w.dtype)) throw Error(std::string(what) + ": weight '" + name + "' is " + describe(w) + ", not float");
    // A partial last group (cols % 32 != 0) is quantized over its real
    // elements; its padding takes the nibble of 0.
    int64_t rows = w.sizes[0], cols = w.sizes[1], padded = q4_padded(cols), groups = padded / kQ4Group;
    HostTensor q(u8, {rows, padded / 2}), scale(f16, {rows, groups}), min(f16, {rows, groups});
    ThreadPool::global().parallel_for(0, rows, [&](int64_t rb, int64_t re) {
      float x[kQ4Group];
      for (int64_t r = rb; r < re; ++r)
        for (int64_t g = 0; g < groups; ++g) {
          float lo = INFINITY, hi = -INFINITY, amax = 0;
          int64_t real = std::min(kQ4Group, cols - g * kQ4Group);
          for (int64_t j = 0; j < kQ4Group; ++j) {
            x[j] = j < real ? float(w.get(r * cols + g * kQ4Group + j)) : 0.0f;
            if (j < real) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]), amax = std::max(amax, std::fabs(x[j]));
          }
          uint16_t s16, m16 = 0;
          float s, m = 0;
          if (zero_point) {
            m16 = f16_down(lo);
            m = f16_bits_to_f32(m16);
            s16 = f16_up((hi - m) / 15.0f);
          } else {
            s16 = f16_up(amax / 7.5f);
          }
          s = f16_bits_to_f32(s16);
          if (!(s > 0)) s16 = f32_to_f16_bits(1.0f), s = 1;  // a group of zeros
          scale.ptr<uint16_t>()[r * groups + g] = s16;
          min.ptr<uint16_t>()[r * groups + g] = m16;
          uint8_t* bytes = q.ptr<uint8_t>() + r * (padded / 2) + g * (kQ4Group / 2);
          for (int64_t j = 0; j < kQ4Group; ++j) {
            float n = zero_point ? std::nearbyint((x[j] - m) / s) : std::nearbyint(x[j] / s) + 8;
            uint8_t nib = uint8_t(std::clamp(n, 0.0f, 15.0f));
            if (j < kQ4Group / 2) bytes[j] = nib;
            else bytes[j - kQ4Group / 2] |= uint8_t(nib << 4);
          }
        }
    });
    out.emplace(name, std::move(q));
    out.emplace(name + ".scale", std::move(scale));
    if (zero_point) out.emplace(name + ".min", std::move(min));
  }
  return out;
}

const HostTensor& aux(const std::map<std::string, HostTensor>& weights, const std::string& name, DType dt,
                      const std::vector<int64_t>& sizes) {
  auto it = weights.find(name);
  if (it == weights.end()) throw Error("weights: '" + name + "' is missing");
  if (it->second.dtype != dt || it->second.sizes != sizes)
    throw Error("weights: '" + name + "' is " + describe(it->second) + ", expected " +
                describe(HostTensor(dt, sizes)));
  return it->second;
}

// Matrix `name` of `weights`, stored as `f`, dequantized to f32 [out, in];
// a 4-bit one to its first `in` inputs where in > 0 (else its whole groups).
HostTensor dequantized(const std::map<std::string, HostTensor>& weights, const std::string& name, WeightFormat f,
                       int64_t in = 0) {
  const HostTensor& q = weights.at(name);
  if (q.sizes.size() != 2) throw Error("weights: '" + name + "' is " + describe(q) + ", not a matrix");
  int64_t rows = q.sizes[0];
  if (f == WeightFormat::s24) {
    int64_t half = q.sizes[1];
    if (half % 2) throw Error("weights: s24 matrix '" + name + "' is " + describe(q) + "; its rows must hold whole groups of 2");
    const HostTensor& positions = aux(weights, name + ".sel", u8, {rows, half});
    check_2_4_positions(name, positions);
    const uint8_t* sel = positions.ptr<uint8_t>();
    HostTensor out(f32, {rows, 2 * half});
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < half; ++j)
        out.ptr<float>()[r * 2 * half + 4 * (j / 2) + sel[r * half + j]] = float(q.get(r * half + j));
    return out;
  }
  if (f == WeightFormat::q8) {
    int64_t cols = q.sizes[1];
    const float* s = aux(weights, name + ".scale", f32, {rows}).ptr<float>();
    HostTensor out(f32, {rows, cols});
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) out.ptr<float>()[r * cols + j] = float(q.ptr<int8_t>()[r * cols + j]) * s[r];
    return out;
  }
  int64_t stored = q.sizes[1] * 2, groups = stored / kQ4Group;
  if (stored % kQ4Group)
    throw Error("weights: 4-bit matrix '" + name + "' is " + describe(q) + "; its rows must hold whole groups of 16 bytes");
  int64_t cols = in > 0 ? in : stored;
  if (q4_padded(cols) != stored)
    throw Error("weights: 4-bit matrix '" + name + "' is " + describe(q) + ", expected " + std::to_string(cols) +
                " inputs (" + std::to_string(q4_padded(cols) / 2) + " bytes a row)");
  const uint16_t* s = aux(weights, name + ".scale", f16, {rows, groups}).ptr<uint16_t>();
  const uint16_t* m = f == WeightFormat::q4z ? aux(weights, name + ".min", f16, {rows, groups}).ptr<uint16_t>() : nullptr;
  HostTensor out(f32, {rows, cols});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      float sc = f16_bits_to_f32(s[r * groups + g]);
      float mn = m ? f16_bits_to_f32(m[r * groups + g]) : -8 * sc;
      const uint8_t* bytes = q.ptr<uint8_t>() + r * (stored / 2) + g * (kQ4Group / 2);
      for (int64_t j = 0; j < kQ4Group && g * kQ4Group + j < cols; ++j) {
        int nib = j < kQ4Group / 2 ? bytes[j] & 15 : bytes[j - kQ4Group / 2] >> 4;
        out.ptr<float>()[r * cols + g * kQ4Group + j] = m ? float(nib) * sc + mn : float(nib - 8) * sc;
      }
    }
  return out;
}

// Each prunable matrix of `weights` with `zero(row, cols)` applied to each row.
std::map<std::string, HostTensor> prune_each_row(const std::map<std::string, HostTensor>& weights, const char* what,
                                                 const std::function<void(float*, int64_t)>& zero) {
  std::map<std::string, HostTensor> out;
  for (const auto& [name, w] : weights) {
    if (w.sizes.size() != 2 || is_embedding_table(name) || is_aux_name(name)) {
      out.emplace(name, w);
      continue;
    }
    if (!is_float(w.dtype)) throw Error(std::string(what) + ": matrix '" + name + "' is " + describe(w) + ", not float");
    int64_t rows = w.sizes[0], cols = w.sizes[1];
    HostTensor p = w;
    ThreadPool::global().parallel_for(0, rows, [&](int64_t rb, int64_t re) {
      std::vector<float> row(cols);
      for (int64_t r = rb; r < re; ++r) {
        for (int64_t j = 0; j < cols; ++j) row[j] = float(w.get(r * cols + j));
        zero(row.data(), cols);
        for (int64_t j = 0; j < cols; ++j)
          if (row[j] == 0) p.set(r * cols + j, 0);
      }
    });
    out.emplace(name, std::move(p));
  }
  return out;
}

}  // namespace

std::string weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::dense: return "dense";
    case WeightFormat::q8: return "q8";
    case WeightFormat::q4: return "q4";
    case WeightFormat::q4z: return "q4z";
    case WeightFormat::s24: return "s24";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& name) {
  for (WeightFormat f : {WeightFormat::dense, WeightFormat::q8, WeightFormat::q4, WeightFormat::q4z, WeightFormat::s24})
    if (weight_format_name(f) == name) return f;
  throw Error("unknown weight format '" + name + "' (dense, q8, q4, q4z, s24)");
}

std::map<std::string, HostTensor> quantize_q4(const std::map<std::string, HostTensor>& weights) {
  return quantize_4bit(weights, false);
}
std::map<std::string, HostTensor> quantize_q4z(const std::map<std::string, HostTensor>& weights) {
  return quantize_4bit(weights, true);
}

WeightFormat stored_format(const std::map<std::string, HostTensor>& weights, const std::string& name) {
  auto it = weights.find(name);
  if (it == weights.end()) throw Error("weights: '" + name + "' is missing");
  switch (it->second.dtype) {
    case DType::i8: return WeightFormat::q8;
    case DType::u8: return weights.count(name + ".min") ? WeightFormat::q4z : WeightFormat::q4;
    default:
      if (is_float(it->second.dtype)) return weights.count(name + ".sel") ? WeightFormat::s24 : WeightFormat::dense;
      throw Error("weights: '" + name + "' is " + describe(it->second) + "; no weight format stores that");
  }
}

std::map<std::string, HostTensor> convert_weights(const std::map<std::string, HostTensor>& weights, WeightFormat to,
                                                  const LlmConfig* config) {
  // Matrices to change, dequantized first where they are quantized.
  std::map<std::string, HostTensor> floats, out;
  std::map<std::string, int64_t> inputs;  // each matrix's true input count
  if (config)
    for (const auto& [name, sizes] : llm_weight_shapes(*config))
      if (sizes.size() == 2) inputs[name] = sizes[1];
  for (const auto& [name, w] : weights) {
    if (is_aux_name(name) && weights.count(name.substr(0, name.rfind('.')))) continue;
    if (w.sizes.size() != 2 && is_float(w.dtype)) {
      out.emplace(name, w);
      continue;
    }
    WeightFormat f = stored_format(weights, name);
    if (f == to) {
      out.emplace(name, w);
      for (const char* suffix : kWeightAuxSuffixes)
        if (auto a = weights.find(name + suffix); a != weights.end()) out.emplace(a->first, a->second);
      continue;
    }
    auto in = inputs.find(name);
    floats.emplace(name, f == WeightFormat::dense ? w : dequantized(weights, name, f, in == inputs.end() ? 0 : in->second));
  }
  switch (to) {
    case WeightFormat::dense: break;
    case WeightFormat::q8: floats = quantize_q8(floats); break;
    case WeightFormat::q4: floats = quantize_q4(floats); break;
    case WeightFormat::q4z: floats = quantize_q4z(floats); break;
    case WeightFormat::s24: floats = compress_2_4(floats); break;
  }
  out.merge(floats);
  return out;
}

bool is_embedding_table(const std::string& name) {
  return name == "model.embed_tokens.weight" || name == "transformer.wte.weight" || name == "transformer.wpe.weight";
}

std::map<std::string, HostTensor> prune_rows(const std::map<std::string, HostTensor>& weights, double sparsity) {
  if (!(sparsity >= 0 && sparsity < 1)) throw Error("prune: sparsity must be in [0, 1)");
  return prune_each_row(weights, "prune", [&](float* row, int64_t n) {
    int64_t k = int64_t(std::llround(sparsity * double(n)));
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::nth_element(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      return std::fabs(row[a]) < std::fabs(row[b]) || (std::fabs(row[a]) == std::fabs(row[b]) && a < b);
    });
    for (int64_t i = 0; i < k; ++i) row[order[i]] = 0;
  });
}

std::map<std::string, HostTensor> prune_2_4(const std::map<std::string, HostTensor>& weights) {
  for (const auto& [name, w] : weights)
    if (w.sizes.size() == 2 && !is_embedding_table(name) && w.sizes[1] % 4)
      throw Error("prune 2:4: matrix '" + name + "' is " + describe(w) + "; its input dim is not a multiple of 4");
  return prune_each_row(weights, "prune 2:4", [](float* row, int64_t n) {
    for (int64_t g = 0; g < n; g += 4) {
      int64_t idx[4] = {g, g + 1, g + 2, g + 3};
      std::sort(idx, idx + 4, [&](int64_t a, int64_t b) {
        return std::fabs(row[a]) < std::fabs(row[b]) || (std::fabs(row[a]) == std::fabs(row[b]) && a < b);
      });
      row[idx[0]] = row[idx[1]] = 0;
    }
  });
}

std::map<std::string, HostTensor> compress_2_4(const std::map<std::string, HostTensor>& weights) {
  std::map<std::string, HostTensor> out;
  for (const auto& [name, w] : weights) {
    if (w.sizes.size() != 2 || is_embedding_table(name) || is_aux_name(name)) {
      out.emplace(name, w);
      continue;
    }
    if (!is_float(w.dtype)) throw Error("compress_2_4: matrix '" + name + "' is " + describe(w) + ", not float");
    int64_t rows = w.sizes[0], cols = w.sizes[1];
    if (cols % 4) throw Error("compress_2_4: matrix '" + name + "' has " + std::to_string(cols) + " inputs; 2:4 needs a multiple of 4");
    HostTensor vals(w.dtype, {rows, cols / 2}), sel(u8, {rows, cols / 2});
    ThreadPool::global().parallel_for(0, rows, [&](int64_t rb, int64_t re) {
      for (int64_t r = rb; r < re; ++r)
        for (int64_t g = 0; g < cols / 4; ++g) {
          // The two largest |w| (the first on ties), kept in input order.
          int64_t base = r * cols + 4 * g;
          std::array<int64_t, 4> idx{0, 1, 2, 3};
          std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
            return std::fabs(float(w.get(base + a))) > std::fabs(float(w.get(base + b)));
          });
          int64_t lo = std::min(idx[0], idx[1]), hi = std::max(idx[0], idx[1]);
          int64_t at = r * (cols / 2) + 2 * g;
          vals.set(at, w.get(base + lo));
          vals.set(at + 1, w.get(base + hi));
          sel.ptr<uint8_t>()[at] = uint8_t(lo);
          sel.ptr<uint8_t>()[at + 1] = uint8_t(hi);
        }
    });
    out.emplace(name, std::move(vals));
    out.emplace(name + ".sel", std::move(sel));
  }
  return out;
}

void check_2_4_positions(const std::string& name, const HostTensor& sel) {
  if (sel.dtype != u8 || sel.sizes.size() != 2 || sel.sizes[1] % 2)
    throw Error("weights: '" + name + ".sel' is " + describe(sel) + "; s24 positions are u8 [out, in/2]");
  const uint8_t* p = sel.ptr<uint8_t>();
  for (int64_t i = 0; i < sel.numel(); i += 2)
    if (p[i] > 3 || p[i + 1] > 3 || p[i] >= p[i + 1])
      throw Error("weights: '" + name + ".sel' gives a group positions " + std::to_string(p[i]) + " and " +
                  std::to_string(p[i + 1]) + " (element " + std::to_string(i) + "); each group's two are in 0-3, increasing");
}

std::map<std::string, HostTensor> llm_rope_tables(const LlmConfig& c) {
  int64_t half = c.head_dim() / 2;
  HostTensor cos(f32, {c.max_seq, half}), sin(f32, {c.max_seq, half});
  std::vector<double> freqs(half);
  for (int64_t i = 0; i < half; ++i) {
    double f = std::pow(c.rope_theta, -2.0 * double(i) / double(c.head_dim()));
    if (c.rope_factor > 0) {
      double wavelen = 2 * std::numbers::pi / f, orig = double(c.rope_original_max);
      if (wavelen > orig / c.rope_low_freq) {
        f /= c.rope_factor;
      } else if (wavelen >= orig / c.rope_high_freq) {
        double smooth = (orig / wavelen - c.rope_low_freq) / (c.rope_high_freq - c.rope_low_freq);
        f = (1 - smooth) * f / c.rope_factor + smooth * f;
      }
    }
    freqs[i] = f;
  }
  for (int64_t p = 0; p < c.max_seq; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double freq = freqs[i];
      cos.ptr<float>()[p * half + i] = float(std::cos(double(p) * freq));
      sin.ptr<float>()[p * half + i] = float(std::sin(double(p) * freq));
    }
  std::map<std::string, HostTensor> out;
  out.emplace("rope_cos", std::move(cos));
  out.emplace("rope_sin", std::move(sin));
  return out;
}

DType llm_cache_dtype(DType dtype, WeightFormat wf, std::optional<DType> kv) {
  bool quantized = wf != WeightFormat::dense && wf != WeightFormat::s24;
  DType t = kv.value_or(quantized && dtype == f32 ? f16 : dtype);
  if (!is_float(t))
    throw Error(std::string("llm: the KV cache dtype must be f32, f16 or bf16, not ") + std::string(dtype_name(t)));
  return t;
}

Graph llm_prefill_graph(const LlmConfig& c, DType dt, int64_t seq, WeightFormat wf, std::optional<DType> kv) {
  c.validate();
  DType kt = llm_cache_dtype(dt, wf, kv);
  if (seq < 1 || seq > c.max_seq)
    throw Error("llm prefill of " + std::to_string(seq) + " tokens: the model takes 1 to " +
                std::to_string(c.max_seq));
  Graph g;
  g.name = c.name + "_prefill";
  Builder b(g, c, dt, wf);
  int tokens = g.input("tokens", i32, {seq});
  int positions = g.input("positions", i32, {seq});
  int mask = g.input("mask", f32, {seq, seq});
  int last = g.input("last", i32, {1});
  int64_t hd = c.head_dim(), group = c.heads / c.kv_heads;
  double scale = 1.0 / std::sqrt(double(hd));
  std::vector<int> kv_rows;  // each layer's keys and values in the cache's dtype
  int x = b.decoder(b.embed(tokens, positions), positions, [&](int64_t, int q, int k, int v) {
    // The attention reads the keys and values the cache gets, as decode
    // steps will (with an f16 cache: rounded to f16), from the rows that
    // the graph writes out anyway: reading the un-rounded keys from the
    // RoPE's [S, 2 x heads, hd] output, strided, made the scores 1.5x slower.
    k = b.as(k, kt);
    v = b.as(v, kt);
    kv_rows.push_back(k);
    kv_rows.push_back(v);
    k = b.to_dt(k);
    v = b.to_dt(v);
    // Heads of a group share their kv head: q as [KVH, G*S, hd].
    int qg = g.reshape(g.permute(g.reshape(q, {seq, c.kv_heads, group, hd}), {1, 2, 0, 3}),
                       {c.kv_heads, group * seq, hd});
    int s = b.scale(b.f32_of(g.contract(qg, g.permute(k, {1, 2, 0}))), scale);  // [KVH, G*S, S]
    s = g.reshape(s, {c.kv_heads, group, seq, seq});
    s = b.add(s, b.bcast(g.reshape(mask, {1, 1, seq, seq}), b.shape(s)));
    int e = b.exp(b.sub(s, b.bcast(g.reduce(Op::ReduceMax, s, {3}), b.shape(s))));
    int pr = b.div(e, b.bcast(g.reduce(Op::ReduceSum, e, {3}), b.shape(e)));
    pr = g.reshape(b.to_dt(pr), {c.kv_heads, group * seq, seq});
    int o = g.contract(pr, g.permute(v, {1, 0, 2}));  // [KVH, G*S, hd]
    return g.reshape(g.permute(g.reshape(o, {c.kv_heads, group, seq, hd}), {2, 0, 1, 3}), {seq, c.dim});
  });
  g.outputs = {b.logits(g.gather(x, last, 0))};
  for (int n : kv_rows) g.outputs.push_back(n);
  return g;
}

Graph llm_decode_graph(const LlmConfig& c, DType dt, WeightFormat wf, std::optional<DType> kv) {
  c.validate();
  DType kt = llm_cache_dtype(dt, wf, kv);
  Graph g;
  g.name = c.name + "_decode";
  Builder b(g, c, dt, wf);
  int token = g.input("token", i32, {1});
  int position = g.input("position", i32, {1});
  // The attention reads `past` rows of the caches, one of them (`cache_new`)
  // the new token's slot, whose key and value come from this step (they go
  // into the cache after it); `cache_mask` is 0 for rows to attend to (the
  // filled ones and the new one) and -1e30 for the rest.
  Dim past = Dim::symbol("past", 1, c.max_seq);
  int cache_mask = g.input("cache_mask", f32, {past});
  int cache_new = g.input("cache_new", boolean, {past});
  int64_t hd = c.head_dim(), group = c.heads / c.kv_heads;
  double scale = 1.0 / std::sqrt(double(hd));
  std::vector<int> kv_rows;  // each layer's keys and values in the cache's dtype
  int x = b.decoder(b.embed(token, position), position, [&](int64_t l, int q, int k, int v) {
    int kc = g.input("k_cache." + std::to_string(l), kt, {past, c.kv_heads, hd});
    int vc = g.input("v_cache." + std::to_string(l), kt, {past, c.kv_heads, hd});
    int qg = g.reshape(q, {c.kv_heads, group, hd});
    // The caches with this step's key and value (in the cache's dtype: the
    // rows that go into it) in the new token's row.
    Shape cs{past, c.kv_heads, hd};
    int slot = b.bcast(g.reshape(cache_new, {past, 1, 1}), cs);
    k = b.as(k, kt);
    v = b.as(v, kt);
    kv_rows.push_back(k);
    kv_rows.push_back(v);
    int keys = b.to_dt(g.where(slot, b.bcast(g.reshape(k, {1, c.kv_heads, hd}), cs), kc));
    int values = b.to_dt(g.where(slot, b.bcast(g.reshape(v, {1, c.kv_heads, hd}), cs), vc));
    int s = b.scale(b.f32_of(g.contract(qg, g.permute(keys, {1, 2, 0}))), scale);  // [KVH, G, P]
    s = b.add(s, b.bcast(g.reshape(cache_mask, {1, 1, past}), b.shape(s)));
    int e = b.exp(b.sub(s, b.bcast(g.reduce(Op::ReduceMax, s, {2}), b.shape(s))));
    int pr = b.to_dt(b.div(e, b.bcast(g.reduce(Op::ReduceSum, e, {2}), b.shape(e))));
    int o = g.contract(pr, g.permute(values, {1, 0, 2}));  // [KVH, G, hd]
    return g.reshape(o, {1, c.dim});
  });
  int logits = b.logits(x);
  g.outputs = {logits};
  for (int n : kv_rows) g.outputs.push_back(n);
  // The greedy choice, on the device: the first id of the largest logit
  // (-max(-id) over the ids that hold it), so a greedy step reads 4 bytes,
  // not the vocabulary's logits. vocab_ids holds 0 .. vocab-1 as f32 (exact).
  int ids = g.input("vocab_ids", f32, {1, c.vocab});
  Shape vs{1, c.vocab};
  int top = b.bcast(g.reduce(Op::ReduceMax, logits, {1}), vs);
  int neg_id = g.where(g.binary(Op::CmpEq, logits, top), g.unary(Op::Neg, ids), b.fill(-1e9, f32, vs));
  g.outputs.push_back(g.unary(Op::Neg, g.reduce(Op::ReduceMax, neg_id, {1})));
  return g;
}

std::map<std::string, HostTensor> llm_tables(const LlmConfig& c) {
  std::map<std::string, HostTensor> out = llm_rope_tables(c);
  HostTensor ids(f32, {1, c.vocab});
  for (int64_t i = 0; i < c.vocab; ++i) ids.ptr<float>()[i] = float(i);
  out.emplace("vocab_ids", std::move(ids));
  return out;
}

}  // namespace kiln
