#include "runtime/tuner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <set>

#include "codegen/lower.h"
#include "codegen/schedule_space.h"
#include "kiln/compiled_graph.h"
#include "kiln/error.h"
#include "runtime/thread_pool.h"
#include "runtime/tuning_db.h"

namespace kiln {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? kInf : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

SearchResult search(const std::vector<int>& sizes, const Point& start, const BatchCost& cost, const SearchOptions& opt,
                    bool evolve) {
  auto t0 = std::chrono::steady_clock::now();
  std::mt19937_64 rng(opt.seed);
  auto uniform = [&](int n) { return int(rng() % uint64_t(std::max(1, n))); };
  double space = 1;
  for (int s : sizes) space *= std::max(1, s);
  std::set<Point> seen;
  std::vector<std::pair<double, Point>> scored;  // every evaluated point
  SearchResult res;
  auto evaluate = [&](const std::vector<Point>& batch) {
    std::vector<double> c = cost(batch);
    for (size_t i = 0; i < batch.size(); ++i) {
      double v = i < c.size() && !std::isnan(c[i]) ? c[i] : kInf;
      scored.push_back({v, batch[i]});
      ++res.evaluated;
      if (v < res.best_cost || res.best.empty()) {
        if (v < res.best_cost) res.best_cost = v;
        res.best = batch[i];
      }
    }
    if (opt.progress) opt.progress(res.evaluated, res.best_cost);
  };
  auto random_point = [&] {
    Point p(sizes.size());
    for (size_t i = 0; i < p.size(); ++i) p[i] = uniform(sizes[i]);
    return p;
  };
  auto mutate = [&](Point p, int changes) {
    for (int c = 0; c < changes; ++c) {
      size_t i = size_t(uniform(int(sizes.size())));
      if (sizes[i] > 1) p[i] = (p[i] + 1 + uniform(sizes[i] - 1)) % sizes[i];
    }
    return p;
  };
  // The best point's unseen one-knob neighbours first, then mutations of the
  // best few (tournament of two), then crossovers of two of them.
  auto propose = [&]() -> Point {
    std::vector<std::pair<double, Point>> elite;
    for (const auto& s : scored)
      if (s.first < kInf) elite.push_back(s);
    if (elite.empty()) return random_point();
    std::sort(elite.begin(), elite.end());
    if (elite.size() > 6) elite.resize(6);
    double r = std::uniform_real_distribution<double>(0, 1)(rng);
    if (r < 0.5) {
      std::vector<Point> near;
      for (size_t i = 0; i < sizes.size(); ++i)
        for (int v = 0; v < sizes[i]; ++v) {
          if (v == elite[0].second[i]) continue;
          Point p = elite[0].second;
          p[i] = v;
          if (!seen.count(p)) near.push_back(p);
        }
      if (!near.empty()) return near[size_t(uniform(int(near.size())))];
    }
    auto pick = [&] {
      size_t a = size_t(uniform(int(elite.size()))), b = size_t(uniform(int(elite.size())));
      return elite[std::min(a, b)].second;
    };
    if (r < 0.85) return mutate(pick(), 1 + uniform(2));
    Point a = pick(), b = pick();
    for (size_t i = 0; i < a.size(); ++i)
      if (rng() & 1) a[i] = b[i];
    return mutate(a, uniform(2));
  };
  seen.insert(start);
  evaluate({start});
  while (res.evaluated < opt.max_evals && double(seen.size()) < space &&
         !(opt.seconds > 0 && seconds_since(t0) >= opt.seconds)) {
    size_t want = size_t(std::min(opt.batch, opt.max_evals - res.evaluated));
    std::vector<Point> batch;
    for (size_t tries = 0; batch.size() < want && tries < 200 * want; ++tries) {
      Point p = evolve && tries < 100 * want ? propose() : random_point();
      if (seen.insert(p).second) batch.push_back(p);
    }
    if (batch.empty()) break;
    evaluate(batch);
  }
  return res;
}

// One kernel on its own: its buffers with fresh random contents (graph inputs
// keep their given values where they are integers: indices must stay in range).
class KernelBench {
 public:
  KernelBench(Device& dev, const Program& p, int kernel, const std::map<std::string, HostTensor>& inputs,
              const Bindings& symbols, uint64_t seed)
      : dev_(dev) {
    const Kernel& k = p.kernels[kernel];
    const Launch* launch = nullptr;
    for (const Launch& l : p.launches)
      if (l.kernel == kernel && !launch) launch = &l;
    if (!launch) throw Error("kernel '" + k.name + "' is never launched");
    std::vector<int> globals = k.global_buffers();
    for (size_t a = 0; a < launch->args.size(); ++a) {
      const Node& n = p.graph.nodes[launch->args[a]];
      std::vector<int64_t> sizes = concrete(n.shape, symbols);
      HostTensor t = HostTensor::random(n.dtype, sizes, seed * 7919 + a);
      if (auto it = inputs.find(n.name); n.op == Op::Input && it != inputs.end() && !is_float(n.dtype)) t = it->second;
      host_.push_back(t);
      bufs_.push_back(dev.allocate(std::max<int64_t>(1, int64_t(t.data.size()))));
      ptrs_.push_back(bufs_.back().get());
      output_.push_back(a < globals.size() && k.buffers[globals[a]].output);
    }
    for (const std::string& name : k.params) params_.push_back(symbols.at(name));
  }

  // Outputs of one launch from the initial contents; on a simulated device
  // `simulated_s` (if not null) gets the launch's simulated time.
  std::vector<HostTensor> outputs(Executable& exe, double* simulated_s = nullptr) {
    reset();
    std::optional<double> t0 = dev_.stream().simulated_seconds();
    exe.launch(dev_.stream(), ptrs_, params_);
    dev_.stream().synchronize();
    if (std::optional<double> t1 = dev_.stream().simulated_seconds(); t0 && t1 && simulated_s) *simulated_s = *t1 - *t0;
    std::vector<HostTensor> out;
    for (size_t a = 0; a < host_.size(); ++a) {
      if (!output_[a]) continue;
      HostTensor t(host_[a].dtype, host_[a].sizes);
      dev_.read(*bufs_[a], t.data.data(), int64_t(t.data.size()));
      out.push_back(std::move(t));
    }
    return out;
  }

  // Median seconds of one launch: a warm-up, then enough runs for ~30 ms
  // (at least min_reps). Infinity if the warm-up takes over `give_up` s.
  double time(Executable& exe, int min_reps, double give_up) {
    reset();
    auto once = [&] {
      auto t0 = std::chrono::steady_clock::now();
      exe.launch(dev_.stream(), ptrs_, params_);
      dev_.stream().synchronize();
      return seconds_since(t0);
    };
    double first = once();
    if (first > give_up) return kInf;
    int reps = int(std::clamp(0.03 / std::max(first, 1e-7), double(min_reps), 200.0));
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) t.push_back(once());
    return median(t);
  }

 private:
  void reset() {
    for (size_t a = 0; a < host_.size(); ++a) dev_.write(*bufs_[a], host_[a].data.data(), int64_t(host_[a].data.size()));
  }

  Device& dev_;
  std::vector<HostTensor> host_;
  std::vector<std::shared_ptr<Buffer>> bufs_;
  std::vector<Buffer*> ptrs_;
  std::vector<bool> output_;
  std::vector<int64_t> params_;
};

// Whether `got` matches `want` to what a different summation order allows.
bool same_results(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got) {
  if (want.size() != got.size()) return false;
  for (size_t o = 0; o < want.size(); ++o) {
    double err = 0, scale = 0;
    for (int64_t i = 0; i < want[o].numel(); ++i) {
      double w = want[o].get(i), g = got[o].get(i);
      if (std::isnan(g) != std::isnan(w)) return false;
      if (std::isnan(w)) continue;
      err = std::max(err, std::fabs(w - g));
      scale = std::max(scale, std::fabs(w));
    }
    double tol = want[o].dtype == f32 ? 1e-3 : is_float(want[o].dtype) ? 3e-2 : 0;
    if (err > tol * std::max(scale, 1e-20) && err > 0) return false;
  }
  return true;
}

// Medians of whole runs of the graph with each set of schedules, timed in
// turns so that a change in the machine's load hits both alike; on a
// simulated device, one run's simulated time each.
std::vector<double> time_graphs(const Graph& g, const std::map<std::string, HostTensor>& inputs, const Bindings& symbols,
                                std::shared_ptr<Device> dev, const std::vector<std::vector<Schedule>>& variants) {
  ExecuteOptions eo{.replay = dev->stream().can_capture(), .timing = false};
  std::vector<std::unique_ptr<CompiledGraph>> cgs;
  std::vector<double> simulated;
  double first = 0;
  for (const std::vector<Schedule>& s : variants) {
    cgs.push_back(std::make_unique<CompiledGraph>(g, dev, s));
    cgs.back()->set_inputs(inputs, symbols);
    std::optional<double> clock0 = dev->stream().simulated_seconds();
    cgs.back()->execute(eo);
    dev->stream().synchronize();
    if (clock0) {
      simulated.push_back(*dev->stream().simulated_seconds() - *clock0);
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    cgs.back()->execute(eo);
    first = std::max(first, seconds_since(t0));
  }
  if (!simulated.empty()) return simulated;
  int reps = int(std::clamp(1.0 / std::max(first, 1e-6), 5.0, 50.0));
  std::vector<std::vector<double>> t(cgs.size());
  for (int r = 0; r < reps; ++r)
    for (size_t v = 0; v < cgs.size(); ++v) {
      auto t0 = std::chrono::steady_clock::now();
      cgs[v]->execute(eo);
      t[v].push_back(seconds_since(t0));
    }
  std::vector<double> out;
  for (const auto& tv : t) out.push_back(median(tv));
  return out;
}

}  // namespace

SearchResult evolutionary_search(const std::vector<int>& sizes, const Point& start, const BatchCost& cost,
                                 const SearchOptions& opt) {
  return search(sizes, start, cost, opt, true);
}

SearchResult random_search(const std::vector<int>& sizes, const Point& start, const BatchCost& cost,
                           const SearchOptions& opt) {
  return search(sizes, start, cost, opt, false);
}

GraphTuning tune_graph(const Graph& g, const std::map<std::string, HostTensor>& inputs, const Bindings& symbols,
                       std::shared_ptr<Device> dev, const TuneOptions& opt, TuningDb* db) {
  auto t_start = std::chrono::steady_clock::now();
  const DeviceInfo& info = dev->info();
  // A simulated device's clock is the cost: deterministic, one launch each.
  bool simulated = dev->stream().simulated_seconds().has_value();
  Program p = lower(g);
  // One entry per kernel structure, with how often the graph launches it.
  std::map<std::string, size_t> by_hash;
  std::vector<int> rep;  // representative kernel of each structure
  std::vector<size_t> group_of(p.kernels.size());
  GraphTuning out;
  std::vector<std::string> hashes;
  for (const Kernel& k : p.kernels) hashes.push_back(kernel_structure_hash(k));
  for (const Launch& l : p.launches) {
    auto [it, fresh] = by_hash.emplace(hashes[size_t(l.kernel)], rep.size());
    if (fresh) {
      rep.push_back(l.kernel);
      out.kernels.push_back({});
      out.kernels.back().name = p.kernels[size_t(l.kernel)].name;
    }
    ++out.kernels[it->second].launches;
  }
  // Kernels of a structure never launched keep their default schedule.
  for (size_t i = 0; i < p.kernels.size(); ++i) {
    auto it = by_hash.find(hashes[i]);
    group_of[i] = it == by_hash.end() ? SIZE_MAX : it->second;
  }

  // Default times first: they split the budget.
  std::vector<std::unique_ptr<KernelBench>> benches(rep.size());
  std::vector<std::vector<HostTensor>> reference(rep.size());
  std::vector<std::vector<Knob>> spaces(rep.size());
  std::vector<double> host_s(rep.size());  // one launch of the default on the host's clock
  for (size_t gi = 0; gi < rep.size(); ++gi) {
    const Kernel& k = p.kernels[rep[gi]];
    KernelTuning& kt = out.kernels[gi];
    spaces[gi] = schedule_knobs(k, info);
    kt.knobs = int(spaces[gi].size());
    benches[gi] = std::make_unique<KernelBench>(*dev, p, rep[gi], inputs, symbols, opt.seed + gi);
    std::shared_ptr<Executable> exe = dev->compile(apply(k, default_schedule(k, info)));
    auto t0 = std::chrono::steady_clock::now();
    double sim_s = 0;
    reference[gi] = benches[gi]->outputs(*exe, &sim_s);
    host_s[gi] = seconds_since(t0);
    kt.default_s = kt.tuned_s = simulated ? sim_s : benches[gi]->time(*exe, opt.min_reps, kInf);
  }
  double total_share = 0;
  for (const KernelTuning& kt : out.kernels)
    if (kt.knobs) total_share += kt.default_s * kt.launches;
  std::vector<size_t> order(rep.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return out.kernels[a].default_s * out.kernels[a].launches > out.kernels[b].default_s * out.kernels[b].launches;
  });

  double spent_share = 0;
  for (size_t n = 0; n < order.size(); ++n) {
    size_t gi = order[n];
    KernelTuning& kt = out.kernels[gi];
    if (!kt.knobs) continue;
    const Kernel& k = p.kernels[rep[gi]];
    double share = kt.default_s * kt.launches;
    double left = opt.budget_s - seconds_since(t_start);
    double seconds = left * share / std::max(1e-30, total_share - spent_share);
    spent_share += share;
    if (seconds <= 0) continue;
    const std::vector<Knob>& knobs = spaces[gi];
    std::vector<int> sizes;
    Point start;
    for (const Knob& kn : knobs) {
      sizes.push_back(int(kn.options.size()));
      start.push_back(int(std::find(kn.options.begin(), kn.options.end(), kn.def) - kn.options.begin()));
    }
    std::map<std::string, double> memo;  // schedule text -> cost
    Schedule best = default_schedule(k, info);
    double best_s = kInf;
    std::string best_knobs;
    BatchCost cost = [&](const std::vector<Point>& batch) {
      std::vector<double> c(batch.size(), kInf);
      std::vector<Schedule> scheds(batch.size());
      std::vector<Kernel> kernels(batch.size());
      std::vector<std::shared_ptr<Executable>> exes(batch.size());
      std::vector<int> todo;
      std::vector<std::string> knob_text(batch.size());
      std::map<size_t, std::string> repeats;  // a schedule already in this batch: same cost
      std::set<std::string> in_batch;
      for (size_t i = 0; i < batch.size(); ++i) {
        std::map<std::string, int64_t> values;
        for (size_t j = 0; j < knobs.size(); ++j) values[knobs[j].name] = knobs[j].options[size_t(batch[i][j])];
        knob_text[i] = print_knobs(values);
        Knobs kn(values);
        scheds[i] = schedule_with(k, info, kn);
        std::string text = print(scheds[i]);
        if (auto it = memo.find(text); it != memo.end()) {
          c[i] = it->second;
          continue;
        }
        if (!in_batch.insert(text).second) {
          repeats[i] = text;
          continue;
        }
        try {
          kernels[i] = apply(k, scheds[i]);
          todo.push_back(int(i));
        } catch (const Error&) {
          memo[text] = kInf;
          ++kt.rejected;
        }
      }
      // Compile in parallel (the GPU compilers are thread-safe; the CPU
      // backend serializes inside LLVM), then measure one at a time.
      ThreadPool::global().parallel_for(0, int64_t(todo.size()), [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          try {
            exes[size_t(todo[size_t(t)])] = dev->compile(kernels[size_t(todo[size_t(t)])]);
          } catch (const Error&) {
          }
        }
      });
      for (int i : todo) {
        std::string text = print(scheds[size_t(i)]);
        double s = kInf, sim_s = kInf;
        try {
          if (exes[size_t(i)] && same_results(reference[gi], benches[gi]->outputs(*exes[size_t(i)], &sim_s)))
            s = simulated ? sim_s
                          : benches[gi]->time(*exes[size_t(i)], opt.min_reps, std::max(0.05, 20 * kt.default_s));
        } catch (const Error&) {
        }
        if (s == kInf) ++kt.rejected;
        ++kt.candidates;
        memo[text] = c[size_t(i)] = s;
        if (s < best_s) {
          best_s = s;
          best = scheds[size_t(i)];
          best_knobs = knob_text[size_t(i)];
        }
      }
      for (const auto& [i, text] : repeats) c[i] = memo.at(text);
      return c;
    };
    SearchOptions so;
    so.max_evals = 1 << 30;
    so.seed = opt.seed + gi;
    so.batch = std::max(2, ThreadPool::global().size());
    // Leave time for the confirmation below (10 timings) and one last batch;
    // simulated candidates run once each, and need no confirmation.
    so.seconds = seconds - (simulated ? so.batch * host_s[gi] : (10 + 2) * (opt.min_reps + 1) * kt.default_s);
    if (so.seconds <= 0) continue;
    auto t_kernel = std::chrono::steady_clock::now();
    so.progress = [&](int, double) {
      if (!opt.progress) return;
      double eta = std::max(0.0, opt.budget_s - seconds_since(t_start));
      std::fprintf(stderr, "\rkiln tune: kernel %zu/%zu %-24.24s %4d candidates (%d rejected), best %.3f ms (default %.3f ms), %.0f s of %.0f s, ETA %.0f s   ",
                   n + 1, order.size(), kt.name.c_str(), kt.candidates, kt.rejected, best_s * 1e3, kt.default_s * 1e3,
                   seconds_since(t_kernel), seconds, eta);
      std::fflush(stderr);
    };
    evolutionary_search(sizes, start, cost, so);
    // The clock's differences round in their last bits: equal programs must not count as faster.
    if (simulated && best_s < kt.default_s * (1 - 1e-9)) {
      kt.improved = true;
      kt.tuned_s = best_s;
      kt.best = structural_schedule(best, k);
      if (opt.progress)
        std::fprintf(stderr, "\nkiln tune: %s: best (%s) %.6f ms simulated, default %.6f ms: kept\n", kt.name.c_str(),
                     best_knobs.c_str(), best_s * 1e3, kt.default_s * 1e3);
    }
    // Confirm against the default, timed again in turns, before keeping it.
    if (!simulated && best_s < kt.default_s) {
      std::shared_ptr<Executable> d = dev->compile(apply(k, default_schedule(k, info)));
      std::shared_ptr<Executable> b = dev->compile(apply(k, best));
      std::vector<double> td, tb;
      for (int r = 0; r < 5; ++r) {
        td.push_back(benches[gi]->time(*d, opt.min_reps, kInf));
        tb.push_back(benches[gi]->time(*b, opt.min_reps, kInf));
      }
      double dm = median(td), bm = median(tb);
      kt.improved = bm < 0.98 * dm;
      if (kt.improved) {
        kt.default_s = dm;
        kt.tuned_s = bm;
        kt.best = structural_schedule(best, k);
      }
      if (opt.progress)
        std::fprintf(stderr, "\nkiln tune: %s: timed again in turns, best (%s) %.4f ms, default %.4f ms: %s\n",
                     kt.name.c_str(), best_knobs.c_str(), bm * 1e3, dm * 1e3, kt.improved ? "kept" : "not faster, dropped");
    }
    if (kt.improved && db) {
      TuningRecord r;
      r.kernel_hash = kernel_structure_hash(k);
      r.device = device_fingerprint(info);
      r.schedule = print(kt.best);
      r.default_s = kt.default_s;
      r.tuned_s = kt.tuned_s;
      r.candidates = kt.candidates;
      r.kernel_name = k.name;
      std::time_t now = std::time(nullptr);
      char when[32];
      std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
      r.tuned_at = when;
      db->store(r);
    }
  }
  if (opt.progress) std::fprintf(stderr, "\n");

  std::vector<Schedule> defaults, tuned;
  for (size_t i = 0; i < p.kernels.size(); ++i) {
    defaults.push_back(default_schedule(p.kernels[i], info));
    bool improved = group_of[i] != SIZE_MAX && out.kernels[group_of[i]].improved;
    Schedule s = improved ? named_schedule(out.kernels[group_of[i]].best, p.kernels[i]) : defaults.back();
    try {
      apply(p.kernels[i], s);
    } catch (const Error&) {
      s = defaults.back();
    }
    tuned.push_back(s);
  }
  std::vector<double> graph_s = time_graphs(g, inputs, symbols, dev, {defaults, tuned});
  out.graph_default_s = graph_s[0];
  out.graph_tuned_s = graph_s[1];
  return out;
}

}  // namespace kiln
