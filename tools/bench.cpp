#include "tools/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/workloads.h"
#include "kiln/compiled_graph.h"
#include "kiln/error.h"
#include "tools/llm.h"

#ifdef KILN_HAVE_BLAS
#include <cblas.h>
#endif

namespace kiln {

namespace {


double time_median(const std::function<void()>& fn, const BenchOptions& opt) {
  for (int i = 0; i < opt.warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < opt.reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(t);
}

struct Peer {
  std::string name;
  double seconds = 0;
  double max_rel_err = -1;  // kiln's output against the peer's, where it computes one
};

// memcpy moving as many bytes (read + written) as the workload must.
Peer memcpy_peer(const Workload& w, const BenchOptions& opt) {
  size_t n = size_t(w.bytes / 2);
  std::vector<char> src(n, 1), dst(n);
  Peer p{"memcpy", time_median([&] { std::memcpy(dst.data(), src.data(), n); }, opt)};
  return p;
}

#ifdef KILN_HAVE_BLAS
Peer sgemm_peer(const Workload& w, const HostTensor& kiln_out, const BenchOptions& opt) {
  const HostTensor &a = w.inputs.at("a"), &b = w.inputs.at("b");
  int m = int(a.sizes[0]), k = int(a.sizes[1]), n = int(b.sizes[1]);
  std::vector<float> c(size_t(m) * n);
  Peer p{"openblas_sgemm", time_median([&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.ptr<float>(), k, b.ptr<float>(), n,
                       0.0f, c.data(), n);
         }, opt)};
  double err = 0, scale = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    err = std::max(err, double(std::fabs(kiln_out.ptr<float>()[i] - c[i])));
    scale = std::max(scale, double(std::fabs(c[i])));
  }
  p.max_rel_err = scale > 0 ? err / scale : err;
  return p;
}

Peer sgemv_peer(const Workload& w, const HostTensor& kiln_out, const BenchOptions& opt) {
  const HostTensor &a = w.inputs.at("a"), &x = w.inputs.at("x");
  int m = int(a.sizes[0]), k = int(a.sizes[1]);
  std::vector<float> y(m);
  Peer p{"openblas_sgemv", time_median([&] {
           cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.0f, a.ptr<float>(), k, x.ptr<float>(), 1, 0.0f, y.data(), 1);
         }, opt)};
  double err = 0, scale = 0;
  for (int i = 0; i < m; ++i) {
    err = std::max(err, double(std::fabs(kiln_out.ptr<float>()[i] - y[i])));
    scale = std::max(scale, double(std::fabs(y[i])));
  }
  p.max_rel_err = scale > 0 ? err / scale : err;
  return p;
}
#endif

}  // namespace

// The slowest kernels of a warm run: where the device has timers, each
// launch timed by the device's clock; else, on devices that capture, each
// kernel's time within a replay (recorded 10 times in a row); elsewhere each
// launch timed one by one with a wait after it.
void print_profile(CompiledGraph& cg, std::FILE* f) {
  bool timers = cg.device().stream().can_time();
  std::vector<double> t;
  if (!timers) t = cg.replayed_kernel_seconds();
  bool replayed = !t.empty();
  if (!replayed) {
    cg.execute();
    t = cg.kernel_seconds();
  }
  std::vector<size_t> order(t.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return t[a] > t[b]; });
  double total = 0;
  for (double v : t) total += v;
  std::fprintf(f, "\n%zu launches, %.3f ms in all (%s); the slowest:\n", t.size(), total * 1e3,
              timers     ? "launched one by one, timed by the device's clock"
              : replayed ? "each kernel replayed 10 times in a row, best of 3"
                         : "launched one by one, a wait after each");
  for (size_t i = 0; i < std::min<size_t>(order.size(), 10); ++i) {
    const Launch& l = cg.program().launches[order[i]];
    std::fprintf(f, "  %9.1f us  %5.1f%%  %s\n", t[order[i]] * 1e6, 100 * t[order[i]] / total,
                cg.program().kernels[l.kernel].name.c_str());
  }
  // Kernels of one kind (the name without its number and the first output's
  // shape: one per model layer).
  std::map<std::string, std::pair<double, int>> kinds;
  for (size_t i = 0; i < t.size(); ++i) {
    const Launch& l = cg.program().launches[i];
    const std::string& name = cg.program().kernels[l.kernel].name;
    std::string kind = name.substr(name.find('_') + 1);
    if (!l.args.empty()) kind += " -> " + shape_str(cg.program().graph.nodes[l.args[0]].shape);
    auto& [sum, count] = kinds[kind];
    sum += t[i];
    ++count;
  }
  std::vector<std::pair<double, std::string>> by_kind;
  for (auto& [name, v] : kinds) by_kind.push_back({v.first, name + " x" + std::to_string(v.second)});
  std::sort(by_kind.rbegin(), by_kind.rend());
  std::fprintf(f, "by kind:\n");
  for (size_t i = 0; i < std::min<size_t>(by_kind.size(), 24); ++i)
    std::fprintf(f, "  %9.1f us  %5.1f%%  %s\n", by_kind[i].first * 1e6, 100 * by_kind[i].first / total,
                by_kind[i].second.c_str());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string bench_workload(const std::string& spec, const BenchOptions& opt) {
  if (spec.rfind("llm:", 0) == 0) return bench_llm(spec, opt);
  Workload w = make_workload(spec, opt.dtype);
  CompiledGraph cg(w.graph, device(opt.device));
  cg.set_inputs(w.inputs);
  // Where the device can replay a recording of the launches, kiln_s is that
  // and launch_s the same launches queued one by one; elsewhere they are one.
  bool replays = cg.device().stream().can_capture();
  double launch_s = time_median([&] { cg.execute({.replay = false, .timing = false}); }, opt);
  double kiln_s = replays ? time_median([&] { cg.execute({.replay = true}); }, opt) : launch_s;
  HostTensor out = cg.outputs().at(0);
  if (opt.profile) print_profile(cg, stderr);

  // CPU peers only for the CPU; GPU peers (PyTorch) run in bench/gpu_compare.py.
  Peer peer;
  std::string kind = spec.substr(0, spec.find(':'));
  if (cg.device().info().backend != "cpu") {
  } else if ((kind == "matmul" || kind == "gemv") && opt.dtype == f32) {
#ifdef KILN_HAVE_BLAS
    peer = kind == "matmul" ? sgemm_peer(w, out, opt) : sgemv_peer(w, out, opt);
#endif
  } else if (kind == "add" || kind == "chain" || kind == "softmax") {
    peer = memcpy_peer(w, opt);
  }

  nlohmann::json j;
  j["workload"] = spec;
  j["device"] = cg.device().info().backend;
  j["device_name"] = cg.device().info().name;
  j["dtype"] = std::string(dtype_name(opt.dtype));
  j["kernels"] = cg.program().kernels.size();
  j["compile_s"] = cg.compile_seconds();
  j["reps"] = opt.reps;
  j["kiln_s"] = kiln_s;
  if (replays) {
    j["launch_s"] = launch_s;
    j["replay_speedup"] = launch_s / kiln_s;
  }
  if (w.flops > 0) j["kiln_gflops"] = w.flops / kiln_s * 1e-9;
  if (w.bytes > 0) j["kiln_gbps"] = w.bytes / kiln_s * 1e-9;
  if (!peer.name.empty()) {
    j["peer"] = peer.name;
    j["peer_s"] = peer.seconds;
    j["kiln_vs_peer"] = peer.seconds / kiln_s;  // > 1: kiln is faster
    if (peer.max_rel_err >= 0) j["max_rel_err"] = peer.max_rel_err;
  } else {
    j["peer"] = nullptr;
    j["peer_s"] = nullptr;
  }
  std::string line;
  if (opt.json) {
    line = j.dump();
  } else {
    line = spec + " on " + opt.device + ": kiln " + std::to_string(kiln_s * 1e3) + " ms";
    if (replays)
      line += " replayed, " + std::to_string(launch_s * 1e3) + " ms launched one by one (" +
              std::to_string(launch_s / kiln_s) + "x)";
    if (!peer.name.empty())
      line += ", " + peer.name + " " + std::to_string(peer.seconds * 1e3) + " ms (kiln/peer speed " +
              std::to_string(peer.seconds / kiln_s) + "x)";
  }
  std::cout << line << std::endl;
  return line;
}

}  // namespace kiln
