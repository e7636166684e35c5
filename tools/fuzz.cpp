#include "tools/fuzz.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>

#include "frontend/compare.h"
#include "frontend/random_graph.h"
#include "kiln/kiln.h"
#include "tools/read_text.h"

namespace kiln {

namespace {

using Inputs = std::map<std::string, HostTensor>;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Runs f; a failure is described as "<kind>: <what>", kind being mismatch,
// error (a kiln::Error: a valid graph on valid inputs must not raise one) or
// exception (anything else).
std::string guarded(const std::function<std::string()>& f) {
  try {
    return f();
  } catch (const Error& e) {
    return std::string("error: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("exception: ") + e.what();
  }
}

std::string kind_of(const std::string& failure) { return failure.substr(0, failure.find(':')); }

std::string expected(const RandomGraph& c, const Inputs& in, std::vector<HostTensor>* want) {
  return guarded([&] {
    *want = interpret(c.graph, in, c.symbols);
    return std::string();
  });
}

std::string check_device(const RandomGraph& c, const Inputs& in, const std::vector<HostTensor>& want,
                         const std::shared_ptr<Device>& dev) {
  return guarded([&] {
    std::vector<HostTensor> got = CompiledGraph(c.graph, dev).run(in, c.symbols);
    if (got.size() != want.size()) return "mismatch: " + std::to_string(got.size()) + " outputs";
    for (size_t o = 0; o < want.size(); ++o) {
      Tolerance tol = tolerance_for(c.graph, c.graph.outputs[o]);
      std::string diff = compare(want[o], got[o], tol);
      // A sum whose terms cancel is measured against the terms' magnitudes.
      std::optional<Graph> mag = diff.empty() ? std::nullopt : magnitude_graph(c.graph, c.graph.outputs[o]);
      if (mag) diff = compare(want[o], got[o], tol, interpret(*mag, in, c.symbols).at(0));
      if (!diff.empty()) return "mismatch: output " + std::to_string(o) + ": " + diff;
    }
    return std::string();
  });
}

// The failure of a case on `dev` (on the interpreter alone when dev is null),
// or "" when it passes.
std::string check(const RandomGraph& c, const std::shared_ptr<Device>& dev) {
  Inputs in = case_inputs(c);
  std::vector<HostTensor> want;
  std::string failure = expected(c, in, &want);
  if (!failure.empty() || !dev) return failure;
  return check_device(c, in, want, dev);
}

// The graph without the nodes its outputs do not reach, renumbered.
Graph prune(const Graph& g) {
  std::vector<bool> live(g.nodes.size());
  for (int o : g.outputs) live[o] = true;
  for (size_t i = g.nodes.size(); i-- > 0;)
    if (live[i])
      for (int in : g.nodes[i].inputs) live[in] = true;
  Graph out;
  out.name = g.name;
  std::vector<int> id(g.nodes.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!live[i]) continue;
    Node n = g.nodes[i];
    for (int& in : n.inputs) in = id[in];
    id[i] = out.add(std::move(n));
  }
  for (int o : g.outputs) out.outputs.push_back(id[o]);
  return out;
}

// A smaller case: `edit` applied to the graph, then pruned, with bindings for
// the symbols still used.
RandomGraph edited(const RandomGraph& c, const std::function<void(Graph&)>& edit) {
  RandomGraph r = c;
  edit(r.graph);
  r.graph = prune(r.graph);
  r.symbols.clear();
  for (const Dim& d : r.graph.symbols()) r.symbols[d.sym] = c.symbols.at(d.sym);
  return r;
}

// Every use of node `from` (by nodes and outputs) reads `to` instead.
void redirect(Graph& g, int from, int to) {
  for (Node& n : g.nodes)
    for (int& in : n.inputs)
      if (in == from) in = to;
  for (int& o : g.outputs)
    if (o == from) o = to;
}

// Drops outputs, then nodes (each bypassed through an operand of its dtype
// and shape, or else made an input), while the case still fails the same way.
RandomGraph reduce(RandomGraph c, const std::string& failure, const std::shared_ptr<Device>& dev) {
  int names = 0;
  auto still_fails = [&](const RandomGraph& r) {
    std::string f = guarded([&] { return check(r, dev); });
    return !f.empty() && kind_of(f) == kind_of(failure);
  };
  auto attempt = [&](const std::function<void(Graph&)>& edit) {
    RandomGraph r;
    try {
      r = edited(c, edit);
    } catch (const Error&) {
      return false;  // the edit made an invalid graph
    }
    if (r.graph.nodes.size() >= c.graph.nodes.size() && r.graph.outputs.size() >= c.graph.outputs.size()) return false;
    if (!still_fails(r)) return false;
    c = std::move(r);
    return true;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t o = c.graph.outputs.size(); o-- > 0 && c.graph.outputs.size() > 1;)
      progress |= attempt([&](Graph& g) { g.outputs.erase(g.outputs.begin() + o); });
    for (int i = int(c.graph.nodes.size()) - 1; i >= 0; --i) {
      if (i >= int(c.graph.nodes.size()) || c.graph.nodes[i].op == Op::Input) continue;
      bool done = false;
      const Node n = c.graph.nodes[i];  // a copy: attempt() may replace the graph
      for (int in : n.inputs) {
        if (done) break;
        const Node& src = c.graph.nodes[in];
        if (src.dtype == n.dtype && src.shape == n.shape) done = attempt([&](Graph& g) { redirect(g, i, in); });
      }
      if (!done)
        done = attempt([&](Graph& g) {
          Node input;
          input.name = "r" + std::to_string(names++);
          input.dtype = g.nodes[i].dtype;
          input.shape = g.nodes[i].shape;
          g.nodes[i] = std::move(input);
        });
      progress |= done;
    }
  }
  return c;
}

// Reduces a failing case and writes it to the output folder; prints where.
void report(const RandomGraph& c, const std::string& failure, const std::shared_ptr<Device>& dev,
            const std::string& out_dir) {
  std::string where = dev ? dev->info().backend : "interpreter";
  std::printf("FAIL seed %llu on %s: %s\n", (unsigned long long)c.seed, where.c_str(), failure.c_str());
  RandomGraph small = reduce(c, failure, dev);
  std::string small_failure = check(small, dev);
  std::filesystem::create_directories(out_dir);
  std::string path = out_dir + "/" + where + "-seed" + std::to_string(c.seed) + ".kiln";
  std::ofstream(path) << print_case(small, {"device " + where, "failure " + small_failure,
                                            "reduced from " + std::to_string(c.graph.nodes.size()) + " nodes",
                                            "rerun: kiln fuzz --replay " + path + " --device " + where});
  std::printf("     reduced to %zu nodes: %s\n", small.graph.nodes.size(), path.c_str());
  std::fflush(stdout);
}

std::vector<std::shared_ptr<Device>> chosen_devices(const FuzzOptions& opt) {
  if (opt.devices.empty()) return devices();
  std::vector<std::shared_ptr<Device>> out;
  for (const std::string& name : opt.devices) out.push_back(device(name));
  return out;
}

struct Tally {
  int ok = 0;
  double seconds = 0;
};

void print_summary(int graphs, const std::vector<std::shared_ptr<Device>>& devs, const std::vector<Tally>& tally,
                   int failures) {
  std::printf("fuzz: %d graphs", graphs);
  for (size_t d = 0; d < devs.size(); ++d) std::printf(", %s: %d ok", devs[d]->info().backend.c_str(), tally[d].ok);
  std::printf(", %d mismatches\n", failures);
}

int replay(const FuzzOptions& opt, const std::vector<std::shared_ptr<Device>>& devs) {
  RandomGraph c = parse_case(read_text(opt.replay));
  std::vector<Tally> tally(devs.size());
  int failures = 0;
  for (size_t d = 0; d < devs.size(); ++d) {
    std::string failure = check(c, devs[d]);
    std::printf("%s on %s: %s\n", opt.replay.c_str(), devs[d]->info().backend.c_str(),
                failure.empty() ? "ok" : failure.c_str());
    failure.empty() ? ++tally[d].ok : ++failures;
  }
  print_summary(1, devs, tally, failures);
  return failures ? 1 : 0;
}

}  // namespace

int fuzz(const FuzzOptions& opt) {
  std::vector<std::shared_ptr<Device>> devs = chosen_devices(opt);
  if (!opt.replay.empty()) return replay(opt, devs);
  std::vector<Tally> tally(devs.size());
  int failures = 0;
  double reference_seconds = 0;
  int skipped = 0;
  for (int i = 0; i < opt.graphs; ++i) {
    uint64_t seed = opt.seed + uint64_t(i);
    if (std::find(opt.skip.begin(), opt.skip.end(), seed) != opt.skip.end()) {
      ++skipped;
      continue;
    }
    Clock::time_point t0 = Clock::now();
    RandomGraph c = random_graph(seed);
    Inputs in = case_inputs(c);
    std::vector<HostTensor> want;
    std::string failure = expected(c, in, &want);
    reference_seconds += seconds_since(t0);
    if (!failure.empty()) {
      ++failures;
      report(c, failure, nullptr, opt.out_dir);
      continue;
    }
    for (size_t d = 0; d < devs.size(); ++d) {
      t0 = Clock::now();
      failure = check_device(c, in, want, devs[d]);
      tally[d].seconds += seconds_since(t0);
      if (failure.empty()) {
        ++tally[d].ok;
        continue;
      }
      ++failures;
      report(c, failure, devs[d], opt.out_dir);
    }
  }
  std::printf("fuzz: time: generator and interpreter %.1f s", reference_seconds);
  for (size_t d = 0; d < devs.size(); ++d)
    std::printf(", %s %.1f s (%.0f graphs/s)", devs[d]->info().backend.c_str(), tally[d].seconds,
                (opt.graphs - skipped) / std::max(tally[d].seconds, 1e-9));
  std::printf(skipped ? ", %d known failures skipped\n" : "\n", skipped);
  print_summary(opt.graphs - skipped, devs, tally, failures);
  return failures ? 1 : 0;
}

}  // namespace kiln
