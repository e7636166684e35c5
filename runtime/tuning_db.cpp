#include "runtime/tuning_db.h"

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "runtime/disk_cache.h"
#include "runtime/kernel_cache.h"

#ifndef KILN_VERSION_STRING
#define KILN_VERSION_STRING "0.1.0"
#endif

namespace kiln {

const char* const kKilnVersion = KILN_VERSION_STRING;

namespace {

const char* const kSchema =
    "CREATE TABLE IF NOT EXISTS tunings ("
    " kernel_hash TEXT NOT NULL, device TEXT NOT NULL, version TEXT NOT NULL,"
    " schedule TEXT NOT NULL, default_s REAL NOT NULL, tuned_s REAL NOT NULL,"
    " candidates INTEGER NOT NULL, kernel_name TEXT NOT NULL, tuned_at TEXT NOT NULL,"
    " PRIMARY KEY (kernel_hash, device, version))";

// Keeps the faster schedule of two for one key.
const char* const kUpsert =
    "INSERT INTO tunings VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    " ON CONFLICT (kernel_hash, device, version) DO UPDATE SET"
    " schedule = excluded.schedule, default_s = excluded.default_s, tuned_s = excluded.tuned_s,"
    " candidates = excluded.candidates, kernel_name = excluded.kernel_name, tuned_at = excluded.tuned_at"
    " WHERE excluded.tuned_s < tunings.tuned_s";

const char* const kColumns =
    "kernel_hash, device, version, schedule, default_s, tuned_s, candidates, kernel_name, tuned_at";

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK)
      throw Error(std::string("tuning database: ") + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(st_); }
  void bind(int i, const std::string& s) { sqlite3_bind_text(st_, i, s.data(), int(s.size()), SQLITE_TRANSIENT); }
  void bind(int i, double v) { sqlite3_bind_double(st_, i, v); }
  void bind(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); }
  bool step() {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(std::string("tuning database: ") + sqlite3_errmsg(db_));
  }
  std::string text(int i) {
    const unsigned char* p = sqlite3_column_text(st_, i);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  double real(int i) { return sqlite3_column_double(st_, i); }
  int64_t integer(int i) { return sqlite3_column_int64(st_, i); }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

void bind_record(Statement& st, const TuningRecord& r) {
  st.bind(1, r.kernel_hash);
  st.bind(2, r.device);
  st.bind(3, r.version);
  st.bind(4, r.schedule);
  st.bind(5, r.default_s);
  st.bind(6, r.tuned_s);
  st.bind(7, r.candidates);
  st.bind(8, r.kernel_name);
  st.bind(9, r.tuned_at);
}

TuningRecord read_record(Statement& st) {
  TuningRecord r;
  r.kernel_hash = st.text(0);
  r.device = st.text(1);
  r.version = st.text(2);
  r.schedule = st.text(3);
  r.default_s = st.real(4);
  r.tuned_s = st.real(5);
  r.candidates = st.integer(6);
  r.kernel_name = st.text(7);
  r.tuned_at = st.text(8);
  return r;
}

std::string sql_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// SQL text being imported may insert into `tunings` and nothing else.
int only_inserts(void*, int action, const char* table, const char*, const char*, const char*) {
  if (action == SQLITE_INSERT && table && std::string(table) == "tunings") return SQLITE_OK;
  if (action == SQLITE_TRANSACTION) return SQLITE_OK;
  return SQLITE_DENY;
}

std::mutex global_mu;
std::unique_ptr<TuningDb> global_db;
bool global_done = false;

}  // namespace

std::string device_fingerprint(const DeviceInfo& d) {
  return d.backend + "|" + d.name + "|" + d.features + "|cores=" + std::to_string(d.cores) +
         "|vector=" + std::to_string(d.vector_bits) + "|threads=" + std::to_string(d.max_threads);
}

std::string kernel_structure_hash(const Kernel& k) { return sha256_hex(KernelCache::structural_text(k)); }

TuningDb::TuningDb(const std::filesystem::path& file) : path_(file) { open_or_recover(); }

TuningDb::~TuningDb() {
  if (db_) sqlite3_close(db_);
}

void TuningDb::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : sqlite3_errmsg(db_);
    sqlite3_free(msg);
    throw Error("tuning database '" + path_.string() + "': " + m);
  }
}

void TuningDb::open_or_recover() {
  for (int attempt = 0;; ++attempt) {
    try {
      if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                          nullptr) != SQLITE_OK)
        throw Error("tuning database '" + path_.string() + "': " + (db_ ? sqlite3_errmsg(db_) : "cannot open"));
      sqlite3_busy_timeout(db_, 10000);
      exec("PRAGMA journal_mode=WAL");
      exec(kSchema);
      Statement check(db_, "PRAGMA quick_check");
      if (!check.step() || check.text(0) != "ok") throw Error("tuning database '" + path_.string() + "' is corrupt");
      return;
    } catch (const Error& e) {
      if (db_) sqlite3_close(db_);
      db_ = nullptr;
      std::error_code ec;
      if (attempt > 0 || !std::filesystem::is_regular_file(path_, ec)) throw;
      // Not a sound database: keep it for a post-mortem, start a new one.
      auto now = std::chrono::system_clock::now().time_since_epoch();
      std::filesystem::path aside = path_.string() + ".corrupt-" +
                                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count());
      std::filesystem::rename(path_, aside, ec);
      if (ec) throw;
      for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(path_.string() + suffix, ec);
      std::fprintf(stderr, "kiln: %s; moved to '%s', starting a new one\n", e.what(), aside.c_str());
    }
  }
}

TuningDb* TuningDb::global() {
  std::lock_guard<std::mutex> lock(global_mu);
  if (global_done) return global_db.get();
  global_done = true;
  std::filesystem::path dir;
  const char* env = std::getenv("KILN_CACHE_DIR");
  if (env && *env) {
    if (std::string(env) == "off") return nullptr;
    dir = env;
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    dir = std::filesystem::path(home) / ".cache" / "kiln";
  } else {
    std::fprintf(stderr, "kiln: tuning database off: neither KILN_CACHE_DIR nor HOME is set\n");
    return nullptr;
  }
  try {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec || !std::filesystem::is_directory(dir))
      throw Error("cannot create '" + dir.string() + "'" + (ec ? ": " + ec.message() : ""));
    global_db = std::make_unique<TuningDb>(dir / "tuning.sqlite");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: tuning database off: %s\n", e.what());
  }
  return global_db.get();
}

void TuningDb::reset_global() {
  std::lock_guard<std::mutex> lock(global_mu);
  global_db.reset();
  global_done = false;
}

std::optional<TuningRecord> TuningDb::lookup(const std::string& kernel_hash, const std::string& device,
                                             const std::string& version) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, (std::string("SELECT ") + kColumns +
                     " FROM tunings WHERE kernel_hash = ?1 AND device = ?2 AND version = ?3")
                        .c_str());
  st.bind(1, kernel_hash);
  st.bind(2, device);
  st.bind(3, version);
  if (!st.step()) return std::nullopt;
  return read_record(st);
}

void TuningDb::store(const TuningRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, kUpsert);
  bind_record(st, r);
  st.step();
}

std::vector<TuningRecord> TuningDb::records() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, (std::string("SELECT ") + kColumns + " FROM tunings ORDER BY device, kernel_name, kernel_hash").c_str());
  std::vector<TuningRecord> out;
  while (st.step()) out.push_back(read_record(st));
  return out;
}

std::string TuningDb::export_json() {
  nlohmann::json all = nlohmann::json::array();
  for (const TuningRecord& r : records())
    all.push_back({{"kernel_hash", r.kernel_hash}, {"device", r.device}, {"version", r.version},
                   {"schedule", r.schedule}, {"default_s", r.default_s}, {"tuned_s", r.tuned_s},
                   {"candidates", r.candidates}, {"kernel_name", r.kernel_name}, {"tuned_at", r.tuned_at}});
  return all.dump(2) + "\n";
}

std::string TuningDb::export_sql() {
  std::string out = std::string("-- kiln tuning database\n") + kSchema + ";\n";
  char num[64];
  for (const TuningRecord& r : records()) {
    out += std::string("INSERT INTO tunings (") + kColumns + ") VALUES (" + sql_quote(r.kernel_hash) + ", " +
           sql_quote(r.device) + ", " + sql_quote(r.version) + ", " + sql_quote(r.schedule) + ", ";
    std::snprintf(num, sizeof num, "%.17g, %.17g, %lld, ", r.default_s, r.tuned_s, (long long)r.candidates);
    out += num + sql_quote(r.kernel_name) + ", " + sql_quote(r.tuned_at) + ");\n";
  }
  return out;
}

int64_t TuningDb::import_text(const std::string& text) {
  std::vector<TuningRecord> in;
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    try {
      for (const auto& j : nlohmann::json::parse(text)) {
        TuningRecord r;
        r.kernel_hash = j.at("kernel_hash").get<std::string>();
        r.device = j.at("device").get<std::string>();
        r.version = j.at("version").get<std::string>();
        r.schedule = j.at("schedule").get<std::string>();
        r.default_s = j.at("default_s").get<double>();
        r.tuned_s = j.at("tuned_s").get<double>();
        r.candidates = j.value("candidates", int64_t(0));
        r.kernel_name = j.value("kernel_name", std::string());
        r.tuned_at = j.value("tuned_at", std::string());
        in.push_back(r);
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("tuning import: not a tuning export: ") + e.what());
    }
  } else {
    // SQL runs in a private in-memory database that only accepts inserts into
    // `tunings`; its rows are then merged like any others.
    sqlite3* mem = nullptr;
    if (sqlite3_open(":memory:", &mem) != SQLITE_OK) throw Error("tuning import: cannot open a scratch database");
    std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(mem, sqlite3_close);
    char* msg = nullptr;
    if (sqlite3_exec(mem, kSchema, nullptr, nullptr, &msg) != SQLITE_OK) throw Error("tuning import: scratch schema");
    sqlite3_limit(mem, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_set_authorizer(mem, only_inserts, nullptr);
    // The export's CREATE TABLE line: the table is already there.
    std::string body = text;
    if (size_t at = body.find(kSchema); at != std::string::npos) body.erase(at, std::string(kSchema).size());
    if (sqlite3_exec(mem, body.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string m = msg ? msg : "error";
      sqlite3_free(msg);
      throw Error("tuning import: " + m);
    }
    sqlite3_set_authorizer(mem, nullptr, nullptr);
    Statement st(mem, (std::string("SELECT ") + kColumns + " FROM tunings").c_str());
    while (st.step()) in.push_back(read_record(st));
  }
  std::lock_guard<std::mutex> lock(mu_);
  exec("BEGIN IMMEDIATE");
  try {
    for (const TuningRecord& r : in) {
      Statement st(db_, kUpsert);
      bind_record(st, r);
      st.step();
    }
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  return int64_t(in.size());
}

namespace {

// Every loop of `k` in pre-order, as KernelCache::structural_text numbers them.
void loops_in_order(const Stmt& s, std::vector<std::string>* out) {
  if (!s) return;
  if (s->kind == StmtKind::For) out->push_back(s->var);
  for (const Stmt& b : s->body) loops_in_order(b, out);
}

struct NameMaps {
  std::map<std::string, std::string> buffers, loops;
};

Schedule rename(Schedule s, const NameMaps& m) {
  auto swap = [](std::string& name, const std::map<std::string, std::string>& map) {
    if (auto it = map.find(name); it != map.end()) name = it->second;
  };
  for (Step& st : s.steps) {
    if (st.prim == Prim::CacheRead) {  // {buffer, loop, new buffer}
      swap(st.loops[0], m.buffers);
      swap(st.loops[1], m.loops);
      continue;
    }
    for (std::string& name : st.loops) swap(name, m.loops);
  }
  return s;
}

}  // namespace

Schedule structural_schedule(const Schedule& s, const Kernel& k) {
  NameMaps m;
  for (size_t i = 0; i < k.buffers.size(); ++i) m.buffers[k.buffers[i].name] = "b" + std::to_string(i);
  std::vector<std::string> loops;
  loops_in_order(k.body, &loops);
  for (size_t i = 0; i < loops.size(); ++i) m.loops.emplace(loops[i], "v" + std::to_string(i));  // first wins
  return rename(s, m);
}

Schedule named_schedule(const Schedule& s, const Kernel& k) {
  NameMaps m;
  for (size_t i = 0; i < k.buffers.size(); ++i) m.buffers["b" + std::to_string(i)] = k.buffers[i].name;
  std::vector<std::string> loops;
  loops_in_order(k.body, &loops);
  for (size_t i = 0; i < loops.size(); ++i) m.loops["v" + std::to_string(i)] = loops[i];
  return rename(s, m);
}

std::optional<Schedule> tuned_schedule(const Kernel& k, const DeviceInfo& dev) {
  TuningDb* db = TuningDb::global();
  if (!db) return std::nullopt;
  try {
    std::optional<TuningRecord> r = db->lookup(kernel_structure_hash(k), device_fingerprint(dev));
    if (!r) return std::nullopt;
    Schedule s = named_schedule(parse_schedule(r->schedule), k);
    apply(k, s);  // refuses a schedule that no longer fits
    return s;
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace kiln
