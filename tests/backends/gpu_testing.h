// Shared by every backend's op tests: a broad set of graphs (every op and dtype,
// cast pairs, views, gathers, contractions, fused workloads, symbolic dims), and
// the default GPU schedule for codegen tests without a GPU.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "codegen/device_presets.h"
#include "codegen/lower.h"
#include "codegen/schedule.h"
#include "codegen/schedule_space.h"
#include "kiln/kiln.h"
#include "tests/backends/kernel_testing.h"

namespace kiln::testing {

// What the GPU schedules are made for when no GPU is at hand: an H100.
inline DeviceInfo h100_info() { return h100_description(); }

// The kernel as the default schedule for `target` leaves it.
inline Kernel scheduled(const Kernel& k, const DeviceInfo& target = h100_info()) {
  return apply(k, default_schedule(k, target));
}

struct GraphCase {
  std::string name;
  Graph graph;
  Bindings symbols;
  double scale = 1;  // floats in [-scale, scale)
};

inline std::vector<GraphCase> op_cases() {
  const Op unary_ops[] = {Op::Neg, Op::Exp2, Op::Log2, Op::Sqrt, Op::Recip, Op::Sin};
  const Op binary_ops[] = {Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min, Op::CmpLt, Op::CmpEq};
  const DType numeric[] = {f32, f16, bf16, i32, i8, u8};
  std::vector<GraphCase> cases;
  auto add = [&](std::string name, Graph g, double scale = 1, Bindings symbols = {}) {
    cases.push_back({std::move(name), std::move(g), std::move(symbols), scale});
  };
  auto label = [](Op op, DType t) { return std::string(op_name(op)) + " " + std::string(dtype_name(t)); };

  for (DType t : kAllDTypes)
    for (Op op : unary_ops) {
      if (op == Op::Neg ? t == boolean : !is_float(t)) continue;
      Graph g;
      g.outputs = {g.unary(op, g.input("x", t, {37, 19}))};
      add(label(op, t), g, 4.0);
    }
  for (DType from : kAllDTypes)
    for (DType to : kAllDTypes) {
      Graph g;
      g.outputs = {g.cast(g.input("x", from, {257}), to)};
      add("cast " + std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to)), g, 300.0);
    }
  for (DType t : kAllDTypes)
    for (Op op : binary_ops) {
      bool bool_ok = op == Op::Max || op == Op::Min || op == Op::CmpLt || op == Op::CmpEq;
      if (t == boolean && !bool_ok) continue;
      Graph g;
      g.outputs = {g.binary(op, g.input("a", t, {13, 29}), g.input("b", t, {13, 29}))};
      add(label(op, t), g, 3.0);
    }
  for (DType t : numeric) {
    Graph g;
    int a = g.expand(g.input("a", t, {1, 17}), {23, 17});
    int b = g.expand(g.input("b", t, {23, 1}), {23, 17});
    g.outputs = {g.binary(Op::Mul, a, b)};
    add("broadcast mul " + std::string(dtype_name(t)), g);
  }
  for (DType t : kAllDTypes) {
    Graph g;
    int c = g.input("c", boolean, {9, 11});
    g.outputs = {g.where(c, g.input("a", t, {9, 11}), g.input("b", t, {9, 11}))};
    add("where " + std::string(dtype_name(t)), g);
  }
  const std::vector<std::vector<int64_t>> axis_sets = {{0}, {1}, {2}, {0, 2}, {0, 1, 2}, {-1}};
  for (DType t : numeric)
    for (Op op : {Op::ReduceSum, Op::ReduceMax}) {
      for (size_t s = 0; s < axis_sets.size(); ++s) {
        Graph g;
        g.outputs = {g.reduce(op, g.input("x", t, {5, 33, 7}), axis_sets[s])};
        add(label(op, t) + " axes #" + std::to_string(s), g);
      }
      Graph empty;
      empty.outputs = {empty.reduce(op, empty.input("x", t, {3, 0}), {1})};
      add(label(op, t) + " over an empty axis", empty);
    }
  for (DType t : kAllDTypes) {
    Graph g;
    int x = g.input("x", t, {6, 10, 4});
    g.outputs = {
        g.reshape(x, {Dim(15), Dim(16)}),
        g.permute(x, {2, 0, 1}),
        g.expand(g.reshape(x, {Dim(1), Dim(6), Dim(10), Dim(4)}), {Dim(3), Dim(6), Dim(10), Dim(4)}),
        g.slice(x, {1, 0, 3}, {6, 10, 4}, {2, 3, 1}),
        g.pad(x, {1, 0, 2}, {0, 3, 1}, 2.5),
        g.flip(x, {0, 2}),
    };
    add("movement outputs " + std::string(dtype_name(t)), g);
  }
  {
    Graph g;
    int v = g.permute(g.input("x", f32, {8, 12, 5}), {1, 2, 0});
    v = g.slice(v, {2, 0, 1}, {12, 5, 8}, {3, 2, 2});
    v = g.flip(v, {1});
    v = g.pad(v, {1, 0, 0}, {1, 1, 0}, -1.0);
    v = g.reshape(v, {Dim(24), Dim(4)});
    g.outputs = {g.binary(Op::Add, v, g.input("y", f32, {24, 4}))};
    add("views compose into consumers", g);
  }
  for (DType t : kAllDTypes)
    for (int64_t axis : {0, 1, -1}) {
      Graph g;
      int x = g.input("x", t, {21, 6});
      g.outputs = {g.gather(x, g.input("idx", i32, {3, 4}), axis)};
      add("gather " + std::string(dtype_name(t)) + " axis " + std::to_string(axis), g);
    }
  for (DType t : {f32, f16, bf16, i32}) {
    Graph g;
    g.outputs = {g.contract(g.input("a", t, {33, 47}), g.input("b", t, {47, 19}))};
    add("contract " + std::string(dtype_name(t)), g);
    Graph tiled;  // sizes the register-tiled GPU schedule takes (multiples of 64), with an epilogue
    int y = tiled.contract(tiled.input("a", t, {128, 40}), tiled.input("b", t, {40, 64}));
    tiled.outputs = {tiled.binary(Op::Add, y, tiled.input("res", t, {128, 64}))};
    add("tiled contract " + std::string(dtype_name(t)), tiled);
  }
  // Sizes tensor cores take (CUDA): output sides multiples of 64, reductions of 32.
  for (DType t : {f16, bf16}) {
    std::string name = std::string(dtype_name(t));
    Graph g;  // B with its columns contiguous, 3 steps of the reduction, an epilogue
    int y = g.contract(g.input("a", t, {128, 96}), g.input("b", t, {96, 192}));
    g.outputs = {g.binary(Op::Add, y, g.input("res", t, {128, 192}))};
    add("tensor-core contract " + name, g);
    Graph w;  // x times a weight stored [out, in] (the reduction contiguous in both)
    w.outputs = {w.contract(w.input("x", t, {64, 64}), w.permute(w.input("w", t, {128, 64}), {1, 0}))};
    add("tensor-core contract, weight rows " + name, w);
    Graph b;  // batched, A with its rows contiguous
    int a = b.permute(b.input("a", t, {2, 64, 128}), {0, 2, 1});
    b.outputs = {b.contract(a, b.input("b", t, {2, 64, 64}))};
    add("tensor-core batched contract, A columns " + name, b);
    Graph q;  // int8 weights stored [out, in] (q8), widened on their way into shared memory
    int wq = q.cast(q.input("w", i8, {128, 96}), t);
    q.outputs = {q.contract(q.input("x", t, {64, 96}), q.permute(wq, {1, 0}))};
    add("tensor-core contract, int8 weight rows " + name, q);
    Graph d;  // a weight dequantized in the prologue (u8 x a row scale, rounded to t), as q4's
    int wd = d.binary(Op::Mul, d.cast(d.input("w", u8, {64, 64}), f32), d.expand(d.input("s", f32, {64, 1}), {64, 64}));
    d.outputs = {d.contract(d.input("x", t, {128, 64}), d.permute(d.cast(wd, t), {1, 0}))};
    add("tensor-core contract, dequantized weight rows " + name, d);
  }
  // A 4-bit weight's GEMV as the LLM builder spells it (GGUF Q4_0: a byte's
  // nibbles b / 16 and b - 16 * (b / 16), groups of 32 with an f16 scale,
  // zero 8), the decode step's most common kernel.
  // With f32 activations the weight may also stay in f32 (the LLM builder's
  // f32 path): the CUDA emitter multiplies each group's partial sum by its
  // scale once (factor_sums).
  for (auto [t, rounded] : std::vector<std::pair<DType, bool>>{{f16, true}, {f32, true}, {f32, false}}) {
    Graph q;
    int64_t out = 64, in = 256, groups = out * in / 32;
    Shape s3{groups, 2, 16};
    int b = q.reshape(q.input("w", u8, {out, in / 2}), {groups, 1, 16});
    int sixteen = q.constant(16, u8, {groups, 1, 16});
    int hi = q.binary(Op::Div, b, sixteen);
    int lo = q.binary(Op::Sub, b, q.binary(Op::Mul, hi, sixteen));
    int upper = q.expand(q.pad(q.constant(1, boolean, {1, 1, 1}), {0, 1, 0}, {0, 0, 0}), s3);
    int v = q.cast(q.where(upper, q.expand(hi, s3), q.expand(lo, s3)), f32);
    int scale = q.expand(q.reshape(q.cast(q.input("s", f16, {out, in / 32}), f32), {groups, 1, 1}), s3);
    v = q.binary(Op::Mul, q.binary(Op::Sub, v, q.constant(8, f32, s3)), scale);
    int w = rounded ? q.cast(q.cast(q.reshape(v, {out, in}), f16), t) : q.reshape(v, {out, in});
    q.outputs = {q.contract(q.input("x", t, {1, in}), q.permute(w, {1, 0}))};
    add(rounded ? "q4 gemv " + std::string(dtype_name(t)) : "q4 gemv, f32 weight", q);
  }
  // Sizes Hopper's warpgroup tiles take (CUDA sm_90: rows multiples of 128,
  // reductions of 64), in each operand layout.
  for (DType t : {f16, bf16}) {
    std::string name = std::string(dtype_name(t));
    Graph g;  // B with its columns contiguous (MN-major), 2 steps of the reduction, an epilogue
    int y = g.contract(g.input("a", t, {128, 128}), g.input("b", t, {128, 192}));
    g.outputs = {g.binary(Op::Add, y, g.input("res", t, {128, 192}))};
    add("wgmma contract " + name, g);
    Graph w;  // x times a weight stored [out, in] (K-major both), 256 wide
    w.outputs = {w.contract(w.input("x", t, {256, 64}), w.permute(w.input("w", t, {256, 64}), {1, 0}))};
    add("wgmma contract, weight rows " + name, w);
    Graph b;  // batched, A with its rows contiguous (MN-major A)
    int a = b.permute(b.input("a", t, {2, 64, 128}), {0, 2, 1});
    b.outputs = {b.contract(a, b.input("b", t, {2, 64, 64}))};
    add("wgmma batched contract, A columns " + name, b);
    Graph q;  // int8 weights stored [out, in], widened element by element on their way in
    int wq = q.cast(q.input("w", i8, {128, 128}), t);
    q.outputs = {q.contract(q.input("x", t, {128, 128}), q.permute(wq, {1, 0}))};
    add("wgmma contract, int8 weight rows " + name, q);
  }
  // Sizes CUDA's f32 tiles take (output sides multiples of 64, reductions of 8).
  {
    Graph g;  // B with its columns contiguous (16-byte copies), A element by element, an epilogue
    int y = g.contract(g.input("a", f32, {128, 96}), g.input("b", f32, {96, 192}));
    g.outputs = {g.binary(Op::Add, y, g.input("res", f32, {128, 192}))};
    add("f32 tile contract", g);
    Graph w;  // x times a weight stored [out, in]: both element by element
    w.outputs = {w.contract(w.input("x", f32, {64, 64}), w.permute(w.input("w", f32, {128, 64}), {1, 0}))};
    add("f32 tile contract, weight rows", w);
    Graph b;  // batched, A with its rows contiguous (16-byte copies of both)
    int a = b.permute(b.input("a", f32, {2, 64, 128}), {0, 2, 1});
    b.outputs = {b.contract(a, b.input("b", f32, {2, 64, 64}))};
    add("f32 tile batched contract, A columns", b);
  }
  {
    Graph g;
    g.outputs = {g.contract(g.input("a", f32, {2, 1, 5, 7}), g.input("b", f32, {3, 7, 4}))};
    add("contract with broadcast batch", g);
  }
  {
    Graph g;
    int a = g.permute(g.input("a", f32, {16, 9}), {1, 0});
    int b = g.permute(g.input("b", f32, {11, 16}), {1, 0});
    g.outputs = {g.contract(a, b)};
    add("contract of transposed views", g);
  }
  for (int64_t seq : {1, 300}) {
    Graph g;
    Dim s = Dim::symbol("seq", 1, 4096);
    int x = g.input("x", f32, {s, 64});
    int y = g.contract(x, g.input("w", f32, {64, 32}));
    int sum = g.reduce(Op::ReduceSum, g.unary(Op::Exp2, y), {1});
    g.outputs = {g.binary(Op::Div, y, g.expand(sum, {s, Dim(32)})), sum};
    add("symbolic mlp layer, seq " + std::to_string(seq), g, 1, {{"seq", seq}});
  }
  for (DType t : {f32, f16}) {
    Graph g;
    Shape full = {Dim(19), Dim(300)};
    int x = g.input("x", t, full);
    int e = g.unary(Op::Exp2, g.binary(Op::Sub, x, g.expand(g.reduce(Op::ReduceMax, x, {1}), full)));
    g.outputs = {g.binary(Op::Div, e, g.expand(g.reduce(Op::ReduceSum, e, {1}), full))};
    add("softmax " + std::string(dtype_name(t)), g, 4.0);
  }
  // Rows shared by a block's threads: lengths that are not multiples of the
  // thread count, sums and maxima in every accumulator type.
  for (int64_t len : {1, 37, 300, 1000})
    for (DType t : {f32, f16, i32, i8}) {
      Graph g;
      int x = g.input("x", t, {6, len});
      g.outputs = {g.reduce(Op::ReduceSum, x, {1}), g.reduce(Op::ReduceMax, x, {1})};
      add("row sum and max " + std::string(dtype_name(t)) + " of " + std::to_string(len), g, 4.0);
    }
  // Short rows that share a block, a warp each (an attention's dot products
  // over a cache of symbolic length); columns summed by threads along y.
  for (DType t : {f32, f16}) {
    Graph g;
    Dim p = Dim::symbol("past", 1, 4096);
    int x = g.input("x", t, {Dim(8), p, Dim(64)});
    g.outputs = {g.reduce(Op::ReduceSum, x, {2}), g.reduce(Op::ReduceMax, g.input("y", t, {40, 64}), {1})};
    add("short rows " + std::string(dtype_name(t)), g, 4.0, {{"past", 13}});
    Graph c;
    Dim n = Dim::symbol("n", 1, 4096);
    int cx = c.input("x", t, {n, Dim(48)});
    c.outputs = {c.reduce(Op::ReduceSum, cx, {0}), c.reduce(Op::ReduceMax, cx, {0})};
    add("column sum and max " + std::string(dtype_name(t)), c, 4.0, {{"n", 300}});
  }
  for (int64_t len : {37, 1000}) {
    Graph g;
    Shape full = {Dim(7), Dim(len)};
    int x = g.input("x", f32, full);
    auto scalar = [&](double v, Shape s) { return g.expand(g.constant(v, f32, {1, 1}), s); };
    int mean = g.binary(Op::Mul, g.reduce(Op::ReduceSum, x, {1}), scalar(1.0 / double(len), {7, 1}));
    int centered = g.binary(Op::Sub, x, g.expand(mean, full));
    int var = g.binary(Op::Mul, g.reduce(Op::ReduceSum, g.binary(Op::Mul, centered, centered), {1}),
                       scalar(1.0 / double(len), {7, 1}));
    int inv = g.unary(Op::Recip, g.unary(Op::Sqrt, g.binary(Op::Add, var, scalar(1e-5, {7, 1}))));
    g.outputs = {g.binary(Op::Mul, g.binary(Op::Mul, centered, g.expand(inv, full)),
                          g.expand(g.input("w", f32, {1, len}), full))};
    add("layernorm of " + std::to_string(len), g);
  }
  for (DType t : {f32, f16}) {
    Graph g;
    g.outputs = {g.contract(g.input("a", t, {70, 300}), g.input("x", t, {300, 1}))};
    add("gemv " + std::string(dtype_name(t)), g);
  }
  // Rows long enough for CUDA to read them 16 bytes a thread (a warp a row):
  // f32, f16, and int8 weights with f16 activations (two pieces a step).
  for (DType t : {f32, f16, i8}) {
    Graph g;
    int w = g.input("w", t, {40, 512});
    if (t == i8) w = g.cast(w, f16);
    int x = g.input("x", t == i8 ? f16 : t, {512, 1});
    g.outputs = {g.contract(w, x)};
    add("gemv in 16-byte pieces " + std::string(dtype_name(t)), g);
  }
  for (DType t : {f32, f16}) {  // a decode step's GEMV read as a row, with a residual and a cast as epilogue
    Graph g;
    int x = g.input("x", t, {1, 300});
    int act = g.binary(Op::Mul, x, x);
    int y = g.reshape(g.contract(g.input("w", t, {70, 300}), g.reshape(act, {300, 1})), {1, 70});
    g.outputs = {g.cast(g.binary(Op::Add, y, g.input("res", t, {1, 70})), f32)};
    add("gemv row with epilogue " + std::string(dtype_name(t)), g);
  }
  for (int64_t rows : {1, 5}) {
    Graph g;
    Dim r = Dim::symbol("rows", 1, 4096);
    Shape full = {r, Dim(333)};
    int x = g.input("x", f32, full);
    int e = g.unary(Op::Exp2, g.binary(Op::Sub, x, g.expand(g.reduce(Op::ReduceMax, x, {1}), full)));
    g.outputs = {g.binary(Op::Div, e, g.expand(g.reduce(Op::ReduceSum, e, {1}), full))};
    add("symbolic softmax, rows " + std::to_string(rows), g, 4.0, {{"rows", rows}});
  }
  {
    Graph g;
    int y = g.contract(g.input("x", f32, {17, 40}), g.input("w", f32, {40, 24}));
    y = g.binary(Op::Add, y, g.expand(g.input("b", f32, {1, 24}), {17, 24}));
    g.outputs = {g.binary(Op::Max, y, g.expand(g.constant(0, f32, {1, 1}), {17, 24}))};
    add("matmul, bias and relu", g);
  }
  {
    Graph g;
    g.outputs = {g.input("x", f32, {3}), g.constant(1.5, f16, {2, 2})};
    add("constant and input outputs", g);
  }
  {
    Graph g;
    g.outputs = {g.binary(Op::Add, g.input("a", f32, {1 << 20}), g.input("b", f32, {1 << 20}))};
    add("large elementwise", g);
  }
  return cases;
}

// allreduce as a backend runs it: each of block b's 256 threads writes what
// four allreduces in a row gave it (they share the scratch): the max and min
// of x's row, the sum of the thread numbers, and the wrapping sum of xi's row.
inline Kernel allreduce_kernel() {
  return parse_kernel(R"(kernel allreduce_semantics(n) {
  buffer x: f32 global
  buffer xi: i32 global
  buffer y: f32 global out
  buffer yi: i32 global out
  buffer hi: f32 local[1]
  buffer lo: f32 local[1]
  buffer s: f32 local[1]
  buffer si: i32 local[1]
  gpu_block for b in n {
    gpu_thread for t in 256 {
      hi[0] = x[b * 256 + t]
      lo[0] = x[b * 256 + t]
      s[0] = cast<f32>(t)
      si[0] = xi[b * 256 + t]
      allreduce hi[0] max over t
      allreduce lo[0] min over t
      allreduce s[0] add over t
      allreduce si[0] add over t
      y[(b * 256 + t) * 3] = hi[0]
      y[(b * 256 + t) * 3 + 1] = lo[0]
      y[(b * 256 + t) * 3 + 2] = s[0]
      yi[b * 256 + t] = si[0]
    }
  }
}
)");
}

// Inputs for allreduce_kernel(), three rows: random values with some NaNs
// (max and min follow fmax/fmin: NaN yields the other operand), all NaN but
// one, all NaN; ints near the top of the range, so that sums wrap.
inline void allreduce_inputs(std::vector<float>* x, std::vector<int32_t>* xi) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  x->assign(3 * 256, nan);
  xi->resize(3 * 256);
  for (int t = 0; t < 256; ++t) {
    (*x)[t] = t % 7 == 3 ? nan : float((t * 37) % 101) - 50.5f;
    for (int r = 0; r < 3; ++r) (*xi)[r * 256 + t] = std::numeric_limits<int32_t>::max() - t * (r + 1);
  }
  (*x)[256 + 200] = -3.25f;
}

// "" when every thread of every row holds the combined values.
inline std::string check_allreduce(const std::vector<float>& x, const std::vector<int32_t>& xi,
                                   const std::vector<float>& y, const std::vector<int32_t>& yi) {
  auto same = [](float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; };
  for (int r = 0; r < 3; ++r) {
    float hi = std::numeric_limits<float>::quiet_NaN(), lo = hi;
    uint32_t sum = 0;
    for (int t = 0; t < 256; ++t) {
      hi = std::fmax(hi, x[r * 256 + t]);
      lo = std::fmin(lo, x[r * 256 + t]);
      sum += uint32_t(xi[r * 256 + t]);
    }
    for (int t = 0; t < 256; ++t) {
      const float* got = &y[(r * 256 + t) * 3];
      if (!same(got[0], hi) || !same(got[1], lo) || got[2] != 32640.0f || yi[r * 256 + t] != int32_t(sum))
        return "row " + std::to_string(r) + ", thread " + std::to_string(t) + ": max " + std::to_string(got[0]) +
               " min " + std::to_string(got[1]) + " sum " + std::to_string(got[2]) + " int sum " +
               std::to_string(yi[r * 256 + t]) + ", want " + std::to_string(hi) + " " + std::to_string(lo) +
               " 32640 " + std::to_string(int32_t(sum));
    }
  }
  return "";
}

// f32 contractions on tiles (array_tile) of every side (64, 128) and each
// depth in `depths` whose two stages fit `shared_limit` bytes (0: any; stages
// 2 or 3 where the backend takes the knob), with A read row by row and B
// either way, on `dev` against a product in double.
// `got` (m x n, row-major) against the product of a (m x kd) and b (kd x
// n) in double: each output within `rel` of the sum of its terms' magnitudes
// plus `out_rel` of its value (the output dtype's rounding). Reports the first
// few outputs that are not.
inline void expect_product_in_double(const std::vector<double>& got, const std::vector<float>& a,
                                     const std::vector<float>& b, int64_t m, int64_t kd, int64_t n, double rel,
                                     double out_rel = 0) {
  ASSERT_EQ(got.size(), size_t(m * n));
  int bad = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double want = 0, scale = 0;
      for (int64_t r = 0; r < kd; ++r) {
        double p = double(a[size_t(i * kd + r)]) * double(b[size_t(r * n + j)]);
        want += p;
        scale += std::fabs(p);
      }
      double v = got[size_t(i * n + j)];
      if (std::fabs(v - want) > rel * scale + out_rel * std::fabs(want) && bad++ < 5)
        ADD_FAILURE() << "(" << i << ", " << j << "): " << v << " != " << want;
    }
  EXPECT_EQ(bad, 0);
}

inline void expect_f32_tiles_match_a_product_in_double(Device& dev, const std::vector<int64_t>& depths,
                                                        int64_t shared_limit = 0) {
  const int64_t m = 128, kd = 96, n = 256;
  std::mt19937 rng(11);
  std::vector<float> a = random_floats(rng, size_t(m * kd), -2.0f, 2.0f);
  std::vector<float> b = random_floats(rng, size_t(kd * n), -2.0f, 2.0f);
  for (bool weight_rows : {false, true}) {
    Graph g;
    int x = g.input("a", f32, {m, kd});
    int y = weight_rows ? g.permute(g.input("w", f32, {n, kd}), {1, 0}) : g.input("b", f32, {kd, n});
    g.outputs = {g.contract(x, y)};
    Kernel k = lower(g).kernels[0];
    // B as the kernel reads it: [k][n], or the weight's [n][k].
    std::vector<float> bk(b.size());
    for (int64_t r = 0; r < kd; ++r)
      for (int64_t c = 0; c < n; ++c) bk[size_t(weight_rows ? c * kd + r : r * n + c)] = b[size_t(r * n + c)];
    std::vector<Bytes> buffers;
    for (const BufferDecl& d : k.buffers)
      if (d.scope == MemScope::Global)
        buffers.push_back(d.output ? Bytes(size_t(m * n) * 4) : d.name == "a" ? to_bytes(a) : to_bytes(bk));
    for (int64_t bm : {64, 128})
      for (int64_t bn : {64, 128})
        for (int64_t depth : depths) {
          if (shared_limit && 4 * 2 * depth * (bm + 4 + bn + 4) > shared_limit) continue;
          int64_t stages = depth == 16 ? 3 : 2;
          SCOPED_TRACE(std::to_string(bm) + " x " + std::to_string(depth) + " x " + std::to_string(bn) +
                       (weight_rows ? ", weight rows" : ""));
          Knobs knobs({{"mma_bm", bm}, {"mma_bn", bn}, {"simt_bk", depth}, {"mma_stages", stages}});
          Kernel tiled = apply(k, schedule_with(k, dev.info(), knobs));
          ASSERT_EQ(tiled.array_tile.m, bm);
          ASSERT_EQ(tiled.array_tile.k, depth);
          ASSERT_EQ(tiled.array_tile.n, bn);
          std::vector<Bytes> out = run(dev, tiled, buffers);
          std::vector<double> got;
          for (size_t i = 0; i < k.buffers.size(); ++i)
            if (k.buffers[i].output)
              for (float v : from_bytes<float>(out[i])) got.push_back(v);
          expect_product_in_double(got, a, b, m, kd, n, 1e-5);
        }
  }
}

}  // namespace kiln::testing
