#include "tools/tune.h"

#include <cstdio>
#include <fstream>

#include "frontend/models/llm.h"
#include "frontend/workloads.h"
#include "kiln/compiled_graph.h"
#include "kiln/error.h"
#include "runtime/tuner.h"
#include "runtime/tuning_db.h"
#include "tools/read_text.h"

namespace kiln {

namespace {

struct TuneArgs {
  std::string workload;
  std::string device = "cpu";
  std::string dtype = "f32";
  double budget = 60;
  uint64_t seed = 1;
  std::string export_file, import_file;
};

TuneArgs& args() {
  static TuneArgs a;
  return a;
}

// `llm:CONFIG` is its decode step over a cache half the context long.
Workload tune_workload(const std::string& spec, DType dtype) {
  if (spec.rfind("llm:", 0) == 0) {
    std::string config = spec.substr(4);
    return make_workload("llm-decode:" + config + ":" + std::to_string(llm_config(config).max_seq / 2), dtype);
  }
  return make_workload(spec, dtype);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

CLI::App* add_tune_command(CLI::App& app) {
  TuneArgs& a = args();
  CLI::App* c = app.add_subcommand("tune", "search faster schedules for a workload's kernels, keep them in the tuning database");
  c->add_option("workload", a.workload, "a workload (matmul:MxKxN, ..., llm:CONFIG for its decode step)");
  c->add_option("--device", a.device, "device");
  c->add_option("--dtype", a.dtype, "element type of the workload");
  c->add_option("--budget", a.budget, "seconds of search for the whole workload")->check(CLI::Range(0.0, 1e7));
  c->add_option("--seed", a.seed, "seed of the search and of the inputs");
  c->add_option("--export", a.export_file, "write the tuning database to FILE (JSON; SQL if FILE ends in .sql)");
  c->add_option("--import", a.import_file, "merge tunings from FILE (an --export file, JSON or SQL)");
  return c;
}

int run_tune() {
  const TuneArgs& a = args();
  if (a.workload.empty() && a.export_file.empty() && a.import_file.empty())
    throw Error("tune: give a workload, --export FILE or --import FILE");
  TuningDb* db = TuningDb::global();
  if (!a.import_file.empty()) {
    if (!db) throw Error("tune --import: the tuning database is off (KILN_CACHE_DIR)");
    int64_t n = db->import_text(read_text(a.import_file));
    std::printf("imported %lld tunings from %s into %s\n", (long long)n, a.import_file.c_str(), db->path().c_str());
  }
  if (!a.workload.empty()) {
    Workload w = tune_workload(a.workload, parse_dtype(a.dtype));
    Bindings symbols = bind_symbols(w.graph, w.inputs, {});
    std::shared_ptr<Device> dev = device(a.device);
    TuneOptions opt;
    opt.budget_s = a.budget;
    opt.seed = a.seed;
    std::fprintf(stderr, "kiln tune: %s on %s, %.0f s budget, database %s\n", a.workload.c_str(),
                 dev->info().name.c_str(), a.budget, db ? db->path().c_str() : "off");
    GraphTuning t = tune_graph(w.graph, w.inputs, symbols, dev, opt, db);
    // A simulated device's times are its model's (to the nanosecond), not the host's.
    bool simulated = dev->stream().simulated_seconds().has_value();
    if (simulated) std::printf("times are simulated device time (%s's timing model)\n", dev->info().backend.c_str());
    const char* row =
        simulated ? "%-28s %8d %6d %12.6f %12.6f %7.2fx %10d\n" : "%-28s %8d %6d %12.4f %12.4f %7.2fx %10d\n";
    const char* total = simulated ? "%-28s %8s %6s %12.6f %12.6f %7.2fx\n" : "%-28s %8s %6s %12.4f %12.4f %7.2fx\n";
    std::printf("%-28s %8s %6s %12s %12s %8s %10s\n", "kernel", "launches", "knobs", "default ms", "tuned ms",
                "speed-up", "candidates");
    for (const KernelTuning& k : t.kernels)
      std::printf(row, k.name.c_str(), k.launches, k.knobs, k.default_s * 1e3, k.tuned_s * 1e3, k.default_s / k.tuned_s,
                  k.candidates);
    std::printf(total, "whole graph", "", "", t.graph_default_s * 1e3, t.graph_tuned_s * 1e3,
                t.graph_default_s / t.graph_tuned_s);
  }
  if (!a.export_file.empty()) {
    if (!db) throw Error("tune --export: the tuning database is off (KILN_CACHE_DIR)");
    std::ofstream f(a.export_file, std::ios::binary);
    f << (ends_with(a.export_file, ".sql") ? db->export_sql() : db->export_json());
    if (!f) throw Error("cannot write '" + a.export_file + "'");
    std::printf("exported %zu tunings to %s\n", db->records().size(), a.export_file.c_str());
  }
  return 0;
}

}  // namespace kiln
