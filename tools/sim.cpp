#include "tools/sim.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "backends/systolic/systolic_device.h"
#include "frontend/workloads.h"
#include "kiln/kiln.h"

namespace kiln {

namespace {

struct SimOptions {
  std::string workload;
  std::string preset = "default";
  std::string array;     // RxC
  std::string dataflow;  // ws | os
  std::string input;     // int8 | bf16
  std::string tiles;     // MxKxN
  double dram_bw = 0;
  std::string trace;
  int top = 12;
};

SimOptions& options() {
  static SimOptions o;
  return o;
}

CLI::App* command = nullptr;

std::vector<int64_t> parse_sizes(const std::string& s, size_t want, const char* what) {
  std::vector<int64_t> v;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t x = s.find('x', pos);
    std::string part = s.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
    try {
      size_t used = 0;
      v.push_back(std::stoll(part, &used));
      if (used != part.size() || v.back() < 0) throw std::invalid_argument(part);
    } catch (const std::logic_error&) {
      throw Error(std::string(what) + " wants sizes like " + (want == 2 ? "128x128" : "128x256x128") + ", got '" + s + "'");
    }
    if (x == std::string::npos) break;
    pos = x + 1;
  }
  if (v.size() != want) throw Error(std::string(what) + " wants " + std::to_string(want) + " sizes, got '" + s + "'");
  return v;
}

systolic::SystolicConfig config_from(const SimOptions& o) {
  systolic::SystolicConfig c = systolic::preset(o.preset);
  if (!o.array.empty()) {
    auto rc = parse_sizes(o.array, 2, "--array");
    c.rows = int(rc[0]);
    c.cols = int(rc[1]);
  }
  if (o.dataflow == "os") c.dataflow = systolic::Dataflow::OutputStationary;
  else if (o.dataflow == "ws") c.dataflow = systolic::Dataflow::WeightStationary;
  else if (!o.dataflow.empty()) throw Error("--dataflow is ws or os, got '" + o.dataflow + "'");
  if (o.input == "int8") c.input = systolic::InputType::Int8;
  else if (o.input == "bf16") c.input = systolic::InputType::Bf16;
  else if (!o.input.empty()) throw Error("--input is int8 or bf16, got '" + o.input + "'");
  if (o.dram_bw > 0) c.dram_bytes_per_cycle = o.dram_bw;
  c.validate();
  return c;
}

Graph workload_graph(const std::string& spec) {
  if (spec.rfind("llama-layer:", 0) == 0) return llama_layer_graph(spec);
  return make_workload(spec, f32).graph;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

}  // namespace

Graph llama_layer_graph(const std::string& spec) {
  // llama-layer:tinyllama:SEQ or llama-layer:tinyllama:decode:PAST
  std::string rest = spec.substr(std::string("llama-layer:").size());
  size_t c1 = rest.find(':');
  std::string model = rest.substr(0, c1);
  if (model != "tinyllama" || c1 == std::string::npos)
    throw Error("workload '" + spec + "': want llama-layer:tinyllama:SEQ or llama-layer:tinyllama:decode:PAST");
  std::string arg = rest.substr(c1 + 1);
  bool decode = arg.rfind("decode:", 0) == 0;
  int64_t n = std::stoll(decode ? arg.substr(7) : arg);
  if (n < 1) throw Error("workload '" + spec + "': the length must be >= 1");
  const int64_t D = 2048, H = 32, KVH = 4, HD = 64, F = 5632, G = H / KVH;
  const int64_t T = decode ? 1 : n, S = decode ? n : n;  // query tokens, keys attended
  Graph g;
  g.name = "tinyllama-layer";
  auto full = [&](int x, Shape s) { return g.expand(x, s); };
  auto scalar = [&](double v, Shape s) {
    Shape ones(s.size(), Dim(1));
    return g.expand(g.constant(v, f32, ones), s);
  };
  auto rmsnorm = [&](int x, const std::string& w) {
    Shape s = {Dim(T), Dim(D)};
    int ms = g.binary(Op::Mul, g.reduce(Op::ReduceSum, g.binary(Op::Mul, x, x), {1}), scalar(1.0 / D, {Dim(T), Dim(1)}));
    int inv = g.unary(Op::Recip, g.unary(Op::Sqrt, g.binary(Op::Add, ms, scalar(1e-5, {Dim(T), Dim(1)}))));
    return g.binary(Op::Mul, g.binary(Op::Mul, x, full(inv, s)), full(g.input(w, f32, {1, D}), s));
  };
  int x = g.input("x", f32, {T, D});
  int xn = rmsnorm(x, "attn_norm");
  int q = g.contract(xn, g.input("wq", f32, {D, H * HD}));
  q = g.binary(Op::Mul, q, g.input("rope_q", f32, {T, H * HD}));
  int qh = g.permute(g.reshape(q, {Dim(T), Dim(H), Dim(HD)}), {1, 0, 2});  // [H, T, HD]
  int kt, vt;  // [H, HD, S] and [H, S, HD]
  if (decode) {
    kt = g.input("k_cache", f32, {KVH, HD, S});
    vt = g.input("v_cache", f32, {KVH, S, HD});
  } else {
    int k = g.contract(xn, g.input("wk", f32, {D, KVH * HD}));
    k = g.binary(Op::Mul, k, g.input("rope_k", f32, {T, KVH * HD}));
    int v = g.contract(xn, g.input("wv", f32, {D, KVH * HD}));
    kt = g.permute(g.reshape(k, {Dim(T), Dim(KVH), Dim(HD)}), {1, 2, 0});
    vt = g.permute(g.reshape(v, {Dim(T), Dim(KVH), Dim(HD)}), {1, 0, 2});
  }
  // Grouped-query attention: each KV head serves G query heads.
  auto share = [&](int t, int64_t a, int64_t b) {
    int r = g.reshape(t, {Dim(KVH), Dim(1), Dim(a), Dim(b)});
    return g.reshape(g.expand(r, {Dim(KVH), Dim(G), Dim(a), Dim(b)}), {Dim(H), Dim(a), Dim(b)});
  };
  int scores = g.contract(qh, share(kt, HD, S));  // [H, T, S]
  Shape ss = {Dim(H), Dim(T), Dim(S)};
  scores = g.binary(Op::Mul, scores, scalar(1.0 / 8.0, ss));  // 1/sqrt(head dim)
  if (!decode) scores = g.binary(Op::Add, scores, full(g.reshape(g.input("mask", f32, {T, S}), {Dim(1), Dim(T), Dim(S)}), ss));
  int e = g.unary(Op::Exp2, g.binary(Op::Sub, scores, full(g.reduce(Op::ReduceMax, scores, {2}), ss)));
  int p = g.binary(Op::Div, e, full(g.reduce(Op::ReduceSum, e, {2}), ss));
  int att = g.contract(p, share(vt, S, HD));  // [H, T, HD]
  att = g.reshape(g.permute(att, {1, 0, 2}), {Dim(T), Dim(D)});
  int h = g.binary(Op::Add, x, g.contract(att, g.input("wo", f32, {H * HD, D})));
  int hn = rmsnorm(h, "ffn_norm");
  int gate = g.contract(hn, g.input("w_gate", f32, {D, F}));
  int up = g.contract(hn, g.input("w_up", f32, {D, F}));
  Shape fs = {Dim(T), Dim(F)};
  int sig = g.unary(Op::Recip, g.binary(Op::Add, scalar(1, fs),
                                        g.unary(Op::Exp2, g.binary(Op::Mul, gate, scalar(-1.4426950408889634, fs)))));
  int act = g.binary(Op::Mul, g.binary(Op::Mul, gate, sig), up);
  g.outputs = {g.binary(Op::Add, h, g.contract(act, g.input("w_down", f32, {F, D})))};
  return g;
}

CLI::App* add_sim_command(CLI::App& app) {
  SimOptions& o = options();
  command = app.add_subcommand("sim", "run a workload on the simulated systolic accelerator, report its cycles");
  command->add_option("workload", o.workload,
                      "matmul:MxKxN, mlp:BATCH, ..., llama-layer:tinyllama:SEQ, llama-layer:tinyllama:decode:PAST")
      ->required();
  command->add_option("--preset", o.preset, "default (128x128 bf16 ws) or tpu-v1 (256x256 int8 ws)");
  command->add_option("--array", o.array, "array size RxC");
  command->add_option("--dataflow", o.dataflow, "ws (weight-stationary) or os (output-stationary)");
  command->add_option("--input", o.input, "int8 (with scales) or bf16");
  command->add_option("--tiles", o.tiles, "GEMM tile MxKxN where the kernel's schedule (array_tile) leaves a size at 0; 0 for the emitter's default");
  command->add_option("--dram-bw", o.dram_bw, "DRAM bytes per cycle");
  command->add_option("--trace", o.trace, "write every instruction's timing to this CSV file");
  command->add_option("--top", o.top, "kernels to list");
  return command;
}

int run_sim() {
  const SimOptions& o = options();
  systolic::SystolicConfig c = config_from(o);
  systolic::Tiling tiling;
  if (!o.tiles.empty()) {
    auto t = parse_sizes(o.tiles, 3, "--tiles");
    tiling = {t[0], t[1], t[2]};
  }
  Graph g = workload_graph(o.workload);
  auto inputs = random_inputs(g);
  auto dev = std::make_shared<systolic::SystolicDevice>(c, tiling);
  dev->set_tracing(!o.trace.empty());
  CompiledGraph cg(g, dev);
  cg.set_inputs(inputs);
  auto t0 = std::chrono::steady_clock::now();
  cg.execute();
  double host_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  systolic::Stats s = dev->total();
  auto records = dev->records();
  auto pct = [&](int64_t v) { return s.total_cycles ? 100.0 * double(v) / double(s.total_cycles) : 0.0; };
  std::printf("kiln sim %s on %s\n", o.workload.c_str(), dev->info().name.c_str());
  std::printf("  kernels            %zu (%lld instructions)\n", records.size(), (long long)s.instructions);
  std::printf("  total cycles       %lld (%.3f ms at %.2f GHz)\n", (long long)s.total_cycles,
              double(s.total_cycles) / (c.clock_ghz * 1e6), c.clock_ghz);
  std::printf("  compute cycles     %lld (%.1f%%): array %lld, vector unit %lld\n", (long long)s.compute_cycles,
              pct(s.compute_cycles), (long long)s.array_cycles, (long long)s.vector_cycles);
  std::printf("  stalls             dram bandwidth %lld (%.1f%%), sram capacity %lld (%.1f%%), dependency %lld (%.1f%%)\n",
              (long long)s.stall[0], pct(s.stall[0]), (long long)s.stall[1], pct(s.stall[1]), (long long)s.stall[2],
              pct(s.stall[2]));
  std::printf("  MACs               %lld; array utilization %.1f%%\n", (long long)s.macs, 100 * s.utilization());
  std::printf("  bottleneck         %s\n", s.bottleneck().c_str());
  std::printf("  DRAM               read %s, written %s\n", human_bytes(double(s.dram_read)).c_str(),
              human_bytes(double(s.dram_written)).c_str());
  std::printf("  SRAM traffic       input %s, weight %s, accumulator %s\n", human_bytes(double(s.buffer_bytes[0])).c_str(),
              human_bytes(double(s.buffer_bytes[1])).c_str(), human_bytes(double(s.buffer_bytes[2])).c_str());
  std::printf("  host               %.3f s, %.3g simulated MACs/s\n", host_s, host_s > 0 ? double(s.macs) / host_s : 0.0);
  std::vector<size_t> order(records.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return records[a].stats.total_cycles > records[b].stats.total_cycles; });
  std::printf("\n  %-22s %12s %6s %7s %7s %7s %7s  %s\n", "kernel", "cycles", "share", "util", "dram", "sram", "dep",
              "on");
  for (size_t j = 0; j < order.size() && int(j) < o.top; ++j) {
    const systolic::LaunchRecord& r = records[order[j]];
    const systolic::Stats& k = r.stats;
    auto kp = [&](int64_t v) { return k.total_cycles ? 100.0 * double(v) / double(k.total_cycles) : 0.0; };
    std::string on = r.on_array ? "array " + std::to_string(r.batch) + " x " + std::to_string(r.m) + "x" +
                                      std::to_string(r.k) + "x" + std::to_string(r.n)
                                : "vector unit";
    std::printf("  %-22s %12lld %5.1f%% %6.1f%% %6.1f%% %6.1f%% %6.1f%%  %s\n", r.kernel.substr(0, 22).c_str(),
                (long long)k.total_cycles, pct(k.total_cycles), 100 * k.utilization(), kp(k.stall[0]), kp(k.stall[1]),
                kp(k.stall[2]), on.c_str());
  }
  if (!o.trace.empty()) {
    std::ofstream f(o.trace);
    if (!f) throw Error("cannot write '" + o.trace + "'");
    int64_t offset = 0;
    bool header = true;
    for (const systolic::LaunchRecord& r : records) {
      f << systolic::trace_csv(r.program, r.timeline, c, offset, r.kernel, header);
      header = false;
      offset += r.stats.total_cycles;
    }
    std::printf("\n  trace: %s (kernels run one after another; cycles counted from the first)\n", o.trace.c_str());
  }
  return 0;
}

}  // namespace kiln
