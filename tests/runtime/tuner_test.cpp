// The autotuner and the tuning database: the search finds the best point of a
// synthetic cost and beats random sampling at equal budget; schedule knobs at
// their defaults are the default schedule and elsewhere stay correct; the
// database round-trips, survives corruption and concurrent processes; the
// executor uses a stored schedule, and falls back when it does not apply.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <set>

#include "codegen/schedule_space.h"
#include "runtime/kernel_cache.h"
#include "runtime/tuner.h"
#include "runtime/tuning_db.h"
#include "tests/testing.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// A fresh, empty folder under the system's temporary folder.
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("kiln_tuner_test_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Sets KILN_CACHE_DIR for one test and makes the process's database reread it.
class CacheDir {
 public:
  explicit CacheDir(const std::string& value) {
    if (const char* old = std::getenv("KILN_CACHE_DIR")) old_ = old;
    setenv("KILN_CACHE_DIR", value.c_str(), 1);
    TuningDb::reset_global();
  }
  ~CacheDir() {
    if (old_) setenv("KILN_CACHE_DIR", old_->c_str(), 1);
    else unsetenv("KILN_CACHE_DIR");
    TuningDb::reset_global();
  }

 private:
  std::optional<std::string> old_;
};

// ---- search

// A bowl over 6 knobs of 8 values with a coupling term, its minimum (0) at `target`.
struct Bowl {
  Point target;
  std::vector<double> weight;
  std::set<Point> asked;
  bool repeated = false;

  explicit Bowl(uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 6; ++i) {
      target.push_back(int(rng() % 8));
      weight.push_back(1.0 + double(rng() % 5));
    }
  }
  double at(const Point& p) const {
    double c = 0;
    for (size_t i = 0; i < p.size(); ++i) c += weight[i] * (p[i] - target[i]) * (p[i] - target[i]);
    int d0 = p[0] - target[0], d1 = p[1] - target[1];
    return c + 0.5 * std::abs(d0 * d1);
  }
  BatchCost cost() {
    return [this](const std::vector<Point>& batch) {
      std::vector<double> out;
      for (const Point& p : batch) {
        repeated |= !asked.insert(p).second;
        out.push_back(at(p));
      }
      return out;
    };
  }
};

const std::vector<int> kSizes(6, 8);

TEST(Search, FindsTheKnownBestPoint) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    Bowl bowl(seed);
    SearchOptions opt;
    opt.max_evals = 400;
    opt.seed = seed;
    SearchResult r = evolutionary_search(kSizes, Point(6, 0), bowl.cost(), opt);
    EXPECT_EQ(r.best, bowl.target) << "seed " << seed;
    EXPECT_EQ(r.best_cost, 0) << "seed " << seed;
    EXPECT_LE(r.evaluated, 400);
    EXPECT_FALSE(bowl.repeated) << "a point was evaluated twice";
  }
}

TEST(Search, BeatsRandomSamplingAtEqualBudget) {
  double evo_total = 0, random_total = 0;
  int evo_wins = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    SearchOptions opt;
    opt.max_evals = 60;
    opt.seed = seed;
    Bowl a(seed), b(seed);
    SearchResult evo = evolutionary_search(kSizes, Point(6, 0), a.cost(), opt);
    SearchResult rnd = random_search(kSizes, Point(6, 0), b.cost(), opt);
    EXPECT_EQ(evo.evaluated, 60);
    EXPECT_EQ(rnd.evaluated, 60);
    evo_total += evo.best_cost;
    random_total += rnd.best_cost;
    evo_wins += evo.best_cost <= rnd.best_cost;
  }
  EXPECT_LT(evo_total, random_total);
  EXPECT_GE(evo_wins, 8) << "evolutionary " << evo_total << ", random " << random_total;
}

TEST(Search, StopsWhenTheSpaceIsExhausted) {
  int calls = 0;
  SearchOptions opt;
  opt.max_evals = 1000;
  SearchResult r = evolutionary_search({2, 3}, {0, 0}, [&](const std::vector<Point>& b) {
    calls += int(b.size());
    return std::vector<double>(b.size(), 1.0);
  }, opt);
  EXPECT_EQ(r.evaluated, 6);
  EXPECT_EQ(calls, 6);
}

// ---- the schedule space

const char* const kWorkloads[] = {"matmul:64x64x64", "matmul:96x64x40", "gemv:256x128", "mlp:16", "softmax:8x256",
                                  "llm-decode:stories15m:8"};

std::vector<DeviceInfo> targets() {
  DeviceInfo cpu512, cpu256, cuda, vulkan;
  cpu512.backend = cpu256.backend = "cpu";
  cpu512.vector_bits = 512;
  cpu256.vector_bits = 256;
  cuda.backend = "cuda";
  cuda.max_threads = 1024;
  vulkan.backend = "vulkan";
  vulkan.max_threads = 128;
  return {cpu512, cpu256, cuda, vulkan};
}

TEST(ScheduleSpace, DefaultKnobsGiveTheDefaultSchedule) {
  int knobs = 0;
  for (const char* w : kWorkloads) {
    Program p = lower(make_workload(w).graph);
    for (const Kernel& k : p.kernels)
      for (const DeviceInfo& t : targets()) {
        Knobs none;
        EXPECT_EQ(print(schedule_with(k, t, none)), print(default_schedule(k, t))) << w << " " << k.name;
        std::map<std::string, int64_t> defaults;
        for (const Knob& kn : schedule_knobs(k, t)) defaults[kn.name] = kn.def;
        Knobs set(defaults);
        EXPECT_EQ(schedule_with(k, t, set), default_schedule(k, t)) << w << " " << k.name;
        knobs += int(schedule_knobs(k, t).size());
        // Every other value builds a schedule that applies or is refused, on every target.
        for (const Knob& kn : schedule_knobs(k, t))
          for (int64_t v : kn.options) {
            Knobs one({{kn.name, v}});
            Schedule s = schedule_with(k, t, one);
            try {
              apply(k, s);
            } catch (const Error&) {
            }
          }
      }
  }
  EXPECT_GT(knobs, 0);
  auto names = [](const Kernel& k, const DeviceInfo& t) {
    std::set<std::string> n;
    for (const Knob& kn : schedule_knobs(k, t)) n.insert(kn.name);
    return n;
  };
  Kernel mm = lower(make_workload("matmul:128x64x128").graph).kernels[0];
  Kernel sm = lower(make_workload("softmax:8x256").graph).kernels[0];
  EXPECT_EQ(names(mm, targets()[0]), (std::set<std::string>{"mr", "nr", "order", "row_block", "pack", "kunroll", "unroll", "serial"}));
  EXPECT_EQ(names(mm, targets()[2]), (std::set<std::string>{"tiles", "tile_threads", "tile_regs"}));
  EXPECT_TRUE(names(sm, targets()[2]).count("threads"));
  EXPECT_TRUE(names(sm, targets()[0]).count("rlanes"));
}

// The default schedules as they were before the heuristics had knobs
// (printed by the code of commit 564dee3).
TEST(ScheduleSpace, DefaultSchedulesUnchanged) {
  std::vector<DeviceInfo> t = targets();
  auto sched = [](const char* w, const DeviceInfo& d) { return print(default_schedule(lower(make_workload(w).graph).kernels[0], d)); };
  EXPECT_EQ(sched("matmul:2048x2048x2048", t[0]),
            "split i0 by 8 -> i0o, i0i\nsplit i1 by 32 -> i1o, i1i\nserial i0o\nreorder i1o, i0o, i0i, i1i\n"
            "parallel i1o\nhoist r2 above i0i\ncache_read b at i1o -> pb\nvectorize pb_i1i\nunroll i0i\nvectorize i1i\n");
  EXPECT_EQ(sched("matmul:64x64x64", t[2]),
            "split i0 by 16 -> i0a, i0t\nsplit i0a by 4 -> i0b, i0r\nsplit i1 by 16 -> i1a, i1t\nsplit i1a by 4 -> i1b, i1r\n"
            "reorder i0b, i1b, i0t, i1t, i0r, i1r\nhoist r2 above i0r\nunroll i0r\nunroll i1r\nbind i0b gpu_block\n"
            "bind i1b gpu_block\nbind i0t gpu_thread\nbind i1t gpu_thread\n");
  // Since session 9: four vectors of partial sums, not one; since session
  // 18, their fold's rounds of 2 lanes or more vectorized.
  EXPECT_EQ(sched("gemv:1024x1024", t[1]),
            "rfactor r1 by 32 -> r1o, r1i\nvectorize r1i\nvectorize r1i_fold\nvectorize r1i_fold_1\n"
            "vectorize r1i_fold_2\nvectorize r1i_fold_3\n");
  EXPECT_EQ(sched("softmax:64x1000", t[3]), "spread i0 over 128 -> thr\nbind i0 gpu_block\nbind thr gpu_thread\n");
}

// Every knob turned alone gives a schedule that applies or is refused with
// kiln::Error, and the ones that apply compute what the interpreter does.
TEST(ScheduleSpace, EveryKnobValueIsCorrectOrRefused) {
  std::shared_ptr<Device> cpu = device("cpu");
  for (const char* w : {"matmul:64x48x96", "gemv:64x128", "softmax:8x256"}) {
    Workload wl = make_workload(w, f32, 3);
    Program p = lower(wl.graph);
    ASSERT_EQ(p.kernels.size(), size_t(1)) << w;
    const Kernel& k = p.kernels[0];
    std::vector<HostTensor> want = interpret(wl.graph, wl.inputs);
    std::set<std::string> seen;
    for (const Knob& kn : schedule_knobs(k, cpu->info()))
      for (int64_t v : kn.options) {
        Knobs set({{kn.name, v}});
        Schedule s = schedule_with(k, cpu->info(), set);
        if (!seen.insert(print(s)).second) continue;
        try {
          apply(k, s);
        } catch (const Error&) {
          continue;
        }
        CompiledGraph cg(wl.graph, cpu, {s});
        std::vector<HostTensor> got = cg.run(wl.inputs);
        EXPECT_EQ(compare(want[0], got[0], tolerance_for(f32)), "") << w << " " << kn.name << "=" << v << "\n" << print(s);
      }
    EXPECT_GT(seen.size(), size_t(1)) << w;
  }
}

// ---- the database

TuningRecord record(const std::string& hash, double tuned_s, const std::string& schedule = "unroll i0i\n") {
  TuningRecord r;
  r.kernel_hash = hash;
  r.device = "cpu|test";
  r.schedule = schedule;
  r.default_s = 2.0;
  r.tuned_s = tuned_s;
  r.candidates = 17;
  r.kernel_name = "k0_" + hash;
  r.tuned_at = "2026-01-01T00:00:00Z";
  return r;
}

TEST(TuningDb, StoresReopensAndKeepsTheFaster) {
  fs::path dir = temp_dir("roundtrip");
  {
    TuningDb db(dir / "t.sqlite");
    db.store(record("aa", 1.0));
    db.store(record("bb", 0.5, "split i0 by 4 -> i0o, i0i\n"));
  }
  TuningDb db(dir / "t.sqlite");
  std::optional<TuningRecord> r = db.lookup("aa", "cpu|test");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->schedule, "unroll i0i\n");
  EXPECT_EQ(r->tuned_s, 1.0);
  EXPECT_EQ(r->candidates, 17);
  EXPECT_FALSE(db.lookup("aa", "cpu|other"));
  EXPECT_FALSE(db.lookup("aa", "cpu|test", "0.0.0"));
  db.store(record("aa", 1.5, "slower\n"));
  EXPECT_EQ(db.lookup("aa", "cpu|test")->schedule, "unroll i0i\n");
  db.store(record("aa", 0.25, "faster\n"));
  EXPECT_EQ(db.lookup("aa", "cpu|test")->schedule, "faster\n");
  EXPECT_EQ(db.records().size(), size_t(2));
  fs::remove_all(dir);
}

TEST(TuningDb, ExportsAndImportsJsonAndSql) {
  fs::path dir = temp_dir("export");
  TuningDb src(dir / "src.sqlite");
  src.store(record("aa", 1.0, "it's quoted\n"));
  src.store(record("bb", 0.5));
  for (bool sql : {false, true}) {
    TuningDb dst(dir / (sql ? "sql.sqlite" : "json.sqlite"));
    EXPECT_EQ(dst.import_text(sql ? src.export_sql() : src.export_json()), 2);
    std::vector<TuningRecord> a = src.records(), b = dst.records();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].kernel_hash, b[i].kernel_hash);
      EXPECT_EQ(a[i].schedule, b[i].schedule);
      EXPECT_EQ(a[i].tuned_s, b[i].tuned_s);
      EXPECT_EQ(a[i].default_s, b[i].default_s);
      EXPECT_EQ(a[i].tuned_at, b[i].tuned_at);
    }
  }
  TuningDb other(dir / "other.sqlite");
  EXPECT_THROW(other.import_text("[{\"kernel_hash\": 3}]"), Error);
  EXPECT_THROW(other.import_text("DROP TABLE tunings;"), Error);
  EXPECT_THROW(other.import_text("ATTACH DATABASE 'x.sqlite' AS x;"), Error);
  EXPECT_TRUE(other.records().empty());
  fs::remove_all(dir);
}

TEST(TuningDb, MovesACorruptFileAsideAndStartsAgain) {
  fs::path dir = temp_dir("corrupt");
  fs::path file = dir / "tuning.sqlite";
  {
    TuningDb db(file);
    db.store(record("aa", 1.0));
  }
  // Overwrite the header and some pages with garbage.
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    std::string junk(4096, 'x');
    f.write(junk.data(), std::streamsize(junk.size()));
  }
  TuningDb db(file);
  EXPECT_FALSE(db.lookup("aa", "cpu|test"));
  db.store(record("bb", 1.0));
  EXPECT_TRUE(db.lookup("bb", "cpu|test"));
  int aside = 0;
  for (const auto& e : fs::directory_iterator(dir)) aside += e.path().filename().string().find(".corrupt-") != std::string::npos;
  EXPECT_EQ(aside, 1);
  fs::remove_all(dir);
}

TEST(TuningDb, TwoProcessesWritingAtOnceCorruptNothing) {
  fs::path dir = temp_dir("fork");
  fs::path file = dir / "tuning.sqlite";
  { TuningDb create(file); }
  std::vector<pid_t> kids;
  for (int p = 0; p < 2; ++p) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = 0;
      try {
        TuningDb db(file);
        for (int i = 0; i < 150; ++i) {
          db.store(record("p" + std::to_string(p) + "_" + std::to_string(i), 1.0));
          db.store(record("shared_" + std::to_string(i % 10), 1.0 + p * 0.1 + i * 1e-3));
          if (!db.lookup("p" + std::to_string(p) + "_" + std::to_string(i), "cpu|test")) rc = 3;
        }
      } catch (...) {
        rc = 2;
      }
      _exit(rc);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  TuningDb db(file);
  EXPECT_EQ(db.records().size(), size_t(2 * 150 + 10));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".corrupt-"), std::string::npos) << e.path();
  fs::remove_all(dir);
}

// Kernels of one structure (a model's layers) may name their buffers and
// loops differently; a schedule stored for one applies to all alike.
TEST(TuningDb, OneStoredScheduleServesEveryKernelOfAStructure) {
  DeviceInfo cpu = targets()[0];
  const Kernel k = lower(make_workload("matmul:64x32x96").graph).kernels[0];
  // The same kernel with other names for its loops and buffers.
  auto renamed = [](std::string text) {
    for (auto [from, to] : {std::pair{"i0", "row"}, {"i1", "col"}, {"r2", "red"}, {"a", "lhs"}, {"b", "rhs"}})
      text = std::regex_replace(text, std::regex(std::string("\\b") + from + "\\b"), to);
    return text;
  };
  const Kernel other = parse_kernel(renamed(print(k)));
  ASSERT_EQ(kernel_structure_hash(other), kernel_structure_hash(k));
  ASSERT_NE(print(other), print(k));
  int checked = 0;
  for (const Knob& kn : schedule_knobs(k, cpu))
    for (int64_t v : kn.options) {
      Knobs one({{kn.name, v}});
      Schedule s = schedule_with(k, cpu, one);
      Kernel done;
      try {
        done = apply(k, s);
      } catch (const Error&) {
        continue;
      }
      Schedule stored = structural_schedule(s, k);
      EXPECT_EQ(named_schedule(stored, k), s);
      Schedule mine = named_schedule(stored, other);
      EXPECT_NE(mine, s);
      // The same kernel but for names.
      EXPECT_EQ(KernelCache::structural_text(apply(other, mine)), KernelCache::structural_text(done))
          << print(s) << print(mine);
      ++checked;
    }
  EXPECT_GT(checked, 5);
}

TEST(TuningDb, OffOrUnusableLocationDisablesIt) {
  {
    CacheDir off("off");
    EXPECT_EQ(TuningDb::global(), nullptr);
  }
  fs::path dir = temp_dir("unusable");
  std::ofstream(dir / "file") << "not a folder";
  {
    CacheDir bad((dir / "file" / "sub").string());
    EXPECT_EQ(TuningDb::global(), nullptr);
    // Compiling still works, with default schedules.
    Workload w = make_workload("matmul:16x16x16", f32, 5);
    CompiledGraph cg(w.graph, device("cpu"));
    EXPECT_EQ(cg.schedules()[0], default_schedule(cg.program().kernels[0], cg.device().info()));
  }
  fs::remove_all(dir);
}

// ---- the executor and the tuner

TEST(TuningDb, ExecutorUsesAStoredScheduleAndFallsBack) {
  fs::path dir = temp_dir("executor");
  CacheDir env(dir.string());
  std::shared_ptr<Device> cpu = device("cpu");
  Workload w = make_workload("matmul:48x64x96", f32, 9);
  Program p = lower(w.graph);
  const Kernel& k = p.kernels[0];
  Knobs set({{"mr", 4}, {"nr", 16}, {"kunroll", 2}});
  Schedule tuned = schedule_with(k, cpu->info(), set);
  ASSERT_NE(tuned, default_schedule(k, cpu->info()));
  TuningDb* db = TuningDb::global();
  ASSERT_NE(db, nullptr);
  TuningRecord r = record(kernel_structure_hash(k), 1e-3, print(structural_schedule(tuned, k)));
  r.device = device_fingerprint(cpu->info());
  db->store(r);
  std::vector<HostTensor> want = interpret(w.graph, w.inputs);
  {
    CompiledGraph cg(w.graph, cpu);
    EXPECT_EQ(cg.schedules()[0], tuned);
    EXPECT_EQ(compare(want[0], cg.run(w.inputs)[0], tolerance_for(f32)), "");
  }
  // A stored schedule that no longer applies: the default, silently.
  r.schedule = "split nosuch by 4 -> a, b\n";
  r.tuned_s = 1e-6;
  db->store(r);
  CompiledGraph cg(w.graph, cpu);
  EXPECT_EQ(cg.schedules()[0], default_schedule(k, cpu->info()));
  fs::remove_all(dir);
}

TEST(Tuner, TunesAGraphStoresWinnersThatMatchTheInterpreter) {
  fs::path dir = temp_dir("tune");
  std::shared_ptr<Device> cpu = device("cpu");
  TuningDb db(dir / "tuning.sqlite");
  Workload w = make_workload("mlp:32", f32, 11);
  TuneOptions opt;
  opt.budget_s = 6;
  opt.progress = false;
  GraphTuning t = tune_graph(w.graph, w.inputs, {}, cpu, opt, &db);
  ASSERT_FALSE(t.kernels.empty());
  int tuned = 0, candidates = 0;
  for (const KernelTuning& k : t.kernels) {
    EXPECT_GT(k.default_s, 0);
    EXPECT_LE(k.tuned_s, k.default_s);
    candidates += k.candidates;
    tuned += k.improved;
  }
  EXPECT_GT(candidates, 0);
  EXPECT_GT(t.graph_default_s, 0);
  EXPECT_GT(t.graph_tuned_s, 0);
  EXPECT_EQ(db.records().size(), size_t(tuned));
  // Whatever was stored computes what the interpreter does, on new inputs.
  Program p = lower(w.graph);
  std::vector<Schedule> scheds;
  for (const Kernel& k : p.kernels) {
    std::optional<TuningRecord> r = db.lookup(kernel_structure_hash(k), device_fingerprint(cpu->info()));
    scheds.push_back(r ? named_schedule(parse_schedule(r->schedule), k) : default_schedule(k, cpu->info()));
  }
  auto inputs = testing::inputs_for(w.graph, {}, 99);
  std::vector<HostTensor> want = interpret(w.graph, inputs);
  CompiledGraph cg(w.graph, cpu, scheds);
  std::vector<HostTensor> got = cg.run(inputs);
  for (size_t o = 0; o < want.size(); ++o) EXPECT_EQ(compare(want[o], got[o], tolerance_for(want[o].dtype)), "");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kiln
