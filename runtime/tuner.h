// The autotuner (issue 8): searches each kernel's schedule knobs
// (codegen/schedule_space.h) for the fastest schedule on a device, measuring
// every candidate on fresh random inputs and checking its outputs against the
// default schedule's, and keeps the winners in the tuning database. The cost
// is host wall time, or on a simulated device (Stream::simulated_seconds, the
// systolic array) its modeled time: deterministic, one launch per candidate.
//
// The search is evolutionary: the default point's one-knob neighbours first,
// then mutations and crossovers of the best points found so far, never the
// same point twice. Candidates are compiled in parallel; a candidate that is
// refused by apply(), fails to compile, runs far slower than the default or
// computes a different result is skipped.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "codegen/schedule.h"
#include "kiln/graph.h"
#include "kiln/host_tensor.h"
#include "kiln/runtime.h"

namespace kiln {

class TuningDb;

// ---- search over points of a discrete space: point[i] in [0, sizes[i])
using Point = std::vector<int>;
// The costs of a batch of points (lower is better; +infinity: illegal).
using BatchCost = std::function<std::vector<double>(const std::vector<Point>&)>;

struct SearchOptions {
  int max_evals = 100;     // points evaluated at most
  double seconds = 0;      // wall-time budget; 0: none
  int batch = 8;           // points per call of the cost function
  uint64_t seed = 1;
  // After each batch: points evaluated so far and the best cost.
  std::function<void(int evaluated, double best)> progress;
};

struct SearchResult {
  Point best;
  double best_cost = std::numeric_limits<double>::infinity();
  int evaluated = 0;
};

// Starts from `start` (evaluated first).
SearchResult evolutionary_search(const std::vector<int>& sizes, const Point& start, const BatchCost& cost,
                                 const SearchOptions& opt);
// The baseline it must beat: `start`, then uniformly random unseen points.
SearchResult random_search(const std::vector<int>& sizes, const Point& start, const BatchCost& cost,
                           const SearchOptions& opt);

// ---- tuning a graph's kernels
struct TuneOptions {
  double budget_s = 60;  // for the whole graph, split over its kernels by their default time
  int min_reps = 5;      // timed runs per candidate (median), more for short kernels
  uint64_t seed = 1;
  bool progress = true;  // a progress line on stderr
};

struct KernelTuning {
  std::string name;       // the first kernel of this structure
  int launches = 0;       // launches of kernels of this structure per run of the graph
  int knobs = 0;          // 0: nothing to tune
  double default_s = 0;   // one launch, median
  double tuned_s = 0;     // the best schedule's, median (default_s when none beat it)
  int candidates = 0;     // schedules measured
  int rejected = 0;       // refused, failed to compile, too slow or wrong
  Schedule best;          // structural form; empty steps with tuned_s == default_s: kept the default
  bool improved = false;
};

struct GraphTuning {
  std::vector<KernelTuning> kernels;  // one per distinct kernel structure, in first-launch order
  double graph_default_s = 0;         // a whole run of the graph, default schedules (median)
  double graph_tuned_s = 0;           // with the tuned schedules
};

// Tunes every kernel of `g` on `dev` with `inputs` (and `symbols` for
// symbolic dims), stores improvements in `db` (when not null) and times the
// whole graph both ways.
GraphTuning tune_graph(const Graph& g, const std::map<std::string, HostTensor>& inputs, const Bindings& symbols,
                       std::shared_ptr<Device> dev, const TuneOptions& opt, TuningDb* db);

}  // namespace kiln
